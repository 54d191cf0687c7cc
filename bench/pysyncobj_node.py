"""One PySyncObj node for bench/rivals.py: a SyncObj holding a ReplDict, driven over JSON lines.

Usage: pysyncobj_node.py SELF_ADDR PARTNER_ADDR... [--conf JSON]
  --conf  SyncObjConf keyword arguments as a JSON object (default: {} = PySyncObj's defaults)

Reads one JSON command per line on stdin, answers one JSON line on stdout
(times are time.monotonic(), system-wide on Linux, so the harness can compare
them with its own):
  {"cmd": "status"}  -> leader address, raft state/term, partners connected, ready
  {"cmd": "bench", "threads": T, "mode": "sync"|"async", "seconds": S, "window": W}
                     -> throughput of d.set(f"c{client}-{i}", 16-byte str) from T threads here
  {"cmd": "probe", "old": ADDR, "write": bool, "timeout": S, "deadline": S}
                     -> when this node first knows a leader other than ADDR, and (write) when
                        its first d.set(..., sync=True) issued now is acknowledged (retried on
                        failure/timeout)
  {"cmd": "exit"}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjException
from pysyncobj.batteries import ReplDict

VALUE = "x" * 16
FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}


def leader_addr(obj: SyncObj) -> str | None:
    leader = obj._getLeader()
    return None if leader is None else leader.address


def status(obj: SyncObj) -> dict:
    others = obj.otherNodes
    return {"self": obj.selfNode.address, "leader": leader_addr(obj), "is_leader": obj._isLeader(),
            "term": obj._getTerm(), "ready": obj.isReady(), "partners": len(others),
            "connected": sum(1 for n in others if obj.isNodeConnected(n))}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench(obj: SyncObj, d: ReplDict, threads: int, mode: str, seconds: float, window: int) -> dict:
    """Acknowledged d.set() calls per second from `threads` threads in this process.

    sync:  each thread calls d.set(k, v, sync=True) back to back; latency = one call.
    async: each thread keeps up to `window` d.set(k, v, callback=cb) in flight; an op counts
           only if its callback reports FAIL_REASON.SUCCESS; latency = set() call -> callback.
    ops/s = ops acknowledged within the `seconds` window / `seconds`; latencies are of those
    ops. Then the threads stop issuing and finish (sync: the call in progress; async: wait for
    their window to drain, so the next command starts on an idle cluster). Raft terms before
    and after tell whether an election happened meanwhile.
    """
    term_before = obj._getTerm()
    stop = threading.Event()
    lat: list[list[tuple[float, float]]] = [[] for _ in range(threads)]  # (acked at, latency)
    failed = [0] * threads
    lost = [0] * threads

    def sync_worker(c: int) -> None:
        i, mine = 0, lat[c]
        while not stop.is_set():
            t = time.perf_counter()
            try:
                d.set(f"c{c}-{i}", VALUE, sync=True, timeout=30)
                now = time.perf_counter()
                mine.append((now, now - t))
            except SyncObjException:
                failed[c] += 1
            i += 1

    def async_worker(c: int) -> None:
        i, mine, slots = 0, lat[c], threading.Semaphore(window)

        def done(t: float, _res, err) -> None:  # runs on PySyncObj's tick thread
            if err == FAIL_REASON.SUCCESS:
                now = time.perf_counter()
                mine.append((now, now - t))
            else:
                failed[c] += 1
            slots.release()

        while not stop.is_set():
            if not slots.acquire(timeout=0.05):
                continue
            t = time.perf_counter()
            d.set(f"c{c}-{i}", VALUE, callback=lambda res, err, t=t: done(t, res, err))
            i += 1
        # drain: take back every slot (i.e. every callback has run), with a deadline
        end = time.monotonic() + 60
        for k in range(window):
            if not slots.acquire(timeout=max(0.0, end - time.monotonic())):
                lost[c] = window - k
                break

    worker = {"sync": sync_worker, "async": async_worker}[mode]
    ts = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    stop.wait(seconds)
    t_end = time.perf_counter()
    stop.set()
    for t in ts:
        t.join()
    acked = [v * 1000 for mine in lat for at, v in mine if at <= t_end]
    ms = acked or [float("nan")]
    return {"n": len(acked), "failed": sum(failed), "lost": sum(lost), "window_s": t_end - t0,
            "term_before": term_before, "term_after": obj._getTerm(), "leader_after": leader_addr(obj),
            "ops_per_s": len(acked) / (t_end - t0), "p50_ms": statistics.median(ms),
            "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99), "max_ms": max(ms)}


def probe(obj: SyncObj, d: ReplDict, old: str, write: bool, timeout: float, deadline: float) -> dict:
    """After the leader `old` was killed: when this node first knows another leader, and
    (write) when a d.set(..., sync=True) issued now is first acknowledged, retrying on
    failure or on `timeout` seconds without an answer."""
    end = time.monotonic() + deadline
    out: dict = {"leader_t": None, "leader": None, "write_t": None, "attempts": 0, "errors": []}

    def watch() -> None:
        while time.monotonic() < end:
            addr = leader_addr(obj)
            if addr is not None and addr != old:
                out["leader_t"], out["leader"] = time.monotonic(), addr
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    n = 0
    while write and time.monotonic() < end:
        out["attempts"] += 1
        try:
            d.set(f"after-{time.monotonic_ns()}-{n}", VALUE, sync=True, timeout=timeout)
            out["write_t"] = time.monotonic()
            break
        except SyncObjException as e:
            out["errors"].append(FAIL_NAMES.get(e.errorCode, str(e.errorCode)))
        n += 1
    watcher.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("self_addr")
    ap.add_argument("partners", nargs="+")
    ap.add_argument("--conf", default="{}")
    args = ap.parse_args()
    d = ReplDict()
    obj = SyncObj(args.self_addr, args.partners,
                  SyncObjConf(**json.loads(args.conf)), consumers=[d])
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            cmd = msg.pop("cmd")
            if cmd == "exit":
                break
            if cmd == "status":
                reply = status(obj)
            elif cmd == "bench":
                reply = bench(obj, d, **msg)
            elif cmd == "probe":
                reply = probe(obj, d, **msg)
            else:
                reply = {"error": f"unknown command {cmd!r}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        obj.destroy()


if __name__ == "__main__":
    main()
