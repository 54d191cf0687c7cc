"""The placement policy (hypothesis): every slot on a live node, kept slots stay, replicas of a
type spread over distinct nodes whenever there are enough, placements stay balanced."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, strategies as st

from hosting.election.arbiter import AppState
from hosting.cluster.placement import place, rebalance_move, rebalance_step

names = st.sampled_from([f"n{i}" for i in range(8)])
apps = st.dictionaries(st.sampled_from(["store", "web", "cache"]), st.integers(1, 5), min_size=1).map(
    lambda counts: {f"{t}/{i}": t for t, n in counts.items() for i in range(n)})


def anti_affine(placement, slot_types):
    return all(v == 1 for v in Counter((slot_types[s], n) for s, n in placement.items()).values())


@given(apps, st.sets(names, min_size=1))
def test_from_nothing_every_slot_lands_spread_and_balanced(slot_types, nodes):
    placement = place(slot_types, nodes)
    assert set(placement) == set(slot_types) and set(placement.values()) <= nodes
    for kind in set(slot_types.values()):
        replicas = [s for s, t in slot_types.items() if t == kind]
        on = Counter(placement[s] for s in replicas)
        assert max(on.values()) - min(on.get(n, 0) for n in nodes) <= 1  # as even as it can be
        if len(nodes) >= len(replicas):
            assert max(on.values()) == 1
    assert place(slot_types, nodes) == placement  # deterministic


@given(apps, st.sets(names, min_size=2), st.data())
def test_after_nodes_die_survivors_keep_their_slots_and_spread_still_holds(slot_types, nodes, data):
    before = place(slot_types, nodes)
    dead = data.draw(st.sets(st.sampled_from(sorted(nodes)), max_size=len(nodes) - 1))
    alive = nodes - dead
    after = place(slot_types, alive, before)
    assert set(after.values()) <= alive
    assert all(after[s] == n for s, n in before.items() if n in alive)  # nothing needlessly moved
    for kind in set(slot_types.values()):
        replicas = [s for s, t in slot_types.items() if t == kind]
        if len(alive) >= len(replicas):
            assert anti_affine({s: after[s] for s in replicas}, slot_types)


def test_three_replicas_on_three_nodes_then_one_dies():
    slots = {"store/0": "store", "store/1": "store", "store/2": "store"}
    first = place(slots, ["n1", "n2", "n3"])
    assert first == {"store/0": "n1", "store/1": "n2", "store/2": "n3"}
    assert place(slots, ["n1", "n3"], first) == {"store/0": "n1", "store/1": "n1", "store/2": "n3"}


def test_no_live_node_is_an_error():
    with pytest.raises(ValueError, match="no live node"):
        place({"a/0": "a"}, [])


def test_a_warm_start_is_blocked_only_when_every_replica_that_may_hold_acked_writes_moved():
    from hosting.cluster.agent import warm_start_blocked

    assert not warm_start_blocked(set(), set(), None)  # nothing moved: one node's rule applies
    assert warm_start_blocked({"s/0"}, set(), "s/0")  # the last master's data died with its node
    assert warm_start_blocked({"s/0", "s/1"}, {"s/1"}, "s/0")
    assert not warm_start_blocked({"s/0"}, {"s/1"}, "s/0")  # s/1 still holds every acked write
    assert not warm_start_blocked({"s/2"}, set(), "s/0")
    assert warm_start_blocked({"s/2"}, set(), None)  # nobody known to hold them: do not guess


@given(apps, st.sets(names, min_size=1), st.sets(names, min_size=1), st.data())
def test_rebalancing_after_joins_terminates_spread_and_never_moves_the_master(slot_types, first, joined, data):
    placement = place(slot_types, first)
    master = data.draw(st.sampled_from(sorted(slot_types)))
    nodes = first | joined
    moves = 0
    while (move := rebalance_move(slot_types, nodes, placement, master)) is not None:
        slot, target = move
        assert slot != master and target in nodes and placement[slot] != target
        placement = {**placement, slot: target}
        moves += 1
        assert moves <= len(slot_types) ** 2  # (the sum of squares strictly falls)
    for kind in set(slot_types.values()):
        on = Counter(placement[s] for s, t in slot_types.items() if t == kind)
        assert max(on.values()) - min(on.get(n, 0) for n in nodes) <= 1
    if joined <= first:
        assert moves == 0  # place() already spread them: nothing to improve


def test_a_third_node_joining_takes_a_backup_never_the_master():
    slots = {"store/0": "store", "store/1": "store", "store/2": "store"}
    stacked = place(slots, ["n1", "n3"])  # store/1 shares n1 with store/0
    assert stacked == {"store/0": "n1", "store/1": "n3", "store/2": "n1"}
    assert rebalance_move(slots, ["n1", "n2", "n3"], stacked, master="store/2") == ("store/0", "n2")
    assert rebalance_move(slots, ["n1", "n2", "n3"], stacked, master="store/0") == ("store/2", "n2")
    assert rebalance_move(slots, ["n1", "n3"], stacked, master="store/0") is None  # as even as 2 nodes allow


def test_the_owners_step_moves_only_a_whole_apps_backups():
    slots = {"store/0": "store", "store/1": "store", "store/2": "store"}
    stacked = {"store/0": "n1", "store/1": "n3", "store/2": "n1"}
    nodes, all_live = ["n1", "n2", "n3"], set(slots)
    state = AppState(7, "store/2", set(slots), incarnations={"store/2": "kvstore/store/2#4"})
    assert rebalance_step(slots, nodes, stacked, state, all_live, []) == ("store/0", "n2")  # not the master
    assert rebalance_step(slots, nodes, stacked, AppState(7, "store/0", set(slots)), all_live, []) == \
        ("store/2", "n2")
    assert rebalance_step(slots, nodes, stacked, AppState(7, None, set(slots)), all_live, []) is None  # no master
    assert rebalance_step(slots, nodes, stacked, AppState(7, "store/2", {"store/2", "store/1"}), all_live, []) is None
    assert rebalance_step(slots, nodes, stacked, state, all_live - {"store/1"}, []) is None  # one not live
    assert rebalance_step(slots, nodes, stacked, state, all_live, ["store/1"]) is None  # one still catching up
