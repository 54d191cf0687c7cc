"""What cluster TLS costs per connection and per call: plain TCP vs mutual TLS 1.3 (P-256).

A jtrix ``wire.Daemon`` serving an echo object on loopback, and jtrix proxies
calling it from the same process (both sides pay their share of the crypto on
the same 2 cores, as a node and its netlets do):
  * connect: a new proxy's first call (TCP connect, TLS handshake, Pyro5
    handshake, one call), then closed;
  * call: one small call on an open connection;
  * 64 KiB: one call carrying and returning 64 KiB on an open connection.

    bench/run.sh tls [--connects 200] [--calls 3000]
"""

from __future__ import annotations

import argparse
import threading
import time

from Pyro5.api import expose

from harness import latency_ms, table, write_json
from rpc import wire
from hosting.cluster.ca import ClusterCA


@expose
class Echo:
    def echo(self, value):
        return value


def measure(uri: str, tls, connects: int, calls: int) -> dict:
    connect_s, call_s, big_s = [], [], []
    for i in range(connects):
        t = time.perf_counter()
        with wire.proxy(uri, 10, tls=tls) as p:
            p.echo(i)
        connect_s.append(time.perf_counter() - t)
    payload = b"x" * 65536
    with wire.proxy(uri, 10, tls=tls) as p:
        p.echo(0)
        started = time.perf_counter()
        for i in range(calls):
            t = time.perf_counter()
            p.echo(i)
            call_s.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        for _ in range(calls // 10):
            t = time.perf_counter()
            p.echo(payload)
            big_s.append(time.perf_counter() - t)
    return {"connect": latency_ms(connect_s), "call": latency_ms(call_s), "calls_per_s": round(calls / elapsed),
            "call_64k": latency_ms(big_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    wire.configure()
    ca = ClusterCA.create("bench")
    rows = []
    for label, server_tls, client_tls in (("plain TCP", None, None),
                                          ("mutual TLS 1.3", ca.issue("server", ("127.0.0.1",)), ca.issue("client"))):
        daemon = wire.Daemon("127.0.0.1", 0, tls=server_tls)
        uri = str(daemon.register(Echo(), "echo"))
        thread = threading.Thread(target=daemon.requestLoop, daemon=True)
        thread.start()
        try:
            result = measure(uri, client_tls, args.connects, args.calls)
        finally:
            daemon.shutdown()
        rows.append({"transport": label, **result})
    print(table([{"transport": r["transport"],
                  "connect": f'{r["connect"]["p50_ms"]} / {r["connect"]["p99_ms"]}',
                  "call": f'{r["call"]["p50_ms"]} / {r["call"]["p99_ms"]}',
                  "calls/s": r["calls_per_s"],
                  "64k": f'{r["call_64k"]["p50_ms"]} / {r["call_64k"]["p99_ms"]}'} for r in rows],
                [("transport", "transport"), ("connect", "new connection + call p50 / p99 ms"),
                 ("call", "call p50 / p99 ms"), ("calls/s", "calls/s (1 thread)"),
                 ("64k", "64 KiB call p50 / p99 ms")]))
    print(f"results: {write_json('tls', {'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
