"""Failover of examples/kvstore as a client sees it: master crash and master hang.

Each trial waits until all three replicas are back in the in-sync set, then
SIGKILLs (crash) or SIGSTOPs (hang) the master and at once issues a ``put``
through an access point; the put is retried across the failover with its
request id, and the trial's figure is the time from the signal to its
acknowledgement by the new master. Also reported: the time until the node
granted the control lease to the new master (its ``election.won`` event).
A stopped master is SIGCONTed afterwards (the node has usually killed it on
lease expiry by then; either way it cannot acknowledge anything).

    bench/run.sh failover [--trials 30] [--hang-trials 10] [--ttl 1.0]
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from harness import KvApp, latency_ms, table, write_json
from testkit.wait import wait_for


def trials(app: KvApp, kv, n: int, sig: signal.Signals) -> dict:
    first_write, elected = [], []
    for trial in range(n):
        app.wait_in_sync()
        before = app.app()
        master = app.master()
        since = app.node.events(0, "kvstore")[-1]["index"]
        t0_wall, t0 = time.time(), time.perf_counter()
        os.kill(master["pid"], sig)
        kv.put(f"after-{sig.name}-{trial}", "1")
        first_write.append(time.perf_counter() - t0)
        won = wait_for(lambda: [e for e in app.node.events(since, "kvstore") if e["kind"] == "election.won"],
                       60, "a new master")
        elected.append(won[0]["time"] - t0_wall)
        if sig == signal.SIGSTOP:
            try:
                os.kill(master["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass
        app.wait_master(before["epoch"])
    return {"first_write": latency_ms(first_write), "elected": latency_ms(elected),
            "raw_ms": [[round(w * 1000, 1), round(e * 1000, 1)] for w, e in zip(first_write, elected)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--hang-trials", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    app = KvApp(replicas=3, durability="fsync", ttl=args.ttl)
    try:
        kv = app.connect()
        kv.put("warm", "up")
        crash = trials(app, kv, args.trials, signal.SIGKILL)
        hang = trials(app, kv, args.hang_trials, signal.SIGSTOP)
        kv.close()
    finally:
        app.close()
    rows = [{"failure": "SIGKILL master", "measure": m, **crash[m]} for m in ("elected", "first_write")]
    rows += [{"failure": f"SIGSTOP master (TTL {args.ttl:g} s)", "measure": m, **hang[m]}
             for m in ("elected", "first_write")]
    print(table(rows, [("failure", "failure"), ("measure", "measure"), ("n", "n"), ("p50_ms", "p50 ms"),
                       ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")]))
    print("results:", write_json("failover", {"ttl": args.ttl, "crash": crash, "hang": hang}, args.json))


if __name__ == "__main__":
    main()
