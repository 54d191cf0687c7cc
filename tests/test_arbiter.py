"""The election arbiter: persisted epochs, best-position choice, fenced ISR changes."""

from __future__ import annotations

import pytest

from hosting.election.arbiter import (AppState, Arbiter, MemoryEpochStore, StaleEpoch, StoreUnavailable,
                             best_position)


def change(a, kind, epoch, slot, incarnation=None, app="app"):
    """``change_isr`` at the current version: ``(ok, epoch)``."""
    answer = a.change_isr(app, kind, epoch, slot, a.state(app).isr_version, incarnation)
    return answer["ok"], answer["epoch"]


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
    ok, _ = change(a, "expand", 1, "s/1", "n1")
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
    assert change(a, "expand", 1, "s/1", "n1") == (True, 1)
    assert change(a, "shrink", 1, "s/0") == (False, 1)  # never the holder
    e = a.begin_election("app", ["s/1"])
    assert change(a, "shrink", 1, "s/1") == (False, e)  # during an election: stale
    a.choose("app", e, {"s/1": (1, 2)})
    assert change(a, "shrink", 1, "s/2") == (False, 2)  # the old master is fenced
    assert change(a, "expand", 1, "s/2", "n2") == (False, 2)
    assert change(a, "shrink", 2, "s/2") == (True, 2)
    assert change(a, "expand", 2, "s/2") == (False, 2)  # an expand names the process it counted


def test_died_and_restarted_slots_leave_isr_and_stale_incarnation_refused():
    a = Arbiter(MemoryEpochStore())
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    assert change(a, "expand", 1, "s/1", "n1") == (True, 1)
    a.netlet_died("app", "s/1")
    assert "s/1" not in a.state("app").isr
    a.netlet_started("app", "s/1", "n2")
    assert change(a, "expand", 1, "s/1", "n1") == (False, 1)  # acks of the dead process
    assert change(a, "expand", 1, "s/1", "n2") == (True, 1)
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
    assert change(a, "expand", 1, "s/1", "app/s/1#1") == (True, 1)
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


def test_isr_version_advances_with_every_change_and_applied_request():
    a = Arbiter(MemoryEpochStore())
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    seen = [a.state("app").isr_version]

    def advanced():
        seen.append(a.state("app").isr_version)
        return seen[-1] > seen[-2]

    assert change(a, "expand", 1, "s/1", "n1") == (True, 1) and advanced()
    assert change(a, "expand", 1, "s/1", "n1") == (True, 1) and advanced()  # a no-op is decided too
    a.netlet_died("app", "s/1")
    assert advanced()
    a.netlet_started("app", "s/1", "n2")
    assert advanced()
    e = a.begin_election("app", [])
    assert advanced()
    a.choose("app", e, {"s/0": (1, 1)}, warm=["s/0"])
    assert advanced()
    assert Arbiter(a.store).state("app").isr_version == seen[-1]  # persisted


class CountingSaves(MemoryEpochStore):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, app: str, state: dict, owner_only: bool = False) -> None:
        self.saves += 1
        super().save(app, state, owner_only)


@pytest.mark.parametrize("kind, slot, incarnation", [("shrink", "s/0", None),  # the holder
                                                     ("expand", "s/1", "n1"),  # n2 is recorded
                                                     ("expand", "s/1", None)])
def test_f4_a_refused_request_changes_nothing_no_version_step_no_save(kind, slot, incarnation):
    """Issue 13 follow-up F4: each refusal stepped the version and saved the state, so a master
    re-asking a refused expand drove the store and the version in a loop. A refusal changes
    nothing; asked again at the same version it is refused again (the state at a version is
    fixed), so it still takes effect at most once."""
    store = CountingSaves()
    a = Arbiter(store)
    a.netlet_started("app", "s/1", "n2")
    a.bootstrap("app", "s/0")
    before, saves = a.state("app"), store.saves
    for _ in range(3):
        answer = a.change_isr("app", kind, 1, slot, before.isr_version, incarnation)
        assert answer == before.isr_answer(False)
    assert store.saves == saves and a.state("app").to_dict() == before.to_dict()
    assert a.change_isr("app", "expand", 1, "s/1", before.isr_version, "n2")["version"] == before.isr_version + 1


def test_finding1_a_delayed_expand_is_refused_after_the_shrink_computed_from_the_same_version():
    """Issue 13, finding 1: expand B is sent and delayed; the master, not hearing back, asks to
    shrink B; the arbiter applies the shrink, then the late expand. The master believed B out
    (and acked writes B lacks) while the stored set held B — B could be elected without them.
    Both requests name the version they were computed from: the one decided second is refused,
    and its answer tells the master the set it must count."""
    a = Arbiter(MemoryEpochStore())
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    v = a.state("app").isr_version
    shrink = a.change_isr("app", "shrink", 1, "s/1", v)
    assert shrink["ok"] and shrink["isr"] == {"s/0": None} and shrink["version"] > v
    late = a.change_isr("app", "expand", 1, "s/1", v, "n1")  # the delayed expand arrives
    assert not late["ok"] and late["version"] == shrink["version"] and "s/1" not in late["isr"]
    assert a.state("app").isr == {"s/0"}
    # the other order: expand decided first, the shrink refused with a set that still holds s/1
    v = a.state("app").isr_version
    assert a.change_isr("app", "expand", 1, "s/1", v, "n1")["ok"]
    refused = a.change_isr("app", "shrink", 1, "s/1", v)
    assert not refused["ok"] and refused["isr"] == {"s/0": None, "s/1": "n1"}
    assert a.change_isr("app", "shrink", 1, "s/1", refused["version"])["ok"]  # resynced: decided
    assert a.state("app").isr == {"s/0"}


class FailingSaves(MemoryEpochStore):
    """A store whose next ``fail`` saves raise ``error`` without writing anything."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error, self.fail = error, 0

    def save(self, app, state, owner_only=False):
        if self.fail:
            self.fail -= 1
            raise self.error
        super().save(app, state, owner_only)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), TimeoutError("etcd timed out")])
def test_finding2_a_failed_save_is_not_answered_ok_from_the_cache(error):
    """Issue 13, finding 2: a save that fails (disk full, an etcd timeout) left the shrink in
    memory only; the master's retry was answered "ok" from the cache while the stored set still
    held the slot. Now the caller gets a retryable error, the cache is dropped, and the retry is
    decided on the stored state and saved."""
    store = FailingSaves(error)
    a = Arbiter(store)
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    assert change(a, "expand", 1, "s/1", "n1") == (True, 1)
    store.fail = 1
    with pytest.raises(StoreUnavailable):
        change(a, "shrink", 1, "s/1")
    assert a.state("app").isr == {"s/0", "s/1"} == set(store.load("app")["isr"])  # nothing changed
    assert change(a, "shrink", 1, "s/1") == (True, 1)
    assert set(store.load("app")["isr"]) == {"s/0"}
    store.fail = 1  # a process start recorded by the node fails the same way
    with pytest.raises(StoreUnavailable):
        a.netlet_started("app", "s/1", "n2")
    assert a.state("app").incarnations["s/1"] == "n1"


def test_finding2_a_locked_registry_database_is_a_retryable_error(tmp_path):
    """The same with the node's real store: SQLite "database is locked" (another connection holds
    the write lock). The failure happens on another thread (as on the node, an RPC thread): the
    registry must not keep its own lock after a transaction that could not begin."""
    import sqlite3
    import threading

    from hosting.registry import Registry, RegistryEpochStore

    registry = Registry(tmp_path / "registry.db")
    registry._db.execute("PRAGMA busy_timeout=50")  # fail fast instead of waiting 5 s
    a = Arbiter(RegistryEpochStore(registry))
    a.netlet_started("app", "s/1", "n1")
    a.bootstrap("app", "s/0")
    assert change(a, "expand", 1, "s/1", "n1") == (True, 1)
    locker = sqlite3.connect(str(tmp_path / "registry.db"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    errors = []

    def shrink():
        try:
            change(a, "shrink", 1, "s/1")
        except Exception as err:
            errors.append(err)

    try:
        worker = threading.Thread(target=shrink)
        worker.start()
        worker.join(timeout=10)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert [type(e) for e in errors] == [StoreUnavailable]
    answers = []
    retry = threading.Thread(target=lambda: answers.append(change(a, "shrink", 1, "s/1")), daemon=True)
    retry.start()
    retry.join(timeout=10)
    assert answers == [(True, 1)], "the registry stayed locked after the failed transaction"
    assert set(registry.load_arbiter_state("app")["isr"]) == {"s/0"}


def test_the_trusted_set_is_recorded_when_the_holder_is_revoked_and_kept_until_the_next_grant():
    """Issue 13 finding 7 follow-up F1: the warm-start proof's trusted set lived only in the electing
    node's memory, so a node restart or an owner change mid-election lost it."""
    store = MemoryEpochStore()
    a = Arbiter(store)
    assert a.state("app").last_trusted() == {}  # never elected: nothing acknowledged
    for s in ("s/0", "s/1", "s/2"):
        a.netlet_started("app", s, s + "#1")
    a.bootstrap("app", "s/0")
    assert a.change_isr("app", "expand", 1, "s/1", a.state("app").isr_version, "s/1#1")["ok"]
    a.netlet_started("app", "s/0", "s/0#2")  # a newer process in the holder's slot is not the holder
    assert a.state("app").last_trusted() == {"s/0": "s/0#1", "s/1": "s/1#1"}
    a.begin_election("app", ["s/0", "s/1", "s/2"])
    a.netlet_started("app", "s/1", "s/1#2")
    a.begin_election("app", ["s/0", "s/1", "s/2"])  # a second attempt keeps it
    restarted = Arbiter(store)  # another node, or this one restarted: the stored state says it
    assert restarted.state("app").holder is None
    assert restarted.state("app").last_trusted() == {"s/0": "s/0#1", "s/1": "s/1#1"}
    e = restarted.begin_election("app", ["s/0", "s/1", "s/2"])
    assert restarted.choose("app", e, {s: (1, 1) for s in ("s/0", "s/1", "s/2")},
                            warm=("s/0", "s/1", "s/2")) == "s/0"
    assert Arbiter(store).state("app").trusted is None
    assert Arbiter(store).state("app").last_trusted() == {"s/0": "s/0#2"}


def test_state_saved_before_the_trusted_set_was_recorded_reads_as_unknown():
    old = {"epoch": 3, "holder": None, "isr": [], "electing": 3, "incarnations": {"s/0": "s/0#1"}}
    assert AppState.from_dict(old).last_trusted() is None  # elected once (epoch > 0), set unknown
    assert AppState.from_dict(dict(old, epoch=0)).last_trusted() == {}
