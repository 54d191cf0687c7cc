"""Backup rejection rules, the master's commit rule, fencing, exactly-once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlets.replication import (ArbiterRequest, Complete, MasterFenced, Replica, ReplicationConfig,
                                 RoleChanged, Send)
from hosting.election.arbiter import Arbiter, MemoryEpochStore
from netlets.replication import messages as M
from tests.sim import ListNetlet
from tests.sim.arbiter_link import answer as node_answer


def mk(slot, **cfg):
    return Replica(slot, ListNetlet(), None, ReplicationConfig(**cfg), incarnation=slot + "#1")


def sends(r):
    return [e for e in r.effects if isinstance(e, Send)]


def completes(r):
    return {e.token: e.outcome for e in r.effects if isinstance(e, Complete)}


def pump(master, backups, rounds=5):
    """Deliver every Send in order and feed replies back."""
    kept = []
    for _ in range(rounds):
        effs = master.take_effects()
        kept += [e for e in effs if not isinstance(e, Send)]
        for s in (e for e in effs if isinstance(e, Send)):
            reply = backups[s.to].handle(s.msg)
            master.on_reply(s.to, reply, 0.0)
    master.effects[:0] = kept  # leave Completes etc. for the test to inspect


def arbiter_for(members=(), others=()):
    """A real arbiter with ``s/0#1`` the holder at epoch 1 and ISR ``{s/0} | members`` (each
    member's process ``<slot>#1``); ``others``: slots whose process ``<slot>#1`` is recorded too."""
    a = Arbiter(MemoryEpochStore())
    for slot in ("s/0", *members, *others):
        a.netlet_started("app", slot, slot + "#1")
    a.bootstrap("app", "s/0")
    for slot in members:
        assert a.change_isr("app", "expand", 1, slot, a.state("app").isr_version, slot + "#1")["ok"]
    return a


def asked(r):
    """Take the ArbiterRequests out of ``r.effects`` (the rest stays)."""
    reqs = [e for e in r.effects if isinstance(e, ArbiterRequest)]
    r.effects[:] = [e for e in r.effects if not isinstance(e, ArbiterRequest)]
    return reqs


def answer(a, r, req, now):
    """Deliver the node's answer to ``req`` (computed now) to ``r``."""
    r.on_arbiter_reply(req, node_answer(a, "app", r.incarnation, req), now)


def granted(a, m, peers, now=0.0):
    """Make ``m`` master as granted by ``a`` and answer its first request (the sync)."""
    m.become_master(1, a.state("app").isr, peers, now)
    (sync,) = asked(m)
    assert sync.kind == "sync" and sync.version is None
    answer(a, m, sync, now)


def stored_isr_counted(a, m):
    return a.state("app").isr - {"s/0"} <= m.master.counted


def test_append_from_lower_epoch_is_refused_with_promised_epoch():
    b = mk("s/1")
    assert b.prepare(3)["ok"]
    reply = b.handle(M.append(2, "s/0", 1, 0, 0, [M.entry(1, 2, M.CMD, None, "x")], 1))
    assert reply["t"] == M.STALE and reply["epoch"] == 3
    assert b.log.last_seq == 0
    assert not b.prepare(2)["ok"]


def test_backup_applies_only_committed_and_is_idempotent():
    b = mk("s/1")
    msg = M.append(1, "s/0", 1, 0, 0, [M.entry(1, 1, M.CMD, "r1", "a"),
                                       M.entry(2, 1, M.CMD, "r2", "b")], 0)
    assert b.handle(msg)["match_seq"] == 2
    assert b.sm.netlet.items == [] and b.commit_seq == 0
    b.handle(dict(msg, commit_seq=1))  # duplicate delivery carrying a commit index
    assert b.sm.netlet.items == ["a"] and b.log.last_seq == 2
    hb = M.append(1, "s/0", 2, 2, 1, [], 5)  # commit beyond what we hold is capped
    assert b.handle(hb)["commit_seq"] == 2
    assert b.sm.netlet.items == ["a", "b"]


def test_gap_and_conflict_replies():
    b = mk("s/1")
    b.handle(M.append(1, "s/0", 1, 0, 0, [M.entry(i, 1, M.CMD, None, i) for i in (1, 2, 3)], 1))
    gap = b.handle(M.append(1, "s/0", 2, 5, 1, [M.entry(6, 1, M.CMD, None, 6)], 1))
    assert gap["t"] == M.MISMATCH and gap["hint_seq"] == 3  # our tail is this master's
    # a new master (epoch 2) whose log diverges after seq 1
    conflict = b.handle(M.append(2, "s/2", 1, 3, 2, [], 1))
    assert conflict["t"] == M.MISMATCH and conflict["hint_seq"] == 1
    assert b.log.last_seq == 2  # the conflicting entry and what follows were dropped
    ok = b.handle(M.append(2, "s/2", 2, 1, 1, [M.entry(2, 2, M.NOOP, None, None)], 2))
    assert ok["t"] == M.ACK and b.position == (2, 2) and b.commit_seq == 2


def test_malformed_messages_raise_protocol_error():
    b = mk("s/1")
    with pytest.raises(M.MalformedMessage):
        b.handle({"t": "append", "epoch": "x"})
    with pytest.raises(M.MalformedMessage):
        b.handle(M.append(1, "s/0", 1, 0, 0, [M.entry(2, 1, M.CMD, None, 1)], 0))


def test_master_commits_only_when_every_isr_member_holds_it():
    m, b1, b2 = mk("s/0"), mk("s/1"), mk("s/2")
    m.become_master(1, {"s/0", "s/1", "s/2"}, ["s/1", "s/2"], 0.0)
    t = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    out = [e for e in m.take_effects() if isinstance(e, Send)]
    # only b1 answers: no commit
    for s in out:
        if s.to == "s/1":
            m.on_reply("s/1", b1.handle(s.msg), 0.0)
    assert t not in completes(m) and m.commit_seq == 0
    for s in out:
        if s.to == "s/2":
            m.on_reply("s/2", b2.handle(s.msg), 0.0)
    assert completes(m)[t] == {"ok": True, "value": 1}
    pump(m, {"s/1": b1, "s/2": b2})
    m.tick(0.1)
    pump(m, {"s/1": b1, "s/2": b2})
    assert b1.sm.netlet.items == ["x"] == b2.sm.netlet.items


def test_non_isr_backup_does_not_block_and_is_expanded_when_caught_up():
    a = arbiter_for(others=["s/1"])
    m, b1 = mk("s/0"), mk("s/1")
    granted(a, m, ["s/1"])
    t = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    assert completes(m)[t]["ok"]  # ISR = {master}: committed on its own write
    pump(m, {"s/1": b1}, rounds=1)
    (req,) = asked(m)
    assert (req.kind, req.slot, req.incarnation, req.version) == ("expand", "s/1", "s/1#1",
                                                                  a.state("app").isr_version)
    m.take_effects()
    t2 = m.submit("r2", "y", 0.0)  # counted from the request on
    m.flush(0.0)
    assert t2 not in completes(m)
    pump(m, {"s/1": b1})
    assert completes(m)[t2] == {"ok": True, "value": 2} and b1.log.last_seq == 3
    answer(a, m, req, 0.1)
    assert a.state("app").isr == {"s/0", "s/1"} == m.master.isr


def test_shrink_needs_arbiter_and_refusal_fences():
    a = arbiter_for(["s/1"])
    m = mk("s/0", replication_timeout=1.0)
    granted(a, m, ["s/1"])
    t = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    m.take_effects()
    m.tick(0.5)
    assert not asked(m)
    m.tick(1.5)
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("shrink", "s/1")
    assert m.commit_seq == 0  # still counted until the arbiter confirms
    a.begin_election("app", ["s/1"])  # meanwhile the node elects again
    answer(a, m, req, 1.6)  # refused: a newer epoch exists
    effs = m.take_effects()
    assert MasterFenced(2) in effs and completes_of(effs)[t]["error"]["type"] == "NotMaster"
    assert m.role == "fenced" and m.commit_seq == 0
    t2 = m.submit("r2", "y", 2.0)
    assert completes(m)[t2]["error"]["retryable"]


def completes_of(effs):
    return {e.token: e.outcome for e in effs if isinstance(e, Complete)}


def test_confirmed_shrink_lets_commit_proceed():
    a = arbiter_for(["s/1"])
    m = mk("s/0", replication_timeout=1.0)
    granted(a, m, ["s/1"])
    t = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    m.tick(2.0)
    (req,) = asked(m)
    answer(a, m, req, 2.0)
    assert completes(m)[t]["ok"] and a.state("app").isr == {"s/0"}


def test_stale_master_is_fenced_by_backup_reply():
    old, b = mk("s/0"), mk("s/1")
    old.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    old.take_effects()
    assert b.prepare(2)["ok"]  # the arbiter elected someone else meanwhile
    t = old.submit("r1", "x", 0.0)
    old.flush(0.0)
    for s in sends(old):
        old.on_reply("s/1", b.handle(s.msg), 0.0)
    effs = old.take_effects()
    assert MasterFenced(2) in effs
    assert not completes_of(effs)[t]["ok"] and old.role == "fenced"
    assert not old.can_serve_linearizable(0.0)


def test_a_fenced_master_acts_on_nothing_more_and_follows_the_new_master():
    """Stepping down drops the master role: what reaches the former master afterwards (late
    replies, timers, arbiter answers, new peers, a runner's fence) sends, asks, commits and
    promises nothing; the new master's first append makes it that master's backup."""
    old, b = mk("s/0"), mk("s/1")
    old.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    barrier = sends(old)[0]
    (sync,) = asked(old)
    old.take_effects()
    assert b.prepare(2)["ok"]
    old.on_reply("s/1", b.handle(barrier.msg), 0.0)
    assert MasterFenced(2) in old.take_effects() and old.role == "fenced" and old.master is None
    old.on_reply("s/1", M.ack(1, "s/1", "s/1#1", barrier.msg["bid"], 1, 1), 0.1)
    old.on_send_failed("s/1", 0.2)
    old.on_arbiter_reply(sync, {"retry": "late"}, 0.3)
    old.on_arbiter_failed(sync, 0.4)
    old.set_peers(["s/1", "s/2"], 0.5)
    old.tick(5.0)
    old.flush(5.0)
    old.fence(3)
    assert old.take_effects() == [] and old.commit_seq == 0 and old.promised_epoch == 2
    reply = old.handle(M.append(2, "s/1", 1, 0, 0, [], 0))
    assert reply["t"] == M.ACK and old.role == "backup"
    assert old.take_effects() == [RoleChanged("backup", 2, "s/1")]


def test_exactly_once_dedup_and_waiting_on_inherited_tail():
    m, b = mk("s/0"), mk("s/1")
    m.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    t1 = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    # deliver the append but lose the ack: the entry is on b, uncommitted
    for s in sends(m):
        b.handle(s.msg)
    m.take_effects()
    # failover: b becomes master, inherits the uncommitted tail
    assert b.prepare(2)["ok"]
    b.become_master(2, {"s/1"}, ["s/0"], 1.0)
    t2 = b.submit("r1", "x", 1.0)  # the client's retry waits for the inherited entry
    assert b.log.last_seq == 3  # r1 (seq 2) + barrier (seq 3): not appended twice
    b.flush(1.0)
    assert completes(b)[t2] == {"ok": True, "value": 1}
    t3 = b.submit("r1", "x", 1.0)  # committed: recorded result
    assert completes(b)[t3] == {"ok": True, "value": 1}
    assert b.sm.netlet.items == ["x"]
    assert t1 not in completes(m)  # the old master never acknowledged it


def test_apply_exception_is_the_callers_result():
    m = mk("s/0")
    m.become_master(1, {"s/0"}, [], 0.0)
    t = m.submit("r1", "boom", 0.0)
    m.flush(0.0)
    out = completes(m)[t]
    assert out["ok"] is False and out["error"]["type"] == "ValueError"
    t2 = m.submit("r1", "boom", 0.0)
    assert completes(m)[t2] == out


def test_linearizable_needs_barrier_commit_and_lease():
    m, b = mk("s/0"), mk("s/1")
    m.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    m.lease_valid_until = 10.0
    assert not m.can_serve_linearizable(0.0)  # barrier not committed yet
    pump(m, {"s/1": b})
    assert m.can_serve_linearizable(1.0)
    assert not m.can_serve_linearizable(10.0)
    assert not b.can_serve_linearizable(1.0)


def test_async_policy_commits_on_own_write():
    m = mk("s/0", ack="async")
    m.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    t = m.submit("r1", "x", 0.0)
    m.flush(0.0)
    assert completes(m)[t]["ok"]
    with pytest.raises(ValueError):
        ReplicationConfig(ack="quorum")


def test_restarted_backup_incarnation_resets_match():
    m, b = mk("s/0"), mk("s/1")
    m.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    pump(m, {"s/1": b})
    m.submit("r1", "x", 0.0)
    m.flush(0.0)
    pump(m, {"s/1": b})
    assert m.master.peers["s/1"].match_seq == 2
    fresh = Replica("s/1", ListNetlet(), None, ReplicationConfig(), incarnation="s/1#2", min_epoch=1)
    t = m.submit("r2", "y", 0.0)
    m.flush(0.0)
    pump(m, {"s/1": fresh}, rounds=1)
    assert m.master.peers["s/1"].match_seq <= 3 and m.master.peers["s/1"].inc == "s/1#2"
    assert t not in completes(m)  # the old process's acks no longer count
    m.tick(1.0)
    pump(m, {"s/1": fresh}, rounds=6)
    assert completes(m)[t] == {"ok": True, "value": 2}
    assert fresh.log.last_seq == 3



def test_a_counted_backup_replaced_before_it_lags_is_shrunk_then_expanded_as_its_new_process():
    """The arbiter takes a slot out of the ISR when a new process starts in it (``netlet_started``).
    A replacement that answers before the old one was missed long enough to be shrunk for lag
    (found by the cluster chaos run: a slot re-placed on another node and caught up within
    the replication timeout) must not stay counted by the master and out of the arbiter's ISR
    for good: the master asks to shrink it (refused: the version moved on; the answer's set
    lacks it), then to expand it as the new incarnation."""
    a = arbiter_for(["s/1"])
    m, b = mk("s/0", replication_timeout=1.0), mk("s/1")
    granted(a, m, ["s/1"])
    m.submit("r1", "x", 0.0)
    m.flush(0.0)
    pump(m, {"s/1": b})
    m.take_effects()
    fresh = Replica("s/1", ListNetlet(), None, ReplicationConfig(), incarnation="s/1#2", min_epoch=1)
    a.netlet_started("app", "s/1", "s/1#2")
    t = m.submit("r2", "y", 0.1)
    m.flush(0.1)
    pump(m, {"s/1": fresh}, rounds=6)  # caught up at once: never lagging past the timeout
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("shrink", "s/1")
    assert completes(m)[t] == {"ok": True, "value": 2}  # still counted until the arbiter answers: safe
    m.take_effects()
    answer(a, m, req, 0.2)
    assert m.master.isr == {"s/0"}  # the answer's set: s/1 left it when its new process started
    (req,) = asked(m)
    assert (req.kind, req.slot, req.incarnation) == ("expand", "s/1", "s/1#2")
    answer(a, m, req, 0.3)
    assert m.master.isr == {"s/0", "s/1"} == a.state("app").isr and m.master.counted == {"s/1"}
    m.tick(0.4)  # nothing more to ask
    assert not asked(m)


def test_lagging_backup_gets_snapshot_after_compaction():
    m = mk("s/0", snapshot_every=2)
    m.become_master(1, {"s/0"}, ["s/1"], 0.0)
    m.take_effects()
    m.master.peers.clear()  # s/1 is away while the master compacts
    for i in range(5):
        m.submit(f"r{i}", f"v{i}", 0.0)
    m.flush(0.0)
    assert m.log.base_seq >= 4
    b = mk("s/1")
    m.set_peers(["s/1"], 0.0)
    pump(m, {"s/1": b}, rounds=8)
    m.tick(1.0)
    pump(m, {"s/1": b}, rounds=8)
    assert b.sm.netlet.items == [f"v{i}" for i in range(5)]
    assert "r3" in b.sm.dedup


def test_arbiter_requests_whose_answer_never_came_are_asked_again_after_the_timeout():
    """A shrink (of a backup that left) and an expand (of one that caught up) whose answers are
    lost — the node or the owner unreachable — are asked again once ``replication_timeout`` has
    passed, not before, and not forever: without that a departed counted backup would stall
    every commit for good."""
    a = arbiter_for(["s/1"])
    m, b = mk("s/0", replication_timeout=1.0), mk("s/1")
    granted(a, m, ["s/1"])
    m.take_effects()
    m.set_peers([], 0.1)  # s/1 left: shrink it
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("shrink", "s/1")
    t = m.submit("r1", "x", 0.1)
    m.flush(0.1)
    m.on_arbiter_failed(req, 0.2)
    m.tick(0.5)
    assert not asked(m)  # not before the timeout
    assert t not in completes(m)  # still counted: commits wait (conservative)
    m.tick(1.3)
    (again,) = asked(m)
    assert (again.kind, again.slot, again.version) == ("shrink", "s/1", req.version) and again != req
    answer(a, m, req, 1.35)  # a late answer to the request given up on: ignored
    assert t not in completes(m)
    answer(a, m, again, 1.4)
    assert completes(m)[t] == {"ok": True, "value": 1}
    # s/1 back and caught up: the expand's answer is lost too
    m.set_peers(["s/1"], 1.5)
    pump(m, {"s/1": b}, rounds=6)
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("expand", "s/1")
    m.on_arbiter_failed(req, 1.6)
    m.tick(2.0)
    assert not asked(m)
    m.tick(2.7)
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("expand", "s/1")
    answer(a, m, req, 2.8)
    m.tick(4.0)
    assert not asked(m) and m.master.isr == {"s/0", "s/1"} == a.state("app").isr


def test_finding1_expand_and_shrink_of_one_backup_decided_in_either_order_keep_it_counted():
    """Issue 13, finding 1: expand B is sent and delayed (its runner gives up), B stalls, the
    master asks to shrink B, and the arbiter decides the shrink first and the late expand
    second. Before, the master stopped counting B on the shrink's "ok" and acknowledged writes B
    lacked while the arbiter's set held B. Now both requests name the version they were computed
    from, so the second one is refused; and in the other order the shrink's refusal tells the
    master B is a member. Every stored member stays counted throughout."""
    for shrink_first in (True, False):
        a = arbiter_for(others=["s/1"])
        m, b = mk("s/0", replication_timeout=1.0), mk("s/1")
        granted(a, m, ["s/1"])
        pump(m, {"s/1": b})
        (expand,) = asked(m)
        assert expand.kind == "expand"
        m.on_arbiter_failed(expand, 0.1)  # the runner timed out; the request is still on its way
        t = m.submit("r1", "x", 0.2)  # B stalls: nothing delivered to it from now on
        m.flush(0.2)
        m.take_effects()
        m.tick(1.5)
        (shrink,) = asked(m)
        assert shrink.kind == "shrink" and shrink.version == expand.version
        first, second = (shrink, expand) if shrink_first else (expand, shrink)
        answers = {req: node_answer(a, "app", m.incarnation, req) for req in (first, second)}
        assert answers[first]["ok"] and not answers[second]["ok"]  # the second is stale
        assert stored_isr_counted(a, m)
        m.on_arbiter_reply(expand, answers[expand], 1.6)  # the late expand's answer: not awaited
        m.on_arbiter_reply(shrink, answers[shrink], 1.6)
        assert stored_isr_counted(a, m)
        if shrink_first:
            assert a.state("app").isr == {"s/0"} and completes(m)[t]["ok"]
        else:  # B is a member: still counted, the write waits; the master asks again
            assert a.state("app").isr == {"s/0", "s/1"} and t not in completes(m)
            m.tick(1.7)
            (shrink,) = asked(m)
            answer(a, m, shrink, 1.7)
            assert a.state("app").isr == {"s/0"} and completes(m)[t]["ok"]


def test_finding6_a_restarted_backup_whose_shrink_got_no_answer_is_asked_again():
    """Issue 13, finding 6: a backup restarts, the master's one shrink request for it gets no
    answer, and the master never asked again (only departed or unconfirmed slots were retried),
    so the slot stayed out of the arbiter's set for the rest of the term."""
    a = arbiter_for(["s/1"])
    m, b = mk("s/0", replication_timeout=1.0), mk("s/1")
    granted(a, m, ["s/1"])
    pump(m, {"s/1": b})
    fresh = Replica("s/1", ListNetlet(), None, ReplicationConfig(), incarnation="s/1#2", min_epoch=1)
    a.netlet_started("app", "s/1", "s/1#2")
    m.submit("r1", "x", 0.1)
    m.flush(0.1)
    pump(m, {"s/1": fresh})
    (req,) = asked(m)
    assert (req.kind, req.slot) == ("shrink", "s/1")
    m.on_arbiter_failed(req, 0.2)
    for now in (0.5, 1.0, 1.5, 2.0, 2.5):
        m.tick(now)
        pump(m, {"s/1": fresh})
        for req in asked(m):
            answer(a, m, req, now)
    assert a.state("app").isr == {"s/0", "s/1"} and a.state("app").incarnations["s/1"] == "s/1#2"
    assert m.master.counted == {"s/1"}


def test_finding6_a_first_reply_from_a_new_process_is_seen_as_restarted():
    """Issue 13, finding 6: the master was granted an ISR holding s/1 whose process restarted
    before the master heard from it: the first reply already comes from the new process. It
    must be compared with the process the arbiter recorded, not taken as the one counted — or
    the slot stays counted here and out of the arbiter's set for good."""
    a = arbiter_for(["s/1"])
    m = mk("s/0", replication_timeout=1.0)
    granted(a, m, ["s/1"])  # the sync answer says s/1 is a member as s/1#1
    fresh = Replica("s/1", ListNetlet(), None, ReplicationConfig(), incarnation="s/1#2", min_epoch=1)
    a.netlet_started("app", "s/1", "s/1#2")
    assert a.state("app").isr == {"s/0"}
    for now in (0.1, 0.2, 0.3, 0.4):
        m.tick(now)
        pump(m, {"s/1": fresh})
        for req in asked(m):
            answer(a, m, req, now)
    assert a.state("app").isr == {"s/0", "s/1"} and a.state("app").incarnations["s/1"] == "s/1#2"
    assert m.master.counted == {"s/1"} and stored_isr_counted(a, m)


def test_f4_a_refused_expand_is_not_asked_again_before_a_backoff_and_writes_nothing():
    """Issue 13 follow-up F4 (the attack review's reproduction): the arbiter records a newer
    process for a slot than the one answering the master (the old one still replies after the
    node replaced it). Each refused expand stepped the version and saved the state, and the
    master adopted the answer and asked again at once: 200 stored decisions at one instant.
    Now the refusal changes nothing and the same expand waits a doubling backoff; the same
    process is never counted out of the arbiter's set (finding 1's invariant holds)."""
    a = arbiter_for(others=("s/1",))
    m, b = mk("s/0", replication_timeout=1.0), mk("s/1")  # b is process s/1#1
    granted(a, m, ["s/1"])
    pump(m, {"s/1": b})  # b catches up: the master wants to expand it as s/1#1
    a.netlet_started("app", "s/1", "s/1#2")  # the node started a new process in s/1
    v0 = a.state("app").isr_version
    asks = []
    now = 0.0
    while now < 20.0:
        for req in asked(m):
            assert (req.kind, req.incarnation) in (("expand", "s/1#1"), ("shrink", "s/1#1"), ("sync", None))
            asks.append((now, req.kind))
            answer(a, m, req, now)
            assert stored_isr_counted(a, m)
        now = round(now + 0.01, 2)
        m.tick(now)
        pump(m, {"s/1": b}, rounds=1)
    expands = [t for t, kind in asks if kind == "expand"]
    # one stale refusal (s/1#2 started: the version moved) resyncs; then refusals at the
    # master's version, asked again after 1/8, 1/4, 1/2 ... of the timeout, capped at 8 timeouts
    assert 4 <= len(expands) <= 10, asks
    gaps = [b - a for a, b in zip(expands[1:], expands[2:])]
    assert all(later >= earlier for earlier, later in zip(gaps, gaps[1:])) and max(gaps) <= 8.0 + 0.02, gaps
    assert a.state("app").isr_version - v0 <= 1  # at most the resync; no refusal stepped it
    fresh = Replica("s/1", ListNetlet(), None, ReplicationConfig(), incarnation="s/1#2", min_epoch=1)
    m.submit("r1", "x", now)  # traffic: the new process answers (a different change, asked at once)
    for step in range(1, 40):
        m.tick(now + step * 0.01)
        pump(m, {"s/1": fresh})
        for req in asked(m):
            answer(a, m, req, now + step * 0.01)
    assert a.state("app").isr == {"s/0", "s/1"} and a.state("app").incarnations["s/1"] == "s/1#2"
    assert m.master.counted == {"s/1"}


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)


@given(st.dictionaries(st.sampled_from(["ok", "epoch", "version", "isr", "retry", "x"]), _json, max_size=6) | _json)
def test_a_malformed_arbiter_answer_is_a_protocol_error_and_never_moves_the_master(answer):
    """``validate_isr_answer`` raises only MalformedMessage on anything msgpack can carry, and the
    master treats a malformed answer as no answer."""
    a = arbiter_for(["s/1"])
    m = mk("s/0")
    m.become_master(1, a.state("app").isr, ["s/1"], 0.0)
    (sync,) = asked(m)
    try:
        M.validate_isr_answer(answer)
        valid = True
    except M.MalformedMessage:
        valid = False
    before = (m.master.isr_version, set(m.master.counted))
    m.on_arbiter_reply(sync, answer, 0.1)
    if not valid:  # treated as no answer: asked again later, nothing adopted
        assert (m.master.isr_version, m.master.counted) == before and m.master.outstanding is None


def test_a_master_knows_recorded_and_in_flight_request_ids_even_from_an_earlier_term():
    """S6: the runner asks ``knows_request`` before running a ``@command`` method again; a known
    id is submitted with no command and gets the original's outcome, whether it is recorded,
    in flight in this term, or in flight in the log a new master inherited."""
    m, b = mk("s/0"), mk("s/1")
    m.become_master(1, {"s/0", "s/1"}, ["s/1"], 0.0)
    assert not m.knows_request("r1") and not m.knows_request(None)
    m.submit("r1", "x", 0.0)
    m.flush(0.0)
    assert m.knows_request("r1")  # in flight in this term
    for s in sends(m):
        b.handle(s.msg)  # b holds it, its ack is lost: uncommitted
    m.take_effects()
    assert not b.knows_request("r1")  # a backup knows nothing (it answers NotMaster)
    assert b.prepare(2)["ok"]
    b.become_master(2, {"s/1"}, ["s/0"], 1.0)
    assert b.knows_request("r1")  # in flight from the earlier term
    joined = b.submit("r1", None, 1.0)
    b.flush(1.0)
    assert completes(b)[joined] == {"ok": True, "value": 1}
    assert b.knows_request("r1")  # recorded
    again = b.submit("r1", None, 1.0)
    assert completes(b)[again] == {"ok": True, "value": 1}
    assert b.sm.netlet.items == ["x"]
