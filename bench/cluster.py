"""A node of a two-node etcd cluster paused past its membership lease: how long until the
cluster declares it dead, and how long until its fenced app serves writes again.

Per trial: kvstore runs on node n1 (n2 is the observer); a client writes
continuously through an access point; n1's daemon gets SIGSTOP. Measured:
  * declared dead: SIGSTOP → n1's member key gone, as n2 sees it (the
    membership TTL, 3 s, plus etcd's expiry granularity);
  * then SIGCONT; fenced: SIGCONT → n1 records ``node.fenced`` (its next
    keepalive answers "expired");
  * recovered: SIGCONT → the first write acknowledged after the fence, by the
    warm-started app (its netlets were SIGKILLed by their fenced node);
  * longest write gap over the trial. While its node is frozen the master
    keeps acknowledging (its backups still follow it, and no other master can
    be elected without a new epoch that they would have to promise first); the
    gap is the fence and the warm start.
Every acknowledged write is read back at the end (must be 0 lost).

    bench/run.sh cluster [--trials 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from harness import KvApp, latency_ms, table, write_json
from nodeutil import RunningNode, cleanup_node, wait_for

from etcdutil import EtcdServer, unique_prefix


class Writer(threading.Thread):
    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        import netlets
        self.kv = netlets.connect("kvstore", home, timeout=30)
        self.acked: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"c{i}"
            try:
                self.kv.put(key, str(i))
                self.acked[key] = str(i)
                self.ack_times.append(time.monotonic())
            except Exception:  # not acknowledged: nothing to check
                pass
            i += 1

    def first_ack_after(self, t: float) -> float | None:
        return next((a for a in self.ack_times if a > t), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    from hosting.client import HostingClient
    from hosting.daemon import start_background

    tmp = Path(tempfile.mkdtemp(prefix="jtrix-bench-cluster-"))
    etcd = EtcdServer(tmp)
    etcd.start()
    url = etcd.url + unique_prefix().rstrip("/")
    nodes = []
    rows, lost = [], 0
    try:
        for name in ("n1", "n2"):
            start_background(tmp / name, cluster=url, name=name)
            nodes.append(RunningNode(tmp / name, HostingClient.for_home(tmp / name)))
        n1, n2 = nodes
        n1.launch(KvApp.descriptor(3, "fsync", 1.0), tmp)
        epoch = wait_for(lambda: n1.app("kvstore")["epoch"] if n1.app("kvstore")["master"] else 0, 60, "a master")
        writer = Writer(n1.home)
        writer.start()
        for trial in range(args.trials):
            wait_for(lambda: len(writer.ack_times) > 50 and writer.ack_times[-1] > time.monotonic() - 0.2, 60,
                     "writes flowing")
            fenced_before = len([e for e in n1.events(0) if e["kind"] == "node.fenced"])
            pid = n1.info["pid"]
            t_stop = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            try:
                wait_for(lambda: [n["name"] for n in n2.client.call("host_status")["nodes"]] == ["n2"], 30,
                         "n1 declared dead")
                t_dead = time.monotonic()
            finally:
                os.kill(pid, signal.SIGCONT)
            t_cont, wall_cont = time.monotonic(), time.time()
            fenced = wait_for(lambda: [e for e in n1.events(0) if e["kind"] == "node.fenced"][fenced_before:], 30,
                              "n1 fenced")
            epoch = wait_for(lambda: (a := n1.app("kvstore"))["master"] and a["epoch"] > epoch and a["epoch"], 60,
                             "a new master")
            t_fenced = t_cont + (fenced[0]["time"] - wall_cont)  # the node's wall clock, mapped to ours
            first = wait_for(lambda: writer.first_ack_after(t_fenced), 60, "a write acknowledged again")
            window = [t for t in writer.ack_times if t_stop - 1 <= t <= first]
            gap = max(b - a for a, b in zip(window, window[1:]))
            rows.append({"trial": trial + 1, "dead_ms": round((t_dead - t_stop) * 1000),
                         "fenced_ms": round((fenced[0]["time"] - wall_cont) * 1000),
                         "recovered_ms": round((first - t_cont) * 1000), "gap_ms": round(gap * 1000)})
            print(rows[-1], flush=True)
        writer.stop.set()
        writer.join(60)
        import netlets
        kv = netlets.connect("kvstore", n1.home, timeout=30)
        lost = sum(1 for k, v in writer.acked.items() if kv.get_latest(k) != v)
        summary = {k: latency_ms([r[k] / 1000 for r in rows]) for k in ("dead_ms", "fenced_ms", "recovered_ms", "gap_ms")}
        print(table([{"measure": k, **v} for k, v in summary.items()],
                    [("measure", "measure"), ("n", "n"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")]))
        print(f"acknowledged writes: {len(writer.acked)}, lost: {lost}")
        write_json("cluster", {"trials": rows, "summary": summary, "acked": len(writer.acked), "lost": lost})
    finally:
        for node in nodes:
            cleanup_node(node)
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if lost:
        raise SystemExit(f"{lost} acknowledged writes lost")


if __name__ == "__main__":
    main()
