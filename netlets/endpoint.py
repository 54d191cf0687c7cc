"""A netlet's own RPC endpoint (Pyro5), open only to holders of an app credential.

Contract: every connection passes the handshake of ``rpc.credential``
(after TLS with a cluster certificate, in a cluster), which records its
``Peer``: the role it proved and, when it presented a node's promote grant
(a master connecting to a backup) and proved the grant's master key for this
netlet (its netlet id: ``hosting.election.grants.check_master_proof``), the (epoch,
master slot) the grant names. A handshake made for another netlet (another process
of the app, or an earlier one of this slot) is refused (``rpc.credential``); one
with a grant or proof that does not verify is refused as a whole. A call is read under the limits of the connection's
role (``NETLET_LIMITS`` for a replica, ``NETLET_CLIENT_LIMITS``
otherwise), so a client cannot make a netlet buffer a snapshot-sized message,
and what all clients' calls hold at once is bounded by the endpoint's budget
(``NETLET_CLIENT_BUDGET``, ``rpc.budget``). Clients hold at
most ``CLIENT_OPEN_LIMITS`` established connections; replica-role ones are
reserved (``rpc.gate``), so clients never keep the node's elector or the
master out (security review B4); refusals are counted in the gate and logged.
"""

from __future__ import annotations

import threading

from rpc import wire
from hosting.election.grants import PROMOTE, GrantRefused, GrantVerifier, check_master_proof
from rpc.tls import TLSIdentity
from rpc.credential import REPLICA, HandshakeChecker, Peer, peer_of, set_peer

OBJECT_ID = "jtrix.netlet"
#: a netlet's endpoint, by the role the connection proved (``rpc.credential``): app calls carry
#: app data; replication also whole snapshots of the app's state (one message: the largest state a
#: replicated app can have), but only from a replica (a client's replication call is refused anyway:
#: it gets no more room than any small call); the rest is small. A replica is the app's own
#: (its data is the app's state): only a client's calls are checked for expansion and charged
_NETLET_SMALL = {name: wire.ENVELOPE for name in ("ping", "describe", "replication_prepare", "replication_peers")}
NETLET_LIMITS = wire.MessageLimits(default=16 * 1024 * 1024, methods={
    "replication_handle": 256 * 1024 * 1024, **_NETLET_SMALL})
NETLET_CLIENT_LIMITS = wire.MessageLimits(default=16 * 1024 * 1024, methods={
    "replication_handle": wire.ENVELOPE, **_NETLET_SMALL}, expansion=wire.EXPANSION)
#: what a netlet endpoint holds for its clients' calls (a client call of 16 MiB may cost 17 times that)
NETLET_CLIENT_BUDGET = 384 * 1024 * 1024
#: an endpoint's bounds on established connections (``rpc.gate``): at most 256 clients' (128 from one
#: address); replica-role connections (the node's, the master's) are reserved: up to 128 of them are
#: always admitted whatever clients do (with at most 128 pending, the 512 workers are shared out)
CLIENT_OPEN_LIMITS = {"max_open": 256, "per_peer_open": 128, "per_holder": 128, "per_app_extra": 127}


class AppDaemon(wire.Daemon):
    """A Pyro5 daemon whose every connection must pass an app-credential handshake (after
    TLS with a cluster certificate, in a cluster); replication connections also a grant."""

    def __init__(self, checker: HandshakeChecker, grants: GrantVerifier, host: str = "127.0.0.1",
                 port: int = 0, tls: TLSIdentity | None = None) -> None:
        super().__init__(host, port, tls, limits=NETLET_CLIENT_LIMITS, budget=NETLET_CLIENT_BUDGET,
                         open_limits=CLIENT_OPEN_LIMITS)
        self._checker = checker
        self._grants = grants

    def validateHandshake(self, conn, data):
        role = self._checker.check(data)
        master = None
        if role == REPLICA and data.get("grant") is not None:
            grant = self._grants.verify(data["grant"], self._checker.app)
            if grant.op != PROMOTE or grant.master is None:
                raise GrantRefused(f"a replication connection presents a promote grant, not {grant.op}")
            check_master_proof(grant, self._checker.app, self._checker.me, data)
            master = (grant.epoch, grant.master)
        # a replica's connection (the node's elector, the master) is reserved: clients cannot take it
        # (the handshake proved an app credential: a client's connection is no less proven than a
        # caller's with a warrant, so a full endpoint refuses newcomers rather than evict it)
        self.establish(conn, (self._checker.app, REPLICA) if role == REPLICA else None, proven=True)
        set_peer(conn, Peer(role, master))
        return "ok"

    def limits_for(self, conn) -> wire.MessageLimits:
        """A replica's calls may carry a snapshot; anyone else's are held to a client's limits."""
        peer = peer_of(conn)
        return NETLET_LIMITS if peer is not None and peer.role == REPLICA else NETLET_CLIENT_LIMITS

    def budget_for(self, conn) -> wire.ByteBudget | None:
        """A client's calls share the endpoint's budget; a replica's (the app's own state) do not."""
        peer = peer_of(conn)
        return None if peer is not None and peer.role == REPLICA else self.budget


def serve_endpoint(obj, checker: HandshakeChecker, grants: GrantVerifier, host: str = "127.0.0.1",
                   port: int = 0, tls: TLSIdentity | None = None) -> tuple[AppDaemon, str, threading.Thread]:
    """Register ``obj`` (the netlet ``checker`` is for) and serve it on a daemon thread; returns
    (daemon, uri, thread)."""
    wire.configure()
    daemon = AppDaemon(checker, grants, host, port, tls)
    uri = str(daemon.register(obj, OBJECT_ID))
    thread = threading.Thread(target=daemon.requestLoop, name="netlet-endpoint", daemon=True)
    thread.start()
    return daemon, uri, thread
