"""Many simultaneous elections on one node (issue 13, finding 5).

``--apps`` copies of examples/kvstore (``--replicas`` each, fsync) on a private
node. Two failures, each after every app is back in sync:

* **masters**: every master SIGKILLed at once (one loop). Per app: the time
  from the kill to its ``election.won`` (the node's event time) and to the
  acknowledgement of a ``put`` sent through a fresh access point right after
  the kill (all apps in parallel, each retried across its failover).
* **replicas**: every replica of every app SIGKILLed at once. The node
  restarts them all (100 Python processes: seconds of CPU that are not the
  elector's); per app, the time from its last replica's readiness
  (``netlet.ready``) to its ``election.won`` — the elector's own share — and
  from the kill to the election.

Prints both timelines (every app's figures in election order) and a summary.

    bench/run.sh mass_election [--apps 50] [--replicas 2] [--ttl 1.0] [--start-limit N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import latency_ms, table, write_json
from testkit.manyapps import (events_since, first_write, kill, launch_many, masters, newest_index, state,
                              wait_elected, wait_in_sync)
from testkit.node import RunningNode, cleanup_node

from hosting.client import HostingClient
from hosting.daemon import start_background


def kill_masters(node: RunningNode, names: list[str]) -> dict:
    before = state(node, names)
    since = newest_index(node)
    with ThreadPoolExecutor(len(names)) as pool:
        t0 = kill([m["pid"] for m in masters(before).values()])
        writes = {name: pool.submit(first_write, name) for name in names}
        won = wait_elected(node, before, since, timeout=120)
        written = {name: f.result() for name, f in writes.items()}
    lost, started = first_events(node, since, "control.lost"), first_events(node, since, "election.started")
    rows = sorted(({"app": n, "lost_s": lost[n] - t0, "started_s": started[n] - t0, "elected_s": won[n]["time"] - t0,
                    "written_s": written[n] - t0} for n in names), key=lambda r: r["elected_s"])
    return {"timeline": rows, "elected": latency_ms([r["elected_s"] for r in rows]),
            "written": latency_ms([r["written_s"] for r in rows])}


def first_events(node: RunningNode, since: int, kind: str) -> dict[str, float]:
    """app -> time of its first ``kind`` event after index ``since``."""
    out: dict[str, float] = {}
    for e in events_since(node, since):
        if e["kind"] == kind and e["app"] is not None:
            out.setdefault(e["app"], e["time"])
    return out


def kill_replicas(node: RunningNode, names: list[str]) -> dict:
    before = state(node, names)
    since = newest_index(node)
    t0 = kill([n["pid"] for a in before.values() for n in a["netlets"] if n.get("pid")])
    won = wait_elected(node, before, since, timeout=600)
    ready: dict[str, float] = {}
    for e in events_since(node, since):
        if e["kind"] == "netlet.ready" and e["app"] in won and e["index"] < won[e["app"]]["index"]:
            ready[e["app"]] = max(ready.get(e["app"], 0.0), e["time"])
    rows = sorted(({"app": n, "ready_s": ready[n] - t0, "elected_s": won[n]["time"] - t0,
                    "after_ready_s": won[n]["time"] - ready[n]} for n in names), key=lambda r: r["elected_s"])
    return {"timeline": rows, "after_ready": latency_ms([r["after_ready_s"] for r in rows]),
            "elected": latency_ms([r["elected_s"] for r in rows])}


def print_timeline(title: str, rows: list[dict], keys: list[str]) -> None:
    print(f"\n{title}")
    for r in rows:
        print(f"  {r['app']:>5} " + "  ".join(f"{k}={r[k]:7.3f}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--start-limit", type=int, default=None,
                        help="netlets the node starts at once (default: the node's, 2 per core)")
    parser.add_argument("--json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jtrix-bench-mass-"))
    home = tmp / "home"
    os.environ["JTRIX_HOME"] = str(home)
    start_background(home, start_limit=args.start_limit)
    node = RunningNode(home, HostingClient.for_home(home))
    try:
        started = time.monotonic()
        names = launch_many(node, tmp, args.apps, args.replicas, args.ttl)
        print(f"{args.apps} apps x {args.replicas} replicas in sync after {time.monotonic() - started:.1f} s")
        crash = kill_masters(node, names)
        print_timeline("every master SIGKILLed (s after the kill):", crash["timeline"],
                       ["lost_s", "started_s", "elected_s", "written_s"])
        for name in names:
            wait_in_sync(node, name, args.replicas)
        restart = kill_replicas(node, names)
        print_timeline("every replica SIGKILLed (s after the kill; after_ready = elected - last replica ready):",
                       restart["timeline"], ["ready_s", "elected_s", "after_ready_s"])
    finally:
        cleanup_node(node)
    rows = [{"failure": "SIGKILL every master", "measure": "elected (from kill)", **crash["elected"]},
            {"failure": "SIGKILL every master", "measure": "first write acked (from kill)", **crash["written"]},
            {"failure": "SIGKILL every replica", "measure": "elected (from kill)", **restart["elected"]},
            {"failure": "SIGKILL every replica", "measure": "elected after its replicas ready",
             **restart["after_ready"]}]
    print()
    print(table(rows, [("failure", "failure"), ("measure", "measure"), ("n", "n"), ("p50_ms", "p50 ms"),
                       ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")]))
    print("results:", write_json("mass_election", {"apps": args.apps, "replicas": args.replicas, "ttl": args.ttl,
                                                   "masters": crash, "replicas_killed": restart}, args.json))


if __name__ == "__main__":
    main()
