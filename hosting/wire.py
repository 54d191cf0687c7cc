"""Pyro5 settings and error transport shared by every jtrix endpoint.

Contracts (see DESIGN.md, "Pitfalls"): msgpack only (never pickle); no
automatic retries (``MAX_RETRIES = 0``: a retry must be explicit and
idempotent); explicit timeouts; a thread pool sized for many connections,
with idle/silent connections dropped after ``SERVER_IDLE_TIMEOUT_S`` so that a
client that connects and sends nothing cannot hold a worker forever.
``JtrixError`` subclasses raised by a server arrive as the same class.

TLS (``hosting.tls``), when a process has an identity: servers (``Daemon``)
accept plain TCP and run the TLS handshake in the worker thread that serves the
connection, bounded by ``tls.HANDSHAKE_TIMEOUT_S`` — a peer that stalls its
handshake holds one worker, never the accept loop; clients (``proxy(...,
tls=identity)``) handshake while connecting, bounded by the call timeout.
Pyro5's own SSL support is not used: its settings are process-wide and it
handshakes on the accept thread. Pyro5 makes client sockets through
``socketutil.create_socket``; ``configure`` wraps that function once so a
connection made for a jtrix TLS proxy gets that proxy's context.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import Pyro5.api
import Pyro5.server
from Pyro5 import config, socketutil
from Pyro5.serializers import SerializerBase

from hosting.tls import HANDSHAKE_TIMEOUT_S, TLSIdentity
from warrants.errors import JtrixError

log = logging.getLogger(__name__)

#: the first bytes of every Pyro5 message (what a plain-TCP client sends first)
PYRO_MAGIC = b"PYRO"
PLAIN_REFUSED = ("TLS required: this endpoint is a cluster member; connect with a certificate of the"
                 " cluster (a member's home has one in tls/)")
SERVER_IDLE_TIMEOUT_S = 30.0
THREADPOOL_SIZE = 512
CALL_TIMEOUT_S = 10.0


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
    config.MAX_MESSAGE_SIZE = 256 * 1024 * 1024
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


class Daemon(Pyro5.server.Daemon):
    """A Pyro5 daemon serving TLS with ``tls`` when given (plain TCP otherwise).

    The handshake runs in the connection's worker thread (module contracts); a
    peer that fails it (no certificate, another CA, plain TCP, silence) is
    dropped without reaching the Pyro5 handshake."""

    def __init__(self, host: str, port: int = 0, tls: TLSIdentity | None = None) -> None:
        super().__init__(host=host, port=port)
        self.tls = tls

    def _handshake(self, conn, denied_reason=None):
        if denied_reason is not None:
            # Pyro5 would read the client's connect message on the accept thread: just close.
            log.warning("connection refused: %s", denied_reason)
            conn.close()
            return False
        if self.tls is not None:
            raw = conn.sock
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                if raw.recv(len(PYRO_MAGIC), socket.MSG_PEEK) == PYRO_MAGIC:
                    # A plain-TCP Pyro client: tell it why instead of resetting the connection.
                    return super()._handshake(conn, denied_reason=PLAIN_REFUSED)
                conn.sock = self.tls.server_context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake failed: %s", err)
                raw.close()
                return False
            conn.sock.settimeout(config.COMMTIMEOUT)
        return super()._handshake(conn)
