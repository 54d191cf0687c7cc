"""The election arbiter: persisted epochs, best-position choice, fenced ISR changes."""

from __future__ import annotations

import pytest

from hosting.arbiter import AppState, Arbiter, MemoryEpochStore, StaleEpoch, best_position


def test_best_position_highest_then_lowest_slot():
    assert best_position({"s/1": (2, 5), "s/0": (1, 9), "s/2": (2, 5)}) == "s/1"
    assert best_position({"s/2": [3, 1], "s/0": [2, 100]}) == "s/2"
    assert best_position({}) is None


def test_epochs_strictly_increase_and_survive_restart():
    store = MemoryEpochStore()
    a = Arbiter(store)
    assert a.bootstrap("app", "s/0") == 1
    e = a.begin_election("app", ["s/1"])
    assert e == 2
    # the node crashed before choosing: a new arbiter never reuses epoch 2
    b = Arbiter(store)
    assert b.begin_election("app", ["s/1"]) == 3
    with pytest.raises(StaleEpoch):
        b.choose("app", 2, {"s/1": (1, 1)})


def test_election_only_from_isr_and_holder_leaves_isr():
    a = Arbiter(MemoryEpochStore())
    a.bootstrap("app", "s/0")
    ok, _ = a.expand("app", 1, "s/1")
    assert ok
    assert a.eligible("app", ["s/0", "s/1", "s/2"]) == ["s/1"]
    e = a.begin_election("app", ["s/1"])
    # s/2 is not in the ISR: ignored even though its position is higher
    assert a.choose("app", e, {"s/1": (1, 4), "s/2": (1, 9)}) == "s/1"
    st = a.state("app")
    assert st.holder == "s/1" and st.isr == {"s/1"} and st.epoch == 2


def test_nobody_answered_returns_none_then_warm_start():
    a = Arbiter(MemoryEpochStore())
    a.bootstrap("app", "s/0")
    e = a.begin_election("app", [])
    assert a.choose("app", e, {}) is None
    e2 = a.begin_election("app", ["s/0", "s/1"])
    assert a.choose("app", e2, {"s/0": (1, 7), "s/1": (1, 3)}, warm=["s/0", "s/1"]) == "s/0"
    assert a.state("app").isr == {"s/0"}


def test_warm_start_chooses_only_once_every_slot_has_promised():
    """A slot that did not answer may be the old master with the newest acknowledged entries."""
    a = Arbiter(MemoryEpochStore())
    a.bootstrap("app", "s/0")
    e = a.begin_election("app", ["s/0", "s/1", "s/2"])
    assert a.choose("app", e, {"s/1": (1, 3), "s/2": (1, 3)}, warm=["s/0", "s/1", "s/2"]) is None
    assert a.state("app").holder is None and a.state("app").electing == e
    assert a.choose("app", e, {"s/0": (1, 9), "s/1": (1, 3), "s/2": (1, 3)}, warm=["s/0", "s/1", "s/2"]) == "s/0"


def test_shrink_expand_fenced_by_epoch():
    a = Arbiter(MemoryEpochStore())
    a.bootstrap("app", "s/0")
    assert a.expand("app", 1, "s/1") == (True, 1)
    assert a.shrink("app", 1, "s/0") == (False, 1)  # never the holder
    e = a.begin_election("app", ["s/1"])
    assert a.shrink("app", 1, "s/1") == (False, e)  # during an election: stale
    a.choose("app", e, {"s/1": (1, 2)})
    assert a.shrink("app", 1, "s/2") == (False, 2)  # the old master is fenced
    assert a.expand("app", 1, "s/2") == (False, 2)
    assert a.shrink("app", 2, "s/2") == (True, 2)


def test_died_and_restarted_slots_leave_isr_and_stale_incarnation_refused():
    a = Arbiter(MemoryEpochStore())
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    assert a.expand("app", 1, "s/1", "n1") == (True, 1)
    a.netlet_died("app", "s/1")
    assert "s/1" not in a.state("app").isr
    a.netlet_started("app", "s/1", "n2")
    assert a.expand("app", 1, "s/1", "n1") == (False, 1)  # acks of the dead process
    assert a.expand("app", 1, "s/1", "n2") == (True, 1)
    a.netlet_died("app", "s/0")  # the holder stays until an election
    assert a.state("app").holder == "s/0"


def test_a_process_started_in_the_holders_slot_does_not_inherit_the_grant():
    """A host may restart the holder's slot before the owner acted on the holder's death (in a
    cluster, while the owner is away): ``incarnations`` then names the newcomer, but the grant
    stays with the process it was made to — so a node taking the app over elects instead of
    re-adopting as master a backup nobody promoted (found by the cluster chaos run: a
    ``control.readopted`` of the newcomer at the old epoch, clients sent to a backup until the
    lease ran out). A new election ends the grant; the next one names its own process."""
    store = MemoryEpochStore()
    a = Arbiter(store)
    a.netlet_started("app", "s/0", "app/s/0#1")
    a.netlet_started("app", "s/1", "app/s/1#1")
    a.bootstrap("app", "s/0")
    assert a.expand("app", 1, "s/1", "app/s/1#1") == (True, 1)
    assert a.state("app").holder_netlet() == "app/s/0#1"
    a.netlet_started("app", "s/0", "app/s/0#2")  # its host refilled the holder's slot
    for state in (a.state("app"), Arbiter(store).state("app")):  # as cached, and as another node loads it
        assert state.holder == "s/0" and state.incarnations["s/0"] == "app/s/0#2"
        assert state.holder_netlet() == "app/s/0#1"
    epoch = a.begin_election("app", ["s/1"])
    assert a.state("app").holder_netlet() is None
    assert a.choose("app", epoch, {"s/1": (1, 5)}) == "s/1"
    assert a.state("app").holder_netlet() == "app/s/1#1"
    # a state saved before grants were recorded: the holder slot's process, as before
    legacy = {"epoch": 3, "holder": "s/1", "isr": ["s/1"], "electing": None, "incarnations": {"s/1": "app/s/1#4"}}
    assert AppState.from_dict(legacy).holder_netlet() == "app/s/1#4"
