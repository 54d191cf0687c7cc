"""Master + backups + arbiter in one process over a simulated network.

Everything is driven explicitly (no threads, no sleeps, a virtual clock), so
hypothesis can choose the interleaving: which in-flight packet is delivered,
duplicated or dropped, who crashes, pauses, is partitioned or is elected.
Elections run the hosting node's own election core and arbiter
(``hosting.election_core``, ``hosting.arbiter``) with this cluster as their
host; restarts and lease renewal are a miniature of what the node does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosting.arbiter import Arbiter, MemoryEpochStore, StaleEpoch
from hosting.election_core import ElectionRunner, Facts
from netlets.replicated import LEASE_SAFETY
from netlets.replication import (ArbiterRequest, Complete, Fenced, FileStorage, MemoryStorage,
                                 Replica, ReplicationConfig, RoleChanged, Send)

APP = "app"
TTL = 1.0


class ListNetlet:
    """State = list of applied commands (each a request id); apply returns the length."""

    def __init__(self) -> None:
        self.items: list = []

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
    kind: str  # "req" (master -> backup) | "rep" (backup -> master)
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
                     eligible=tuple(c.arbiter.eligible(app, live)))

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
            return self.c.arbiter.choose(action.app, action.epoch, action.positions, warm=action.warm)
        except StaleEpoch:
            return None

    def promote(self, action) -> bool:
        if self.c.nodes[action.slot].replica is None:
            return False
        self.c._grant(action.slot, action.epoch)
        return True

    def won(self, action) -> None:
        self.winner = action.slot

    def warm_start(self, action) -> None:
        for s in self.c.slots:  # as the node's warm bootstrap: (re)start every slot not running
            if self.c.nodes[s].replica is None:
                self.c.start(s)

    def blocked(self, action) -> None:
        raise InvariantError(f"the simulated node has no cluster to block a warm start: {action}")

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

    def __post_init__(self) -> None:
        self.arbiter = Arbiter(MemoryEpochStore())
        self.net: list[Packet] = []
        self.partitions: set[frozenset] = set()
        #: how the next arbiter answers are lost: "before" (the request never arrived) or "after"
        #: (it took effect, the answer did not come back)
        self.lost_arbiter_answers: list[str] = []
        #: how the next election prepare RPCs fail: "before" (never arrived) or "after" (promised, answer lost)
        self.lost_prepares: list[str] = []
        self.nodes: dict[str, Node] = {}
        self._inc = itertools.count(1)
        self.acked: dict[str, Any] = {}  # req_id -> value acknowledged to a client
        self.waiting: dict[tuple[str, int], str] = {}  # (incarnation, token) -> req_id
        self.outcomes: list[tuple[str, dict]] = []
        self.master_epochs: dict[int, str] = {}
        for s in self.slots:
            d = None if self.root is None else self.root / s.replace("/", "_")
            self.nodes[s] = Node(s, d)
            self.start(s)
        self.election_host = SimElectionHost(self)
        self.elector = ElectionRunner(self.election_host)
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
        n.replica = None
        n.paused = False
        self.arbiter.netlet_died(APP, slot)
        self.net = [p for p in self.net if p.dst != slot]
        if self.arbiter.state(APP).holder == slot:
            self.elect()  # the node learns of a death at once (pidfd)

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
        """Somebody holds the control lease: the recorded holder runs and its lease has not run out
        (a crashed holder's lease ends at once: the node sees the death, as by pidfd)."""
        st = self.arbiter.state(APP)
        return (st.holder is not None and self.nodes[st.holder].replica is not None
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
        n.replica.lease_valid_until = self.now + ttl * (1 - LEASE_SAFETY)

    def owner_change(self) -> None:
        """Another node takes the app over (the old owner died): it shares the arbiter's state
        but none of the old owner's lease timing, so it waits one lease length for a holder it
        cannot see dead (``control.waiting`` / re-adoption), then elects if it was not renewed."""
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

    def submit(self, slot: str, req_id: str, command: Any) -> None:
        n = self.nodes[slot]
        if not self.alive(slot):
            return
        r = n.replica
        token = r.submit(req_id, command, self.now)
        self.waiting[(r.incarnation, token)] = req_id
        r.flush(self.now)
        self._drain(slot)

    def deliver(self, i: int, duplicate: bool = False) -> None:
        if not self.net:
            return
        i %= len(self.net)
        p = self.net[i] if duplicate else self.net.pop(i)
        if frozenset((p.src, p.dst)) in self.partitions:
            if duplicate:
                self.net.pop(i)
            return
        n = self.nodes[p.dst]
        if n.replica is None:
            return
        if n.paused:  # stays queued until resume
            if not duplicate:
                self.net.append(p)
            return
        r = n.replica
        if p.kind == "req":
            reply = r.handle(p.msg, self.now)
            self._drain(p.dst)
            if reply is not None:
                self.net.append(Packet(p.dst, p.src, "rep", reply, r.incarnation))
        else:
            r.on_reply(p.src, p.msg, self.now)
            self._drain(p.dst)

    def drop(self, i: int) -> None:
        if self.net:
            self.net.pop(i % len(self.net))

    def _drain(self, slot: str) -> None:
        n = self.nodes[slot]
        r = n.replica
        while r.effects:
            for eff in r.take_effects():
                if isinstance(eff, Send):
                    self.net.append(Packet(slot, eff.to, "req", eff.msg, r.incarnation))
                elif isinstance(eff, Complete):
                    req = self.waiting.pop((r.incarnation, eff.token), None)
                    self.outcomes.append((req, eff.outcome))
                    if eff.outcome["ok"] and req is not None:
                        if n.fenced_seen:
                            raise InvariantError(f"fenced master {slot} acknowledged {req}")
                        self.acked[req] = eff.outcome["value"]
                elif isinstance(eff, Fenced):
                    n.fenced_seen = True
                elif isinstance(eff, RoleChanged) and eff.role == "master":
                    n.fenced_seen = False  # a new term of this process
                elif isinstance(eff, ArbiterRequest):
                    lost = self.lost_arbiter_answers.pop(0) if self.lost_arbiter_answers else None
                    if lost != "before":
                        if eff.kind == "expand":
                            ok, epoch = self.arbiter.expand(APP, eff.epoch, eff.slot, eff.incarnation)
                        else:
                            ok, epoch = self.arbiter.shrink(APP, eff.epoch, eff.slot)
                    if lost is None:
                        r.on_arbiter_reply(eff.kind, eff.slot, ok, epoch, self.now)
                    else:
                        r.on_arbiter_failed(eff.kind, eff.slot, self.now)

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

    def check(self) -> None:
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
