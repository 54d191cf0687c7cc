"""Where a node stands among nodes: which apps it owns, which slots it hosts, what others learn.

One interface, two implementations (as ``hosting.cluster.membership`` has ``LocalMembership`` and
``EtcdMembership``):

* :class:`LocalTopology` — a node alone: it owns every app, hosts every slot, and sees every
  netlet of its apps (they all run under its supervisor).
* ``hosting.cluster.agent.ClusterAgent`` — a member of an etcd cluster: an app's owner places its
  slots and runs its elections; every node hosts the slots placed on it and publishes its
  ready netlets; what only the owner can answer is forwarded to it.

What else differs between the two — the epoch store, the membership, TLS, trust and the
event log — is built with the topology by one factory each (:class:`Services`:
:class:`LocalServices` here, ``hosting.cluster.services.ClusterServices``), chosen in one place
(``hosting.standing``).

The node asks the topology and never which one it has. Contracts every implementation keeps:
  * ``owns(app)`` is True on at most one node at a time (alone: always); only the owner grants
    control leases and runs elections, and ``owner_call`` runs an owner operation
    (``hosting.cluster.agent.OWNER_OPS``) there — NotOwner if no owner is known.
  * ``replicas(app)`` lists ready netlets serving an endpoint, by slot, wherever they run.
  * ``may_run(app, slot)`` answers from the authoritative record now (a start acts on it);
    ``hosts(app, slot)`` from what this node last learned of it (views and commands).
  * ``sees_all_netlets``: every netlet of an app runs under this node's supervisor, so one
    not seen live is dead. False in a cluster: a netlet on a node that vanished is only
    presumed dead, and may run on for a lease TTL.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import time
from typing import Any, Callable, Mapping, Protocol

from hosting.cluster.membership import LocalMembership, Membership
from hosting.election.arbiter import EpochStore
from hosting.home import Home
from hosting.registry import Registry, RegistryEpochStore
from rpc.tls import TLSIdentity
from warrants.errors import JtrixError, NotOwner

log = logging.getLogger(__name__)


class Topology(Protocol):
    sees_all_netlets: bool

    def recover(self) -> None:
        """At node start, after re-adopting its netlets: run what should run here and take up
        control of the apps this node owns."""

    def close(self) -> None: ...

    # -- owning ------------------------------------------------------------------
    def owns(self, app: str) -> bool: ...

    def owner_call(self, app: str, op: str, *args: Any) -> Any: ...

    def forwarded_here(self, app: str) -> bool:
        """Whether another node may forward ``app``'s owner operations here."""

    def member_client(self, uri: str) -> Any:
        """A ``hosting.client.HostingClient`` of the member at ``uri``, acting with this node's
        member credential (JtrixError when there is no other member)."""

    def owner_elsewhere(self, app: str) -> str | None:
        """The node other than this one known to own ``app`` (None: none, or this one)."""

    # -- apps --------------------------------------------------------------------
    def share_app(self, app: str, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> None:
        """Make a submitted app available to every node that may run it or take it over."""

    def place_app(self, app: str, why: str) -> Any: ...

    def unplace(self, app: str) -> None:
        """``app`` is being terminated: no node is to run any of its slots any more."""

    def wait_unpublished(self, app: str, timeout: float) -> bool:
        """Wait up to ``timeout`` until no netlet of ``app`` runs anywhere; True once none does."""

    def forget_app(self, app: str) -> None:
        """``app`` is terminated and gone: drop what was shared of it."""

    def caught_up(self, app: str, slot: str) -> None:
        """``slot`` re-entered ``app``'s in-sync set."""

    def warm_start_blocked(self, app: str) -> bool: ...

    # -- hosting -----------------------------------------------------------------
    def host(self, app: str) -> None:
        """Run the slots of ``app`` this node should run and do not run (at their backoff time)."""

    def hosts(self, app: str, slot: str) -> bool: ...

    def may_run(self, app: str, slot: str) -> bool: ...

    def next_incarnation(self, app: str, slot: str, floor: int) -> int: ...

    def replicas(self, app: str) -> dict[str, tuple[str, str]]: ...

    # -- this node's netlets -------------------------------------------------------
    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None: ...

    def endpoint_changed(self, netlet_id: str) -> None: ...

    def netlet_gone(self, app: str, slot: str, netlet_id: str) -> None: ...


class LocalHost(Protocol):
    """What :class:`LocalTopology` needs of its node."""

    registry: Any  # hosting.registry.Registry
    supervisor: Any  # hosting.supervisor.Supervisor
    timers: Any  # hosting.timers.Timers
    elector: Any  # hosting.election.elector.Elector
    status_cache: Mapping[str, Mapping[str, Any]]
    name: str

    def recover_control(self, app: str) -> None: ...


class LocalTopology:
    """A node alone: it owns every app, hosts every slot, sees every netlet, forwards nothing."""

    sees_all_netlets = True

    def __init__(self, node: LocalHost) -> None:
        self.node = node

    def recover(self) -> None:
        for row in self.node.registry.apps():
            if row["state"] != "terminating":
                self.node.recover_control(row["name"])
                self.host(row["name"])

    def close(self) -> None:
        pass

    def owns(self, app: str) -> bool:
        return True

    def owner_call(self, app: str, op: str, *args: Any) -> Any:
        raise NotOwner(f"node {self.node.name} is alone: it owns {app!r} itself")

    def forwarded_here(self, app: str) -> bool:
        return False  # there is no other node

    def member_client(self, uri: str) -> Any:
        raise JtrixError(f"node {self.node.name} is alone: it has no member at {uri}")

    def owner_elsewhere(self, app: str) -> str | None:
        return None

    def share_app(self, app: str, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> None:
        pass

    def place_app(self, app: str, why: str) -> None:
        pass

    def unplace(self, app: str) -> None:
        pass

    def wait_unpublished(self, app: str, timeout: float) -> bool:
        return True  # its netlets are the supervisor's: gone when the supervisor says so

    def forget_app(self, app: str) -> None:
        pass

    def caught_up(self, app: str, slot: str) -> None:
        pass

    def warm_start_blocked(self, app: str) -> bool:
        return False  # every slot's data is on this node

    def host(self, app: str) -> None:
        supervisor = self.node.supervisor
        for slot in self.node.registry.slots(app):
            # failed: gave up; pending: never started (a custom bootstrap decides when)
            if slot["state"] in ("failed", "pending") or supervisor.live_in_slot(app, slot["slot"]):
                continue
            delay = max(0.0, (slot["next_attempt"] or 0) - time.time())
            self.node.timers.call_later(delay, lambda s=slot["slot"]: supervisor.request_start(app, s, "replace"))

    def hosts(self, app: str, slot: str) -> bool:
        return True

    def may_run(self, app: str, slot: str) -> bool:
        return True

    def next_incarnation(self, app: str, slot: str, floor: int) -> int:
        return floor

    def replicas(self, app: str) -> dict[str, tuple[str, str]]:
        out = {}
        for n in list(self.node.supervisor.live.values()):
            endpoint = self.node.status_cache.get(n.netlet_id, {}).get("endpoint")
            if n.app == app and n.ready and endpoint:
                out[n.slot] = (n.netlet_id, endpoint)
        return out

    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None:
        self.node.elector.netlet_ready(app, slot, netlet_id)

    def endpoint_changed(self, netlet_id: str) -> None:
        pass  # the elector learnt of it at netlet_ready and asks replicas() for endpoints

    def netlet_gone(self, app: str, slot: str, netlet_id: str) -> None:
        self.node.elector.netlet_gone(app, slot, netlet_id)


class EventLog(Protocol):
    def read(self, since: int = 0, app: str | None = None, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Events after index ``since`` (of ``app`` only, if given), oldest first, as dicts; with
        ``wait_s``, waits up to that long for at least one."""


class RegistryEvents:
    """A node's own event log (its registry's; indexes are the registry's)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def read(self, since: int = 0, app: str | None = None, wait_s: float = 0.0) -> list[dict[str, Any]]:
        found = self.registry.wait_events(since, wait_s, app) if wait_s else self.registry.events(since, app)
        return [e.as_dict() for e in found]


class Services(Protocol):
    """What a node is built with differently alone and in a cluster, made by one factory per
    topology (:class:`LocalServices`, ``hosting.cluster.services.ClusterServices``) before
    anything else of the node's; the node never asks which it has.

    Contracts every implementation keeps:
      * ``epoch_store`` holds every epoch granted where the app's next owner will read it
        (alone: the registry; in a cluster: etcd, written only under the membership's lease).
      * ``tls`` is None exactly when the node speaks plain TCP (alone, on loopback), and
        ``issue_tls`` then answers None too; in a cluster every connection is TLS.
      * ``cluster_events`` reads the whole cluster's event log (alone: the node's own).
      * ``start`` is called once, after ``membership.join``; ``close`` once, after the
        membership is closed. Neither touches netlets.
    """

    epoch_store: EpochStore
    membership: Membership
    tls: TLSIdentity | None
    cluster_events: EventLog

    def topology(self, node: Any) -> Topology:
        """The node's topology (``node`` is the ``Node``: what its topology asks of it)."""

    def issue_tls(self, name: str) -> dict[str, str] | None:
        """A certificate for a process the node starts (``name``), serving on the node's address."""

    def start(self, own_cert: Any, on_trusted_certs: Callable[[list], None]) -> None:
        """Take up the cluster duties that need a member: trust other members' certificates
        (fed to ``on_trusted_certs``), ship this node's events."""

    def close(self) -> None: ...


class LocalServices:
    """A node alone: epochs in its registry, a membership of one, no TLS (and no stale client
    certificate left in the home to make clients try it), its own event log."""

    def __init__(self, home: Home, registry: Registry, name: str, member_info: dict[str, Any]) -> None:
        self.epoch_store = RegistryEpochStore(registry)
        self.membership = LocalMembership(name, {**member_info, "pid": os.getpid()})
        self.tls: TLSIdentity | None = None
        shutil.rmtree(home.root / "tls", ignore_errors=True)
        self.cluster_events = RegistryEvents(registry)

    def topology(self, node: LocalHost) -> Topology:
        return LocalTopology(node)

    def issue_tls(self, name: str) -> dict[str, str] | None:
        return None

    def start(self, own_cert: Any, on_trusted_certs: Callable[[list], None]) -> None:
        pass  # its own certificate is the only one it trusts

    def close(self) -> None:
        pass


_RAISE = object()


def at_owner(op: str, app_of: Callable[[Any], str] | None = None, unforwarded: Any = _RAISE):
    """Decorate a node method only the app's owner answers: it runs here when this node owns
    the app (``node.topology.owns``), else it is forwarded to the owner as owner operation
    ``op`` (``hosting.cluster.agent.OWNER_OPS``), with every argument in order (defaults filled in)
    but the app itself. The app is the method's first argument — or ``app_of`` of it, and
    then that argument is forwarded too. A failed forward raises its JtrixError, or answers
    ``unforwarded`` if one is given.

    The decorated method's ``owner_op`` is ``op`` and its ``answer(node, app, args)`` is the
    call an owner makes of a forwarded ``args`` (see :func:`owner_operations`)."""
    def decorate(method):
        signature = inspect.signature(method)

        @functools.wraps(method)
        def routed(self, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            values = list(bound.arguments.values())[1:]  # without self
            app = values[0] if app_of is None else app_of(values[0])
            if self.topology.owns(app):
                return method(self, *args, **kwargs)
            try:
                return self.topology.owner_call(app, op, *(values[1:] if app_of is None else values))
            except JtrixError as err:
                if unforwarded is _RAISE:
                    raise
                log.info("%s of %s not forwarded to its owner: %s", op, app, err)
                return unforwarded

        routed.owner_op = op  # type: ignore[attr-defined]
        routed.answer = (lambda node, app, args: routed(node, app, *args)) if app_of is None \
            else (lambda node, app, args: routed(node, *args))  # type: ignore[attr-defined]
        return routed
    return decorate


def owner_operations(cls: type) -> dict[str, Callable[[Any, str, list], Any]]:
    """op -> ``answer(node, app, args)`` of every method of ``cls`` decorated with :func:`at_owner`."""
    return {fn.owner_op: fn.answer for fn in vars(cls).values() if hasattr(fn, "owner_op")}
