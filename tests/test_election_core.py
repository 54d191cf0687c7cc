"""The election core (``hosting.election.core``) as a state machine under any order of answers.

Hypothesis plays the host: it answers the core's actions in any order, late,
twice, from attempts long over, and with any facts; the checks are the core's
contracts (one attempt per app at a time, no request lost, an attempt begins
only when the facts allow it, chooses only once every candidate answered,
wins only by a promotion of its own epoch).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hosting.election.core import (Begin, Began, Blocked, Choose, Chosen, ElectionCore, Facts, Failed, Gather,
                                   Gathered, Prepare, Promised, Promote, Promoted, Requested, Retry, WarmStart, Won)

APP = "app"
SLOTS = ("s/0", "s/1", "s/2")

facts_st = st.builds(
    Facts, registered=st.booleans(), terminating=st.booleans(), owner=st.booleans(), held=st.booleans(),
    slots=st.just(SLOTS),
    live=st.sets(st.sampled_from(SLOTS)).map(lambda s: {x: (f"app/{x}#1", f"ep-{x}") for x in sorted(s)}),
    eligible=st.sets(st.sampled_from(SLOTS)).map(sorted), warm_blocked=st.booleans())


class ElectionCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = ElectionCore()
        self.epoch = 0
        self.requests_pending = False  # a request the core has not yet turned into a Gather
        self.gathers = 0  # Gather actions not yet answered
        self.begins: list[Begin] = []
        self.prepares: list[Prepare] = []
        self.answered: dict[int, set[str]] = {}  # epoch -> candidates that answered
        self.candidates: dict[int, tuple[str, ...]] = {}
        self.chooses: list[Choose] = []
        self.promotes: list[Promote] = []
        self.facts: Facts | None = None
        self.won: list[Won] = []
        self.old_events: list = []  # answers to replay later (late / duplicate)

    def step(self, event) -> None:
        actions = self.core.step(APP, event)
        for a in actions:
            assert a.app == APP
            if isinstance(a, Gather):
                self.gathers += 1
                self.requests_pending = False
            elif isinstance(a, Begin):
                f = self.facts
                assert f is not None and f.registered and f.owner and not f.held and not f.terminating
                assert set(a.candidates) <= set(f.live)
                eligible = tuple(s for s in f.eligible if s in f.live)
                if eligible:
                    assert a.mode == "failover" and tuple(a.candidates) == eligible
                else:
                    assert set(f.live) == set(f.slots), "a warm start began without every slot live"
                    assert not f.warm_blocked or a.mode == "cold"
                self.begins.append(a)
            elif isinstance(a, Prepare):
                self.prepares.append(a)
            elif isinstance(a, Choose):
                assert self.answered.get(a.epoch, set()) == set(self.candidates[a.epoch]), \
                    "chose before every candidate answered"
                assert set(a.positions) <= set(self.candidates[a.epoch])
                assert all(c.epoch != a.epoch for c in self.chooses), "chose twice in one attempt"
                self.chooses.append(a)
            elif isinstance(a, Promote):
                assert any(c.epoch == a.epoch for c in self.chooses)
                self.promotes.append(a)
            elif isinstance(a, Won):
                assert isinstance(event, Promoted) and event.ok and event.epoch == a.epoch
                self.won.append(a)
            else:
                assert isinstance(a, (WarmStart, Blocked, Retry))

    @invariant()
    def one_attempt_and_no_request_lost(self) -> None:
        running = self.core.running(APP)
        assert self.gathers <= 1
        if self.requests_pending:
            assert running and self.core.apps[APP].again, "a request was lost"

    @rule()
    def request(self) -> None:
        self.requests_pending = True
        self.step(Requested())

    @precondition(lambda self: self.gathers > 0)
    @rule(facts=facts_st)
    def gathered(self, facts: Facts) -> None:
        self.gathers -= 1
        self.facts = facts
        self.step(Gathered(facts))

    @precondition(lambda self: self.begins)
    @rule()
    def began(self) -> None:
        b = self.begins.pop(0)
        self.epoch += 1
        self.candidates[self.epoch] = b.candidates
        self.answered[self.epoch] = set()
        self.step(Began(self.epoch))

    @precondition(lambda self: self.prepares)
    @rule(i=st.integers(0, 10), position=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 9))))
    def promised(self, i: int, position) -> None:
        p = self.prepares.pop(i % len(self.prepares))
        self.answered.setdefault(p.epoch, set()).add(p.slot)
        event = Promised(p.epoch, p.slot, position)
        self.old_events.append(event)
        self.step(event)

    @precondition(lambda self: self.chooses)
    @rule(pick=st.booleans())
    def chosen(self, pick: bool) -> None:
        c = self.chooses[-1]
        winner = min(c.positions) if pick and c.positions else None
        event = Chosen(c.epoch, winner)
        self.old_events.append(event)
        self.step(event)

    @precondition(lambda self: self.promotes)
    @rule(ok=st.booleans())
    def promoted(self, ok: bool) -> None:
        p = self.promotes.pop(0)
        event = Promoted(p.epoch, ok)
        self.old_events.append(event)
        self.step(event)

    @precondition(lambda self: self.core.running(APP))
    @rule()
    def failed(self) -> None:
        self.prepares.clear()
        self.begins.clear()
        self.promotes.clear()
        self.gathers = 0
        self.step(Failed("store error"))

    @precondition(lambda self: self.old_events)
    @rule(i=st.integers(0, 100))
    def replay_an_old_answer(self, i: int) -> None:
        """A late or duplicated answer: it must change nothing unless it is the current attempt's
        first answer of its kind (then it was not old)."""
        event = self.old_events[i % len(self.old_events)]
        before = (len(self.chooses), len(self.promotes), len(self.won))
        self.step(event)
        assert (len(self.chooses), len(self.promotes), len(self.won)) == before


ElectionCoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestElectionCore = ElectionCoreMachine.TestCase


def test_a_request_during_an_attempt_runs_right_after_it():
    core = ElectionCore()
    assert core.step(APP, Requested()) == [Gather(APP)]
    assert core.step(APP, Requested()) == []  # remembered, not a second attempt
    facts = Facts(registered=True, held=True, slots=SLOTS)
    assert core.step(APP, Gathered(facts)) == [Gather(APP)]  # the remembered request
    assert core.step(APP, Gathered(facts)) == []  # held: nothing to do, no retry
    assert not core.running(APP)


# --- the warm-start proof across node restarts (issue 13 finding 7 follow-up F1) ---------------------
def _warm_attempt(core: ElectionCore, trusted, storages: dict) -> list:
    """One warm-start attempt over every slot of SLOTS[:2], each answering with ``storages[slot]``."""
    slots = SLOTS[:2]
    live = {s: (f"app/{s}#9", f"ep-{s}") for s in slots}
    assert core.step(APP, Requested()) == [Gather(APP)]
    acts = core.step(APP, Gathered(Facts(registered=True, slots=slots, live=live, trusted=trusted)))
    assert [a.mode for a in acts if isinstance(a, Begin)] == ["warm"]
    out = []
    for p in core.step(APP, Began(7)):
        out += core.step(APP, Promised(7, p.slot, (1, 5 if p.slot == "s/0" else 3), storages[p.slot]))
    return out


def test_a_node_restarted_mid_election_still_refuses_wiped_storage():
    """The attack: the node restarted after ``begin_election`` revoked the holder; its new core
    never saw the trusted set (the old core kept it in memory) and a wiped directory whose slot
    restarted once (no longer 'fresh') was elected. The arbiter's state records it now."""
    from hosting.election.arbiter import Arbiter, MemoryEpochStore
    store = MemoryEpochStore()
    arb = Arbiter(store)
    for s in SLOTS[:2]:
        arb.netlet_started(APP, s, f"app/{s}#1")
    arb.bootstrap(APP, "s/0")  # s/0#1 alone acknowledged writes (s/1 never joined)
    arb.begin_election(APP, SLOTS[:2])  # a first attempt revoked the holder ... then the node restarted
    trusted = Arbiter(store).state(APP).last_trusted()  # the restarted node's arbiter, from the store
    assert trusted == {"s/0": "app/s/0#1"}
    wiped = {"generation": "new", "unproven": True, "openers": ["app/s/0#2", "app/s/0#9"]}
    behind = {"generation": "g1", "unproven": False, "openers": ["app/s/1#1", "app/s/1#9"]}
    out = _warm_attempt(ElectionCore(), trusted, {"s/0": wiped, "s/1": behind})
    assert [type(a) for a in out] == [Blocked] and not any(isinstance(a, Choose) for a in out)


def test_unknown_trusted_set_refuses_any_unproven_storage_and_elects_among_proven():
    wiped = {"generation": "n0", "unproven": True, "openers": ["app/s/0#9"]}
    ok0 = {"generation": "g0", "unproven": False, "openers": ["app/s/0#1", "app/s/0#9"]}
    ok1 = {"generation": "g1", "unproven": False, "openers": ["app/s/1#1", "app/s/1#9"]}
    assert [type(a) for a in _warm_attempt(ElectionCore(), None, {"s/0": wiped, "s/1": ok1})] == [Blocked]
    out = _warm_attempt(ElectionCore(), None, {"s/0": ok0, "s/1": ok1})
    assert [set(a.positions) for a in out if isinstance(a, Choose)] == [{"s/0", "s/1"}]


def test_a_never_elected_app_starts_like_a_cold_start_after_a_node_restart():
    """Nothing was ever acknowledged before the first grant (trusted set ``{}``): all-new storage
    is not refused when the node restarted before the first election (it loses the cold flag)."""
    new = {s: {"generation": s, "unproven": True, "openers": [f"app/{s}#9"]} for s in SLOTS[:2]}
    core = ElectionCore()
    live = {s: (f"app/{s}#9", f"ep-{s}") for s in SLOTS[:2]}
    core.step(APP, Requested())
    acts = core.step(APP, Gathered(Facts(registered=True, slots=SLOTS[:2], live=live, trusted={})))
    assert [a.mode for a in acts if isinstance(a, Begin)] == ["cold"]
    out = []
    for p in core.step(APP, Began(1)):
        out += core.step(APP, Promised(1, p.slot, (0, 0), new[p.slot]))
    assert [set(a.positions) for a in out if isinstance(a, Choose)] == [set(SLOTS[:2])]
