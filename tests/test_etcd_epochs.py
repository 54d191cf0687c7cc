"""Arbiters of two nodes sharing an app's state in etcd: epochs are never handed out twice,
and a decision made on a stale read is refused (StoreConflict) instead of saved."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings, strategies as st

from hosting.election.arbiter import Arbiter, StaleEpoch, StoreConflict
from hosting.cluster.etcd import Etcd
from hosting.cluster.epochs import EtcdEpochStore

from testkit.etcd import unique_prefix
from test_etcd import wait_for


def two_nodes(etcd):
    stores = [EtcdEpochStore(etcd), EtcdEpochStore(Etcd(etcd.url, etcd.prefix))]
    return [Arbiter(s) for s in stores], stores


@pytest.fixture
def arbiters(etcd):
    arbs, stores = two_nodes(etcd)
    yield arbs
    for s in stores:
        s.close()


def test_a_save_on_a_stale_read_is_a_conflict_and_changes_nothing(etcd):
    one, two = EtcdEpochStore(etcd), EtcdEpochStore(etcd)
    try:
        assert one.load("kv") is None and two.load("kv") is None
        one.save("kv", {"epoch": 1, "holder": None, "isr": []})
        with pytest.raises(StoreConflict, match="changed by another node"):
            two.save("kv", {"epoch": 1, "holder": "evil", "isr": []})
        assert two.load("kv")["holder"] is None
        two.save("kv", {"epoch": 2, "holder": "s/0", "isr": ["s/0"]})
        assert one.load("kv")["epoch"] == 2
    finally:
        one.close()
        two.close()


def test_an_election_decided_on_a_stale_read_is_refused(arbiters):
    a, b = arbiters
    e1 = a.begin_election("kv", ["x/0", "x/1"])
    e2 = b.begin_election("kv", ["x/0", "x/1"])  # b reads a's epoch from etcd first
    assert e2 == e1 + 1
    with pytest.raises((StoreConflict, StaleEpoch)):  # by the CAS, or by the watch if it came first
        a.choose("kv", e1, {"x/0": (0, 0)}, warm=["x/0"])
    with pytest.raises(StaleEpoch):  # a reloaded: its election is over
        a.choose("kv", e1, {"x/0": (0, 0)}, warm=["x/0"])
    assert b.choose("kv", e2, {"x/1": (0, 0)}, warm=["x/1"]) == "x/1"
    wait_for(lambda: a.state("kv").holder == "x/1")  # b's change reaches a's cache by the watch
    assert a.state("kv").epoch == e2


def test_concurrent_elections_on_two_nodes_never_share_an_epoch(arbiters):
    handed_out: list[int] = []
    lock = threading.Lock()

    def elect(arbiter, n):
        for _ in range(n):
            while True:
                try:
                    epoch = arbiter.begin_election("kv")
                except StoreConflict:
                    continue
                with lock:
                    handed_out.append(epoch)
                break

    threads = [threading.Thread(target=elect, args=(arb, 15)) for arb in arbiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(handed_out) == len(set(handed_out)) == 30
    wait_for(lambda: arbiters[0].state("kv").epoch == max(handed_out))  # its cache catches up by the watch


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["begin", "choose", "shrink", "expand", "reload"]),
                          st.sampled_from(["s/0", "s/1", "s/2"])), max_size=25))
def test_any_interleaving_of_two_arbiters_keeps_epochs_unique_and_one_holder_per_epoch(etcd_url, steps):
    etcd = Etcd(etcd_url, unique_prefix())
    arbiters, stores = two_nodes(etcd)
    try:
        check_interleaving(etcd, arbiters, steps)
    finally:
        for s in stores:
            s.close()


def check_interleaving(etcd, arbiters, steps):
    granted: dict[int, str] = {}
    begun: set[int] = set()
    for who, op, slot in steps:
        arb = arbiters[who]
        try:
            if op == "begin":
                epoch = arb.begin_election("app")
                assert epoch not in begun
                begun.add(epoch)
            elif op == "choose":
                s = arb.state("app")
                if s.electing is not None:
                    winner = arb.choose("app", s.electing, {slot: (1, 1)}, warm=[slot])
                    assert granted.setdefault(s.electing, winner) == winner
            elif op in ("shrink", "expand"):
                s = arb.state("app")
                arb.change_isr("app", op, s.epoch, slot, s.isr_version, slot + "#1")
            else:
                arb.forget("app")
        except (StoreConflict, StaleEpoch):
            pass
    final = EtcdEpochStore(etcd).load("app")
    if final is not None:
        assert final["epoch"] == (max(begun) if begun else 0)
        if final["holder"] is not None:
            assert granted[final["epoch"]] == final["holder"]


def test_only_the_owner_may_change_elections_while_any_node_records_processes(etcd):
    """Owner-only changes carry "the owner key is held under my lease" in their transaction:
    a node that lost ownership changes nothing, however stale its view."""
    from hosting.election.arbiter import OwnershipLost

    owner_lease, _ = etcd.grant(30)
    other_lease, _ = etcd.grant(30)
    etcd.put("apps/kv/owner", "n1", lease=owner_lease)
    owner_store = EtcdEpochStore(etcd, owner_lease=lambda: owner_lease)
    other_store = EtcdEpochStore(Etcd(etcd.url, etcd.prefix), owner_lease=lambda: other_lease)
    owner, other = Arbiter(owner_store), Arbiter(other_store)
    try:
        epoch = owner.begin_election("kv")
        assert owner.choose("kv", epoch, {"s/0": (0, 0)}, warm=["s/0"]) == "s/0"
        with pytest.raises(OwnershipLost):
            other.begin_election("kv")
        with pytest.raises(OwnershipLost):
            other.change_isr("kv", "expand", epoch, "s/1", other.state("kv").isr_version, "kv/s/1#1")
        other.netlet_started("kv", "s/1", "kv/s/1#2")  # a host records its new process
        wait_for(lambda: owner.state("kv").incarnations.get("s/1") == "kv/s/1#2")
        etcd.revoke(owner_lease)  # the owner's lease lapses (paused, cut off)
        with pytest.raises(OwnershipLost):
            owner.begin_election("kv")
        assert EtcdEpochStore(etcd).load("kv")["epoch"] == epoch  # nothing moved
    finally:
        owner_store.close()
        other_store.close()
