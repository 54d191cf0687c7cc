"""Many small replicated apps on one node: launching them, killing them together, and waiting
for each to be elected (shared by the mass-election test and ``bench/mass_election.py``).

Each app is examples/kvstore renamed ``kv<i>``. Times are the node's event times
(wall clock, the same machine), so an app's election is measured where it
happens, not when a poll noticed it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import netlets
from testkit import kvstore
from testkit.node import RunningNode, events_since
from testkit.wait import wait_for


def kvstore_xml(name: str, replicas: int, ttl: float = 1.0, durability: str = "fsync") -> str:
    """One of the many apps: kvstore named ``name``, lease grace 1 s."""
    return kvstore.kvstore_xml(name, replicas, ttl=ttl, grace=1.0, durability=durability)


def launch_many(node: RunningNode, tmp: Path, n: int, replicas: int = 2, ttl: float = 1.0) -> list[str]:
    """Launch ``n`` apps and wait until each has a master and every replica in its in-sync set."""
    names = [f"kv{i}" for i in range(n)]
    for name in names:
        node.launch(kvstore_xml(name, replicas, ttl), tmp)
    for name in names:
        wait_in_sync(node, name, replicas)
    return names


def wait_in_sync(node: RunningNode, app: str, replicas: int, timeout: float = 120.0) -> None:
    def ok():
        a = node.app(app)
        running = all(n["state"] == "running" and n["role"] in ("master", "backup") for n in a["netlets"])
        return a["master"] and running and len(node.client.call("control_state", app)["isr"]) == replicas
    wait_for(ok, timeout, f"{app}: a master and every replica in sync")


def state(node: RunningNode, names: list[str]) -> dict[str, dict]:
    """app → its status (one call for all)."""
    return {a["name"]: a for a in node.client.call("status")["apps"] if a["name"] in names}


def kill(pids: list[int]) -> float:
    """SIGKILL every pid as close to at once as one loop can; returns the wall time it began."""
    t0 = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return t0


def masters(apps: dict[str, dict]) -> dict[str, dict]:
    return {name: next(n for n in a["netlets"] if n["slot"] == a["master"]) for name, a in apps.items()}


def newest_index(node: RunningNode) -> int:
    events = events_since(node, 0)
    return events[-1]["index"] if events else 0


def wait_elected(node: RunningNode, apps: dict[str, dict], since: int, timeout: float) -> dict[str, dict]:
    """Wait until every app has won an election above its epoch in ``apps`` (status before the
    kill), looking at events after index ``since``; returns app → its first such ``election.won``."""
    epochs = {name: a["epoch"] for name, a in apps.items()}
    seen: dict[str, dict] = {}
    cursor = [since]

    def won():
        for e in events_since(node, cursor[0]):
            cursor[0] = e["index"]
            if e["kind"] == "election.won" and e["app"] in epochs and e["detail"]["epoch"] > epochs[e["app"]]:
                seen.setdefault(e["app"], e)
        return len(seen) == len(epochs)
    wait_for(won, timeout, "every app elected", interval=0.05)
    return seen


def first_write(name: str, timeout: float = 60.0) -> float:
    """Put one key through a fresh access point (retried across the failover); wall time of the ack."""
    kv = netlets.connect(name, timeout=timeout)
    try:
        kv.put("after-kill", "1")
        return time.time()
    finally:
        kv.close()
