"""Master + backups + arbiter in one process over a simulated network.

Everything is driven explicitly (no threads, no sleeps, a virtual clock), so
hypothesis can choose the interleaving: which in-flight packet is delivered,
duplicated or dropped, who crashes, pauses, is partitioned or is elected.
Elections run the hosting node's own election core and arbiter
(``hosting.election.core``, ``hosting.election.arbiter``) with this cluster as their
host; restarts and lease renewal are a miniature of what the node does.
ISR requests to the arbiter and its answers are packets too (``arbiter_link``),
and the arbiter's store can fail a save.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosting.election.arbiter import Arbiter, StaleEpoch
from hosting.election.core import ElectionRunner, Facts
from hosting.timing import EPSILON
from netlets.replication import (ArbiterRequest, Complete, MasterFenced, FileStorage, MemoryStorage,
                                 Replica, ReplicationConfig, RoleChanged, Send)
from netlets.replication.state import error, not_master

from . import arbiter_link
from .arbiter_link import ARBITER, FlakyStore

APP = "app"
TTL = 1.0


class ListNetlet:
    """State = list of applied commands (each a request id); apply returns the length.

    ``add`` is its ``@command`` method, and it validates against the state: a value already
    applied is refused. So a retry whose method ran again after the original was applied
    would be refused although the original succeeded (security review S6)."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, value: Any) -> Any:
        """The command for ``value`` (what gets replicated); refuses a value already applied."""
        if value in self.items:
            raise ValueError(f"{value!r} is already in the list")
        return value

    def apply(self, command: Any) -> Any:
        if command == "boom":
            raise ValueError("boom")
        self.items.append(command)
        return len(self.items)

    def snapshot(self) -> Any:
        return list(self.items)

    def restore(self, snapshot: Any) -> None:
        self.items = list(snapshot)


@dataclass
class Packet:
    src: str
    dst: str
    kind: str  # "req" (master -> backup) | "rep" (backup -> master) | "arb" / "arbrep" (ISR
    # request to the arbiter / its answer: msg = {"req": ArbiterRequest, "answer"?: dict})
    msg: dict
    src_inc: str  # incarnation of the sender process


@dataclass
class Node:
    slot: str
    directory: Path | None
    replica: Replica | None = None
    paused: bool = False
    lease_expiry: float = float("-inf")
    fenced_seen: bool = False


class InvariantError(AssertionError):
    pass


class SimElectionHost:
    """The simulated node as an ``ElectionHost``: facts from the cluster, the arbiter called
    directly, ``prepare`` answered synchronously by the candidate's replica (endpoint = slot)."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.winner: str | None = None
        self.retries = 0

    def submit(self, fn) -> None:
        fn()

    def gather(self, app: str) -> Facts:
        c = self.c
        live = {s: (c.nodes[s].replica.incarnation, s) for s in c.slots if c.alive(s)}
        return Facts(registered=True, held=c.held(), slots=tuple(c.slots), live=live,
                     eligible=tuple(c.arbiter.eligible(app, live)), trusted=c.arbiter.state(app).last_trusted())

    def begin(self, action) -> int:
        return self.c.arbiter.begin_election(action.app, action.candidates)

    def prepare(self, action, reply) -> None:
        c = self.c
        if not c.alive(action.slot):
            reply(None)
            return
        if c.lost_prepares:  # the RPC fails: before it arrived, or after the promise (its answer lost)
            lost = c.lost_prepares.pop(0)
            if lost == "after":
                c.nodes[action.slot].replica.prepare(action.epoch)
                c._drain(action.slot)
            reply(None)
            return
        answer = c.nodes[action.slot].replica.prepare(action.epoch)
        c._drain(action.slot)
        reply(tuple(answer["position"]), answer.get("storage")) if answer["ok"] else reply(None)

    def choose(self, action) -> str | None:
        try:
            return self.c.arbiter.choose(action.app, action.epoch, action.positions, warm=action.warm,
                                          promisers=action.promisers)
        except StaleEpoch:
            return None

    def promote(self, action) -> bool:
        """The ``replication_promote`` RPC; a lost one (``lost_promotes``) fails at the node, having
        landed ("after": the winner is master, its answer lost) or not ("before")."""
        c = self.c
        lost = c.lost_promotes.pop(0) if c.lost_promotes else None
        if c.nodes[action.slot].replica is None or lost == "before":
            return False
        c._grant(action.slot, action.epoch)
        return lost is None

    def won(self, action) -> None:
        self.winner = action.slot

    def warm_start(self, action) -> None:
        for s in self.c.slots:  # as the node's warm bootstrap: (re)start every slot not running
            if self.c.nodes[s].replica is None:
                self.c.start(s)

    def blocked(self, action) -> None:
        """Refusing a warm start is right only when some storage was lost (``Cluster.wipe``)."""
        self.c.blocked.append(action.reason)  # checked by ``Cluster.check``: the runner logs what raises here

    def retry(self, action) -> None:
        self.retries += 1  # the simulation's rules request the next election themselves


@dataclass
class Cluster:
    slots: list[str]
    root: Path | None  # None: memory durability
    config: ReplicationConfig = field(default_factory=ReplicationConfig)
    now: float = 0.0
    #: the app's one control-lease length: every grant and renewal, whoever owns the app
    lease_ttl: float = TTL
    #: what renewals answer (None: ``lease_ttl``, the rule); set only to show the checks catch a
    #: longer renewal than a new owner's wait (the node before issue 13's finding 3)
    renewal_ttl: float | None = None
    #: the app is submitted (the node's election core elects its first master: a cold start)
    #: instead of bootstrapped straight onto the first slot
    cold_start: bool = False
    #: how the next promote RPCs fail: "before" (never arrived) or "after" (the winner is master,
    #: the answer lost: the node cannot tell these apart)
    lost_promotes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = FlakyStore()
        self.arbiter = Arbiter(self.store)
        self.net: list[Packet] = []
        #: the delay line: packets held back (``hold``) while everything else is delivered and
        #: time passes, until ``release`` puts one back first in line -- a message overtaken by
        #: every later one and by the sender's timeouts (issue 13 finding 1's class)
        self.delay_line: list[Packet] = []
        self.partitions: set[frozenset] = set()
        #: how the next election prepare RPCs fail: "before" (never arrived) or "after" (promised, answer lost)
        self.lost_prepares: list[str] = []
        #: slots whose durable directory was wiped (``wipe``), and the reasons of refused warm starts
        self.wiped: set[str] = set()
        self.blocked: list[str] = []
        #: ISR requests a runner is waiting on: (incarnation, request) -> True; one no longer here
        #: has timed out (or was answered) at the runner, its packets may still be in flight
        self.arbiter_calls: dict[tuple[str, ArbiterRequest], bool] = {}
        #: how the next ISR saves fail (``arbiter_link.SAVE_FAILURES``); elections' saves do not
        self.isr_save_failures: list[str] = []
        #: ISR requests the arbiter decided and refused, by master term, change and instant (the
        #: requests' seqs): the hot-loop check (``check_no_hot_refusals``)
        self.refusals: dict[tuple, set[int]] = {}
        self.nodes: dict[str, Node] = {}
        self._inc = itertools.count(1)
        self.acked: dict[str, Any] = {}  # req_id -> value acknowledged to a client
        self.waiting: dict[tuple[str, int], str] = {}  # (incarnation, token) -> req_id
        self.outcomes: list[tuple[str, dict]] = []
        self.final: dict[str, dict] = {}  # req_id -> the first final outcome a client got
        self.master_epochs: dict[int, str] = {}
        if self.cold_start:
            self.arbiter.new_instance(APP)  # the node's submit, before any slot starts
        for s in self.slots:
            d = None if self.root is None else self.root / s.replace("/", "_")
            self.nodes[s] = Node(s, d)
            self.start(s)
        self.election_host = SimElectionHost(self)
        self.elector = ElectionRunner(self.election_host)
        if self.cold_start:
            self.elector.submitted(APP)
            self.elect(warm=True)
            return
        epoch = self.arbiter.bootstrap(APP, self.slots[0])
        self._grant(self.slots[0], epoch)

    # --- processes ---------------------------------------------------------------
    def start(self, slot: str) -> None:
        n = self.nodes[slot]
        storage = MemoryStorage() if n.directory is None else FileStorage(n.directory, "write")
        inc = f"{slot}#{next(self._inc)}"
        n.replica = Replica(slot, ListNetlet(), storage, self.config, incarnation=inc,
                            min_epoch=self.arbiter.state(APP).epoch)
        n.paused = False
        n.fenced_seen = False
        self.arbiter.netlet_started(APP, slot, inc)

    def crash(self, slot: str) -> None:
        n = self.nodes[slot]
        if n.replica is None:
            return
        n.replica.storage.close(sync=False)  # unsynced records are lost
        self.arbiter_calls = {k: v for k, v in self.arbiter_calls.items() if k[0] != n.replica.incarnation}
        n.replica = None
        n.paused = False
        self.arbiter.netlet_died(APP, slot)
        self.net = [p for p in self.net if p.dst != slot]
        self.delay_line = [p for p in self.delay_line if p.dst != slot]
        if self.arbiter.state(APP).holder == slot:
            self.elect()  # the node learns of a death at once (pidfd)

    def wipe(self, slot: str) -> None:
        """The slot's process dies and its directory is lost (disk replaced, ``rm -rf``)."""
        n = self.nodes[slot]
        if n.directory is None:
            return
        self.crash(slot)
        shutil.rmtree(n.directory, ignore_errors=True)
        self.wiped.add(slot)

    def alive(self, slot: str) -> bool:
        n = self.nodes[slot]
        return n.replica is not None and not n.paused

    def masters(self) -> list[str]:
        return [s for s, n in self.nodes.items()
                if n.replica is not None and n.replica.role == "master"]

    def close(self) -> None:
        for n in self.nodes.values():
            if n.replica is not None:
                n.replica.storage.close(sync=False)

    # --- the node's election (the real election core, this cluster as its host) ----
    def elect(self, warm: bool = False) -> str | None:
        """Request an election from the node's real election core (``ElectionRunner``) and
        return the slot it promoted, if any. Everything runs synchronously: ``prepare`` is
        answered at once by live candidates. ``warm``: a warm start may be chosen (every
        slot live); without it, an app with no live in-sync backup is left alone, as the
        caller decides when a warm start is safe in its model (never with memory durability)."""
        live = [s for s in self.slots if self.alive(s)]
        if not warm and not self.arbiter.eligible(APP, live):
            return None
        self.election_host.winner = None
        self.elector.request(APP)
        return self.election_host.winner

    def held(self) -> bool:
        """Somebody holds the control lease: the process granted it still runs (not a newer one in
        its slot) and its lease has not run out (a crashed holder's lease ends at once: the node
        sees the death, as by pidfd)."""
        st = self.arbiter.state(APP)
        replica = self.nodes[st.holder].replica if st.holder is not None else None
        return (replica is not None and replica.incarnation == st.holder_netlet()
                and self.now < self.nodes[st.holder].lease_expiry)

    def _grant(self, slot: str, epoch: int) -> None:
        if epoch in self.master_epochs:
            raise InvariantError(f"epoch {epoch} granted twice")
        self.master_epochs[epoch] = slot
        n = self.nodes[slot]
        st = self.arbiter.state(APP)
        n.replica.become_master(epoch, st.isr, [s for s in self.slots if s != slot], self.now)
        self._lease_from_now(n, self.lease_ttl)
        self._drain(slot)
        self.check_master_has_acked(slot)

    def _lease_from_now(self, n: Node, ttl: float) -> None:
        """A grant or renewal answered now: the node's side ends ``ttl`` from now, the holder's
        ``ttl·(1-ε)`` from now (it counts from sending the renewal, which is now here)."""
        n.lease_expiry = self.now + ttl
        n.replica.lease_valid_until = self.now + ttl * (1 - EPSILON)

    def owner_change(self) -> None:
        """Another node takes the app over (the old owner died): it shares the arbiter's state
        but none of the old owner's lease timing, so it waits one lease length for a holder it
        cannot see dead (``control.waiting`` / re-adoption), then elects if it was not renewed.
        Its election core is its own: it knows only what the arbiter's state records."""
        self.elector = ElectionRunner(self.election_host)
        st = self.arbiter.state(APP)
        if st.holder is not None and self.nodes[st.holder].replica is not None:
            self.nodes[st.holder].lease_expiry = self.now + self.lease_ttl

    def lease_expired(self) -> bool:
        st = self.arbiter.state(APP)
        return st.holder is not None and self.now >= self.nodes[st.holder].lease_expiry

    # --- driving a replica -------------------------------------------------------
    def tick(self, slot: str) -> None:
        n = self.nodes[slot]
        if not self.alive(slot):
            return
        r = n.replica
        if r.role == "master":  # lease renewal by the runner
            st = self.arbiter.state(APP)
            if st.holder == slot and st.epoch == r.master.epoch and self.now < n.lease_expiry:
                self._lease_from_now(n, self.lease_ttl if self.renewal_ttl is None else self.renewal_ttl)
            elif st.epoch > r.master.epoch:
                r.fence(st.epoch)
        r.tick(self.now)
        self._drain(slot)

    def submit(self, slot: str, req_id: str, value: Any) -> None:
        """A client's call of ``add(value)`` as ``req_id`` reaching ``slot``'s runner, which does
        what ``ReplicatedHost._commands`` does: a request id the master already knows is
        submitted with no command (its method is not run again); otherwise the method makes
        the command, or its refusal is the call's outcome."""
        n = self.nodes[slot]
        if not self.alive(slot):
            return
        r = n.replica
        if r.role != "master":
            self._outcome(req_id, not_master(f"{slot} is {r.role}"))
            return
        if r.knows_request(req_id):
            command = None
        else:
            try:
                command = r.sm.netlet.add(value)
            except ValueError as err:
                self._outcome(req_id, error(type(err).__name__, str(err)))
                return
        token = r.submit(req_id, command, self.now)
        self.waiting[(r.incarnation, token)] = req_id
        r.flush(self.now)
        self._drain(slot)

    def _outcome(self, req_id: str | None, outcome: dict) -> None:
        """A call's outcome reaches its client: a final one (not the retryable NotMaster) must
        equal every other final outcome of the same request id (a retry gets the original's)."""
        self.outcomes.append((req_id, outcome))
        if req_id is None or outcome.get("error", {}).get("retryable"):
            return
        first = self.final.setdefault(req_id, outcome)
        if first != outcome:
            raise InvariantError(f"{req_id} was answered {first}, and its retry {outcome}")

    def deliver(self, i: int, duplicate: bool = False) -> None:
        if not self.net:
            return
        i %= len(self.net)
        p = self.net[i] if duplicate else self.net.pop(i)
        if frozenset((p.src, p.dst)) in self.partitions:
            if duplicate:
                self.net.pop(i)
            return
        if p.dst == ARBITER:
            self._arbiter_receives(p)
            return
        n = self.nodes[p.dst]
        if n.replica is None:
            return
        if n.paused:  # stays queued until resume
            if not duplicate:
                self.net.append(p)
            return
        r = n.replica
        if p.kind == "arbrep":
            if p.msg["inc"] == r.incarnation:  # an answer to a process that is gone is lost with it
                self.arbiter_calls.pop((r.incarnation, p.msg["req"]), None)
                r.on_arbiter_reply(p.msg["req"], p.msg["answer"], self.now)  # even a duplicate
                self._drain(p.dst)
        elif p.kind == "req":
            reply = r.handle(p.msg, self.now)
            self._drain(p.dst)
            if reply is not None:
                self.net.append(Packet(p.dst, p.src, "rep", reply, r.incarnation))
        else:
            r.on_reply(p.src, p.msg, self.now)
            self._drain(p.dst)

    def settle(self, rounds: int = 400) -> None:
        """Tick every replica and deliver every packet until nothing is in flight (bounded)."""
        for _ in range(rounds):
            if not self.net:
                for s in self.slots:
                    self.tick(s)
                if not self.net:
                    return
            self.deliver(0)
        raise AssertionError(f"still in flight after {rounds} rounds: {len(self.net)} packets")

    def drop(self, i: int) -> None:
        if self.net:
            self.net.pop(i % len(self.net))

    def hold(self, i: int, arbiter_only: bool = False) -> None:
        """Hold back one in-flight packet (among the ISR requests and answers only, if
        ``arbiter_only``): nothing delivers it until :meth:`release`."""
        ks = [k for k, p in enumerate(self.net) if not arbiter_only or p.kind in ("arb", "arbrep")]
        if ks:
            self.delay_line.append(self.net.pop(ks[i % len(ks)]))

    def release(self, i: int) -> None:
        """Put one held packet back, first in line: the next ``deliver(0)`` delivers it."""
        if self.delay_line:
            self.net.insert(0, self.delay_line.pop(i % len(self.delay_line)))

    # --- ISR requests: the node's side and the runner's timeout ---------------------
    def _arbiter_receives(self, p: Packet) -> None:
        req = p.msg["req"]
        before = self.arbiter.state(APP)
        self.store.failures, self.isr_save_failures = self.isr_save_failures, []
        try:
            answer = arbiter_link.answer(self.arbiter, APP, p.src_inc, req)
        finally:  # failures not used up (nothing was saved) stay for the next ISR request
            self.isr_save_failures, self.store.failures = self.store.failures, []
        if (req.kind != "sync" and answer.get("ok") is False and req.epoch == before.epoch
                and req.version == before.isr_version):
            key = (p.src_inc, req.epoch, req.kind, req.slot, req.incarnation, self.now)
            self.refusals.setdefault(key, set()).add(req.seq)
            self.check_no_hot_refusals(key)
        self.net.append(Packet(ARBITER, p.src, "arbrep", {"req": req, "answer": answer, "inc": p.src_inc},
                               ARBITER))

    def _waiting_calls(self) -> list[tuple[str, ArbiterRequest]]:
        return sorted(self.arbiter_calls, key=lambda k: (k[0], k[1].seq))

    def arbiter_timeout(self, i: int) -> None:
        """The runner of one waiting ISR request gives up on it (its packets may still arrive)."""
        calls = self._waiting_calls()
        if calls:
            self._time_out(calls[i % len(calls)])

    def _time_out(self, call: tuple[str, ArbiterRequest]) -> None:
        inc, req = call
        slot = inc.split("#")[0]
        n = self.nodes[slot]
        if not self.alive(slot) or n.replica.incarnation != inc:
            return  # a paused runner times out when it resumes
        del self.arbiter_calls[call]
        n.replica.on_arbiter_failed(req, self.now)
        self._drain(slot)

    def expire_arbiter_calls(self) -> None:
        """Time out every waiting ISR request whose packets are all gone (lost on the way)."""
        flying = {(p.msg["inc"], p.msg["req"]) for p in self.net + self.delay_line
                  if p.kind in ("arb", "arbrep")}
        for call in self._waiting_calls():
            if call not in flying:
                self._time_out(call)

    def _drain(self, slot: str) -> None:
        n = self.nodes[slot]
        r = n.replica
        while r.effects:
            for eff in r.take_effects():
                if isinstance(eff, Send):
                    self.net.append(Packet(slot, eff.to, "req", eff.msg, r.incarnation))
                elif isinstance(eff, Complete):
                    req = self.waiting.pop((r.incarnation, eff.token), None)
                    self._outcome(req, eff.outcome)
                    if eff.outcome["ok"] and req is not None:
                        if n.fenced_seen:
                            raise InvariantError(f"fenced master {slot} acknowledged {req}")
                        self.acked[req] = eff.outcome["value"]
                elif isinstance(eff, MasterFenced):
                    n.fenced_seen = True
                elif isinstance(eff, RoleChanged) and eff.role == "master":
                    n.fenced_seen = False  # a new term of this process
                elif isinstance(eff, ArbiterRequest):
                    self.arbiter_calls[(r.incarnation, eff)] = True
                    self.net.append(Packet(slot, ARBITER, "arb", {"req": eff, "inc": r.incarnation},
                                           r.incarnation))

    # --- invariants --------------------------------------------------------------
    @staticmethod
    def held_requests(r: Replica) -> set:
        held = set(r.sm.netlet.items)
        for e in r.log.entries:
            if e[0] > r.sm.applied_seq and e[3] is not None:
                held.add(e[3])
        return held

    def check_master_has_acked(self, slot: str) -> None:
        r = self.nodes[slot].replica
        missing = set(self.acked) - self.held_requests(r)
        if missing:
            raise InvariantError(f"master {slot} (epoch {r.master.epoch}) lacks acked {sorted(missing)}")

    def check_isr_counted(self) -> None:
        """Every member of the stored ISR is counted by the current master (its commits wait
        for that member): the invariant of the versioned in-sync set (``hosting.election.arbiter``)."""
        st = self.store.stored(APP)
        n = self.nodes.get(st.holder) if st.holder is not None else None
        r = n.replica if n is not None else None
        if r is None or r.role != "master" or r.master.epoch != st.epoch:
            return
        missing = st.isr - {st.holder} - r.master.counted
        if missing:
            raise InvariantError(f"stored ISR {sorted(st.isr)} (version {st.isr_version}) has "
                                 f"{sorted(missing)}, not counted by master {st.holder}")

    def check_no_hot_refusals(self, key: tuple) -> None:
        """A master does not ask a change the arbiter refused again at the same instant (issue 13
        follow-up F4: each refusal was re-asked at once, a master and its arbiter looping hot).
        The same request delivered twice (a duplicate packet) is one request."""
        if len(self.refusals[key]) > 1:
            inc, epoch, kind, slot, incarnation, now = key
            raise InvariantError(f"hot loop: master {inc} (epoch {epoch}) asked {kind} {slot} as {incarnation} "
                                 f"{len(self.refusals[key])} times at t={now}, refused each time")

    def check(self) -> None:
        if self.blocked and not self.wiped:
            raise InvariantError(f"a warm start was refused although no storage was lost: {self.blocked[0]}")
        self.check_isr_counted()
        st = self.arbiter.state(APP)
        if st.holder is not None and self.nodes[st.holder].replica is not None:
            r = self.nodes[st.holder].replica
            if r.role == "master":
                self.check_master_has_acked(st.holder)
        states = []
        for s, n in self.nodes.items():
            r = n.replica
            if r is None:
                continue
            items = r.sm.netlet.items
            if len(items) != len(set(items)):
                raise InvariantError(f"{s} applied a command twice: {items}")
            if r.sm.applied_seq > r.commit_seq:
                raise InvariantError(f"{s} applied beyond its commit index")
            states.append((s, items))
        for a, ia in states:  # all applied histories are prefixes of one history
            for b, ib in states:
                k = min(len(ia), len(ib))
                if ia[:k] != ib[:k]:
                    raise InvariantError(f"{a} and {b} diverge: {ia} vs {ib}")
        serving = [s for s, n in self.nodes.items()
                   if n.replica is not None and n.replica.can_serve_linearizable(self.now)]
        if len(serving) > 1:
            raise InvariantError(f"two replicas serve linearizable reads: {serving}")
