"""A node's duties in an etcd cluster: placing, hosting, owning and forwarding.

Every app has one *owner* (the node holding ``apps/<app>/owner``, first the
node it was launched on): it places the app's slots on nodes
(``hosting.cluster.placement``), runs its elections and holds its control lease.
Every node *hosts* the slots placed on it: it runs their netlets under its own
supervisor and leases, and publishes each ready one (``apps/<app>/live/<slot>``,
under its membership lease). What only the owner can answer — a master's
control-lease renewal, its in-sync-set requests, an access point's question —
a host forwards to the owner, authorised by cluster trust.

Safety model (on top of the arbiter's epochs, which fence everything):
  * One owner at a time: the claim is an etcd create under the owner's lease.
    When the owner dies its claim vanishes with its lease; survivors race to
    claim it, the winner re-adopts the master if it still runs (same epoch:
    nobody else could grant one meanwhile) or elects a new one.
  * A node that dies takes its published netlets with it (their keys share its
    lease): the owner then presumes them dead — a master among them keeps the
    control lease it was granted until that lease runs out (it may still run,
    its node's daemon merely paused), then the owner elects from the live
    in-sync backups — and re-places their slots on survivors (``place``
    keeps every other slot where its data is). A re-created slot starts from an empty directory and joins
    as a backup, catching up from the master before it re-enters the ISR.
  * A warm start needs every slot's durable state; a slot re-created on
    another node has none, so when the last master's slot was re-created the
    owner does not warm-start (``election.blocked``): the acknowledged writes
    it held might be lost. Safety over availability, as on one node.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Any, Callable, Mapping, Protocol

import warrants
from hosting.cluster import keys
from hosting.cluster.store import ClusterStore
from hosting.cluster.view import ClusterView, LiveNetlet, ViewHandlers
from hosting.cluster.etcd import Etcd, EtcdUnavailable
from hosting.cluster.membership import AppClaimed, EtcdMembership
from hosting.cluster.placement import place, rebalance_step
from hosting.codebases import CodebaseStore
from hosting.control import ControlLeases
from hosting.election.arbiter import Arbiter
from hosting.election.elector import Elector
from hosting.registry import Registry
from hosting.supervisor import Supervisor
from rpc.tls import TLSIdentity
from warrants import names
from warrants.descriptor_model import Descriptor
from warrants.errors import BadInput, JtrixError, NotFound, NotOwner  # noqa: F401  (NotOwner: re-exported)

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_S = 2.0


def warm_start_blocked(moved: set[str], isr: set[str], holder: str | None) -> bool:
    """True when every slot that may hold the newest acknowledged writes — the in-sync set
    and the last master — was re-created on another node since (its data died with its
    node): a warm start choosing among the rest could lose them. Nothing moved: never."""
    return bool(moved) and not ((set(isr) | ({holder} if holder else set())) - set(moved))


#: Owner operations and their argument counts. The forwarding node checked its own caller for
#: the operation's right first (``hosting.api``: ``renew`` and ``arbiter`` come from a netlet
#: warrant with ``lease`` bound to that netlet, ``access`` needs ``call``, ``terminate``
#: ``terminate``); the owner accepts them only with a member node's credential (right
#: ``member``, which no client warrant can carry) and checks their arguments
#: (:func:`owner_op_args`).
OWNER_OPS = {"renew": 2, "arbiter": 6, "access": 2, "terminate": 2}
MEMBER_WARRANT_DAYS = 365


def _netlet_of(app: str, netlet_id) -> str:
    if not isinstance(netlet_id, str) or names.netlet_app(netlet_id) != app:
        raise BadInput(f"netlet {str(netlet_id)[:200]!r} is not a netlet of {app!r}")
    return netlet_id


def _number(value, what: str, optional: bool = False, integer: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise BadInput(f"owner operation: {what} must be a{'n integer' if integer else ' number'}")
    return value


def owner_op_args(app: str, op: str, args) -> list:
    """``args`` of owner operation ``op`` on ``app`` if they have its shape and every netlet id
    and slot in them belongs to ``app``; BadInput otherwise (nothing was done)."""
    if not isinstance(op, str) or op not in OWNER_OPS:
        raise BadInput(f"unknown owner operation {str(op)[:40]!r}")
    if not isinstance(args, list) or len(args) != OWNER_OPS[op]:
        raise BadInput(f"owner operation {op}: expected {OWNER_OPS[op]} arguments")
    if op == "renew":
        return [_netlet_of(app, args[0]), _number(args[1], "epoch", integer=True)]
    if op == "arbiter":
        netlet_id, kind, epoch, slot, incarnation, version = args  # as Node.arbiter_request forwards them
        if kind not in ("sync", "shrink", "expand"):
            raise BadInput(f"unknown arbiter request {str(kind)[:40]!r}")
        return [_netlet_of(app, netlet_id), kind, _number(epoch, "epoch", integer=True),
                None if slot is None and kind == "sync" else names.check_slot(slot),
                None if incarnation is None else _netlet_of(app, incarnation),
                _number(version, "version", optional=True, integer=True)]
    if op == "access":
        return [_number(args[0], "after_epoch", optional=True, integer=True), _number(args[1], "wait_s")]
    return [_number(args[0], "grace", optional=True), _number(args[1], "wait_s")]


#: what one member asks another: owner operations, and its node's status (``hosting.status``)
MEMBER_RIGHTS = ("member", "status")


def member_warrant(node_key, node_cert, service: str) -> bytes:
    """This node's credential towards other members: ``MEMBER_RIGHTS`` (not delegable), every
    app of its own service, held by the node key."""
    now = dt.datetime.now(dt.timezone.utc)
    return warrants.issue_warrant(node_key, node_cert, rights=list(MEMBER_RIGHTS), service=service,
                                  holder=node_key.public_key(), not_before=now - dt.timedelta(minutes=5),
                                  not_after=now + dt.timedelta(days=MEMBER_WARRANT_DAYS))


class AgentNode(Protocol):
    """What a node's cluster agent needs of its node (``hosting.node.Node``). Must hold:
      * ``membership`` is the node's etcd membership: its lease (which the node's published
        netlets share) and its app claims; ``name`` is the node's name in it.
      * ``node_key``, ``node_cert``, ``service_id`` and ``tls`` are fixed for the node's run
        (the member credential and the TLS identity other members see).
      * ``supervisor`` runs this node's netlets; ``status_cache`` holds each one's last reported
        status (its ``endpoint``).
      * ``register_app`` registers an app and starts nothing; ``add_codebase`` stores a codebase
        under its hash; ``recover_control`` takes up control of an app this node owns.
      * ``elector`` is told of the app's netlets as the owner sees them come and go; ``control``
        and ``arbiter`` are the node's control leases and epochs.
    """

    name: str
    node_key: Any  # the node's private key
    node_cert: Any  # its certificate
    service_id: str
    tls: TLSIdentity | None
    membership: EtcdMembership
    registry: Registry
    supervisor: Supervisor
    codebases: CodebaseStore
    arbiter: Arbiter
    control: ControlLeases
    elector: Elector
    status_cache: Mapping[str, Mapping[str, Any]]

    def descriptor(self, app: str) -> Descriptor: ...

    def register_app(self, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> Descriptor: ...

    def add_codebase(self, data: bytes, sha: str | None) -> str: ...

    def recover_control(self, app: str) -> None: ...


class ClusterAgent:
    def __init__(self, node: AgentNode, etcd: Etcd) -> None:
        self.node, self.etcd = node, etcd
        self.store = ClusterStore(etcd)
        self.view = ClusterView(etcd, ViewHandlers(owner=self._owner_changed, placement=self._placement_changed,
                                                  live=self._live_changed, member=self._member_changed))
        self._clients: dict[str, Any] = {}
        self._member_warrant = member_warrant(node.node_key, node.node_cert, node.service_id)
        self._lock = threading.Lock()
        self._rebalancing = threading.Lock()

    #: a netlet on a node that vanished is presumed dead, not seen dead (``hosting.topology``)
    sees_all_netlets = False

    def start(self) -> None:
        self.view.start()

    def recover(self) -> None:
        """The cluster says what runs here and who owns what: loading the view hosts the slots
        placed here and claims apps whose owner is gone; re-adopted netlets are published
        again, and control of the apps this node still owns is taken up."""
        node = self.node
        self.start()
        for row in node.registry.apps():
            if row["state"] != "terminating":
                self.stop_superseded(row["name"])
                self.host(row["name"])
        for netlet in list(node.supervisor.live.values()):  # re-adopted: under the node's lease now
            self._publish(netlet)  # (not those host() just stopped: their slots moved meanwhile)
        for row in node.registry.apps():
            if self.owns(row["name"]):  # still ours: our lease outlived our restart
                node.recover_control(row["name"])

    def close(self) -> None:
        self.view.close()
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- who owns what --------------------------------------------------------
    def owns(self, app: str) -> bool:
        return self.node.membership.owns(app)

    def forwarded_here(self, app: str) -> bool:
        return self.owns(app)

    def owner_elsewhere(self, app: str) -> str | None:
        owner = self.view.owner(app)
        return owner if owner not in (None, self.node.name) else None

    def owner_call(self, app: str, op: str, *args: Any) -> Any:
        """Run ``op`` on the app's owner (NotOwner if none is known; JtrixError if unreachable)."""
        owner = self.view.owner(app)
        uri = self.view.member_uri(owner) if owner else None
        if uri is None:
            raise NotOwner(f"no owner of {app!r} is known right now")
        return self.member_client(uri).call("owner_op", app, op, list(args), timeout=FORWARD_TIMEOUT_S)

    def member_client(self, uri: str):
        """A client of the member at ``uri`` acting with this node's member credential
        (:func:`member_warrant`; cached per address: each thread keeps its own connection)."""
        from hosting.client import HostingClient

        with self._lock:
            client = self._clients.get(uri)
            if client is None:
                client = HostingClient(uri, self._member_warrant, self.node.node_key,
                                       timeout=FORWARD_TIMEOUT_S, tls=self.node.tls)
                self._clients[uri] = client
            return client

    # -- an app's life (the owner) -------------------------------------------------
    def share_app(self, app: str, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> None:
        """Store what any node needs to run (or take over) the app."""
        self.store.put_codebase(codebase_sha, self.node.codebases.archive(codebase_sha))
        self.store.put_app(app, descriptor_xml, source, codebase_sha, secret)

    def wait_unpublished(self, app: str, timeout: float) -> bool:
        return self.view.wait_until(lambda: not self.view.live(app), timeout)

    def forget_app(self, app: str) -> None:
        """Forget a terminated app's spec and moved set (``ClusterStore.delete_app``)."""
        self.store.delete_app(app)

    # -- placing (the owner) ---------------------------------------------------
    def slot_types(self, app: str) -> dict[str, str]:
        descriptor = self.node.descriptor(app)
        return {slot: t.name for t in descriptor.netlet_types for slot in t.slots}

    def place_app(self, app: str, why: str) -> dict[str, str]:
        """(Re)place ``app``'s slots over the live members; returns the placement."""
        slot_types = self.slot_types(app)
        return self._replace(app, why, lambda current, live: place(slot_types, live, current))

    def _replace(self, app: str, why: str, decide: Callable[[dict, list], dict[str, str]]) -> dict[str, str]:
        """Write the placement ``decide(current, live members)`` returns; returns the placement.

        A compare-and-swap on the placement as read, so a concurrent writer (an
        owner that was just replaced) is never overwritten unseen: on a conflict
        ``decide`` runs again on theirs. Slots moved off a node are recorded as
        moved before the new placement is written, so no host can re-create one
        unmarked; marks added for a write that lost the race are taken back.
        """
        key = keys.placement(app)
        while True:
            live = [m.name for m in self.node.membership.nodes()]
            kv = self.etcd.get(key)
            current = json.loads(kv.value) if kv else {}
            placement = decide(current, live)
            if placement == current:
                return placement
            moved = {s for s, n in placement.items() if current.get(s) not in (None, n)}
            marked = moved - self.moved_slots(app)
            if marked:
                self.store.update_moved(app, lambda slots: slots | marked)
            if self.etcd.swap(key, json.dumps(placement, sort_keys=True), kv.mod_revision if kv else 0) is None:
                if marked:
                    self.store.update_moved(app, lambda slots: slots - marked)
                continue  # someone else placed it meanwhile: decide again from theirs
            self.node.registry.add_event("app.placed", app, None, placement=placement, moved=sorted(moved), why=why)
            return placement

    def maybe_rebalance(self, app: str, why: str) -> None:
        """The owner moves one backup of ``app``'s master type onto a node short of replicas of
        that type (``placement.rebalance_move``) — only while the app is whole: a master
        serving, every replica live and in sync, none still catching up after a move. The
        next move waits until the moved replica is back in sync (``caught_up``)."""
        master_type = self.node.descriptor(app).master_type
        if master_type is None:
            return
        replicas = {slot: master_type.name for slot in master_type.slots}

        def decide(current: dict, live: list) -> dict[str, str]:
            move = rebalance_step(replicas, live, current, self.node.arbiter.state(app), self.view.live(app),
                                  self.moved_slots(app))
            return current if move is None else {**current, move[0]: move[1]}

        with self._rebalancing:  # one move at a time: each decides after the last is marked
            if self.owns(app):
                self._replace(app, f"rebalance: {why}", decide)

    def unplace(self, app: str) -> None:
        """Delete ``app``'s placement: every node then stops its netlets of it (``host``)."""
        self.etcd.delete(keys.placement(app))

    def stored_placement(self, app: str) -> dict[str, str] | None:
        """``app``'s placement as etcd has it now (the view may still be catching up)."""
        kv = self.etcd.get(keys.placement(app))
        return json.loads(kv.value) if kv else None

    def placed_here(self, app: str, fresh: bool = False) -> list[str]:
        """Slots of ``app`` placed on this node, as the view has it — or, ``fresh``, as etcd has
        it now (what to act on after a pause, when the view may still be catching up)."""
        placement = self.stored_placement(app) if fresh else self.view.placement(app)
        return sorted(s for s, n in (placement or {}).items() if n == self.node.name)

    def hosts(self, app: str, slot: str) -> bool:
        """Whether ``slot`` is placed on this node, as the view has it."""
        return slot in self.placed_here(app)

    def may_run(self, app: str, slot: str) -> bool:
        """Whether ``slot`` is placed on this node now (False when etcd cannot tell)."""
        try:
            return slot in self.placed_here(app, fresh=True)
        except EtcdUnavailable:
            return False

    def next_incarnation(self, app: str, slot: str, floor: int) -> int:
        """A number above every incarnation of ``slot`` started on any node (and >= ``floor``):
        a counter in etcd, compare-and-swapped, so two nodes never start the same netlet id."""
        key = keys.incarnations(app, slot)
        while True:
            kv = self.etcd.get(key)
            number = max(floor, int(kv.value) + 1 if kv else 1)
            if self.etcd.swap(key, str(number), kv.mod_revision if kv else 0) is not None:
                return number

    def moved_slots(self, app: str) -> set[str]:
        """Slots re-created on another node that have not caught up since (``apps/<app>/moved``)."""
        return self.store.moved(app)

    def caught_up(self, app: str, slot: str) -> None:
        """``slot`` re-entered the in-sync set: it holds every acknowledged write again (so the
        owner may take the next rebalancing step)."""
        self.store.update_moved(app, lambda slots: slots - {slot})
        self._try_rebalance(app, f"{slot} in sync")

    def _try_rebalance(self, app: str, why: str) -> None:
        try:
            self.maybe_rebalance(app, why)
        except (JtrixError, ValueError) as err:  # an optimisation: never fail the caller
            log.warning("rebalancing %s failed: %s", app, err)

    def warm_start_blocked(self, app: str) -> bool:
        state = self.node.arbiter.state(app)
        return warm_start_blocked(self.moved_slots(app), state.isr, state.holder)

    # -- hosting (every node) ----------------------------------------------------
    def host(self, app: str) -> None:
        """Make this node run exactly the slots of ``app`` placed on it."""
        node = self.node
        placement = self.stored_placement(app)
        registered = node.supervisor.descriptor(app) is not None
        if placement is None:
            if registered and not self.owns(app) and not node.supervisor.is_terminating(app):
                node.registry.add_event("app.unplaced", app, None)
                node.supervisor.terminate(app, node.descriptor(app).grace)
            return
        mine = sorted(s for s, n in placement.items() if n == node.name)
        if not mine and not registered:
            return
        if not registered:
            self.register_from_store(app)
        # Under the supervisor's lock: a start in progress (which checked the placement in etcd
        # before this one was written, then spawned) is either registered already — and stopped
        # here — or not begun, and will then read this placement and not start.
        with node.supervisor.lock:
            for netlet in [n for n in node.supervisor.live.values() if n.app == app and n.slot not in mine]:
                node.supervisor.stop_netlet(netlet.netlet_id, "placed on another node", node.descriptor(app).grace,
                                            blameless=True)
        for slot in mine:
            row = node.registry.slot(app, slot)
            if row is not None and row["state"] != "failed" and node.supervisor.live_in_slot(app, slot) is None:
                node.supervisor.start_slot(app, slot, "cold" if row["incarnation"] == 0 else "replace")

    def stop_superseded(self, app: str) -> None:
        """Stop this node's netlets of ``app`` whose slot has had a newer incarnation since (started
        on another node while this one was down): their state predates a replica the arbiter
        knows, and the in-sync set would never take them back. ``host`` then starts a fresh one
        if the slot is placed here (again)."""
        node = self.node
        for netlet in [n for n in list(node.supervisor.live.values()) if n.app == app]:
            kv = self.etcd.get(keys.incarnations(app, netlet.slot))
            if kv is not None and int(kv.value) > netlet.incarnation:
                node.supervisor.stop_netlet(netlet.netlet_id, "superseded by a newer incarnation on another node",
                                            node.descriptor(app).grace, blameless=True)

    def register_from_store(self, app: str) -> None:
        """Register ``app`` here from the cluster store (fetching its codebase by hash)."""
        spec = self.store.get_app(app)
        if spec is None:
            raise NotFound(f"app {app!r} is not in the cluster store")
        if not self.node.codebases.has(spec["codebase"]):
            self.node.add_codebase(self.store.get_codebase(spec["codebase"]), spec["codebase"])
        self.node.register_app(spec["descriptor"], spec["source"], spec["codebase"], spec["secret"])

    def replicas(self, app: str) -> dict[str, tuple[str, str]]:
        return {slot: (n.netlet_id, n.endpoint) for slot, n in self.view.live(app).items()}

    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None:
        self.endpoint_changed(netlet_id)  # without an endpoint yet: published once it serves one

    def endpoint_changed(self, netlet_id: str) -> None:
        netlet = self.node.supervisor.live.get(netlet_id)
        if netlet is not None:
            self._publish(netlet)  # the owner learns of it by its view

    def netlet_gone(self, app: str, slot: str, netlet_id: str) -> None:
        try:
            self.unpublish(app, slot, netlet_id)
        except JtrixError as err:  # etcd down: the key goes with this node's lease anyway
            log.warning("unpublishing %s: %s", netlet_id, err)

    def _publish(self, netlet) -> None:
        """Publish a ready netlet of this node's (once its endpoint is known) to the cluster —
        never one the node is ending. The slot's key is one for the whole cluster: a netlet
        stopped because its slot was placed on another node (say, re-adopted by a restart after
        the slot moved) would overwrite its successor's entry, then delete it on exiting
        (``unpublish``), hiding a running replica from the owner for good."""
        endpoint = self.node.status_cache.get(netlet.netlet_id, {}).get("endpoint")
        if netlet.ready and endpoint and netlet.end_reason is None:
            self.publish(netlet.app, netlet.slot, netlet.netlet_id, endpoint)

    def publish(self, app: str, slot: str, netlet_id: str, endpoint: str) -> None:
        """Publish a ready netlet as ``slot``'s replica — unless a newer incarnation of the slot
        (started on another node) is published already: a stale one must never hide it (its
        exit would then unpublish the slot altogether). Compare-and-swapped."""
        key = keys.live(app, slot)
        value = json.dumps({"netlet": netlet_id, "node": self.node.name, "endpoint": endpoint})
        while True:
            kv = self.etcd.get(key)
            if kv is not None and names.NetletId.parse(kv.json()["netlet"]).incarnation > names.NetletId.parse(netlet_id).incarnation:
                return
            if self.etcd.swap(key, value, kv.mod_revision if kv else 0, lease=self.node.membership.lease):
                return

    def unpublish(self, app: str, slot: str, netlet_id: str) -> None:
        key = keys.live(app, slot)
        kv = self.etcd.get(key)
        if kv is not None and kv.json().get("netlet") == netlet_id:
            self.etcd.delete_if(key, kv.mod_revision)

    # -- owning -------------------------------------------------------------------
    def take_over(self, app: str) -> None:
        """This node just claimed ``app`` (its owner died): carry on its control."""
        node = self.node
        if node.supervisor.descriptor(app) is None:
            self.register_from_store(app)
        node.registry.add_event("app.taken_over", app, None, placement=self.view.placement(app))
        self.place_app(app, "owner changed")  # first: the master is chosen among slots that stay
        node.recover_control(app)

    # -- view handlers (on the view's thread) ---------------------------------------
    def _owner_changed(self, app: str, owner: str | None) -> None:
        if owner is not None or self.view.placement(app) is None:
            return
        try:
            self.node.membership.claim_app(app)
        except (AppClaimed, EtcdUnavailable):
            return  # another survivor was first
        self.take_over(app)

    def _placement_changed(self, app: str, placement: dict | None) -> None:
        self.host(app)
        if placement is not None and self.view.owner(app) is None:
            self._owner_changed(app, None)

    def _live_changed(self, app: str, slot: str, old: LiveNetlet | None, new: LiveNetlet | None) -> None:
        if not self.owns(app):
            return
        elector = self.node.elector
        if old is not None and (new is None or new.netlet_id != old.netlet_id):
            if new is not None or self._member_alive(old.node):
                # Seen dead: its node unpublished it on its exit (or started its successor).
                self.node.control.revoke_if_held_by(app, old.netlet_id, "holder gone")
            # Else presumed dead with its node, not seen dead: it may run on (its node's daemon
            # paused) and believe in its control lease until the lease it was granted here runs
            # out — so that lease is left to expire (it cannot be renewed through a dead node).
            elector.netlet_gone(app, slot, old.netlet_id)
        if new is not None and (old is None or new.netlet_id != old.netlet_id):
            elector.netlet_ready(app, slot, new.netlet_id)

    def _member_alive(self, name: str) -> bool:
        """Whether ``name`` is a member as etcd says now (the view may not have applied the
        member's removal yet: its keys go in the same revision)."""
        try:
            return self.etcd.get(keys.node(name)) is not None
        except EtcdUnavailable:
            return False  # cannot tell: presume it dead (the cautious answer here)

    def _member_changed(self, name: str, joined: bool) -> None:
        if joined:
            for app in sorted(self.view.placements):
                if self.owns(app):
                    self._try_rebalance(app, f"node {name} joined")
            return
        for app, placement in sorted(self.view.placements.items()):
            if self.owns(app) and name in placement.values():
                try:
                    self.place_app(app, f"node {name} died")
                except (JtrixError, ValueError) as err:
                    log.warning("re-placing %s after %s died failed: %s", app, name, err)
