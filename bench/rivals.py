"""The rivals jtrix is compared with, measured like bench/failover.py, bench/throughput.py and bench/restart_latency.py.

  PySyncObj (3-node Raft on loopback, each node a process holding a ReplDict; see
  bench/pysyncobj_node.py, driven over JSON lines on stdin/stdout):
    throughput: T client threads inside the *leader* process doing d.set(f"c{client}-{i}",
                16-byte str) for S seconds; "sync" = blocking set(sync=True) one after another,
                "async" = set(callback=cb) with ASYNC_INFLIGHT calls in flight split over the
                threads, counting only callbacks reporting FAIL_REASON.SUCCESS. Acknowledged
                ops/s and latency, per SyncObjConf in CONFS ("default", "nobatch", "dumpfile").
    failover:   SIGKILL of the leader's process → a survivor first knows another leader
                (_getLeader()), and → the first d.set(..., sync=True) issued from a survivor
                right after the kill is acknowledged (retried on failure/timeout). The killed
                node is restarted with the same address and journal file and must rejoin
                (everyone connected, agreed on one leader, it is ready) before the next trial.
  supervisord: SIGKILL of its worker → the replacement child exists (same probe as jtrix's
               in bench/restart_latency.py).

Usage: python bench/rivals.py [--seconds S] [--trials N] [--json PATH]   (or bench/run.sh rivals ...)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from harness import pct

HERE = Path(__file__).resolve().parent
NODE = HERE / "pysyncobj_node.py"

#: SyncObjConf keyword arguments ("{dir}" and "{i}" in strings: the cluster's temp dir and the
#: node's index). "default" is what users get (PySyncObj's own benchmarks use it too; log
#: compaction then pickles+gzips the whole state in memory, on the tick thread, every 5000
#: entries); "nobatch" is PySyncObj's documented latency switch (appendEntriesUseBatch=False:
#: "improve single request speed (don't wait till batch ready)"); "dumpfile" sets a full-dump
#: file, so compaction runs in a forked child (useFork) instead of stalling the tick thread;
#: "tuned" shortens the election timeouts about as far as PySyncObj's validate() allows
#: (raftMinTimeout > 3 * appendEntriesPeriod) and ticks faster so they are checked in time.
CONFS: dict[str, dict] = {
    "default": {},
    "nobatch": {"appendEntriesUseBatch": False},
    "dumpfile": {"fullDumpFile": "{dir}/dump-{i}.bin"},
    "tuned": {"autoTickPeriod": 0.01, "appendEntriesPeriod": 0.025,
              "raftMinTimeout": 0.1, "raftMaxTimeout": 0.2, "connectionRetryTime": 1.0},
}
#: "async" mode: d.set(callback=...) calls in flight in total, split evenly over the client
#: threads. Around PySyncObj's best on this machine: ~1000 leaves ticks under-filled, 10000+
#: only adds latency (and 16 x 600 once cost a leader election and the calls in flight).
ASYNC_INFLIGHT = 4000


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports: bind port 0 (all at once, so they differ), then release."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(cond, deadline_s: float, what: str, every: float = 0.01):
    end = time.monotonic() + deadline_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


class Node:
    """One pysyncobj_node.py process in its own process group; replies read by a thread."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.addr = argv[0]
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(NODE), *argv], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 120) -> dict:
        reply = self.replies.get(timeout=timeout)
        if reply is None:
            raise RuntimeError(f"node {self.addr} exited (code {self.proc.wait()})")
        return reply

    def call(self, msg: dict, timeout: float = 120) -> dict:
        self.send(msg)
        return self.recv(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class Cluster:
    """3 PySyncObj nodes on loopback (free ports), SyncObjConf(**CONFS[conf]); a journal file
    per node in the cluster's temp dir if `journal`, else PySyncObj's in-memory journal."""

    def __init__(self, conf: str = "default", journal: bool = False, size: int = 3) -> None:
        self.conf, self.journal = conf, journal
        self.tmp = Path(tempfile.mkdtemp(prefix="pysyncobj-bench-"))
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(size)]
        self.nodes: list[Node | None] = [None] * size
        try:
            for i in range(size):
                self.start(i)
        except BaseException:
            self.close()
            raise

    def start(self, i: int) -> None:
        conf = {**CONFS[self.conf], **({"journalFile": "{dir}/journal-{i}.bin"} if self.journal else {})}
        conf = {k: v.format(dir=self.tmp, i=i) if isinstance(v, str) else v for k, v in conf.items()}
        argv = [self.addrs[i], *(a for a in self.addrs if a != self.addrs[i]), "--conf", json.dumps(conf)]
        self.nodes[i] = Node(argv, self.tmp / f"node-{i}.log")

    def wait_stable(self, deadline_s: float = 90) -> int:
        """Wait until every node is connected to all others, ready, and all agree on one
        leader among them; return the leader's index."""
        def stable():
            st = [n.call({"cmd": "status"}) for n in self.nodes]
            leaders = {s["leader"] for s in st}
            if (len(leaders) == 1 and None not in leaders and all(s["ready"] for s in st)
                    and all(s["connected"] == s["partners"] for s in st)):
                return leaders.pop()
        return self.addrs.index(wait_for(stable, deadline_s, f"a stable PySyncObj cluster ({self.tmp})"))

    def close(self) -> None:
        for n in self.nodes:
            if n is not None:
                n.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def pysyncobj_throughput(threads: int, mode: str, seconds: float, conf: str = "default",
                         window: int | None = None) -> dict:
    """Acknowledged ReplDict.set() per second on a fresh 3-node cluster, clients in the leader.

    mode "sync": `threads` threads each doing d.set(k, v, sync=True) back to back (latency =
    one call); "async": each thread keeps up to `window` (default ASYNC_INFLIGHT // threads)
    d.set(k, v, callback=cb) in flight (latency = call → callback; failed callbacks not
    counted). ops_per_s = ops acknowledged within the `seconds` window / its length. Returns
    ops_per_s, p50_ms, p90_ms, p99_ms, max_ms, n (acknowledged in the window), failed (error
    callbacks or exceptions), lost (never called back within 60 s after the window).
    """
    if window is None:
        window = max(1, ASYNC_INFLIGHT // threads)
    cluster = Cluster(conf)
    try:
        leader = cluster.nodes[cluster.wait_stable()]
        leader.call({"cmd": "bench", "threads": 1, "mode": "sync", "seconds": 0.5, "window": 1})  # warm-up
        res = leader.call({"cmd": "bench", "threads": threads, "mode": mode, "seconds": seconds,
                           "window": window if mode == "async" else 1}, timeout=seconds + 120)
        return {"threads": threads, "mode": mode, "conf": conf, "seconds": seconds,
                **({"window": window} if mode == "async" else {}), **res}
    finally:
        cluster.close()


def pysyncobj_failover(trials: int, confs: tuple[str, ...] = ("default", "tuned"),
                       attempt_timeout: float = 2.0) -> dict:
    """Per config: lists of seconds from SIGKILL of the leader's process to
      leader_known_s: the first survivor whose _getLeader() names a live node (min over both
                      survivors; the new leader itself knows at once, so this is the election);
      first_write_s:  the first acknowledged d.set(..., sync=True) issued by one survivor
                      (the lower-numbered one, leader or not) right after the kill, retried on
                      failure or after `attempt_timeout` s without an answer.
    Nodes keep a journal file; the killed one restarts with the same address and journal and
    must rejoin before the next trial. Also returns each trial's attempts and errors."""
    out = {}
    for conf in confs:
        cluster = Cluster(conf, journal=True)
        known, first, attempts, errors = [], [], [], []
        try:
            for _ in range(trials):
                old = cluster.wait_stable()
                survivors = [n for i, n in enumerate(cluster.nodes) if i != old]
                t0 = time.monotonic()
                os.killpg(cluster.nodes[old].proc.pid, signal.SIGKILL)
                probe = {"cmd": "probe", "old": cluster.addrs[old], "timeout": attempt_timeout, "deadline": 60}
                survivors[0].send({**probe, "write": True})
                survivors[1].send({**probe, "write": False})
                cluster.nodes[old].kill()  # reap it
                r = [s.recv(90) for s in survivors]
                if r[0]["write_t"] is None or all(x["leader_t"] is None for x in r):
                    raise RuntimeError(f"no new leader or write within 60 s: {r}")
                known.append(min(x["leader_t"] for x in r if x["leader_t"] is not None) - t0)
                first.append(r[0]["write_t"] - t0)
                attempts.append(r[0]["attempts"])
                errors.append(r[0]["errors"])
                cluster.start(old)
        finally:
            cluster.close()
        out[conf] = {"conf": CONFS[conf], "leader_known_s": known, "first_write_s": first,
                     "write_attempts": attempts, "write_errors": errors}
    return out


def wait_new_child(parent: psutil.Process, old: set[int], deadline_s: float = 30.0) -> tuple[int, float]:
    """(pid, time.monotonic()) of the first live child of `parent` not in `old`, polled every 0.2 ms."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for child in parent.children():
            if child.pid not in old and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid, time.monotonic()
        time.sleep(0.0002)
    raise TimeoutError("no replacement child appeared")


SUPERVISOR_CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
[unix_http_server]
file={tmp}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:worker]
command={python} -c "import time; time.sleep(3600)"
startsecs=0
autorestart=true
startretries=1000
"""


def supervisord_restart(trials: int) -> list[float]:
    """Seconds from SIGKILL of supervisord's worker (startsecs=0, autorestart) to its
    replacement child existing, polled from outside every 0.2 ms."""
    tmp = Path(tempfile.mkdtemp(prefix="supervisord-bench-"))
    conf = tmp / "supervisord.conf"
    conf.write_text(SUPERVISOR_CONF.format(tmp=tmp, python=sys.executable))
    sup = subprocess.Popen([str(Path(sys.executable).parent / "supervisord"), "-c", str(conf)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    spawned = []
    try:
        proc = psutil.Process(sup.pid)
        pid, _ = wait_new_child(proc, set())
        for _ in range(trials):
            old = {c.pid for c in proc.children()}
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            pid, t1 = wait_new_child(proc, old)
            spawned.append(t1 - t0)
            time.sleep(0.1)  # spacing between trials (the worker is up at once: startsecs=0)
    finally:
        for child in psutil.Process(sup.pid).children(recursive=True):
            child.kill()
        sup.kill()
        sup.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return spawned


def ms_row(values: list[float]) -> str:
    v = [x * 1000 for x in values]
    return (f"median {statistics.median(v):7.1f} ms  p90 {pct(v, 90):7.1f} ms  "
            f"p99 {pct(v, 99):7.1f} ms  max {max(v):7.1f} ms  (n={len(v)})")


def main() -> None:
    import pysyncobj.version
    import supervisor.options

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput row")
    ap.add_argument("--trials", type=int, default=10, help="failover and restart trials")
    ap.add_argument("--json", default=str(HERE / "results" / "rivals.json"))
    args = ap.parse_args()
    sup_version = supervisor.options.VERSION
    load_before = os.getloadavg()
    print(f"rivals: PySyncObj {pysyncobj.version.VERSION} (3 nodes, loopback), supervisord {sup_version}; "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {load_before[0]:.1f}")

    rows = []
    for conf, mode, threads in [("default", "sync", 1), ("default", "sync", 16),
                                ("default", "async", 1), ("default", "async", 16),
                                ("nobatch", "sync", 1), ("nobatch", "sync", 16),
                                ("dumpfile", "async", 1), ("dumpfile", "async", 16)]:
        r = pysyncobj_throughput(threads, mode, args.seconds, conf)
        rows.append(r)
        print(f"pysyncobj throughput {conf:<8} {mode:<5} {threads:>2} threads: {r['ops_per_s']:8.0f} sets/s"
              f"   median {r['p50_ms']:7.1f} ms  p90 {r['p90_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
              f"  (n={r['n']}, failed={r['failed']}, lost={r['lost']}"
              + (f", term {r['term_before']}→{r['term_after']}" if r["term_after"] != r["term_before"] else "")
              + (f", {r['window']} in flight/thread)" if mode == "async" else ")"), flush=True)

    failover = pysyncobj_failover(args.trials)
    for conf, f in failover.items():
        print(f"pysyncobj failover   {conf:<8} SIGKILL leader → new leader known:  {ms_row(f['leader_known_s'])}")
        print(f"pysyncobj failover   {conf:<8} SIGKILL leader → first write acked: {ms_row(f['first_write_s'])}"
              f"  attempts {statistics.median(f['write_attempts'])} median", flush=True)

    sup = supervisord_restart(args.trials)
    print(f"supervisord {sup_version}    SIGKILL worker → replacement spawned:        {ms_row(sup)}")
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) at the end: {' '.join(f'{x:.1f}' for x in load_after)}")

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                          "loadavg_before": load_before, "loadavg_after": load_after},
              "versions": {"pysyncobj": pysyncobj.version.VERSION, "supervisor": sup_version},
              "args": {"seconds": args.seconds, "trials": args.trials},
              "pysyncobj": {"confs": CONFS, "throughput": rows, "failover": failover},
              "supervisord": {"restart_s": sup}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
