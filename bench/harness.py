"""Shared by the benchmarks: statistics, JSON results, and a kvstore on a private node (over testkit).

``KvApp`` starts a hosting node in a fresh temporary ``JTRIX_HOME``, launches
examples/kvstore with the asked replicas / durability / lease TTL, and on
``close()`` kills the node and every process it started (by pid and start
time, as the tests do). Every figure is measured from outside the app: the
benchmark process is the client.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testkit.kvstore import kvstore_xml, wait_master
from testkit.node import ROOT, RunningNode, cleanup_node, master_of, start_node
from testkit.wait import wait_for

RESULTS = ROOT / "bench" / "results"


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank on the sorted values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency_ms(values_s: list[float]) -> dict[str, float]:
    """``n`` and p50 / p90 / p99 / max in milliseconds of durations given in seconds."""
    if not values_s:
        return {"n": 0}
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p90_ms": round(pct(ms, 90), 2),
            "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 2)}


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], "kernel": platform.release(),
            "load_1m": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M")}


def write_json(name: str, data: dict, path: str | None = None) -> Path:
    """Write ``data`` (plus the machine) to ``path`` or bench/results/NAME.json; returns the path."""
    out = Path(path) if path else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return out


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` = [(key, heading)]."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(lines)


class KvApp:
    """examples/kvstore on a private node (see the module docstring)."""

    def __init__(self, replicas: int = 3, durability: str = "fsync", ttl: float = 1.0) -> None:
        self.replicas = replicas
        self.tmp = Path(tempfile.mkdtemp(prefix="jtrix-bench-"))
        home = self.tmp / "home"
        os.environ["JTRIX_HOME"] = str(home)
        self.node: RunningNode = start_node(home)
        try:
            self.node.launch(kvstore_xml(replicas=replicas, durability=durability, ttl=ttl), self.tmp)
            self.wait_master(0)
        except BaseException:
            self.close()
            raise

    def connect(self, **kwargs):
        import netlets
        return netlets.connect("kvstore", timeout=60, **kwargs)

    def app(self) -> dict:
        return self.node.app("kvstore")

    def master(self) -> dict:
        return master_of(self.app())

    def wait_master(self, above: int) -> dict:
        return wait_master(self.node, above, timeout=60)

    def wait_in_sync(self) -> None:
        """Every slot running, and the in-sync set back to every replica."""
        wait_for(lambda: all(n["state"] == "running" and n["role"] in ("master", "backup")
                             for n in self.app()["netlets"]), 60, "all replicas running")
        wait_for(lambda: len(self.node.client.call("control_state", "kvstore")["isr"]) == self.replicas, 60,
                 "all replicas in the in-sync set")

    def pids(self) -> list[int]:
        """The node's pid and every netlet's (for CPU accounting)."""
        return [self.node.info["pid"]] + [n["pid"] for n in self.app()["netlets"] if n.get("pid")]

    def close(self) -> None:
        cleanup_node(self.node)
