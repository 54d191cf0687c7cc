"""The lease rule of issue 13's finding 3 in the simulator, with time as an input.

A new owner knows the arbiter's state but not the old owner's lease timing;
it waits one ``lease_ttl`` for a holder it cannot see dead, then elects. That
is safe exactly when no renewal ever promised more than one ``lease_ttl``
(the rule: one lease length per app). The node before the fix renewed a
re-adopted master at ``max(3·TTL, 3 s)``: the same schedule then has two
replicas answering linearizable reads, which the simulator's check finds.
"""

from __future__ import annotations

import pytest

from tests.sim import Cluster
from tests.sim.cluster import APP, InvariantError

SLOTS = ["s/0", "s/1", "s/2"]


def in_sync(c: Cluster) -> None:
    """Tick and deliver until every slot is in the in-sync set (bounded)."""
    for _ in range(200):
        if c.arbiter.state(APP).isr == set(SLOTS) and not c.net:
            return
        for s in SLOTS:
            c.tick(s)
        while c.net:
            c.deliver(0)
        c.now += 0.05
    raise AssertionError(f"never in sync: {c.arbiter.state(APP)}")


def takeover_after_a_pause(ttl: float, renewal_ttl: float | None) -> None:
    c = Cluster(SLOTS, None, lease_ttl=ttl, renewal_ttl=renewal_ttl)
    try:
        in_sync(c)
        c.owner_change()  # an owner re-adopts the live master ...
        c.tick("s/0")  # ... which renews with it
        c.check()
        c.nodes["s/0"].paused = True  # the master stalls (its process, or its node's daemon)
        c.owner_change()  # that owner dies too; the next one cannot see the master dead
        while not c.lease_expired():  # the new owner's wait: one lease length
            c.now += ttl / 10
        assert c.elect() == "s/1"
        for _ in range(50):  # the new master's barrier commits: it serves linearizable reads
            c.tick("s/1")
            c.tick("s/2")
            c.net = [p for p in c.net if p.dst != "s/0"]  # the stalled master receives nothing
            while c.net:
                c.deliver(0)
            if c.nodes["s/1"].replica.can_serve_linearizable(c.now):
                break
        assert c.nodes["s/1"].replica.can_serve_linearizable(c.now), "the new master never served"
        for _ in range(5):  # the stalled master's own clock says its lease is valid ...
            c.check()  # ... and it must not: two replicas would serve linearizable reads
            c.now += ttl / 10
    finally:
        c.close()


@pytest.mark.parametrize("ttl", [0.5, 1.0, 3.0])
def test_one_lease_length_makes_a_new_owners_one_ttl_wait_enough(ttl):
    takeover_after_a_pause(ttl, None)


@pytest.mark.parametrize("ttl", [0.5, 1.0, 3.0])
def test_a_renewal_longer_than_the_new_owners_wait_is_caught(ttl):
    with pytest.raises(InvariantError, match="two replicas serve linearizable reads"):
        takeover_after_a_pause(ttl, max(3 * ttl, 3.0))
