"""Electing each replicated app's master on the hosting node: the node as an election host.

The policy is ``hosting.election.core`` (no I/O: the simulator runs the same
code); this module gives it the node's facts and carries out its actions:
arbiter calls, the ``replication_prepare``/``replication_promote`` RPCs
(``_rpc``, the one place a node calls a netlet), control-lease timing and events.

Concurrency (why many simultaneous elections do not starve each other): every
task on the pool is bounded by its own RPC timeout and none waits on another
pool task — prepares are separate tasks whose answers are fed back to the
core, and the last answer chooses. So N elections need no more than N·(1 + candidates)
short tasks, whatever the pool size: even a pool of one thread elects any
number of apps (``tests/test_mass_election.py`` runs more elections at once
than its pool has threads). A step that must wait for anything (a lock held
across a spawn, an RPC) may wait only on its own bound.

Errors: a candidate's or the network's failure (an RPC that raised, a malformed answer) is an
answer — no promise, a failed promotion — logged briefly; a failure of the node's own (minting
a grant, a store) is a bug or an outage and is never taken for a candidate's answer: it raises
into ``hosting.election.core.ElectionRunner`` (which logs it and retries), and nothing run on
the pool ends unlogged (``_run``).

A ``replication_promote`` RPC that fails (a timeout: ``become_master`` syncs
inside it) has an unknown outcome, not a failed one: the winner may be master.
The holder's first renewal at its epoch completes the promotion then
(``renewed``: ``election.confirmed``), as a successful RPC would have.

Events: ``election.started``, ``election.won`` (epoch, winner, positions,
mode), ``election.confirmed`` (a promotion completed by the winner's renewal),
``election.blocked``, ``app.bootstrap`` (mode ``warm``) and
``netlet.join`` (a backup joining a running master).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from rpc import wire
from hosting.control import ControlLeases
from hosting.election import grants
from hosting.election.arbiter import Arbiter, StaleEpoch
from hosting.election.core import (Begin, Blocked, Choose, ElectionRunner, Facts, Position, Prepare, Promote,
                                   Retry, WarmStart, Won)
from hosting.election.promotions import Promotions
from hosting.registry import Registry
from hosting.supervisor import Supervisor
from hosting.timers import Timers
from hosting.timing import PREPARE_TIMEOUT_S
from rpc.tls import TLSIdentity
from hosting.topology import Topology
from rpc.credential import replica_handshake
from warrants.descriptor_model import Descriptor
from warrants.errors import NotFound
from warrants.names import NetletId

log = logging.getLogger(__name__)

POOL_THREADS = 32


class ElectorNode(Protocol):
    """What the elector needs of its node (``hosting.node.Node``). Must hold:
      * ``arbiter`` is the only authority on epochs and the in-sync set; ``control`` times the
        lease it grants, and ``promoted`` records each promotion that completed.
      * ``replicas(app)``: slot -> (netlet id, endpoint) of the app's ready netlets wherever they
        run; ``topology.owns(app)``: whether this node runs the app's elections.
      * ``descriptor`` raises NotFound for an unknown app; ``app_secret`` opens the replica
        surface of the app's netlets; ``grant_signer`` and ``tls`` are fixed for the node's run.
      * ``bootstrap(app, "warm", event=False)`` starts the app's warm start, recording no event.
    """

    registry: Registry
    supervisor: Supervisor
    timers: Timers
    arbiter: Arbiter
    control: ControlLeases
    promoted: Promotions
    topology: Topology
    grant_signer: grants.GrantSigner
    tls: TLSIdentity | None

    def descriptor(self, app: str) -> Descriptor: ...

    def replicas(self, app: str) -> dict[str, tuple[str, str]]: ...

    def app_secret(self, app: str) -> bytes: ...

    def bootstrap(self, app: str, mode: str, event: bool = True) -> None: ...


class Elector:
    def __init__(self, node: ElectorNode, threads: int = POOL_THREADS) -> None:
        self.node = node
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="elector")
        self.runner = ElectionRunner(self)

    # -- what the node tells us -------------------------------------------
    def master_type(self, app: str):
        """The app's replicated netlet type; None if it has none or the app is unknown."""
        try:
            return self.node.descriptor(app).master_type
        except NotFound:
            return None

    def app_submitted(self, app: str) -> None:
        self.runner.submitted(app)

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

    def request(self, app: str) -> None:
        """Run an election for ``app`` now (or right after the one in progress); in a
        cluster only the app's owner runs its elections."""
        if not self.node.topology.owns(app):
            return
        self.runner.request(app)

    def live_replicas(self, app: str) -> dict[str, tuple[str, str]]:
        """slot → (netlet id, endpoint) of ready netlets of the master type."""
        mt = self.master_type(app)
        slots = set(mt.slots) if mt is not None else set()
        return {slot: replica for slot, replica in self.node.replicas(app).items() if slot in slots}

    def update_peers(self, app: str) -> None:
        """Tell the master which backups exist now (joins and departures)."""
        holder = self.node.control.holder(app)
        if holder is None:
            return
        live = self.live_replicas(app)
        master_slot = NetletId.parse(holder).slot
        if master_slot not in live:
            return
        epoch = self.node.arbiter.state(app).epoch
        peers = _peers(live, master_slot)
        grant = grants.for_peers(self.node.grant_signer, app, live[master_slot][0], epoch, peers)
        self.submit(lambda: self._rpc_logged(*live[master_slot], app, "replication_peers", epoch, peers, grant))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- ElectionHost ----------------------------------------------------------
    def submit(self, fn: Callable[[], None]) -> None:
        self._pool.submit(self._run, fn)

    @staticmethod
    def _run(fn: Callable[[], None]) -> None:
        """A pool task: what it raises is logged (the pool would keep it in a future nobody reads)."""
        try:
            fn()
        except Exception:
            log.exception("election task failed")

    def gather(self, app: str) -> Facts:
        node = self.node
        mt = self.master_type(app)
        registered = node.registry.app(app) is not None and mt is not None
        if not registered:
            return Facts(registered=False)
        live = self.live_replicas(app)
        return Facts(registered=True, terminating=node.supervisor.is_terminating(app),
                     owner=node.topology.owns(app), held=node.control.holder(app) is not None,
                     slots=tuple(mt.slots), live=live, eligible=tuple(node.arbiter.eligible(app, live)),
                     warm_blocked=node.topology.warm_start_blocked(app),
                     trusted=self._trusted(app))

    def _trusted(self, app: str) -> dict | None:
        """``hosting.election.warm_proof``'s trusted set, as the arbiter's state records it."""
        return self.node.arbiter.state(app).last_trusted()

    def begin(self, action: Begin) -> int:
        epoch = self.node.arbiter.begin_election(action.app, action.candidates)
        self.node.registry.add_event("election.started", action.app, None, epoch=epoch,
                                     candidates=list(action.candidates), mode=action.mode)
        return epoch

    def prepare(self, action: Prepare, reply: Callable[[Position | None], None]) -> None:
        def call() -> None:
            promise = None
            try:
                promise = self._promise(action)
            finally:  # exactly once, whatever happened (ElectionHost): a failure of ours is no promise too
                reply(*(promise or (None, None)))
        self.submit(call)

    def _promise(self, action: Prepare) -> tuple[Position, dict | None] | None:
        """The candidate's promise ``(position, storage)``; None if it gave none. Raises only for
        the node's own failures (the module's "Errors")."""
        grant = grants.for_prepare(self.node.grant_signer, action.app, action.netlet, action.epoch)
        try:
            promise = self._rpc(action.netlet, action.endpoint, action.app, "replication_prepare", action.epoch, grant)
            return (tuple(promise["position"]), promise.get("storage")) if promise.get("ok") else None
        except Exception as err:  # whatever the candidate or the network did: no promise
            log.info("election of %s: %s did not promise: %s", action.app, action.slot, err)
            return None

    def choose(self, action: Choose) -> str | None:
        try:
            return self.node.arbiter.choose(action.app, action.epoch, action.positions, warm=action.warm,
                                        promisers=action.promisers)
        except StaleEpoch:
            return None

    def promote(self, action: Promote) -> bool:
        node = self.node
        state = node.arbiter.state(action.app)
        peers = _peers(self.live_replicas(action.app), action.slot)
        node.control.start_timing(action.app, action.netlet, action.epoch, node.descriptor(action.app).lease_ttl)
        isr = sorted(state.isr)
        grant = grants.for_promote(node.grant_signer, action.app, action.netlet, action.epoch, isr, peers)
        try:
            self._rpc(action.netlet, action.endpoint, action.app, "replication_promote", action.epoch, isr, peers,
                      grant)
        except Exception as err:  # outcome unknown: a master renews (``renewed``); else its lease expires
            log.warning("election of %s: promoting %s at epoch %d: outcome unknown: %s", action.app, action.slot,
                        action.epoch, err)
            return False
        return True

    def renewed(self, app: str, netlet: str, epoch: int) -> None:
        """The control lease holder renewed at ``epoch``: it is master at that epoch, so its
        promotion completed, whatever its RPC answered (the first such renewal records it)."""
        node = self.node
        if node.promoted.recorded_at_least(app, epoch) or self.master_type(app) is None:
            return
        node.promoted.record(app, epoch)  # before the event announcing it
        node.registry.add_event("election.confirmed", app, NetletId.parse(netlet).slot, epoch=epoch, netlet=netlet,
                                by="renewal")

    def won(self, action: Won) -> None:
        self.node.promoted.record(action.app, action.epoch)  # before the event announcing it
        self.node.registry.add_event("election.won", action.app, action.slot, epoch=action.epoch,
                                     netlet=action.netlet,
                                     positions={s: list(p) for s, p in action.positions.items()}, mode=action.mode)

    def warm_start(self, action: WarmStart) -> None:
        self.node.registry.add_event("app.bootstrap", action.app, None, mode="warm",
                                     reason="control lease lost with no live in-sync backup")
        self.node.bootstrap(action.app, "warm", event=False)

    def blocked(self, action: Blocked) -> None:
        self.node.registry.add_event("election.blocked", action.app, None, reason=action.reason)

    def retry(self, action: Retry) -> None:
        if self.node.registry.app(action.app) is not None:
            self.node.timers.call_later(action.delay, lambda: self.control_lost(action.app))

    # -- RPCs ----------------------------------------------------------------------
    def _rpc(self, netlet: str, endpoint: str, app: str, method: str, *args: Any) -> Any:
        """One RPC to the netlet ``netlet`` at ``endpoint`` with the replica credential (node → netlet),
        its handshake made for that process alone; every election RPC goes through here, each
        carrying the node's grant for exactly that call."""
        with wire.proxy(endpoint, timeout=PREPARE_TIMEOUT_S, tls=self.node.tls) as p:
            p._pyroHandshake = replica_handshake(self.node.app_secret(app), app, netlet)
            return getattr(p, method)(*args)

    def _rpc_logged(self, netlet: str, endpoint: str, app: str, method: str, *args: Any) -> None:
        try:
            self._rpc(netlet, endpoint, app, method, *args)
        except Exception as err:  # the master learns of peers again at the next change
            log.info("%s of %s at %s failed: %s", method, app, endpoint, err)


def _peers(live: dict[str, tuple[str, str]], master_slot: str) -> dict[str, list[str]]:
    """What a master is told of its backups (``replication_promote``/``replication_peers``): slot →
    [netlet id, endpoint] of every live replica but the master; it proves itself to each by that id."""
    return {slot: [netlet, endpoint] for slot, (netlet, endpoint) in live.items() if slot != master_slot}
