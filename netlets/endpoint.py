"""A netlet's own RPC endpoint (Pyro5), open only to holders of the app credential."""

from __future__ import annotations

import threading

from hosting import wire
from hosting.tls import TLSIdentity
from netlets.credential import HandshakeChecker

OBJECT_ID = "jtrix.netlet"


class AppDaemon(wire.Daemon):
    """A Pyro5 daemon whose every connection must pass the app-credential handshake (after
    TLS with a cluster certificate, in a cluster)."""

    def __init__(self, checker: HandshakeChecker, host: str = "127.0.0.1", port: int = 0,
                 tls: TLSIdentity | None = None) -> None:
        super().__init__(host, port, tls, limits=wire.NETLET_LIMITS)
        self._checker = checker

    def validateHandshake(self, conn, data):
        self._checker.check(data)
        return "ok"


def serve_endpoint(obj, checker: HandshakeChecker, host: str = "127.0.0.1",
                   port: int = 0, tls: TLSIdentity | None = None) -> tuple[AppDaemon, str, threading.Thread]:
    """Register ``obj`` and serve it on a daemon thread; returns (daemon, uri, thread)."""
    wire.configure()
    daemon = AppDaemon(checker, host, port, tls)
    uri = str(daemon.register(obj, OBJECT_ID))
    thread = threading.Thread(target=daemon.requestLoop, name="netlet-endpoint", daemon=True)
    thread.start()
    return daemon, uri, thread
