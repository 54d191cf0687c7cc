"""jtrix side by side with PySyncObj and supervisord: one run, same machine, same workload.

What is compared (each rival measured as bench/rivals.py describes):
  * crash failover: SIGKILL of the master (PySyncObj: the leader's process) →
    the first acknowledged write issued right after it (retried across the
    failover). jtrix: kvstore, 3 replicas, fsync, TTL 1 s, through an access
    point. PySyncObj: 3 nodes with a journal, default and tuned timeouts.
  * hang failover (jtrix only; PySyncObj's is its election timeout): SIGSTOP
    of the master → the first acknowledged write.
  * write throughput, put/set of a 16-byte value, 3 replicas: 16 blocking
    client threads, and each side's best mode (jtrix: the pipelined access
    point; PySyncObj: set(callback=...) with 4000 calls in flight).
  * restart: SIGKILL of a supervised worker → its replacement process exists
    (jtrix's node vs supervisord).
The targets of the issue are checked and printed; the exit code is 0 either
way (this measures, it does not gate).

    bench/run.sh compare [--trials 20] [--seconds 5]
"""

from __future__ import annotations

import argparse
import signal

import failover as ours_failover
import rivals
import restart_latency
import throughput as ours_throughput
from harness import KvApp, latency_ms, table, write_json


def ours(trials: int, hang_trials: int, seconds: float) -> dict:
    out = {}
    app = KvApp(replicas=3, durability="fsync", ttl=1.0)
    try:
        kv = app.connect()
        kv.put("warm", "up")
        out["crash"] = ours_failover.trials(app, kv, trials, signal.SIGKILL)
        out["hang"] = ours_failover.trials(app, kv, hang_trials, signal.SIGSTOP)
        kv.close()
    finally:
        app.close()
    for durability in ("fsync", "memory"):
        app = KvApp(replicas=3, durability=durability)
        try:
            kv = app.connect()
            kv.put("warm", "up")
            out[f"blocking16_{durability}"] = ours_throughput.blocking(kv, 16, seconds)
            out[f"pipelined_{durability}"] = ours_throughput.pipelined(kv, seconds)
            kv.close()
        finally:
            app.close()
    spawned, _ready = restart_latency.bench_jtrix(trials)
    out["restart"] = latency_ms(spawned)
    return out


def theirs(trials: int, seconds: float) -> dict:
    failover = rivals.pysyncobj_failover(trials)
    return {
        "failover": {conf: latency_ms(f["first_write_s"]) for conf, f in failover.items()},
        "blocking16": rivals.pysyncobj_throughput(16, "sync", seconds),
        "best": max((rivals.pysyncobj_throughput(t, "async", seconds) for t in (1, 16)),
                    key=lambda r: r["ops_per_s"]),
        "restart": latency_ms(rivals.supervisord_restart(trials)),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--hang-trials", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    us = ours(args.trials, args.hang_trials, args.seconds)
    them = theirs(args.trials, args.seconds)

    crash, pso = us["crash"]["first_write"], them["failover"]
    best_pso = min(pso.values(), key=lambda f: f["p99_ms"])
    ours_b16, their_b16 = us["blocking16_fsync"]["ops_per_s"], them["blocking16"]["ops_per_s"]
    ours_best = max(us["pipelined_fsync"]["ops_per_s"], us["pipelined_memory"]["ops_per_s"])
    rows = [
        {"what": "SIGKILL master → first write acked, p50 (PySyncObj default / tuned)",
         "jtrix": f"{crash['p50_ms']:.0f} ms",
         "rival": f"{pso['default']['p50_ms']:.0f} / {pso['tuned']['p50_ms']:.0f} ms",
         "ratio": ratio(best_pso["p50_ms"], crash["p50_ms"])},
        {"what": "SIGKILL master → first write acked, p99 (PySyncObj default / tuned)",
         "jtrix": f"{crash['p99_ms']:.0f} ms",
         "rival": f"{pso['default']['p99_ms']:.0f} / {pso['tuned']['p99_ms']:.0f} ms",
         "ratio": ratio(best_pso["p99_ms"], crash["p99_ms"])},
        {"what": "SIGSTOP master (TTL 1 s) → first write acked, p99", "jtrix": f"{us['hang']['first_write']['p99_ms']:.0f} ms",
         "rival": "-", "ratio": "-"},
        {"what": "acked writes/s, 16 blocking threads (jtrix fsync / memory)",
         "jtrix": f"{ours_b16} / {us['blocking16_memory']['ops_per_s']}", "rival": str(their_b16),
         "ratio": ratio(ours_b16, their_b16)},
        {"what": "acked writes/s, best mode (jtrix pipelined fsync / memory; PySyncObj async)",
         "jtrix": f"{us['pipelined_fsync']['ops_per_s']} / {us['pipelined_memory']['ops_per_s']}",
         "rival": str(round(them["best"]["ops_per_s"])), "ratio": ratio(ours_best, them["best"]["ops_per_s"])},
        {"what": "SIGKILL worker → replacement spawned, p50 / p99 (supervisord)",
         "jtrix": f"{us['restart']['p50_ms']:.1f} / {us['restart']['p99_ms']:.1f} ms",
         "rival": f"{them['restart']['p50_ms']:.0f} / {them['restart']['p99_ms']:.0f} ms",
         "ratio": ratio(them["restart"]["p50_ms"], us["restart"]["p50_ms"])},
    ]
    print(table(rows, [("what", "measure"), ("jtrix", "jtrix"), ("rival", "rival"), ("ratio", "jtrix advantage")]))
    targets = {
        "crash failover p99 <= 100 ms": crash["p99_ms"] <= 100,
        "crash failover >= 10x faster than PySyncObj (p99, its best config)": best_pso["p99_ms"] >= 10 * crash["p99_ms"],
        "hang failover p99 <= TTL + 0.5 s": us["hang"]["first_write"]["p99_ms"] <= 1500,
        "16 blocking threads >= 10x PySyncObj's": ours_b16 >= 10 * their_b16,
        "best mode >= PySyncObj's best": ours_best >= them["best"]["ops_per_s"],
    }
    for name, met in targets.items():
        print(f"  [{'met' if met else 'MISSED'}] {name}")
    print("results:", write_json("compare", {"ours": us, "theirs": them, "targets": targets}, args.json))


if __name__ == "__main__":
    main()
