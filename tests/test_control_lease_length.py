"""Finding 3 of issue 13: one control-lease length per app, granted everywhere.

Whoever grants or renews an app's control lease — the electing node, a node
re-adopting a live master after its own restart, a new owner — answers the
app's ``lease_ttl``; so an owner that cannot know the last grant waits out
exactly one ``lease_ttl``. The old node re-adopted a live master with
``max(3·TTL, 3 s)`` and renewed it at that length ever after, while a later
presumed-dead takeover waited only one TTL.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from hosting.client import HostingClient
from hosting.daemon import start_background
from testkit.manyapps import kvstore_xml, wait_in_sync
from testkit.node import events_of
from testkit.procs import process_dead
from testkit.wait import wait_for


@pytest.mark.parametrize("ttl", [0.5, 1.0, 3.0])
def test_a_master_readopted_after_a_node_restart_is_granted_one_lease_ttl(node, tmp_path, ttl):
    node.launch(kvstore_xml("kv", 2, ttl=ttl), tmp_path)
    wait_in_sync(node, "kv", 2)
    before = node.app("kv")
    node_pid = node.info["pid"]
    os.kill(node_pid, signal.SIGKILL)
    wait_for(lambda: process_dead(node_pid), 10, "the node to die")
    start_background(node.home)
    node.client.close()
    node.client = HostingClient.for_home(node.home)
    wait_for(lambda: events_of(node, "control.readopted", "kv"), 30, "the master re-adopted")
    # Over two lease lengths of renewals by the re-adopted master, the node never holds its lease
    # for longer than one TTL ahead.
    remaining = []
    deadline = time.monotonic() + 2 * ttl
    while time.monotonic() < deadline:
        state = node.client.call("control_state", "kv")
        assert state["holder"] is not None and state["epoch"] == before["epoch"], "the re-adopted master lost it"
        remaining.append(state["remaining_s"])
        time.sleep(ttl / 10)  # sampling the lease, not waiting for a condition
    assert max(remaining) <= ttl + 0.01, f"control lease held {max(remaining):.2f} s ahead (ttl {ttl})"
