"""Time from a worker's SIGKILL to its replacement running: jtrix vs supervisord.

Both supervisors manage one Python worker. Each trial SIGKILLs the current
worker and measures, from just before the kill:
  * spawned: until the supervisor's replacement child process exists
    (polled from outside every 0.2 ms as a new child of the supervisor: the
    same probe for both);
  * ready (jtrix only): until the replacement netlet has renewed its lease
    (the node's ``netlet.ready`` event), i.e. it is serving.
Prints median / p90 / p99 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness import pct
from rivals import supervisord_restart, wait_new_child


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"{name:<28} n={len(ms):<4} median={statistics.median(ms):8.1f} ms  p90={pct(ms, 90):8.1f} ms"
            f"  p99={pct(ms, 99):8.1f} ms  max={max(ms):8.1f} ms")


def bench_jtrix(trials: int) -> tuple[list[float], list[float]]:
    from testkit.node import cleanup_node, descriptor_xml, start_node

    tmp = Path(tempfile.mkdtemp(prefix="jtrix-bench-"))
    home = tmp / "home"
    node = start_node(home)
    spawned, ready = [], []
    try:
        xml = descriptor_xml("bench", '<netlet type="w" class="workers:Echo" replicas="1"/>',
                             restart='healthy-after="0.05"')
        node.launch(xml, tmp)
        node.wait_running("bench")
        node_proc = psutil.Process(node.info["pid"])
        for _ in range(trials):
            view = node.wait_running("bench")["netlets"][0]
            since = node.events(0)[-1]["index"]
            old = {c.pid for c in node_proc.children()}
            t0, w0 = time.monotonic(), time.time()
            os.kill(view["pid"], signal.SIGKILL)
            _, t1 = wait_new_child(node_proc, old)
            spawned.append(t1 - t0)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                evs = [e for e in node.events(since, "bench") if e["kind"] == "netlet.ready"]
                if evs:
                    ready.append(evs[0]["time"] - w0)
                    break
                time.sleep(0.005)
            time.sleep(0.1)  # let the replacement settle (healthy-after) before the next kill
    finally:
        cleanup_node(node)
    return spawned, ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    import supervisor

    print(f"SIGKILL -> replacement, {args.trials} trials each, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    spawned, ready = bench_jtrix(args.trials)
    print(summary("jtrix: replacement spawned", spawned))
    print(summary("jtrix: replacement ready", ready))
    sup = supervisord_restart(args.trials)
    print(summary(f"supervisord {supervisor.__version__ if hasattr(supervisor, '__version__') else ''}: spawned".strip(), sup))


if __name__ == "__main__":
    main()
