"""kvstore: write throughput and failover times on one machine.

  throughput: C client threads (one access point) doing put() for S seconds,
              per durability mode; ops/s and per-call latency percentiles.
  failover:   SIGKILL of the master → a new master holds the control lease
              (node events control.lost → control.granted), and → the first
              write acknowledged by the new master as a client sees it.
  hang:       SIGSTOP of the master → a new master (lease TTL 1 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from nodeutil import RunningNode, cleanup_node, wait_for  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(values):
    v = [x * 1000 for x in values]
    return f"median {statistics.median(v):7.1f} ms  p90 {pct(v, 90):7.1f} ms  p99 {pct(v, 99):7.1f} ms  max {max(v):7.1f} ms"


class Bench:
    def __init__(self, durability: str, ttl: float = 1.0) -> None:
        import netlets
        from hosting.client import HostingClient
        from hosting.daemon import start_background

        self.tmp = Path(tempfile.mkdtemp(prefix="jtrix-kvbench-"))
        home = self.tmp / "home"
        os.environ["JTRIX_HOME"] = str(home)
        start_background(home)
        self.node = RunningNode(home, HostingClient.for_home(home))
        xml = (ROOT / "examples/kvstore/bootstrap.xml").read_text()
        xml = xml.replace('<codebase path="."/>', f'<codebase path="{ROOT / "examples/kvstore"}"/>')
        xml = xml.replace('durability="fsync"', f'durability="{durability}"')
        xml = xml.replace('ttl="1.0"', f'ttl="{ttl}"')
        self.node.launch(xml, self.tmp)
        self.wait_master(0)
        self.kv = netlets.connect("kvstore", timeout=60)

    def app(self):
        return self.node.app("kvstore")

    def wait_master(self, above: int) -> dict:
        def ok():
            a = self.app()
            if a["master"] and a["epoch"] > above:
                m = next(n for n in a["netlets"] if n["slot"] == a["master"])
                return a if m["role"] == "master" else None
        return wait_for(ok, 60, "a master")

    def wait_in_sync(self) -> None:
        """Every slot running, and the in-sync set back to all three replicas."""
        wait_for(lambda: all(n["state"] == "running" and n["role"] in ("master", "backup")
                             for n in self.app()["netlets"]), 60, "all replicas running")
        wait_for(lambda: len(self.node.client.call("control_state", "kvstore")["isr"]) == 3, 60,
                 "all replicas in the in-sync set")

    def close(self) -> None:
        cleanup_node(self.node)


def throughput(durability: str, clients: int, seconds: float) -> None:
    b = Bench(durability)
    try:
        b.kv.put("warm", "up")
        lat: list[float] = []
        stop = threading.Event()
        lock = threading.Lock()

        def run(c):
            i, mine = 0, []
            while not stop.is_set():
                t = time.perf_counter()
                b.kv.put(f"c{c}-{i}", "x" * 16)
                mine.append(time.perf_counter() - t)
                i += 1
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        print(f"throughput {durability:<6} {clients:>2} clients: {len(lat) / elapsed:8.0f} puts/s   {ms(lat)}")
    finally:
        b.close()


def failover(trials: int, how: str) -> None:
    b = Bench("fsync")
    elected, first_write = [], []
    try:
        for trial in range(trials):
            b.wait_in_sync()
            a = b.app()
            master = next(n for n in a["netlets"] if n["slot"] == a["master"])
            since = b.node.events(0, "kvstore")[-1]["index"]
            t0_wall, t0 = time.time(), time.perf_counter()
            os.kill(master["pid"], signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            b.kv.put(f"after-{trial}", "1")  # retried by the access point until the new master acks it
            first_write.append(time.perf_counter() - t0)
            granted = wait_for(lambda: [e for e in b.node.events(since, "kvstore") if e["kind"] == "control.granted"],
                               60, "grant")
            elected.append(granted[0]["time"] - t0_wall)
            if how == "stop":
                try:
                    os.kill(master["pid"], signal.SIGCONT)  # the node may have killed it already
                except ProcessLookupError:
                    pass
            b.wait_master(a["epoch"])
        label = "SIGKILL" if how == "kill" else "SIGSTOP (TTL 1 s)"
        print(f"failover {label:<18} new master granted:      {ms(elected)}  (n={trials})")
        print(f"failover {label:<18} first write acknowledged: {ms(first_write)}")
    finally:
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    print(f"kvstore, 3 replicas, ack=all, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for durability in ("fsync", "write", "memory"):
        for clients in (1, 8):
            throughput(durability, clients, args.seconds)
    failover(args.trials, "kill")
    failover(max(5, args.trials // 4), "stop")


if __name__ == "__main__":
    main()
