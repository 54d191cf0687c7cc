"""``jtrix-launch examples/kvstore/bootstrap.xml`` until it reports the app ready.

Wall time of the real command (a new process: Python start-up, descriptor
and warrant checks, codebase upload, submit, then following the node's events
until every replica runs and a master is elected; it exits 0 once ready):
  * warm node: the local node is already running; each trial launches with
    ``--replace`` (the previous instance is terminated first, which is
    included in the figure) — what a user relaunching an app sees;
  * cold: a fresh ``JTRIX_HOME`` and no node: jtrix-launch starts the local
    node too (keys, registry, daemon) — what a first-time user sees.
Also the part of it spent inside the node: from ``app.submitted`` to
``election.won`` (the node's own event times).

    bench/run.sh launch [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, latency_ms, table, write_json
from testkit.node import RunningNode, cleanup_node

LAUNCH = str(Path(sys.executable).parent / "jtrix-launch")
DESCRIPTOR = ROOT / "examples" / "kvstore" / "bootstrap.xml"


def launch_once(home: Path, *extra: str) -> float:
    env = {**os.environ, "JTRIX_HOME": str(home)}
    t0 = time.perf_counter()
    done = subprocess.run([LAUNCH, str(DESCRIPTOR), "--json", *extra], env=env, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"jtrix-launch exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def inside_node(node: RunningNode) -> float:
    """Seconds from the last submit to the election that followed it, by the node's clock."""
    events = node.events(0, "kvstore")
    submitted = [e for e in events if e["kind"] == "app.submitted"][-1]
    won = [e for e in events if e["kind"] == "election.won" and e["index"] > submitted["index"]][0]
    return won["time"] - submitted["time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    from hosting.client import HostingClient

    cold, warm, node_side = [], [], []
    for _ in range(args.trials):
        home = Path(tempfile.mkdtemp(prefix="jtrix-bench-launch-")) / "home"
        try:
            cold.append(launch_once(home))
        finally:
            node = RunningNode(home, HostingClient.for_home(home))
            cleanup_node(node)
    home = Path(tempfile.mkdtemp(prefix="jtrix-bench-launch-")) / "home"
    try:
        launch_once(home)
        node = RunningNode(home, HostingClient.for_home(home))
        for _ in range(args.trials):
            warm.append(launch_once(home, "--replace"))
            node_side.append(inside_node(node))
    finally:
        cleanup_node(RunningNode(home, HostingClient.for_home(home)))
    rows = [{"case": "cold (starts the node)", **latency_ms(cold)},
            {"case": "warm node, --replace", **latency_ms(warm)},
            {"case": "inside the node: submitted → master elected", **latency_ms(node_side)}]
    print(table(rows, [("case", "jtrix-launch kvstore until ready"), ("n", "n"), ("p50_ms", "p50 ms"),
                       ("p90_ms", "p90 ms"), ("max_ms", "max ms")]))
    print("results:", write_json("launch", {"rows": rows}, args.json))


if __name__ == "__main__":
    main()
