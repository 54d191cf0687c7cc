"""A promotion whose RPC fails has an unknown outcome (safety review S1), in the simulator.

The node's real election core and arbiter (``tests/sim``) with a promote RPC
that fails at the node after it landed ("after": the winner is master, its
answer lost) or before ("before"). Whether an election is a cold start (no
storage proof) must come from the arbiter's durable record that no epoch was
ever granted, never from the core's memory of a ``Won``.
"""

from __future__ import annotations

from tests.sim import Cluster
from tests.sim.cluster import APP

SLOTS = ["s/0", "s/1", "s/2"]


def _holder(c: Cluster) -> str | None:
    return c.arbiter.state(APP).holder


def test_a_master_whose_promotion_answer_was_lost_is_still_held_to_the_storage_proof(tmp_path):
    """The review's interleaving: the cold start's promotion lands but its answer is lost (the
    core never sees a ``Won``); everyone catches up, then the backups stall and are shrunk; the
    master alone acknowledges w5..w7; its directory is wiped and it dies. The warm start must
    refuse (no trusted storage proves those writes), not run as a cold start and elect a backup
    that lacks them."""
    c = Cluster(SLOTS, tmp_path, cold_start=True, lost_promotes=["after"])
    master = _holder(c)
    assert master is not None and c.masters() == [master] and not c.lost_promotes
    c.settle()
    for i in range(5):
        c.submit(master, f"w{i}", f"w{i}")
        c.settle()
    for b in (s for s in SLOTS if s != master):  # the backups stall: the master shrinks them
        c.partitions.add(frozenset((master, b)))
    for i in range(5, 8):
        c.submit(master, f"w{i}", f"w{i}")
        for _ in range(6):
            c.now += 0.5
            c.settle()
    assert c.arbiter.state(APP).isr == {master} and {"w5", "w6", "w7"} <= set(c.acked)
    c.wipe(master)
    c.partitions.clear()
    c.elect(warm=True)  # a warm start restarts every slot (the wiped one on an empty directory)
    if not c.alive(master):
        c.start(master)  # a cold start does not: the supervisor's restart policy does it anyway
    c.elect(warm=True)  # every slot live: the attempt
    c.check()  # a grant to a replica lacking acknowledged writes: "master s/1 ... lacks acked [...]"
    assert _holder(c) is None and c.blocked, "the warm start elected without proof"


def test_a_cold_start_whose_promotion_never_landed_elects_by_a_warm_start(tmp_path):
    """The other side of an unknown outcome: the cold start's promotion never reached the winner
    (it is not master, never renews). The grant counts as an election, so the next one is a warm
    start; the winner's storage, opened by the granted process and still unproven, shows the
    grant was never used, and the warm start elects (refusing it would block the app for good)."""
    c = Cluster(SLOTS, tmp_path, cold_start=True, lost_promotes=["before"])
    assert not c.masters() and c.arbiter.state(APP).elected and not c.lost_promotes
    c.elect(warm=True)
    c.check()
    assert _holder(c) is not None and c.masters() == [_holder(c)] and not c.blocked
