"""Hosting one netlet inside its process: dispatch, hooks and published status.

Contracts:
  * Only methods the class exposed with a decorator can be invoked remotely,
    and each only where its kind allows (see ``netlets.netlet``).
  * ``status()`` is cheap and safe to call from any thread; the heartbeat
    publishes it with every renewal.
  * Hooks run in this order: ``on_started`` once, ``on_stopping`` once at stop.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import Pyro5.api

from hosting.election.grants import PEERS, PREPARE, PROMOTE, GrantRefused
from rpc.credential import REPLICA, CredentialRefused, Peer, current_peer
from netlets.outcomes import capture
from warrants.errors import BadInput, JtrixError, NotFound

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # calls per invoke_batch; a client pipelines more as several batches


class NetletHost:
    def __init__(self, netlet: Any, doc) -> None:
        from netlets.netlet import exposed_methods

        self.netlet = netlet
        self.doc = doc
        self.exposed = exposed_methods(type(netlet))
        self.endpoint: str | None = None
        self.heartbeat = None
        self.phase = "starting"
        self._lock = threading.Lock()

    def service(self) -> "NetletService":
        return NetletService(self)

    def published(self) -> dict[str, Any]:
        """What the netlet published with :meth:`Netlet.publish` (a copy)."""
        return dict(getattr(self.netlet, "_jtrix_published", {}))

    def status(self) -> dict[str, Any]:
        return {"phase": self.phase, "role": "worker", "endpoint": self.endpoint, "pid": os.getpid(),
                "app_status": self.published()}

    def start(self) -> None:
        self.netlet.on_started(self.doc.inherited())
        self.phase = "running"

    def stop(self) -> None:
        self.phase = "stopping"
        try:
            self.netlet.on_stopping()
        except Exception:
            log.exception("on_stopping hook failed")

    def describe(self) -> dict[str, Any]:
        return {"slot": self.doc.slot, "class": self.doc.class_ref, "methods": dict(self.exposed),
                "replicated": False}

    # Replication RPCs: only a replicated host (netlets.replicated) serves them.
    def _not_replicated(self, *args: Any) -> Any:
        raise BadInput(f"{self.doc.slot} is not a replicated netlet")

    handle = prepare = promote = set_peers = _not_replicated

    def invoke(self, method: str, args: list, kwargs: dict, req_id: str | None = None) -> Any:
        kind = self.exposed.get(method)
        if kind is None:
            raise NotFound(f"{type(self.netlet).__name__} exposes no method {method!r}")
        if kind == "command":
            raise BadInput(f"{method} is a replicated command: this netlet type is not replicated")
        return getattr(self.netlet, method)(*args, **kwargs)

    def invoke_batch(self, calls: list[tuple[str, list, dict, str | None]]) -> list[dict]:
        """One outcome per call (``netlets.outcomes``), each as if made alone by a concurrent caller."""
        return [capture(lambda c=c: self.invoke(*c)) for c in calls]


def _replica_peer() -> Peer:
    """The calling connection's peer, if it proved the replica credential."""
    peer = current_peer()
    if peer is None or peer.role != REPLICA:
        raise CredentialRefused("replication calls need the app's replica credential "
                                "(a client credential opens only ping, describe, invoke, invoke_batch)")
    return peer


@Pyro5.api.expose
class NetletService:
    """What a netlet serves. Contracts (README, Security):

    * ``ping``, ``describe``, ``invoke``, ``invoke_batch``: any connection that
      proved an app credential (client or replica).
    * ``replication_*``: only connections that proved the replica credential,
      and each only with a node's grant (``hosting.election.grants``): ``prepare``,
      ``promote`` and ``peers`` carry one for exactly their arguments;
      ``replication_handle`` is accepted only for the epoch and sender that the
      connection's promote grant named at its handshake.
    """

    def __init__(self, host: NetletHost) -> None:
        self._host = host

    def ping(self) -> dict[str, Any]:
        return self._host.status()

    def describe(self) -> dict[str, Any]:
        """The methods this netlet exposes and where each runs (``command``, ``query``, ``master_query``)."""
        return self._host.describe()

    def _check(self, grant: Any, op: str, epoch: Any, args: list) -> int:
        _replica_peer()
        doc = self._host.doc
        doc.grants.check_call(grant, doc.app, op, epoch, args, doc.netlet_id)
        return int(epoch)

    def replication_handle(self, msg: dict) -> dict | None:
        """From the master the arbiter named for the message's epoch: an ``append`` or
        ``snapshot`` message; returns the reply."""
        peer = _replica_peer()
        if not isinstance(msg, dict) or peer.master != (msg.get("epoch"), msg.get("from")):
            named = f"{peer.master[1]} at epoch {peer.master[0]}" if peer.master else "no master"
            raise GrantRefused(f"replication message refused: this connection's grant names {named}")
        return self._host.handle(msg)

    def replication_prepare(self, epoch: int, grant: dict | None = None) -> dict:
        """From a node's elector: promise ``epoch``, report the position."""
        return self._host.prepare(self._check(grant, PREPARE, epoch, [epoch]))

    def replication_promote(self, epoch: int, isr: list, peers: dict, grant: dict | None = None) -> bool:
        """From a node's elector: become master of ``epoch``."""
        epoch = self._check(grant, PROMOTE, epoch, [epoch, isr, peers])
        if not isinstance(grant.get("master_key"), bytes):
            raise GrantRefused("a promote grant comes with the promotion's master key")
        return self._host.promote(epoch, isr, peers, grant)

    def replication_peers(self, epoch: int, peers: dict, grant: dict | None = None) -> bool:
        """From a node: the backups now (slot → [netlet id, endpoint]: joins, departures, restarts)."""
        return self._host.set_peers(self._check(grant, PEERS, epoch, [epoch, peers]), peers)

    def invoke(self, method: str, args: list | None = None, kwargs: dict | None = None,
               req_id: str | None = None) -> Any:
        try:
            return self._host.invoke(str(method), list(args or []), dict(kwargs or {}), req_id)
        except JtrixError:
            raise
        except Exception as err:  # the netlet's own exception is the caller's result
            raise JtrixError(f"{type(err).__name__}: {err}") from None

    def invoke_batch(self, calls: list) -> list[dict]:
        """Many calls in one round trip: ``[[method, args, kwargs, req_id], ...]`` → one outcome each.

        Outcomes are plain dicts (``netlets.outcomes``), never raised, so each
        call keeps its own result. Commands in a batch are committed together.
        """
        if not isinstance(calls, list) or len(calls) > MAX_BATCH:
            raise BadInput(f"invoke_batch takes a list of at most {MAX_BATCH} calls")
        parsed = []
        for call in calls:
            if not (isinstance(call, (list, tuple)) and len(call) == 4):
                raise BadInput("each call is [method, args, kwargs, req_id]")
            method, args, kwargs, req_id = call
            parsed.append((str(method), list(args or []), dict(kwargs or {}),
                           None if req_id is None else str(req_id)))
        return self._host.invoke_batch(parsed)
