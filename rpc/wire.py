"""Pyro5 settings and error transport shared by every jtrix endpoint.

Contracts (see docs/architecture.md, "Pitfalls in the libraries we use"): msgpack
only (never pickle); no automatic retries (``MAX_RETRIES = 0``: a retry must be explicit and
idempotent); explicit timeouts. ``JtrixError`` subclasses raised by a server
arrive as the same class.

Hostile peers (``Daemon``): every message is read whole by
``rpc.guard.read_message`` before Pyro5 sees it — never decompressed, held to
the limit of what it is (its endpoint's ``MessageLimits``: ``hosting.api_limits``,
``netlets.endpoint``; the first message of a connection a few KB, a call the
limit of its method) before its body is read, the first message due
``FIRST_MESSAGE_S`` after accept in total (TLS handshake included), a later
one due once started. Connections are admitted
through a ``rpc.gate.ConnectionGate``: connections still waiting for their
first message are bounded per peer address and overall, the oldest evicted,
so they never hold more than ``rpc.gate.MAX_PENDING`` of the ``THREADPOOL_SIZE``
workers. What stays open to a peer that completes its first message: one
worker per connection, idle up to ``SERVER_IDLE_TIMEOUT_S`` between calls —
except that a daemon given a ``door`` (the node's) establishes at most
``rpc.gate.MAX_OPEN`` connections that do not prove they are held by one of
its netlets, so the rest of the pool stays theirs, shared out per netlet and
per app (``rpc.gate``); a netlet's endpoint likewise bounds its clients'
connections and reserves its replicas' (``netlets.endpoint``). A body's
buffer grows as it arrives, charged with what it deserializes to
(``rpc.cost``) to the daemon's budget for unproven peers (``rpc.budget``)
until the call is answered; oneway and batch calls are refused.

TLS (``rpc.tls``), when a process has an identity: servers (``Daemon``)
accept plain TCP and run the TLS handshake in the worker thread that serves the
connection — a peer that stalls its handshake holds one worker, never the
accept loop; clients (``proxy(..., tls=identity)``) handshake while
connecting, bounded by the call timeout. Pyro5's own SSL support is not used:
its settings are process-wide and it handshakes on the accept thread. Pyro5
makes client sockets through ``socketutil.create_socket``; ``configure`` wraps
that function once so a connection made for a jtrix TLS proxy gets that
proxy's context.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from typing import Callable, Protocol

import Pyro5.api
import Pyro5.server
from Pyro5.callcontext import current_context
from Pyro5 import config, errors, protocol, serializers, socketutil, svr_threads
from Pyro5.serializers import SerializerBase

from rpc.tls import TLSIdentity
from rpc.budget import ByteBudget, Charge
from rpc.cost import EXPANSION, cost_limit, object_cost
from rpc.gate import MAX_OPEN, ConnectionGate, Holder, RefusalEvents
from rpc.guard import FIRST_MESSAGE_S, MSGPACK_ID, MessageLimits, MessageRefused, discard, read_message
import rpc.errors  # noqa: F401  (the call errors: registered by register_error_classes in every process)
from warrants.errors import JtrixError

log = logging.getLogger(__name__)

#: the first bytes of every Pyro5 message (what a plain-TCP client sends first)
PYRO_MAGIC = b"PYRO"
PLAIN_REFUSED = ("TLS required: this endpoint is a cluster member; connect with a certificate of the"
                 " cluster (a member's home has one in tls/)")
SERVER_IDLE_TIMEOUT_S = 30.0
THREADPOOL_SIZE = 512
CALL_TIMEOUT_S = 10.0
#: room for a call's own names and small arguments, besides what it carries (endpoints' limits add it)
ENVELOPE = 64 * 1024
#: limits of an endpoint that declares none
DEFAULT_LIMITS = MessageLimits(default=1024 * 1024, expansion=EXPANSION)
#: the largest message a jtrix client reads: no endpoint takes a larger call, and an answer is never
#: larger than what endpoints take (every endpoint's limits are within it: tests/test_wire_limits.py)
MAX_MESSAGE_SIZE = 256 * 1024 * 1024


def configure() -> None:
    """Apply the process-wide Pyro5 settings (idempotent)."""
    config.SERIALIZER = "msgpack"
    config.SERVERTYPE = "thread"
    config.THREADPOOL_SIZE = THREADPOOL_SIZE
    config.THREADPOOL_SIZE_MIN = 8
    config.COMMTIMEOUT = SERVER_IDLE_TIMEOUT_S
    config.MAX_RETRIES = 0
    config.SOCK_NODELAY = True
    config.DETAILED_TRACEBACK = False
    config.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
    config.SSL = False  # TLS is ours (module contracts), never Pyro5's process-wide one
    register_error_classes()
    if socketutil.create_socket is not _create_socket:
        global _pyro_create_socket
        _pyro_create_socket = socketutil.create_socket
        socketutil.create_socket = _create_socket


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def register_error_classes() -> None:
    """Let every known ``JtrixError`` subclass cross the wire as itself."""
    for cls in [JtrixError, *_all_subclasses(JtrixError)]:
        name = f"{cls.__module__}.{cls.__name__}"

        def revive(classname: str, data: dict, cls: type = cls) -> Exception:
            return cls(*data.get("args", ()))

        SerializerBase.register_dict_to_class(name, revive)


_pyro_create_socket = socketutil.create_socket
_connecting = threading.local()  # .tls: the identity of the proxy connecting in this thread


def _create_socket(*args, connect=None, sslContext=None, **kwargs):
    tls: TLSIdentity | None = getattr(_connecting, "tls", None)
    if connect is not None and sslContext is None and tls is not None:
        sslContext = tls.client_context
    return _pyro_create_socket(*args, connect=connect, sslContext=sslContext, **kwargs)


class TLSProxy(Pyro5.api.Proxy):
    """A Pyro5 proxy whose connections are TLS with ``_jtrix_tls`` (set by ``proxy``)."""

    def _Proxy__pyroCreateConnection(self, replaceUri=False, connected_socket=None):
        # Every connection of a Proxy is made here (Pyro5's name-mangled private method).
        _connecting.tls = self.__dict__["_jtrix_tls"]
        try:
            return super()._Proxy__pyroCreateConnection(replaceUri, connected_socket)
        finally:
            _connecting.tls = None


def proxy(uri: str, timeout: float = CALL_TIMEOUT_S, tls: TLSIdentity | None = None) -> Pyro5.api.Proxy:
    """A proxy with jtrix settings, TLS with ``tls`` when given; a proxy belongs to one thread."""
    if tls is None:
        p = Pyro5.api.Proxy(uri)
    else:
        p = TLSProxy(uri)
        object.__setattr__(p, "_jtrix_tls", tls)  # Proxy.__setattr__ would send it to the server
    p._pyroSerializer = "msgpack"
    p._pyroTimeout = timeout
    p._pyroMaxRetries = 0
    return p


class GuardedConnection(socketutil.SocketConnection):
    """A served connection whose messages are read whole by ``rpc.guard.read_message`` first;
    Pyro5's reader then takes them from here. Leaves its gate before its socket closes."""

    def __init__(self, sock: socket.socket, gate: ConnectionGate) -> None:
        super().__init__(sock)
        self.accepted = time.monotonic()
        self.gate = gate
        self._chunks: list = []

    def preload(self, message: tuple[bytes, bytearray]) -> None:
        header, payload = message
        self._chunks = [header[:6], header[6:], payload]

    def recv(self, size: int):
        if not self._chunks:
            raise errors.ProtocolError("no message read")  # Pyro5 reads only what read_message returned
        chunk = self._chunks.pop(0)
        if len(chunk) != size:
            raise errors.ProtocolError("message read does not match Pyro5's reads")
        return chunk

    def close(self) -> None:
        self.gate.closed(self)
        super().close()


class _GuardedJob(svr_threads.ClientConnectionJob):
    def __init__(self, sock, addr, daemon: "Daemon") -> None:
        # not super().__init__: the SocketConnection it makes would close the socket when collected
        self.csock = GuardedConnection(sock, daemon.gate)
        self.caddr = addr
        self.daemon = daemon


class _GatedServer(svr_threads.SocketServer_Threadpool):
    """Pyro5's thread-pool server with each accepted connection admitted through the daemon's gate
    (``rpc.gate``); a full pool is a counted refusal, decided without reading from the socket."""

    def events(self, eventsockets):
        with contextlib.suppress(socket.timeout):
            if not self._selector.select(config.POLLTIMEOUT):
                return
            csock, caddr = self.sock.accept()
            if self.shutting_down:
                csock.close()
                return
            peer = caddr[0] if isinstance(caddr, tuple) else "unix"
            job = _GuardedJob(csock, caddr, self.daemon)
            self.daemon.gate.admit(job.csock, peer, csock)
            try:
                self.pool.process(job)
            except svr_threads.NoFreeWorkersError:
                job.csock.close()
                self.daemon.gate.refuse("pool_full", peer)


class Door(Protocol):
    """Who of a node's own processes a connection's first message proves it is held by."""

    def holder(self, handshake: object) -> Holder | None:
        """The (app, holder) the handshake data proves, None when it proves none."""

    def is_open(self, holder: str) -> bool:
        """The holder is alive (its connections may be reserved)."""


class Daemon(Pyro5.server.Daemon):
    """A Pyro5 daemon serving TLS with ``tls`` when given (plain TCP otherwise), admitting
    connections through a ``ConnectionGate`` and reading every message under ``limits``
    (``rpc.guard``).

    The TLS handshake runs in the connection's worker thread (module contracts) and, with the
    first message, must be done within ``FIRST_MESSAGE_S`` of accept; a peer that fails it (no
    certificate, another CA, plain TCP, silence, dripping) is dropped without reaching Pyro5."""

    def __init__(self, host: str, port: int = 0, tls: TLSIdentity | None = None,
                 limits: MessageLimits = DEFAULT_LIMITS,
                 observer: Callable[[str, str], None] | None = None,
                 door: Door | None = None, budget: int | None = None,
                 open_limits: dict[str, int] | None = None) -> None:
        # door: given, the gate reserves capacity for the connections it proves are held by this
        # node's processes (rpc.gate: at most MAX_OPEN other established connections)
        # refusals are reported throttled (a flood must not flood the log): as events, or logged
        # open_limits: the gate's bounds on established connections (``rpc.gate``) for a daemon
        # that reserves capacity by other means than a door (a netlet's, by the role proved)
        gate = {"max_open": MAX_OPEN if door else None, **({"holder_open": door.is_open} if door else {}),
                **(open_limits or {})}
        self.gate = ConnectionGate(observer=observer or RefusalEvents(_log_refusals), **gate)
        self.door = door
        self.limits = limits
        # budget: what calls of connections ``budget_for`` charges may hold in all (``rpc.budget``)
        self.budget = ByteBudget(budget) if budget is not None else None
        super().__init__(host=host, port=port)
        self.transportServer.__class__ = _GatedServer  # a subclass adding behaviour only, no state
        self.tls = tls

    def _refuse_first(self, conn, reason: str, seq: int = 0) -> bool:
        """Answer a refused first message with Pyro5's connect failure (best effort), and close."""
        data = serializers.serializers_by_id[MSGPACK_ID].dumps(reason)
        with contextlib.suppress(OSError, errors.PyroError):
            conn.sock.settimeout(1.0)
            conn.send(protocol.SendingMessage(protocol.MSG_CONNECTFAIL, 0, seq, MSGPACK_ID, data).data)
        conn.close()
        return False

    def _accept_tls(self, conn, deadline: float) -> bool | None:
        """Replace ``conn.sock`` by its TLS socket; False: dropped; None: a plain Pyro5 client."""
        raw = conn.sock
        try:
            raw.settimeout(max(deadline - time.monotonic(), 0.001))
            if raw.recv(len(PYRO_MAGIC), socket.MSG_PEEK) == PYRO_MAGIC:
                return None
            conn.sock = self.tls.server_context.wrap_socket(raw, server_side=True,
                                                            do_handshake_on_connect=False)
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.sock.do_handshake()  # CPython bounds the whole handshake by the timeout (a deadline)
            return True
        except (ssl.SSLError, OSError, ValueError) as err:
            log.debug("TLS handshake failed: %s", err)
            conn.close()
            return False

    def _handshake(self, conn, denied_reason=None):
        if denied_reason is not None:
            # Pyro5 would read the client's connect message on the accept thread: just close.
            log.warning("connection refused: %s", denied_reason)
            conn.close()
            return False
        deadline = conn.accepted + FIRST_MESSAGE_S
        plain_refused = False
        if self.tls is not None:
            outcome = self._accept_tls(conn, deadline)
            if outcome is False:
                return False
            plain_refused = outcome is None
        peer = _peer(conn)
        try:
            message = read_message(conn.sock, self.limits, (protocol.MSG_CONNECT,), first=True, deadline=deadline)
            _check_cost(message, self.limits)
            conn.preload(message)
        except MessageRefused as err:
            self.gate.refuse(f"first_{err.kind}", peer)
            return self._refuse_first(conn, str(err), err.seq)
        except errors.CommunicationError:
            conn.close()
            return False
        if plain_refused:
            # A plain-TCP Pyro client: tell it why instead of resetting the connection.
            return super()._handshake(conn, denied_reason=PLAIN_REFUSED)
        conn.sock.settimeout(config.COMMTIMEOUT)
        if super()._handshake(conn):
            self.gate.established(conn)
            return True
        return False

    def caller_proven(self) -> None:
        """The connection of the call being served authenticated its caller (see
        ``rpc.gate.ConnectionGate.proven``): it keeps its place when the endpoint is full. Called
        from the endpoint's own code, on the worker serving the call."""
        conn = current_context.client
        if conn is not None:
            self.gate.proven(conn)

    def validateHandshake(self, conn, data):
        self.establish(conn, self.door.holder(data) if self.door is not None else None)
        return "hello"

    def establish(self, conn, holder: Holder | None, proven: bool = False) -> None:
        """Admit ``conn`` as established (reserved for ``holder`` when given; ``proven`` when its
        first message already authenticated the caller, see ``rpc.gate.ConnectionGate.proven``),
        or refuse it: counted, and the peer told why (``SecurityError``)."""
        refused = self.gate.established(conn, holder)
        if refused is not None:
            if refused != "closed":
                self.gate.refuse(refused, _peer(conn))
            raise errors.SecurityError(_REFUSALS.get(refused, refused).format(gate=self.gate, holder=holder))
        if proven:
            self.gate.proven(conn)

    def limits_for(self, conn) -> MessageLimits:
        """The limits of the calls ``conn`` may send (known once its first message was accepted)."""
        return self.limits

    def budget_for(self, conn) -> ByteBudget | None:
        """The budget ``conn``'s calls are charged to: this daemon's, unless the gate reserved the
        connection for one of the node's own processes (bounded by the gate instead)."""
        return None if self.gate.holder_of(conn) is not None else self.budget

    def handleRequest(self, conn):
        limits, charge = self.limits_for(conn), Charge(self.budget_for(conn))
        try:
            try:
                message = read_message(conn.sock, limits, (protocol.MSG_INVOKE, protocol.MSG_PING), first=False,
                                       deadline=time.monotonic() + SERVER_IDLE_TIMEOUT_S, charge=charge)
                _check_cost(message, limits, charge)
            except MessageRefused as err:
                self.gate.refuse(err.kind, _peer(conn))
                with contextlib.suppress(OSError, errors.PyroError):
                    conn.sock.settimeout(1.0)
                    self._sendExceptionResponse(conn, err.seq, MSGPACK_ID, err, None)
                discard(conn.sock, err.unread)
                raise errors.SecurityError(str(err)) from None  # ends the connection (Pyro5's job loop)
            conn.preload(message)
            del message  # Pyro5 drops the body once deserialized: only the charge keeps its count
            conn.sock.settimeout(config.COMMTIMEOUT)
            return super().handleRequest(conn)
        finally:
            charge.release()


#: what a refused connection is told, by the gate's reason (``ConnectionGate.established``)
_REFUSALS = {
    "open_full": "more than {gate.max_open} connections are open; the rest of this endpoint's capacity is"
                 " reserved for its own (the node's netlets; a netlet's replicas)",
    "open_peer_full": "more than {gate.per_peer_open} connections from this address are open",
    "reserved_netlet_full": "{holder[1]} already holds {gate.per_holder} connections to this node",
    "reserved_app_full": "app {holder[0]} already holds {gate.per_app_extra} connections to this node"
                         " beyond one per netlet",
    "closed": "connection closed",
}


def _check_cost(message: tuple[bytes, bytearray], limits: MessageLimits, charge: Charge | None = None) -> None:
    """Refuse a message whose body would deserialize to more than ``limits.expansion`` times its size
    (``rpc.cost``), or has a container of more than ``limits.max_items``; take what it will cost from
    ``charge`` (held until the call is answered: Pyro5 builds the same objects)."""
    header, payload = message
    msg = protocol.ReceivingMessage(header)
    if limits.expansion is None or msg.type == protocol.MSG_PING:
        return
    body = memoryview(payload)[msg.annotations_size:]
    try:
        object_cost(body, cost_limit(len(body), limits.expansion), charge, limits.max_items)
    except MessageRefused as err:
        err.seq = msg.seq
        raise


def _log_refusals(kind: str, **detail) -> None:
    log.warning("%s: %s", kind, detail)


def _peer(conn) -> str:
    try:
        addr = conn.sock.getpeername()
    except OSError:
        return "?"
    return addr[0] if isinstance(addr, tuple) else "unix"
