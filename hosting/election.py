"""Electing each replicated app's master: the node's policy on top of the arbiter.

Safety model (the arbiter holds the invariants; this module only sequences):
  * An election begins by revoking the holder and persisting a new epoch
    (``Arbiter.begin_election``); every candidate then *promises* that epoch
    (``prepare``) before reporting its position, so positions cannot grow
    under the old master afterwards.
  * Normal election: candidates are the live in-sync backups; the best
    position wins (ties → lowest slot). Non-answering candidates are skipped:
    every ISR member holds every acknowledged command.
  * Warm start (no live in-sync backup): every slot of the master type is
    (re)started and the election waits until *all* of them have restored their
    durable state — choosing from a subset could miss acknowledged commands.
    If some slot never comes up, no master is elected (safety over availability).
    Replicas whose storage is fresh (wiped or new) are left out, and nothing is
    elected unless an in-sync member's storage survived (``hosting.warm_proof``).
  * The winner's control lease starts only when it is promoted; until it is
    promoted and renews, nobody is master.

Events: ``election.started``, ``election.won`` (epoch, winner, positions,
mode), ``app.bootstrap`` (mode ``warm``) and ``netlet.join`` (a backup joining
a running master).
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hosting import wire
from hosting.arbiter import StaleEpoch
from hosting.warm_proof import trusted_set, unproven, warm_refusal
from netlets.credential import make_handshake

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 1.0
RETRY_DELAY_S = 0.2


class Elector:
    def __init__(self, node) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._warming: set[str] = set()  # apps whose warm start was begun
        self._cold: set[str] = set()
        self._blocked: set[str] = set()  # apps whose warm start would risk acknowledged writes
        self._last_trusted: dict[str, dict] = {}  # app -> hosting.warm_proof trusted set (see _trusted)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="elector")

    # -- what the node tells us -------------------------------------------
    def master_type(self, app: str):
        try:
            return self.node.descriptor(app).master_type
        except Exception:
            return None

    def app_submitted(self, app: str) -> None:
        self._cold.add(app)

    def netlet_spawned(self, app: str, slot: str, netlet_id: str) -> None:
        mt = self.master_type(app)
        if mt is not None and slot in mt.slots:
            self.node.arbiter.netlet_started(app, slot, netlet_id)

    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None:
        mt = self.master_type(app)
        if mt is None or slot not in mt.slots:
            return
        if self.node.control.holder(app) is not None:
            self.node.registry.add_event("netlet.join", app, slot, netlet=netlet_id)
            self.update_peers(app)
        else:
            self.request(app)

    def netlet_gone(self, app: str, slot: str, netlet_id: str) -> None:
        mt = self.master_type(app)
        if mt is None or slot not in mt.slots:
            return
        self.node.arbiter.netlet_died(app, slot)
        if self.node.control.holder(app) is not None:
            self.update_peers(app)

    def control_lost(self, app: str) -> None:
        if self.master_type(app) is not None and self.node.registry.app(app) is not None:
            self.request(app)

    # -- elections --------------------------------------------------------
    def request(self, app: str) -> None:
        """Run an election for ``app`` now (or right after the one in progress); in a
        cluster only the app's owner runs its elections."""
        cluster = self.node.cluster
        if cluster is not None and not cluster.owns(app):
            return
        with self._lock:
            if app in self._running:
                self._again.add(app)
                return
            self._running.add(app)
        self._pool.submit(self._run, app)

    def _run(self, app: str) -> None:
        retry = False
        try:
            retry = not self._elect(app)
        except Exception:
            log.exception("election of %s failed", app)
            retry = True
        finally:
            with self._lock:
                self._running.discard(app)
                again = app in self._again
                self._again.discard(app)
        if again:
            self.request(app)
        elif retry and self.node.registry.app(app) is not None:
            self.node.timers.call_later(RETRY_DELAY_S, lambda: self.control_lost(app))

    def live_replicas(self, app: str) -> dict[str, tuple[str, str]]:
        """slot → (netlet id, endpoint) of ready netlets of the master type."""
        slots = set(self.master_type(app).slots)
        return {slot: replica for slot, replica in self.node.replicas(app).items() if slot in slots}

    def _elect(self, app: str) -> bool:
        """One attempt; True when done (a master was promoted, or nothing to do)."""
        node = self.node
        if node.registry.app(app) is None or node.supervisor.is_terminating(app):
            return True
        if node.control.holder(app) is not None:
            return True
        mt = self.master_type(app)
        live = self.live_replicas(app)
        eligible = node.arbiter.eligible(app, live)
        cold = app in self._cold
        warm = not eligible
        if warm and not cold and node.cluster is not None and node.cluster.warm_start_blocked(app):
            if app not in self._blocked:
                self._blocked.add(app)
                node.registry.add_event("election.blocked", app, None,
                                        reason="every replica that may hold the newest acknowledged writes was "
                                               "re-created on another node (its data died with its node)")
            return True  # re-evaluated at the next readiness or lease event
        self._blocked.discard(app)
        if warm:
            if not cold and app not in self._warming:
                self._warming.add(app)
                node.registry.add_event("app.bootstrap", app, None, mode="warm",
                                        reason="control lease lost with no live in-sync backup")
                node.bootstrap(app, "warm", event=False)
            if set(live) != set(mt.slots):
                return False  # wait until every slot has restored its state
            candidates = sorted(live)
        else:
            candidates = eligible
        trusted = self._trusted(app)  # before begin_election drops the holder
        epoch = node.arbiter.begin_election(app, candidates)
        node.registry.add_event("election.started", app, None, epoch=epoch, candidates=candidates,
                                mode="cold" if cold else ("warm" if warm else "failover"))
        secret = node.app_secret(app)
        futures = {slot: self._pool.submit(self._call, live[slot][1], secret, app, "replication_prepare", epoch)
                   for slot in candidates}
        positions, promises = {}, {}
        for slot, fut in futures.items():
            try:
                promise = fut.result(timeout=PREPARE_TIMEOUT_S + 1)
            except Exception as err:
                log.info("election of %s: %s did not promise: %s", app, slot, err)
                continue
            if promise.get("ok"):
                positions[slot] = tuple(promise["position"])
                promises[slot] = promise
        warm_slots = set(mt.slots) if warm else set()
        if warm and not cold:  # hosting.warm_proof: fresh storage proves nothing
            refusal = warm_refusal(promises, trusted)
            if refusal is not None:
                if app not in self._blocked:
                    self._blocked.add(app)
                    node.registry.add_event("election.blocked", app, None, reason=refusal)
                return True  # re-evaluated at the next readiness event
            for slot in unproven(promises):
                positions.pop(slot, None)
                warm_slots.discard(slot)
        try:
            winner = node.arbiter.choose(app, epoch, positions, warm=warm_slots)
        except StaleEpoch:
            return False
        if winner is None:
            return False
        state = node.arbiter.state(app)
        netlet_id, endpoint = live[winner]
        peers = {s: ep for s, (_, ep) in self.live_replicas(app).items() if s != winner}
        ttl = node.descriptor(app).lease_ttl
        node.control.start_timing(app, netlet_id, epoch, ttl)
        try:
            self._call(endpoint, secret, app, "replication_promote", epoch, sorted(state.isr), peers)
        except Exception as err:
            log.warning("election of %s: promoting %s failed: %s", app, winner, err)
            return True  # it will not renew: its control lease expires and we elect again
        node.promoted[app] = epoch  # before the event: its notification wakes waiting access points
        node.registry.add_event("election.won", app, winner, epoch=epoch, netlet=netlet_id,
                                positions={s: list(p) for s, p in positions.items()},
                                mode="cold" if cold else ("warm" if warm else "failover"))
        self._cold.discard(app)
        self._warming.discard(app)
        return True

    def _trusted(self, app: str) -> dict | None:
        """The trusted set of ``hosting.warm_proof`` while a holder is recorded, else the one
        captured before the first election attempt since the last grant (in memory: after a
        node restart mid-election it is unknown)."""
        prior = self.node.arbiter.state(app)
        trusted = trusted_set(prior.isr, prior.holder, prior.holder_netlet(), prior.incarnations,
                              self._storage_generation)
        if trusted is not None:
            self._last_trusted[app] = trusted
        return self._last_trusted.get(app)

    def _storage_generation(self, netlet_id: str | None) -> str | None:
        """The storage generation netlet ``netlet_id`` reported (its durable status), if known."""
        row = self.node.registry.netlet(netlet_id) if netlet_id else None
        if row is None or not row["status"]:
            return None
        return (json.loads(row["status"]).get("storage") or {}).get("generation")

    def update_peers(self, app: str) -> None:
        """Tell the master which backups exist now (joins and departures)."""
        holder = self.node.control.holder(app)
        if holder is None:
            return
        live = self.live_replicas(app)
        master_slot = holder.split("/", 1)[1].split("#", 1)[0]
        if master_slot not in live:
            return
        epoch = self.node.arbiter.state(app).epoch
        peers = {s: ep for s, (_, ep) in live.items() if s != master_slot}
        secret = self.node.app_secret(app)
        self._pool.submit(self._call, live[master_slot][1], secret, app, "replication_peers", epoch, peers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _call(self, endpoint: str, secret: bytes, app: str, method: str, *args: Any) -> Any:
        """One RPC to a netlet endpoint with the app credential (node → netlet)."""
        with wire.proxy(endpoint, timeout=PREPARE_TIMEOUT_S, tls=self.node.tls) as p:
            p._pyroHandshake = make_handshake(secret, app)
            return getattr(p, method)(*args)
