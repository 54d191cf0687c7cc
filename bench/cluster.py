"""Node failures in a three-node etcd cluster, seen by a client writing continuously.

examples/kvstore (3 replicas, fsync, TTL 1 s) is placed one replica per node
(membership TTL 3 s). Each trial finds the node running the master — which is
also the app's owner in the first trial — and
  * ``kill``: SIGKILLs that node's daemon and every netlet on it, as a machine
    dying would; then restarts the node from its home (it rejoins empty);
  * ``pause``: SIGSTOPs that node's daemon only (its netlets run on) until the
    others declare it dead, then SIGCONTs it (it finds itself fenced).
A client writes through another node's access point all along. Measured from
the fault: the new master (chosen, as recorded in etcd), the first write
acknowledged after it (for ``kill``; with ``pause`` the old master goes on
acknowledging until its control lease runs out, so the longest gap between
acknowledged writes is the figure), and every replica running again with the
re-created one caught up. Every acknowledged write is read back at the end.

    bench/run.sh cluster [--trials 5] [--scenario kill|pause|both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from harness import latency_ms, table, write_json
from testkit.fleet import Fleet
from testkit.kvstore import kvstore_xml
from testkit.node import RunningNode, kill_node_with_its_netlets
from testkit.wait import wait_for

NAMES = ("n1", "n2", "n3")


class Writer(threading.Thread):
    def __init__(self, home: Path, prefix: str) -> None:
        super().__init__(daemon=True)
        import netlets
        self.kv = netlets.connect("kvstore", home, timeout=60)
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"{self.prefix}{i}"
            try:
                self.kv.put(key, str(i))
                self.acked[key] = str(i)
                self.ack_times.append(time.monotonic())
            except Exception:  # not acknowledged: nothing to check
                pass
            i += 1

    def longest_gap(self, start: float, end: float) -> float:
        window = [t for t in self.ack_times if start - 1 <= t <= end]
        return max((b - a for a, b in zip(window, window[1:])), default=0.0)


class Cluster:
    """The three-node fleet, its members by name (n1, n2, n3)."""

    def __init__(self, tmp: Path) -> None:
        self.fleet = Fleet(tmp, len(NAMES))
        self.url = self.fleet.url

    @property
    def nodes(self) -> dict[str, RunningNode]:
        return {node.home.name: node for node in self.fleet.nodes}

    def restart(self, name: str) -> RunningNode:
        return self.fleet.restart(self.fleet.by_name(name))

    def app(self, via: str) -> dict:
        return self.nodes[via].app("kvstore")

    def elected(self, above: int) -> bool:
        """A master of an epoch above ``above`` is chosen (read from etcd: status answers wait
        for a paused node up to their timeout, which would blur the figure)."""
        from hosting.cluster.etcd import Etcd

        kv = Etcd(self.url).get("apps/kvstore/arbiter")
        state = kv.json() if kv else {}
        return state.get("epoch", 0) > above and state.get("holder") is not None

    def master_node(self, via: str) -> str:
        """The node running the master (waiting while a member that just rejoined is missing
        from the merged status)."""
        def find():
            app = self.app(via)
            return next((n["node"] for n in app["netlets"] if n["slot"] == app["master"]), None)
        return wait_for(find, 30, "the master in the cluster's status")

    def healthy(self, via: str) -> bool:
        from hosting.cluster.etcd import Etcd

        app = self.app(via)
        moved = Etcd(self.url).get("apps/kvstore/moved")
        return (len(app["netlets"]) == 3 and all(n["state"] == "running" and n["role"] in ("master", "backup")
                                                 for n in app["netlets"])
                and (moved is None or json.loads(moved.value) == []))

    def close(self) -> None:
        self.fleet.close()


def trial(cluster: Cluster, scenario: str, n: int) -> tuple[dict, dict]:
    victim = cluster.master_node("n1" if cluster.master_node("n2") != "n1" else "n2")
    via = next(name for name in NAMES if name != victim)
    before = cluster.app(via)["epoch"]
    writer = Writer(cluster.nodes[via].home, f"{scenario}{n}-")
    writer.start()
    wait_for(lambda: len(writer.ack_times) > 50, 60, "writes flowing")
    t0 = time.monotonic()
    if scenario == "kill":
        kill_node_with_its_netlets(cluster.nodes[victim])
    else:
        os.kill(cluster.nodes[victim].info["pid"], signal.SIGSTOP)
    try:
        wait_for(lambda: cluster.elected(before), 60, "a new master")
        t_master = time.monotonic()
        if scenario == "pause":
            wait_for(lambda: victim not in [m["name"] for m in cluster.nodes[via].client.call("host_status")["nodes"]],
                     60, "the paused node declared dead")
    finally:
        if scenario == "pause":
            os.kill(cluster.nodes[victim].info["pid"], signal.SIGCONT)
    t_back = wait_for(lambda: next((t for t in writer.ack_times if t > t_master), None), 60, "writes again")
    wait_for(lambda: cluster.healthy(via), 90, "every replica running and caught up")
    t_healthy = time.monotonic()
    writer.stop.set()
    writer.join(60)
    if scenario == "kill":
        cluster.restart(victim)  # the machine comes back: the node rejoins, empty
    row = {"trial": n, "scenario": scenario, "victim": victim, "via": via,
           "new_master_ms": round((t_master - t0) * 1000), "writes_back_ms": round((t_back - t0) * 1000),
           "write_gap_ms": round(writer.longest_gap(t0, t_back) * 1000),
           "all_replicas_ms": round((t_healthy - t0) * 1000)}
    print(row, flush=True)
    return row, writer.acked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenario", choices=["kill", "pause", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' homes (logs, events) afterwards")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jtrix-bench-cluster-"))
    cluster = Cluster(tmp)
    rows, acked = [], {}
    try:
        cluster.nodes["n1"].launch(kvstore_xml(replicas=3, durability="fsync", ttl=1.0), tmp)
        wait_for(lambda: cluster.healthy("n1") and cluster.app("n1")["master"], 60, "kvstore ready")
        scenarios = ["kill", "pause"] if args.scenario == "both" else [args.scenario]
        for scenario in scenarios:
            for n in range(1, args.trials + 1):
                row, written = trial(cluster, scenario, n)
                rows.append(row)
                acked.update(written)
        import netlets
        kv = netlets.connect("kvstore", cluster.nodes["n2"].home, timeout=60)
        lost = sum(1 for k, v in acked.items() if kv.get_latest(k) != v)
        summary = []
        for scenario in scenarios:
            mine = [r for r in rows if r["scenario"] == scenario]
            for measure in ("new_master_ms", "writes_back_ms", "write_gap_ms", "all_replicas_ms"):
                summary.append({"scenario": scenario, "measure": measure,
                                **latency_ms([r[measure] / 1000 for r in mine])})
        print(table(summary, [("scenario", "scenario"), ("measure", "from the fault"), ("n", "n"),
                              ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")]))
        print(f"acknowledged writes: {len(acked)}, lost: {lost}")
        write_json("cluster", {"trials": rows, "summary": summary, "acked": len(acked), "lost": lost})
    finally:
        cluster.close()
        if args.keep:
            print(f"homes kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if lost:
        raise SystemExit(f"{lost} acknowledged writes lost")


if __name__ == "__main__":
    main()
