"""Links a netlet plants in what it may write (its slot directory) must not lead the node out of
the slot: attack d of the issue 14 follow-ups, through a real node and real netlets.

A netlet can write everything in its slot directory (tests/test_confinement.py proves it writes
its data directory), so it can replace what the node later wipes or reads there by a symbolic
link to a directory of the node or of another app. The test plants the link itself, standing
for the netlet's code, while the netlet runs.
"""

from __future__ import annotations

import os

import pytest

from testkit.kvstore import launch_kvstore
from testkit.node import master_of
from testkit.wait import wait_for


@pytest.mark.parametrize("where", ["for the replica directory", "inside it"])
def test_reset_wipes_a_planted_link_not_what_it_points_to_and_rebuilds_the_replica(node, tmp_path, where):
    launch_kvstore(node, tmp_path)
    app = node.app("kvstore")
    backup = next(n for n in app["netlets"] if n["slot"] != master_of(app)["slot"])
    slot_dir = node.home / "apps" / "kvstore" / "slots" / backup["slot"].replace("/", "-")
    replica = slot_dir / "replica"
    assert replica.is_dir()
    # what the link points to: a directory the node must not wipe (here: the node's codebases)
    target = node.home / "codebases"
    before = sorted(os.listdir(target))
    assert before
    if where == "inside it":
        os.symlink(target, replica / "segments")
    else:
        os.rename(replica, slot_dir / "replica.moved")
        os.symlink(target, replica)
    node.client.call("reset", "kvstore", backup["slot"])
    wait_for(lambda: node.slot("kvstore", backup["slot"])["pid"] not in (None, backup["pid"]) and
             node.slot("kvstore", backup["slot"])["state"] == "running", 30, "the reset slot running again")
    assert sorted(os.listdir(target)) == before
    assert not replica.is_symlink() and replica.is_dir()
    node.wait_running("kvstore", timeout=30)
