"""Hypothesis state machine: master + backups + arbiter over a faulty network.

Faults: delays and reordering (any in-flight packet may be delivered next),
drops, duplicates, partitions; ISR requests and the arbiter's answers are
packets too (late, reordered, duplicated, lost; a runner timing out while they
fly, so a master has several in flight), and the arbiter's ISR saves may fail
(nothing written, or written and then the error); master crash (in-memory state lost, durable
storage kept), pause/resume (a paused master keeps its state and later sends
stale messages), backup crash/restart, client retries with the same request id
across failovers. Invariants are checked after every step (see Cluster.check):
every acknowledged command is held by whoever is master (checked at every
grant and every step), no two masters share an epoch, nothing is applied
twice, replicas apply only committed entries and never diverge, a fenced
master acknowledges nothing, at most one replica serves linearizable reads,
every member of the stored ISR is counted by the current master.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netlets.replication import ReplicationConfig
from tests.sim import Cluster
from tests.sim.arbiter_link import SAVE_FAILURES

settings.register_profile(
    "repl-dev", max_examples=100, stateful_step_count=80, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile(
    "repl-ci", max_examples=100, stateful_step_count=80, deadline=None, derandomize=True,
    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = settings.get_profile("repl-ci" if os.environ.get("CI") else "repl-dev")
if os.environ.get("JTRIX_HYPOTHESIS_EXAMPLES"):
    PROFILE = settings(PROFILE, max_examples=int(os.environ["JTRIX_HYPOTHESIS_EXAMPLES"]))


class ReplicationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = None
        self.c: Cluster | None = None
        self.next_req = 0

    @initialize(n=st.integers(min_value=3, max_value=4),
                durable=st.booleans(),
                snapshot_every=st.sampled_from([3, 5, 1000]))
    def setup(self, n, durable, snapshot_every):
        self.tmp = Path(tempfile.mkdtemp(prefix="jtrix-repl-"))
        cfg = ReplicationConfig(batch_max=3, window=2, retransmit_timeout=0.3,
                                replication_timeout=0.8, snapshot_every=snapshot_every)
        self.durable = durable
        self.c = Cluster([f"s/{i}" for i in range(n)], self.tmp if durable else None, cfg)

    def teardown(self) -> None:
        if self.c is not None:
            self.c.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def slot(self, i: int) -> str:
        return self.c.slots[i % len(self.c.slots)]

    # --- clients ---------------------------------------------------------------
    @rule(i=st.integers(0, 3), boom=st.booleans())
    def submit_new(self, i, boom):
        masters = self.c.masters()
        if not masters:
            return
        self.next_req += 1
        req = f"r{self.next_req}"
        self.c.submit(masters[i % len(masters)], req, "boom" if boom and self.next_req % 5 == 0 else req)

    @rule(i=st.integers(0, 3), k=st.integers(1, 4))
    def submit_burst(self, i, k):
        for _ in range(k):
            self.submit_new(i, False)

    @rule(i=st.integers(0, 3), j=st.integers(0, 1000))
    def retry(self, i, j):
        masters = self.c.masters()
        if not masters or self.next_req == 0:
            return
        req = f"r{j % self.next_req + 1}"
        self.c.submit(masters[i % len(masters)], req, req)

    # --- network ---------------------------------------------------------------
    @rule(i=st.integers(0, 50))
    def deliver(self, i):
        self.c.deliver(i)

    @rule(i=st.integers(0, 50))
    def deliver_first(self, i):
        for _ in range(i % 6 + 1):
            self.c.deliver(0)

    @rule(rounds=st.integers(1, 4))
    def settle(self, rounds):
        """Deliver everything in order and run timers: lets work complete."""
        for _ in range(rounds):
            for _ in range(200):
                if not self.c.net:
                    break
                self.c.deliver(0)
            self.c.expire_arbiter_calls()
            for s in self.c.slots:
                self.c.tick(s)

    @rule(i=st.integers(0, 50))
    def duplicate(self, i):
        self.c.deliver(i, duplicate=True)

    @rule(i=st.integers(0, 50))
    def drop(self, i):
        self.c.drop(i)

    @rule(a=st.integers(0, 3), b=st.integers(0, 3))
    def partition(self, a, b):
        if self.slot(a) != self.slot(b):
            self.c.partitions.add(frozenset((self.slot(a), self.slot(b))))

    @rule()
    def heal(self):
        self.c.partitions.clear()

    @rule(i=st.integers(0, 10))
    def arbiter_timeout(self, i):
        """A runner gives up waiting for an ISR answer (the request or answer may still arrive)."""
        self.c.arbiter_timeout(i)

    @rule(modes=st.lists(st.sampled_from(SAVE_FAILURES), min_size=1, max_size=3))
    def fail_isr_saves(self, modes):
        """The arbiter's next ISR saves fail (SQLite locked / etcd timeout), later ones succeed."""
        self.c.isr_save_failures = list(modes)

    # --- time and timers -------------------------------------------------------
    @rule(dt=st.sampled_from([0.05, 0.2, 0.5]))
    def advance(self, dt):
        self.c.now += dt

    @rule(i=st.integers(0, 3))
    def tick(self, i):
        self.c.tick(self.slot(i))

    @rule()
    def tick_all(self):
        for s in self.c.slots:
            self.c.tick(s)

    # --- processes -------------------------------------------------------------
    @rule()
    def crash_master(self):
        holder = self.c.arbiter.state("app").holder
        if holder is not None:
            self.c.crash(holder)

    @rule(i=st.integers(0, 3))
    def crash_any(self, i):
        self.c.crash(self.slot(i))

    @rule(i=st.integers(0, 3))
    def restart(self, i):
        s = self.slot(i)
        if self.c.nodes[s].replica is None:
            self.c.start(s)
            self.c.tick(s)

    @rule()
    def restart_fenced(self):
        for s, n in self.c.nodes.items():
            if n.replica is not None and n.fenced_seen and not n.paused:
                self.c.crash(s)
                self.c.start(s)

    @rule()
    def pause_master(self):
        holder = self.c.arbiter.state("app").holder
        if holder is not None and self.c.nodes[holder].replica is not None:
            self.c.nodes[holder].paused = True

    @rule(i=st.integers(0, 3))
    def resume(self, i):
        n = self.c.nodes[self.slot(i)]
        if n.paused:
            n.paused = False
            self.c.tick(n.slot)

    @rule()
    def elect_after_lease_expiry(self):
        st_ = self.c.arbiter.state("app")
        if st_.holder is None or self.c.lease_expired():
            self.c.elect()

    @rule()
    def warm_start(self):
        c = self.c
        st_ = c.arbiter.state("app")
        holder_ok = st_.holder is not None and c.alive(st_.holder) and not c.lease_expired()
        if holder_ok or c.arbiter.eligible("app", [s for s in c.slots if c.alive(s)]):
            return
        if not self.durable:
            return  # memory mode: nothing survives; no guarantee to check
        for s in c.slots:
            if c.nodes[s].replica is None:
                c.start(s)
        if all(c.alive(s) for s in c.slots):
            c.elect(warm=True)

    @invariant()
    def invariants(self):
        if self.c is not None:
            self.c.check()


ReplicationMachine.TestCase.settings = PROFILE
TestReplication = ReplicationMachine.TestCase
