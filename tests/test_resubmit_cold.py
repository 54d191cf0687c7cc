"""A name submitted again is a new app instance: its first election is a cold start (safety review S5).

Found by the outside safety review: terminating an app left its arbiter state
as ``{}`` with the old epoch, which reads back as "elected" (``epoch > 0``). A
resubmitted instance whose node restarted before its first election ran that
election as a warm start with an unknown trusted set, and any fresh replica
directory refused it for good. A real node, real SQLite, a real restart.
"""

from __future__ import annotations

import os
import signal

from hosting.client import HostingClient
from hosting.daemon import start_background
from warrants.errors import JtrixError
from testkit.kvstore import kvstore_xml, launch_kvstore, wait_master
from testkit.node import events_of
from testkit.procs import process_dead
from testkit.wait import wait_for


def test_a_resubmitted_app_is_cold_started_after_a_node_restart(node, tmp_path):
    launch_kvstore(node, tmp_path)  # the old instance: elected, its three directories proven
    assert node.client.call("terminate", "kvstore")
    node.launch(kvstore_xml(replicas=4), tmp_path, start=False)  # the new one: a fourth slot, a fresh directory
    node_pid = node.info["pid"]
    os.kill(node_pid, signal.SIGKILL)  # the node restarts before the new instance's first election
    wait_for(lambda: process_dead(node_pid), 5, "the node's death")
    start_background(node.home)
    node.client.close()
    node.client = HostingClient.for_home(node.home)
    seen = node.events()[-1]["index"]
    for i in range(4):  # (a warm start restarts them itself: that is the bug's first symptom)
        try:
            node.client.call("run_netlet", "kvstore", f"store/{i}")
        except JtrixError as err:
            assert "already running" in str(err)

    def decided():
        mine = [e for e in node.events(seen, "kvstore") if e["kind"] in ("election.won", "election.blocked")]
        return mine[0] if mine else None
    first = wait_for(decided, 30, "the new instance's first election")
    assert first["kind"] == "election.won", f"the cold start was refused: {first}"
    assert first["detail"]["mode"] == "cold"
    wait_master(node, timeout=20)
    assert not events_of(node, "election.blocked", "kvstore")
