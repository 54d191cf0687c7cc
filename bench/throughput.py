"""Replicated write throughput of examples/kvstore: acknowledged puts/s and latency.

For each number of replicas (1 = no backup, 2, 3) and durability (memory,
fsync), with the default ack policy (``all``: acknowledged once the master's
write is synced and every in-sync backup holds it):
  * blocking: C client threads sharing one access point, each calling
    ``put(key, 16-byte value)`` and waiting for the answer before the next;
  * pipelined: one thread submitting ``put``s through ``AppProxy.submit``
    (futures) as fast as the pipeline's back-pressure lets it.
Every row counts only acknowledged puts over ``--seconds`` (after a warm-up)
and the latency of each from its call (or submit) to its acknowledgement.

    bench/run.sh throughput [--seconds 5] [--clients 1,4,16,64] [--replicas 1,2,3]
"""

from __future__ import annotations

import argparse
import threading
import time

from harness import KvApp, latency_ms, table, write_json

VALUE = "x" * 16


def blocking(kv, clients: int, seconds: float) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = threading.Event()

    def client(c: int) -> None:
        mine, i = latencies[c], 0
        while not stop.is_set():
            t = time.perf_counter()
            kv.put(f"c{c}-{i}", VALUE)
            mine.append(time.perf_counter() - t)
            i += 1

    return _run([threading.Thread(target=client, args=(c,)) for c in range(clients)], stop, seconds,
                latencies)


def pipelined(kv, seconds: float) -> dict:
    latencies: list[list[float]] = [[]]
    stop = threading.Event()

    def submitter() -> None:
        done = latencies[0]
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            f = kv.submit("put", f"p-{i}", VALUE)
            f.add_done_callback(lambda f, t=t: f.exception() is None and done.append(time.perf_counter() - t))
            i += 1

    return _run([threading.Thread(target=submitter)], stop, seconds, latencies)


def _run(threads: list[threading.Thread], stop: threading.Event, seconds: float,
         latencies: list[list[float]]) -> dict:
    for t in threads:
        t.start()
    time.sleep(min(1.0, seconds / 5))  # warm-up: connections, first batches
    counts0 = [len(x) for x in latencies]
    t0 = time.perf_counter()
    time.sleep(seconds)  # the measurement window
    counts1 = [len(x) for x in latencies]
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    window = [v for x, a, b in zip(latencies, counts0, counts1) for v in x[a:b]]
    return {"ops_per_s": round(len(window) / elapsed), **latency_ms(window)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--durability", default="memory,fsync")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for durability in args.durability.split(","):
        for replicas in [int(x) for x in args.replicas.split(",")]:
            app = KvApp(replicas=replicas, durability=durability)
            try:
                kv = app.connect()
                kv.put("warm", "up")
                for clients in [int(x) for x in args.clients.split(",")]:
                    row = {"durability": durability, "replicas": replicas, "mode": "blocking",
                           "clients": clients, **blocking(kv, clients, args.seconds)}
                    print(row, flush=True)
                    rows.append(row)
                row = {"durability": durability, "replicas": replicas, "mode": "pipelined", "clients": 1,
                       **pipelined(kv, args.seconds)}
                print(row, flush=True)
                rows.append(row)
                kv.close()
            finally:
                app.close()
    print(table(rows, [("durability", "durability"), ("replicas", "replicas"), ("mode", "mode"),
                       ("clients", "clients"), ("ops_per_s", "acked puts/s"), ("p50_ms", "p50 ms"),
                       ("p99_ms", "p99 ms")]))
    print("results:", write_json("throughput", {"rows": rows}, args.json))


if __name__ == "__main__":
    main()
