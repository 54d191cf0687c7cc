"""A search focused on the in-sync-set protocol: one master, its backups, its arbiter, and
nothing but the faults that decide ISR changes.

The whole-system machine (``test_replication_stateful``) has every fault kind, so any one deep
interleaving of ISR messages is rare in it: with the arbiter's version check removed (the
mutant of issue 13 finding 1), 600 of its examples of 250 steps did not find the lost-ack
interleaving (expand delayed past its runner's timeout, the backup lags, shrink decided, the
late expand applied). This machine keeps the same real parts (``Replica``/``MasterRole``, the
``Arbiter``, the simulator's packets) and only the moves that matter for the ISR: write, let
the data plane run, hold back / release an ISR request or answer, time a runner out, stall or
resume a backup, let time pass, tick. Invariant after every step: every member of the stored
ISR is counted by the master, and the master holds every acknowledged write (``Cluster.check``).
``tests/test_isr_protocol_search.py::test_the_search_finds_the_finding1_mutant`` shows that it
finds that mutant by itself.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings, target
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from netlets.replication import ReplicationConfig
from tests.sim import Cluster
from tests.sim.cluster import InvariantError

CI = bool(os.environ.get("CI"))
PROFILE = settings(max_examples=int(os.environ.get("JTRIX_HYPOTHESIS_EXAMPLES", "150")),
                   stateful_step_count=40, deadline=None, derandomize=CI, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class ISRMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c: Cluster | None = None
        self.n = 0
        self.most_stale = 0

    @initialize(n=st.integers(2, 3))
    def setup(self, n):
        cfg = ReplicationConfig(batch_max=3, window=2, retransmit_timeout=0.3, replication_timeout=0.8)
        self.c = Cluster([f"s/{i}" for i in range(n + 1)], None, cfg)

    def _backup(self, i: int) -> str:
        return self.c.slots[1 + i % (len(self.c.slots) - 1)]

    def _round(self) -> None:
        """One hop: deliver every packet that was in flight when the step began (not the held
        ones; a stalled replica's stay queued), so what they cause flies until the next step."""
        flying = list(self.c.net)
        for p in flying:
            if p in self.c.net:
                self.c.deliver(self.c.net.index(p))

    @rule()
    def hop(self):
        self._round()

    @rule()
    def write(self):
        masters = self.c.masters()
        if masters:
            self.n += 1
            self.c.submit(masters[0], f"r{self.n}", f"r{self.n}")
        self._round()

    @rule(i=st.integers(0, 5))
    def hold_isr(self, i):
        self.c.hold(i, arbiter_only=True)
        self._round()

    @rule(i=st.integers(0, 5))
    def release_isr(self, i):
        if self.c.delay_line:
            self.c.release(i)
        self._round()

    @rule(i=st.integers(0, 5))
    def runner_times_out(self, i):
        self.c.arbiter_timeout(i)
        self._round()

    @rule(i=st.integers(0, 5))
    def stall(self, i):
        self.c.nodes[self._backup(i)].paused = True
        self._round()

    @rule(i=st.integers(0, 5))
    def backup_lags(self, i):
        """A backup stalls while writes go on, past the replication timeout."""
        self.c.nodes[self._backup(i)].paused = True
        self.write()
        self.time_passes(1.0)

    @rule(i=st.integers(0, 5))
    def resume(self, i):
        node = self.c.nodes[self._backup(i)]
        if node.paused:
            node.paused = False
            self.c.tick(node.slot)
        self._round()

    @rule(dt=st.sampled_from([0.3, 1.0]))
    def time_passes(self, dt):
        self.c.now += dt
        for s in self.c.slots:
            self.c.tick(s)
        self._round()

    @invariant()
    def invariants(self):
        if self.c is not None:
            self.c.check()
            self.most_stale = max(self.most_stale, self._staleness())

    def _staleness(self) -> int:
        """How many ISR decisions the oldest held request has been overtaken by: the search is
        steered towards requests that arrive late (targeted property-based testing)."""
        version = self.c.arbiter.state("app").isr_version
        named = [p.msg["req"].version for p in self.c.delay_line
                 if p.kind == "arb" and p.msg["req"].version is not None]
        return max((version - v for v in named), default=0)

    def teardown(self) -> None:
        target(float(self.most_stale), label="staleness of held ISR requests")
        if self.c is not None:
            self.c.close()


ISRMachine.TestCase.settings = PROFILE
TestISRProtocol = ISRMachine.TestCase


def test_the_search_finds_the_finding1_mutant(monkeypatch):
    """The search is able to fail: with the arbiter deciding a change computed from any version
    (its staleness check removed: the bug of issue 13 finding 1), it finds a stored ISR member
    the master does not count, by itself."""
    from hosting.election import arbiter

    real = arbiter.Arbiter.change_isr

    def ignoring_the_version(self, app, kind, epoch, slot, version, incarnation=None):
        return real(self, app, kind, epoch, slot, self.state(app).isr_version, incarnation)

    monkeypatch.setattr(arbiter.Arbiter, "change_isr", ignoring_the_version)
    with pytest.raises((InvariantError, Flaky)):
        # Found, not shrunk; derandomized so that it is one fixed search (a random one finds it in
        # about 2 runs of 3 within 1000 examples, mostly once targeting starts, past ~500).
        run_state_machine_as_test(ISRMachine, settings=settings(
            PROFILE, max_examples=3000, phases=[Phase.generate, Phase.target], derandomize=True))
