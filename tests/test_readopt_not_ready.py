"""After a node restart, a live master is re-adopted even if its row is not "running" (review S2).

``Node.recover_control`` used to keep the holder only if it was in ``replicas()``, i.e. ready
(row "running") with an endpoint; otherwise, on a single node, it elected at once, while the
old master, alive, still believed in its lease: two replicas answered ``@master_query``. A
row stays "starting" when the node died while its ``mark_ready`` write was being retried
through a registry outage, "stopping" when it died during a stop's grace period.

The precondition is created as the attack review did: by editing the holder's row while the
node is down (the registry outage and the crash inside a grace period are not reproduced).
"""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest

from hosting.client import HostingClient
from hosting.daemon import start_background
from testkit.kvstore import launch_kvstore
from testkit.node import events_since, master_of
from testkit.procs import process_dead
from testkit.wait import wait_for


def _set_row_state(home, pid: int, state: str) -> None:
    db = sqlite3.connect(str(home / "registry.sqlite"))
    try:
        with db:
            assert db.execute("UPDATE netlets SET state=? WHERE app='kvstore' AND pid=?", (state, pid)).rowcount == 1
    finally:
        db.close()


@pytest.mark.parametrize("row_state", ["starting", "stopping"])
def test_a_live_master_whose_row_is_not_running_keeps_the_control_lease_across_a_node_restart(
        node, tmp_path, row_state):
    launch_kvstore(node, tmp_path)
    wait_for(lambda: all(n["role"] in ("master", "backup") and n["state"] == "running"
                         for n in node.app("kvstore")["netlets"]), 20, "all replicas in sync")
    before = node.app("kvstore")
    old = master_of(before)
    last_event = node.events(0, "kvstore")[-1]["index"]
    node_pid = node.info["pid"]
    os.kill(node_pid, signal.SIGKILL)
    wait_for(lambda: process_dead(node_pid), 5, "the node to die")
    _set_row_state(node.home, old["pid"], row_state)
    start_background(node.home)
    node.client = HostingClient.for_home(node.home)

    def decided():
        kinds = [e["kind"] for e in events_since(node, last_event, "kvstore")]
        return [k for k in kinds if k in ("control.readopted", "control.waiting", "election.won")] or None
    assert wait_for(decided, 20, "the restarted node to decide about the master")[0] == "control.readopted"
    # Its next renewal is accepted (and marks it ready): still the master, at the same epoch.
    wait_for(lambda: master_of(node.app("kvstore"))["state"] == "running", 20, "the old master renewing")
    after = node.app("kvstore")
    assert (after["master"], after["epoch"], master_of(after)["pid"]) == (before["master"], before["epoch"], old["pid"])
    assert not [e for e in events_since(node, last_event, "kvstore") if e["kind"] == "election.won"]
