"""The hosting node: one object wiring registry, lessor, supervisor and control leases.

Operations here assume the caller is authorised (``hosting.api`` checks the
warrant of every call first). Contracts of the node as a whole:
  * Its state survives its own death: everything needed to re-attach to
    running netlets (pid + start time, slot, incarnation, status) and every
    epoch ever granted is in the registry before it is acted on.
  * On start it re-adopts live netlets (never a reused pid), restarts slots
    whose netlet died meanwhile, and resumes unfinished terminations.
  * Stopping the node never stops netlets.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import warrants
from hosting import bindings, netlet_status
from hosting.election import grants
from hosting.election.arbiter import Arbiter, OwnershipLost, StoreConflict, StoreUnavailable
from hosting.store_retry import STORE_ERRORS
from hosting.bootstrapper import Bootstrapper
from hosting.cluster.etcd import Etcd, TLSFiles
from hosting.codebases import CodebaseStore
from hosting.confine import Confinement
from hosting.control import ControlLeases, LeaseFenced
from hosting.election.elector import Elector
from hosting.home import Home, ensure_home, service_id_of
from hosting.secretbox import SecretBox
from hosting.lessor import Lessor
from hosting.cluster.membership import AppClaimed, EtcdMembershipConfig, Membership
from hosting.election.promotions import Promotions
from hosting.registry import Registry
from hosting.supervisor import Supervisor, SupervisorHooks, lease_id_of
from hosting.timers import Timers
from hosting.timing import Timing
from hosting.standing import services_for
from hosting.topology import EventLog, RegistryEvents, Topology, at_owner, owner_operations
from rpc.tls import TLSIdentity
from rpc.credential import CLIENT, credential, door_key
from warrants.descriptor_model import Descriptor
from warrants.errors import BadInput, JtrixError, NotFound, NotOwner
from warrants.names import NetletId, process_of

log = logging.getLogger(__name__)

#: status keys whose change is persisted at once (others, like seq, only in memory)
DURABLE_STATUS_KEYS = ("phase", "role", "epoch", "endpoint", "app_status", "storage", "fault")


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start; checked at construction."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 = reuse the port recorded in the home if free, else ephemeral
    start_timeout: float = 15.0  # first renewal must arrive within this
    metrics: bool = True
    cluster: str | None = None  # etcd URL (http://HOST:PORT[/PREFIX]); None: a single-node cluster
    name: str | None = None  # the node's name in the cluster (default: its service id)
    membership_ttl: int = 3  # seconds without renewing before the cluster declares this node dead
    etcd_tls: TLSFiles | None = None  # for an https etcd: its CA, and this node's client cert and key
    confine: str = "auto"  # how netlets are confined: auto, uid, landlock, none (hosting.confine)
    election_threads: int = 32  # the elector's pool (hosting.election.elector): no task on it waits on another
    start_limit: int | None = None  # netlets starting at once (hosting.start_queue); None: 2 per core


    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BadInput(f"invalid port {self.port}")
        if self.start_timeout <= 0:
            raise BadInput("start timeout must be positive")
        if self.cluster is not None:
            try:
                Etcd(self.cluster)
            except ValueError as err:
                raise BadInput(str(err)) from None
        if self.etcd_tls is not None:
            if self.cluster is None or not self.cluster.startswith("https://"):
                raise BadInput("etcd TLS files need an https:// --cluster URL")
            if bool(self.etcd_tls.cert) != bool(self.etcd_tls.key):
                raise BadInput("an etcd client certificate needs its key, and a key its certificate")
            for label, path in (("etcd CA", self.etcd_tls.ca), ("etcd client certificate", self.etcd_tls.cert),
                                ("etcd client key", self.etcd_tls.key)):
                if path is not None and not os.access(path, os.R_OK):
                    raise BadInput(f"{label} {path}: not a readable file")
        if self.cluster is None and not is_loopback(self.host):
            raise BadInput(f"--listen {self.host}: a node without --cluster speaks plain TCP, so it listens on"
                           " loopback only (127.0.0.1); join a cluster for TLS between machines")
        if self.cluster is not None and self.host in ("0.0.0.0", "::", ""):
            raise BadInput("in a cluster, --listen must be this node's address as other nodes reach it"
                           f" (not {self.host or 'empty'}): netlets serve on it too")
        if self.name is not None and (not self.name or "/" in self.name):
            raise BadInput(f"invalid node name {self.name!r} (non-empty, no '/')")
        EtcdMembershipConfig(ttl=self.membership_ttl)
        if self.election_threads < 1:
            raise BadInput(f"--election-threads {self.election_threads}: at least 1")
        if self.start_limit is not None and self.start_limit < 1:
            raise BadInput(f"--start-limit {self.start_limit}: at least 1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Node(SupervisorHooks):
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.home: Home = ensure_home(config.home)
        self.node_key = warrants.load_private_key(self.home.node_key)
        self.node_cert = warrants.load_cert(self.home.node_cert)
        self.service_id = service_id_of(self.node_cert)
        self.name = config.name or self.service_id
        self.registry = Registry(self.home.registry, SecretBox(self.home.secrets_key))
        self.confinement = Confinement(self.home, self.registry, config.confine)
        self.codebases = CodebaseStore(self.home.codebases)
        self.timers = Timers()
        self.lessor = Lessor(self.timers)  # each lease's expiry is its granter's (supervisor, control)
        member_info = {"service": self.service_id, "started": time.time()}
        #: set while this node may run netlets: always alone, while a member in a cluster
        self.member = threading.Event()
        self.member.set()
        #: what differs alone and in a cluster, built by the topology's factory (``hosting.standing``)
        self.services = services_for(config, self.home, self.registry, self.name, member_info,
                                     on_fenced=self._on_fenced, on_app_lost=self._on_app_lost,
                                     on_rejoined=self._on_rejoined)
        self.membership: Membership = self.services.membership
        self.arbiter = Arbiter(self.services.epoch_store)
        #: in a cluster: this node's certificate (every connection is TLS); alone: None (plain TCP)
        self.tls: TLSIdentity | None = self.services.tls
        #: signs the grants the elector sends netlets (``hosting.election.grants``): the node key, or the node's
        #: cluster certificate's key (fixed for this run, like ``self.tls``)
        self.grant_signer = grants.GrantSigner.for_node(self)
        #: called with certificates of other cluster members to trust (set by the hosting API)
        self.on_trusted_certs: Callable[[list], None] = lambda certs: None
        self.control = ControlLeases(self.registry, self.arbiter, self.lessor, self._on_control_lost,
                                     serving=False)  # until start_serving
        self.elector = Elector(self, threads=config.election_threads)
        #: the masters whose promotion completed (this node's run only): what access points wait for
        self.promoted = Promotions()
        self.supervisor = Supervisor(home=self.home, registry=self.registry, timers=self.timers,
                                     lessor=self.lessor, make_secrets=self._make_secrets,
                                     confinement=self.confinement,
                                     start_timeout=config.start_timeout, hooks=self,
                                     start_limit=config.start_limit, serving=False)  # until start_serving
        self.bootstrapper = Bootstrapper(self)
        #: where the node stands among nodes (``hosting.topology``): owning, hosting, forwarding
        self.topology: Topology = self.services.topology(self)
        #: this node's event log, and the whole cluster's (alone: the same)
        self.own_events: EventLog = RegistryEvents(self.registry)
        self.cluster_events: EventLog = self.services.cluster_events
        self.status_cache: dict[str, dict[str, Any]] = {}
        #: app -> (the supervisor's runtime of its registration, its instance): ``app_instance``
        self._instances: dict[str, tuple[Any, str]] = {}
        self.started_wall = time.time()
        self.uri: str | None = None
        #: each process this node starts gets door_key(door_root, its id) and proves with it which
        #: of the node's processes it is (rpc.gate reserves capacity for them, per process)
        self.door_root = os.urandom(32)
        #: the open doors: place (a slot, an app's bootstrap) -> the holder whose key opens it
        self._doors: dict[str, str] = {}
        self._doors_lock = threading.Lock()
        #: shuts down every connection a door holder holds (the daemon's gate; set by hosting.daemon)
        self.door_revoked: Callable[[str], object] = lambda holder: None
        self.metrics_port: int | None = None

    def issue_tls(self, name: str) -> dict[str, str] | None:
        """A certificate for a process this node starts (netlet, bootstrap), serving on the
        node's address; None when the node speaks plain TCP."""
        return self.services.issue_tls(name)

    # -- lifecycle --------------------------------------------------------
    def recover(self) -> None:
        """Join the cluster, then re-attach to what an earlier run of this node left running."""
        self.membership.info["uri"] = self.uri
        self.membership.join()
        self.services.start(self.node_cert, lambda certs: self.on_trusted_certs(certs))
        self.registry.add_event("node.started", None, None, pid=os.getpid(), name=self.name,
                                cluster=self.config.cluster)
        self.collect_codebases(at_start=True)
        for row in self.registry.apps():
            descriptor = _parse_stored(row)
            self.supervisor.register_app(descriptor, self.codebases.dir_of(row["codebase_sha"]))
            for n in self.registry.netlets(row["name"], live_only=True):
                if n["status"]:
                    self.status_cache[n["id"]] = json.loads(n["status"])
                if not self.supervisor.adopt(n, descriptor.lease_ttl):
                    self.registry.update_netlet(n["id"], state="exited",
                                                exit=json.dumps({"reason": "died while the node was down",
                                                                 "unknown": True}))
                    self.registry.add_event("netlet.exited", row["name"], n["slot"], netlet=n["id"],
                                            reason="died while the node was down")
            if row["state"] == "terminating":
                self.supervisor.terminate(row["name"], descriptor.grace)
        self.topology.recover()

    def recover_control(self, app: str) -> None:
        """The master that held the control lease before this node (or the app's previous
        owner) died keeps it if it is still alive; otherwise a master is elected.

        Alive means its process was re-adopted (pid and start time matched, its pidfd has not
        fired) or, in a cluster, it is published ready: ready or not (a row left "starting" by a
        ``mark_ready`` write lost with the node, "stopping" by a stop whose grace the node died
        in), a live holder may still believe in its lease. Elected at once only when its process
        is known dead here; a holder this node cannot see waits one lease TTL (below)."""
        descriptor = self.descriptor(app)
        if descriptor.master_type is None:
            return
        state = self.arbiter.state(app)
        holder = state.holder_netlet()
        live = self.replicas(app).get(state.holder) if state.holder else None
        adopted = holder is not None and holder in self.supervisor.live
        if holder is not None and (adopted or (live is not None and live[0] == holder)):
            # The same grant continues (same epoch): nobody else could be elected while we were down.
            # One lease length everywhere (``hosting.control``): whoever renews it next answers
            # lease_ttl, as any owner would, so a later owner's one-TTL wait covers it.
            self.control.start_timing(app, holder, state.epoch, descriptor.lease_ttl, event=False)
            self.promoted.record(app, state.epoch)  # its promotion completed in an earlier run of the node
            self.registry.add_event("control.readopted", app, state.holder, holder=holder, epoch=state.epoch)
        elif holder is not None and not self.topology.sees_all_netlets:
            # Presumed dead (its node is gone), not seen dead: it may run on, believing in a lease
            # granted by the previous owner (whose grants nobody here knows) for up to a lease
            # TTL — an election before that could give the app two masters serving reads. So it
            # holds a lease of one TTL here: renewed if it is in fact alive, else it runs out
            # and the election follows (nothing elects while it is held).
            wait_s = Timing(lease_ttl=descriptor.lease_ttl).takeover_wait_s
            self.control.start_timing(app, holder, state.epoch, wait_s, event=False)
            self.registry.add_event("control.waiting", app, state.holder, holder=holder, wait_s=wait_s)
        else:
            self.elector.control_lost(app)

    def start_serving(self) -> None:
        """The API answers from now (called by the daemon after ``recover`` and once node.json
        says where): control leases and adopted netlets' leases granted during recovery, which
        nobody could renew yet, run their ttl from now."""
        self.supervisor.start_serving()
        self.control.start_serving()

    def write_node_json(self) -> None:
        info = {"pid": os.getpid(), "uri": self.uri, "service": self.service_id,
                "metrics_port": self.metrics_port, "started": self.started_wall}
        for path in (self.home.node_json, self.home.netlet_node_json):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            os.chmod(tmp, 0o644)  # netlets re-read the node's address from it (hosting.confine)
            os.replace(tmp, path)

    def shutdown(self) -> None:
        """Stop the node's threads; netlets keep running and will re-attach later."""
        self.registry.add_event("node.stopping", None, None, pid=os.getpid())
        self.supervisor.shutdown()  # its watcher watches the bootstrap runs too (they keep running)
        self.elector.close()
        self.topology.close()
        self.membership.close()
        self.services.close()
        self.timers.stop()
        try:
            info = json.loads(self.home.node_json.read_text())
            if info.get("pid") == os.getpid():
                self.home.node_json.unlink()
                self.home.netlet_node_json.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
        self.registry.close()

    # -- apps -------------------------------------------------------------
    def descriptor(self, app: str) -> Descriptor:
        """The app's descriptor, from memory (it is on every renewal's path): NotFound if unknown."""
        descriptor = self.supervisor.descriptor(app)
        if descriptor is None:
            raise NotFound(f"no app named {app!r}")
        return descriptor

    def replicas(self, app: str) -> dict[str, tuple[str, str]]:
        """slot → (netlet id, endpoint) of every ready netlet of ``app`` that serves an endpoint:
        this node's own, or in a cluster every node's (as published)."""
        return self.topology.replicas(app)

    def add_codebase(self, data: bytes, sha: str | None, uploader: str = "") -> str:
        sha = self.codebases.add(data, sha, uploader)
        self.registry.add_codebase(sha, len(data))
        return sha

    def commit_codebase(self, sha: str, uploader: str) -> str:
        """Store ``uploader``'s chunked upload of ``sha`` (``CodebaseStore.commit``)."""
        self.codebases.commit(sha, uploader)
        self.registry.add_codebase(sha, len(self.codebases.archive(sha)))
        return sha

    def collect_codebases(self, at_start: bool = False) -> None:
        """Remove the codebases no registered app uses (``CodebaseStore.collect``)."""
        removed = self.codebases.collect(lambda: {row["codebase_sha"] for row in self.registry.apps()},
                                         incoming=at_start)
        if removed:
            self.registry.remove_codebases(removed)
            self.registry.add_event("codebases.collected", None, None, codebases=removed)

    def submit_app(self, descriptor_xml: bytes, source: str, codebase_sha: str, replace: bool = False,
                   start: bool = True) -> dict[str, Any]:
        """Register an app and (unless ``start`` is False) run its default bootstrap (cold start)."""
        descriptor = warrants.parse_descriptor(descriptor_xml, source, read_files=False)
        if not self.codebases.pin(codebase_sha):  # pinned: replacing an app cannot collect it
            raise BadInput(f"codebase {codebase_sha[:12]} has not been uploaded")
        owner = self.topology.owner_elsewhere(descriptor.name)
        if owner is not None:
            raise AppClaimed(f"app {descriptor.name!r} runs on node {owner}")
        existing = self.registry.app(descriptor.name)
        if existing is not None:
            if not replace:
                raise BadInput(f"app {descriptor.name!r} is already running (use --replace)")
            self.terminate(descriptor.name, wait_s=60)
        self.membership.claim_app(descriptor.name)
        self.arbiter.new_instance(descriptor.name)  # never elected: a cold start, even after a restart
        secret = os.urandom(32)
        self.topology.share_app(descriptor.name, descriptor_xml, source, codebase_sha, secret)
        self.register_app(descriptor_xml, source, codebase_sha, secret)
        slots = [slot for t in descriptor.netlet_types for slot in t.slots]
        self.registry.add_event("app.submitted", descriptor.name, None, codebase=codebase_sha, slots=len(slots))
        self.elector.app_submitted(descriptor.name)
        self.topology.place_app(descriptor.name, "launched")
        if start:
            self.bootstrap(descriptor.name, "cold")
        return {"app": descriptor.name, "slots": slots}

    def register_app(self, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> Descriptor:
        """Record an app (every slot pending) and make it known to the supervisor; starts nothing."""
        descriptor = warrants.parse_descriptor(descriptor_xml, source, read_files=False)
        slots = [(slot, t.name, {}) for t in descriptor.netlet_types for slot in t.slots]
        self.registry.add_app(descriptor.name, descriptor_xml, source, codebase_sha, secret, slots)
        self.codebases.unpin(codebase_sha)  # the registry keeps it from here on
        self.supervisor.register_app(descriptor, self.codebases.dir_of(codebase_sha))
        return descriptor

    def bootstrap(self, app: str, mode: str, event: bool = True) -> None:
        """Run the app's custom bootstrap process if its descriptor names one (``hosting.bootstrapper``),
        else the default bootstrap: start every slot of every netlet type that is not running."""
        descriptor = self.descriptor(app)
        if event:
            self.registry.add_event("app.bootstrap", app, None, mode=mode)
        if descriptor.bootstrap_class:
            self.bootstrapper.start(app, mode)
            return
        for ntype in descriptor.netlet_types:
            for slot in ntype.slots:
                if self.topology.hosts(app, slot):  # others: their nodes
                    self.supervisor.request_start(app, slot, mode)

    def run_netlet(self, app: str, slot: str) -> str:
        descriptor = self.descriptor(app)
        if slot not in {s for t in descriptor.netlet_types for s in t.slots}:
            raise NotFound(f"app {app!r} has no slot {slot!r}")
        netlet_id = self.supervisor.start_slot(app, slot, "manual")
        if netlet_id is None:
            raise JtrixError(f"{app}/{slot} is already running or the app is terminating")
        return netlet_id

    @at_owner("terminate")
    def terminate(self, app: str, grace: float | None = None, wait_s: float = 60.0) -> bool:
        """Stop every netlet of ``app`` (SIGTERM, grace, SIGKILL); True once all are gone.

        In a cluster the owner does it (another node forwards the call): it
        unplaces the app — each node then stops its own netlets of it — and
        waits until none is published any more.
        """
        descriptor = self.descriptor(app)
        started = time.monotonic()
        self.topology.unplace(app)
        rt = self.supervisor.terminate(app, descriptor.grace if grace is None else grace)
        if rt is None:
            raise NotFound(f"no app named {app!r}")
        self.bootstrapper.kill(app, wait_s)  # after terminate began: no bootstrap can start any more
        done = rt.gone.wait(wait_s)
        if done:  # other nodes' netlets: their keys go when they are gone
            done = self.topology.wait_unpublished(app, max(0.0, wait_s - (time.monotonic() - started)))
        if done:
            self.lessor.revoke(self.control.lease_id(app))
            self.arbiter.forget(app)
            self.topology.forget_app(app)
            self.membership.release_app(app)
            self.collect_codebases()
        return done

    def app_secret(self, app: str) -> bytes:
        secret = self.registry.app_secret(app)
        if secret is None:
            raise NotFound(f"no app named {app!r}")
        return secret

    def signal(self, app: str, slot: str, sig: int) -> str:
        self.descriptor(app)
        try:
            return self.supervisor.signal_netlet(app, slot, sig)
        except KeyError:
            raise NotFound(f"no live netlet in {app}/{slot}") from None

    def reset(self, app: str, slot: str) -> str | None:
        """Rebuild one replica from the current master (``Supervisor.reset_slot``); never the
        master itself, and only on the node the slot is placed on."""
        descriptor = self.descriptor(app)
        mt = descriptor.master_type
        if mt is None or slot not in mt.slots:
            raise NotFound(f"{app}/{slot} is not a replica of {app}")
        if not self.topology.hosts(app, slot):
            raise BadInput(f"{app}/{slot} runs on another node: reset it there")
        holder = self.control.holder(app)
        if holder is not None and NetletId.parse(holder).slot == slot:
            raise BadInput(f"{app}/{slot} is the master: only a backup can be rebuilt from the master")
        try:
            return self.supervisor.reset_slot(app, slot, descriptor.grace)
        except KeyError:
            raise NotFound(f"no slot {app}/{slot}") from None

    # -- netlets ----------------------------------------------------------
    def _make_secrets(self, app: str, slot: str, netlet_id: str, incarnation: int,
                      resources: dict) -> dict[str, Any]:
        descriptor = self.descriptor(app)
        row = self.registry.slot(app, slot)
        ntype = descriptor.netlet_type(row["type"])
        binding = bindings.bind(bindings.NETLET, self.app_instance(app) or "", netlet_id)
        warrant, key = bindings.issue(self.node_key, self.node_cert, self.service_id, binding)
        return {
            "node_uri": self.uri, "node_json": str(self.home.netlet_node_json), "service": self.service_id,
            "node_door": self.door_of(netlet_id),
            "listen_host": self.config.host,
            "app": app, "slot": slot, "type": ntype.name, "netlet_id": netlet_id, "incarnation": incarnation,
            "class_ref": ntype.class_ref, "params": dict(ntype.params), "resources": resources,
            "master_eligible": ntype.master_eligible, "replicated": ntype.master_eligible,
            "min_epoch": self.arbiter.state(app).epoch, "lease_ttl": descriptor.lease_ttl,
            "durability": descriptor.durability, "ack": descriptor.ack,
            "warrant": warrant.decode(), "key_pem": warrants.private_key_pem(key).decode(),
            "app_secret": self.registry.app_secret(app).hex(),
            "tls": self.issue_tls(netlet_id), "grant_trust": self.grant_signer.trust(),
        }

    # -- whose node-issued warrants are good (hosting.bindings) --------------------------------
    def app_instance(self, app: str) -> str | None:
        """The instance of ``app`` registered here now (None: none). Cached per registration: the
        supervisor makes a new runtime at every one, and only a registration changes the secret."""
        rt = self.supervisor.apps.get(app)
        if rt is None:
            return None
        cached = self._instances.get(app)
        if cached is not None and cached[0] is rt:
            return cached[1]
        secret = self.registry.app_secret(app)
        if secret is None:
            return None
        instance = bindings.instance_of(secret)
        self._instances[app] = (rt, instance)
        return instance

    def holder_alive(self, binding: bindings.Binding) -> bool:
        """The process ``binding`` names is alive on this node: a netlet the supervisor watches (its
        own or re-adopted), or the bootstrap run being watched now."""
        if binding.kind is bindings.NETLET:
            return binding.process in self.supervisor.live
        run = self.bootstrapper.running(binding.app)
        return run is not None and run.door == binding.process

    # -- the door (hosting.daemon.NodeDoor): which of the node's processes holds a connection ----
    # A holder is a netlet id (``app/type/index#incarnation``) or a bootstrap's (``app/bootstrap#run``);
    # its place is what precedes the ``#``: one holder per place is open at a time, from just
    # before its process is spawned (its key is made here) until the node saw it exit.

    def door_of(self, holder: str) -> dict[str, str]:
        """Open the door to ``holder`` (closing its place's previous holder's, if a spawn failed);
        the start document's ``node_door``: its own key."""
        with self._doors_lock:
            self._doors[process_of(holder).place] = holder
        return {"holder": holder, "key": door_key(self.door_root, holder).hex()}

    def close_door(self, holder: str) -> None:
        """``holder`` exited: its key opens nothing more, and what it holds is shut down."""
        with self._doors_lock:
            if self._doors.get(place := process_of(holder).place) == holder:
                del self._doors[place]
        self.door_revoked(holder)  # after the door closed: nothing is reserved for it past this

    def door_open(self, holder: str) -> bool:
        try:
            return self._doors.get(process_of(holder).place) == holder
        except BadInput:
            return False  # no process of this node's is named so

    def renew(self, netlet_id: str, status: dict | None, control_epoch: int | None = None) -> dict[str, Any]:
        """A netlet's heartbeat: renew its lease (and the control lease it claims), record its status.

        The control part never raises: it answers ``{"ok": False, "epoch": current}``
        to a holder that lost the lease, which fences itself on seeing it.
        """
        app = NetletId.parse(netlet_id).app
        lease = self.lessor.renew(lease_id_of(netlet_id))
        if lease is None:
            raise NotFound(f"netlet {netlet_id} has no live lease (it is being replaced)")
        if lease.ttl != (ttl := self.descriptor(app).lease_ttl):
            lease = self.lessor.grant(lease_id_of(netlet_id), ttl)  # startup allowance over
        if status:
            self.report(netlet_id, status)
        if not (status or {}).get("fault"):  # a fail-stopping netlet's last word: never ready
            self.supervisor.mark_ready(netlet_id)
        answer: dict[str, Any] = {"lease_s": lease.ttl}
        if control_epoch is not None:
            control = self.control_renewal(app, netlet_id, int(control_epoch))
            if control is not None:
                answer["control"] = control
        return answer

    @at_owner("renew", unforwarded=None)
    def control_renewal(self, app: str, netlet_id: str, epoch: int) -> dict[str, Any] | None:
        """Renew the control lease ``netlet_id`` claims at ``epoch`` (by the app's owner, in a
        cluster): ``{"ok", "epoch", "ttl"}``; None if the owner could not be asked (the lease
        is then not renewed, and runs out on the holder's clock)."""
        try:
            ttl = self.control.renew(app, netlet_id, epoch, self.descriptor(app).lease_ttl)
        except LeaseFenced:
            return {"ok": False, "epoch": self.arbiter.state(app).epoch}
        self.elector.renewed(app, netlet_id, epoch)
        return {"ok": True, "epoch": epoch, "ttl": ttl}

    def owner_op(self, app: str, op: str, args: list) -> Any:
        """What another node forwards to the app's owner (``hosting.cluster.agent``): the methods
        decorated ``at_owner``, answered as if called here."""
        if not self.topology.forwarded_here(app):
            raise NotOwner(f"node {self.name} does not own {app!r}")
        answer = OWNER_OPERATIONS.get(op)
        if answer is None:
            raise BadInput(f"unknown owner operation {op!r}")
        return answer(self, app, args)

    @at_owner("arbiter", app_of=lambda netlet_id: netlet_id.split("/", 1)[0])
    def arbiter_request(self, netlet_id: str, kind: str, epoch: int, slot: str | None,
                        incarnation: str | None, version: int | None = None) -> dict[str, Any]:
        """The master's ISR request (``hosting.election.arbiter.Arbiter.change_isr``; ``sync``: the current
        version). Fenced by epoch, by version and by holding the lease; an answer with
        ``retry`` was not decided (not the lease holder here, or the store failed)."""
        app = NetletId.parse(netlet_id).app
        if kind not in ("sync", "shrink", "expand"):
            raise BadInput(f"unknown arbiter request {kind!r}")
        if self.control.holder(app) != netlet_id:
            return {"retry": "not the control lease holder", "epoch": self.arbiter.state(app).epoch}
        if kind == "sync":
            return self.arbiter.isr_view(app)
        try:
            answer = self.arbiter.change_isr(app, kind, int(epoch), str(slot), version, incarnation)
        except (StoreUnavailable, StoreConflict, OwnershipLost) as err:
            log.warning("ISR %s of %s/%s not saved: %s", kind, app, slot, err)
            return {"retry": str(err)}
        if answer["ok"]:
            self.registry.add_event(f"isr.{kind}", app, slot, epoch=answer["epoch"], version=answer["version"])
            if kind == "expand":
                self.topology.caught_up(app, str(slot))
        return answer

    @at_owner("access")
    def app_access(self, app: str, after_epoch: int | None = None, wait_s: float = 0.0) -> dict[str, Any]:
        """What an access point needs: the app's client credential (``rpc.credential``: it opens
        the client surface of the netlets, never replication), its netlets' endpoints and ids (a
        handshake is made for one netlet id) and the master.

        With ``after_epoch``: first waits up to ``wait_s`` until a master of a
        higher epoch has been promoted (an access point that lost its master
        learns of the next one the moment it can serve, instead of polling).
        ``ready`` says whether the listed master's promotion has completed.
        """
        if after_epoch is not None and wait_s > 0 and self.descriptor(app).master_type is not None:
            # Only a completed promotion ends the wait: after a node restart nothing counts as
            # promoted until the master is re-adopted or a new one wins.
            self.promoted.wait_beyond(app, after_epoch, wait_s)
        secret = self.app_secret(app)
        holder = self.control.holder(app)
        master = NetletId.parse(holder).slot if holder else None
        replicas = self.replicas(app)
        netlets = [{"slot": slot["slot"], "type": slot["type"], "netlet": replicas[slot["slot"]][0],
                    "endpoint": replicas[slot["slot"]][1], "role": "master" if slot["slot"] == master else "backup"}
                   for slot in self.registry.slots(app) if slot["slot"] in replicas]
        epoch = self.arbiter.state(app).epoch
        return {"app": app, "credential": credential(secret, CLIENT).hex(),
                "master": master,
                "epoch": epoch, "ready": holder is not None and self.promoted.completed(app, epoch),
                "netlets": netlets}

    def report(self, netlet_id: str, status: dict) -> None:
        """Record what a netlet says of itself: only what ``hosting.netlet_status`` accepts."""
        old = self.status_cache.get(netlet_id, {})
        new = {**old, **netlet_status.accepted(status)}
        if any(old.get(k) != new.get(k) for k in DURABLE_STATUS_KEYS):
            try:
                self.registry.update_netlet(netlet_id, status=new)
            except STORE_ERRORS as err:  # not cached as written: the next renewal writes it
                log.warning("status of %s not recorded (retried at its next renewal): %s", netlet_id, err)
                return
        self.status_cache[netlet_id] = new
        if new.get("endpoint") and new.get("endpoint") != old.get("endpoint"):
            self.topology.endpoint_changed(netlet_id)

    # -- supervisor hooks (SupervisorHooks) --------------------------------
    def may_start(self, app: str, slot: str) -> bool:
        return self.member.is_set() and self.topology.may_run(app, slot)

    def start_priority(self, app: str) -> int:
        """Slots of replicated apps without a master start first (they cannot serve at all)."""
        descriptor = self.supervisor.descriptor(app)
        replicated = descriptor is not None and descriptor.master_type is not None
        return 0 if replicated and self.control.holder(app) is None else 1

    def next_incarnation(self, app: str, slot: str, local_next: int) -> int:
        return self.topology.next_incarnation(app, slot, local_next)

    def netlet_spawned(self, app: str, slot: str, netlet_id: str) -> None:
        self.elector.netlet_spawned(app, slot, netlet_id)

    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None:
        self.topology.netlet_ready(app, slot, netlet_id)

    def netlet_gone(self, app: str, slot: str, netlet_id: str, reason: str) -> None:
        self.close_door(netlet_id)
        self.status_cache.pop(netlet_id, None)
        if self.topology.owns(app):
            self.control.revoke_if_held_by(app, netlet_id, f"holder {reason}")
        self.topology.netlet_gone(app, slot, netlet_id)

    # -- membership (cluster) ----------------------------------------------
    def _on_fenced(self, why: str) -> None:
        """The cluster declared this node dead: it presumes our netlets dead, so they must be.

        Every live netlet is SIGKILLed now; the supervisor restarts them after
        the node rejoins, and replicated apps come back by a warm start (their
        durable state is in their slot directories).
        """
        self.member.clear()  # first: no replacement may start until the node is a member again
        killed = self.supervisor.kill_all("node fenced")
        self.registry.add_event("node.fenced", None, None, why=why, name=self.name, netlets=len(killed))

    def _on_rejoined(self) -> None:
        """A member again: run what this node runs (claims of apps lost meanwhile were handled)."""
        self.member.set()
        self.registry.add_event("node.rejoined", None, None, name=self.name)
        for row in self.registry.apps():
            if row["state"] == "running":
                self.topology.host(row["name"])

    def _on_app_lost(self, app: str, why: str = "claimed by another node while this one was fenced") -> None:
        """Another node owns ``app`` now (its elections and control lease); this node goes on
        hosting whatever slots of it are placed here."""
        self.registry.add_event("app.claimed_elsewhere", app, None, why=why)
        self.lessor.revoke(self.control.lease_id(app))
        self.arbiter.forget(app)

    def _on_control_lost(self, app: str, holder: str, epoch: int, why: str) -> None:
        log.info("control lease of %s lost by %s at epoch %d (%s)", app, holder, epoch, why)
        self.elector.control_lost(app)


#: owner operation -> how the owner answers one forwarded to it (``Node.owner_op``)
OWNER_OPERATIONS = owner_operations(Node)


def _parse_stored(row) -> Descriptor:
    """Re-parse a descriptor kept in the registry (never opening files it names)."""
    return warrants.parse_descriptor(row["descriptor"], row["source"], read_files=False)
