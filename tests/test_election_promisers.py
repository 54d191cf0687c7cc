"""The second safety review of the election (after issue 13's fixes), its findings F1-F3, F5.

F1/F2: ``Arbiter.choose`` granted the slot's *current* process, not the one that promised. A
warm-start winner replaced between its promise and the choice (its disk lost, the node restarted
it) was granted to its replacement; the promote went to the dead promiser (outcome unknown); at
the next warm start the warm-start proof trusted the granted replacement's empty, unproven
storage (``unused_grant``) and elected a replica lacking acknowledged writes. Now a promise of a
process the slot no longer runs is void and the grant names the promiser.
F3: a warm start whose trusted slot's prepare failed once was blocked for good (the refusal was
evaluated before every slot answered; every slot being live, no readiness event came to
re-evaluate it). Now the attempt is retried.
F5: a warm start whose promotion's outcome was unknown left ``warming`` set, so the next warm
start, however much later, restarted no slot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hosting.election.arbiter import Arbiter, MemoryEpochStore
from hosting.election.core import (Began, Blocked, Chosen, ElectionCore, ElectionRunner, Facts, Gathered,
                                   Promised, Promoted, Requested, Retry, WarmStart)
from tests.sim.cluster import APP, Cluster, InvariantError, SimElectionHost


def test_a_promise_of_a_replaced_process_is_void_and_the_grant_names_the_promiser():
    a = Arbiter(MemoryEpochStore())
    for s in ("s/0", "s/1"):
        a.netlet_started("app", s, f"app/{s}#1")
    e = a.begin_election("app", ["s/0", "s/1"])
    promisers = {"s/0": "app/s/0#1", "s/1": "app/s/1#1"}
    a.netlet_started("app", "s/0", "app/s/0#2")  # s/0 replaced after it promised
    assert a.choose("app", e, {"s/0": (1, 9), "s/1": (1, 3)}, warm=["s/0", "s/1"], promisers=promisers) is None
    assert a.choose("app", e, {"s/0": (1, 9), "s/1": (1, 3)}, promisers=promisers) in ("s/1", None)
    e2 = a.begin_election("app", ["s/0", "s/1"])
    assert a.choose("app", e2, {"s/0": (1, 9), "s/1": (1, 3)}, warm=["s/0", "s/1"],
                    promisers={"s/0": "app/s/0#2", "s/1": "app/s/1#1"}) == "s/0"
    assert a.state("app").granted == "app/s/0#2"


class ReplacingHost(SimElectionHost):
    """After s/0 promised in the armed warm start, s/0's disk is lost and the node restarts it;
    the promote then goes to the dead promiser."""

    armed = False

    def prepare(self, action, reply):
        if self.armed and action.slot == "s/2":
            self.armed = False
            self.c.wipe("s/0")
            self.c.start("s/0")
            self.c.lost_promotes.append("before")
        return super().prepare(action, reply)


def test_a_warm_start_winner_replaced_before_the_choice_is_not_trusted_through_its_replacement():
    """The reviewer's scenario in the simulator (real Replica, FileStorage, Arbiter, election core):
    before, the second warm start elected s/1, which lacked the acknowledged w5..w7."""
    c = Cluster(["s/0", "s/1", "s/2"], Path(tempfile.mkdtemp(prefix="jtrix-f1-")))
    host = ReplacingHost(c)
    c.election_host, c.elector = host, ElectionRunner(host)
    try:
        c.settle()
        m = c.arbiter.state(APP).holder
        for i in range(5):
            c.submit(m, f"w{i}", f"w{i}")
            c.settle()
        for b in ("s/1", "s/2"):
            c.partitions.add(frozenset((m, b)))
        for i in range(5, 8):  # the backups are shrunk away: the master alone acknowledges these
            c.submit(m, f"w{i}", f"w{i}")
            for _ in range(6):
                c.now += 0.5
                c.settle()
        assert {"w5", "w6", "w7"} <= set(c.acked) and c.arbiter.state(APP).isr == {m}
        c.crash(m)
        c.partitions.clear()
        c.start(m)
        host.armed = True
        c.elect(warm=True)
        c.now += 10
        c.elect(warm=True)  # raised InvariantError (a master lacking acked writes) before the fix
        st = c.arbiter.state(APP)
        if st.holder is not None and c.nodes[st.holder].replica is not None:
            c.check_master_has_acked(st.holder)
    except InvariantError:
        raise
    finally:
        c.close()


def _warm_facts(live, trusted):
    return Facts(registered=True, slots=tuple(sorted(live)), live=live, eligible=(), trusted=trusted)


def test_a_warm_start_whose_trusted_slot_did_not_answer_is_retried_not_blocked():
    core = ElectionCore()
    live = {s: (f"kv/{s}#2", f"e{s}") for s in ("s/0", "s/1", "s/2")}
    core.step("kv", Requested())
    core.step("kv", Gathered(_warm_facts(live, {"s/0": "kv/s/0#1"})))
    core.step("kv", Began(5))
    proven = lambda *o: {"generation": "g", "unproven": False, "openers": list(o)}  # noqa: E731
    core.step("kv", Promised(5, "s/1", (1, 1), proven("kv/s/1#1", "kv/s/1#2")))
    core.step("kv", Promised(5, "s/2", (1, 1), proven("kv/s/2#1", "kv/s/2#2")))
    out = core.step("kv", Promised(5, "s/0", None, None))  # s/0's prepare failed once
    assert any(isinstance(x, Retry) for x in out) and not any(isinstance(x, Blocked) for x in out), out


def test_a_warm_start_whose_promotion_outcome_is_unknown_still_ends_the_warming():
    core = ElectionCore()
    live = {s: (f"{s}#1", "ep") for s in ("s/0", "s/1")}
    trusted = {"s/0": "s/0#0"}
    ok = {"generation": "g", "unproven": False, "openers": ["s/0#0", "s/0#1"]}
    core.step("kv", Requested())
    assert any(isinstance(x, WarmStart) for x in core.step("kv", Gathered(_warm_facts(live, trusted))))
    core.step("kv", Began(2))
    core.step("kv", Promised(2, "s/1", (1, 1), ok))
    core.step("kv", Promised(2, "s/0", (1, 2), ok))
    core.step("kv", Chosen(2, "s/0"))
    core.step("kv", Promoted(2, False))  # outcome unknown: the winner may be master (it renews)
    core.step("kv", Requested())  # much later: a new warm start, s/0 down
    again = core.step("kv", Gathered(_warm_facts({"s/1": ("s/1#2", "ep")}, trusted)))
    assert any(isinstance(x, WarmStart) for x in again), again
