"""Calling a hosting node: the client side of ``hosting.api``.

Contracts:
  * Every call carries a fresh auth envelope (warrant, timestamp, nonce, proof over
    those and the call's arguments).
  * A proxy belongs to one thread: each thread gets its own.
  * Retries are explicit and only for idempotent methods (``IDEMPOTENT``): a
    connection failure of any other call is reported, because it may or may
    not have run. A proxy idle for longer than the server keeps idle
    connections is replaced before use, so idleness never causes an ambiguity.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from Pyro5.errors import CommunicationError
from Pyro5.errors import TimeoutError as CallTimeout

import warrants
from rpc import wire
from hosting.auth import make_auth
from hosting.home import Home, default_home, read_node_info
from rpc.tls import TLSIdentity, client_identity
from warrants.errors import BadInput, JtrixError, NotFound

IDEMPOTENT = frozenset({"hello", "has_codebase", "upload_codebase", "upload_chunk", "upload_commit", "status", "host_status", "events", "logs",
                        "renew", "report", "control_state", "app_access"})


class NodeUnreachable(JtrixError):
    """No hosting node answers at the address we know (exit code 3, as for what is not there).

    Not a ``NotFound``: the node may be restarting, so whoever retries (an access
    point within its timeout, a netlet's renewals) waits it out, while ``NotFound``
    means the app or netlet is gone for good and nothing will answer."""

    exit_code = 3


class ConnectionRefused(BadInput):
    """The node refused the connection itself (e.g. it needs TLS with a cluster certificate)."""


class CallTimedOut(JtrixError):
    """The node did not answer in time: the call may or may not have taken effect."""


class HostingClient:
    def __init__(self, uri: str, warrant_xml: bytes, key=None, timeout: float = wire.CALL_TIMEOUT_S,
                 tls: TLSIdentity | None = None, handshake: Callable[[], Any] | None = None) -> None:
        wire.configure()
        #: makes the first message's handshake data of each new connection (a node's netlets: proof)
        self.handshake = handshake
        self.uri = uri
        self.warrant_xml = warrant_xml
        self.key = key
        self.timeout = timeout
        #: the TLS identity of every connection made for this client (its node's and its netlets')
        self.tls = tls
        self._local = threading.local()
        self._service: str | None = None

    @classmethod
    def for_home(cls, home: Path | None = None, warrant_path: Path | None = None, key_path: Path | None = None,
                 timeout: float = wire.CALL_TIMEOUT_S, uri: str | None = None) -> "HostingClient":
        """A client of the node recorded in ``home`` (or of the node at ``uri``) acting with the
        home's admin warrant (or the one given), over TLS with the home's client identity when
        the home's node is a cluster member (``rpc.tls.client_identity``)."""
        h = Home(Path(home) if home else default_home())
        info = {"uri": uri} if uri else read_node_info(h.root)
        if not info or not info.get("uri"):
            raise NodeUnreachable(f"no hosting node is running for {h.root} (start one with: jtrix host start)")
        warrant_path = Path(warrant_path) if warrant_path else h.admin_warrant
        key_path = Path(key_path) if key_path else (h.admin_key if warrant_path == h.admin_warrant else None)
        try:
            warrant_xml = warrant_path.read_bytes()
        except OSError as err:
            raise NotFound(f"cannot read warrant {warrant_path}: {err.strerror}") from None
        key = warrants.load_private_key(key_path) if key_path else None
        return cls(info["uri"], warrant_xml, key, timeout, tls=client_identity(h.root))

    @property
    def service(self) -> str:
        if self._service is None:
            self._service = self._invoke("hello", (), authed=False)["service"]
        return self._service

    def _proxy(self, fresh: bool = False):
        p = getattr(self._local, "proxy", None)
        idle = time.monotonic() - getattr(self._local, "used", 0.0)
        if p is not None and (fresh or idle > wire.SERVER_IDLE_TIMEOUT_S / 2):
            p._pyroRelease()
            p = None
        if p is None:
            p = wire.proxy(self.uri, self.timeout, tls=self.tls)
            if self.handshake is not None:
                p._pyroHandshake = self.handshake()
            self._local.proxy = p
        self._local.used = time.monotonic()
        return p

    def _invoke(self, method: str, args: tuple, authed: bool = True, timeout: float | None = None,
                **kwargs: Any) -> Any:
        attempts = 2 if method in IDEMPOTENT else 1
        for attempt in range(attempts):
            proxy = self._proxy(fresh=attempt > 0)
            proxy._pyroTimeout = timeout or self.timeout
            try:
                if authed:
                    auth = make_auth(self.warrant_xml, self.key, self.service, method, args, kwargs)
                    return getattr(proxy, method)(auth, *args, **kwargs)
                return getattr(proxy, method)(*args, **kwargs)
            except CallTimeout:
                self._drop_proxy()
                if attempt + 1 < attempts:
                    continue
                raise CallTimedOut(f"{method}: no answer from the hosting node within "
                                   f"{timeout or self.timeout:g}s (it may still complete)") from None
            except CommunicationError as err:
                self._drop_proxy()
                if str(err).startswith("message too large"):  # Pyro5's words, over wire.MAX_MESSAGE_SIZE
                    raise BadInput(f"{method}: {err}") from None
                if " rejected: " in str(err):  # Pyro5's words for a handshake the server refused
                    raise ConnectionRefused(f"hosting node at {self.uri} refused the connection: "
                                            f"{str(err).split(' rejected: ', 1)[1]}") from None
                if attempt + 1 < attempts:
                    continue
                raise NodeUnreachable(f"hosting node at {self.uri} unreachable: {err}") from None
        raise AssertionError("unreachable")

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call a hosting API method (auth is added here); ``timeout`` overrides the client's for this call."""
        return self._invoke(method, args, timeout=timeout, **kwargs)

    def _drop_proxy(self) -> None:
        p = getattr(self._local, "proxy", None)
        self._local.proxy = None
        if p is not None:
            p._pyroRelease()

    def close(self) -> None:
        self._drop_proxy()


def own_process_handshake(start_doc: dict) -> Callable[[], Any] | None:
    """For a process the node started (a netlet, a bootstrap): the handshake proving which one it
    is, from its own door key in its start document (``node_door``: holder and key;
    ``rpc.gate``: reserved capacity); None when the document has none."""
    from rpc.credential import door_handshake

    door = start_doc.get("node_door")
    if not isinstance(door, dict):
        return None
    holder, key = door["holder"], bytes.fromhex(door["key"])
    return lambda: door_handshake(key, holder)


__all__ = ["HostingClient", "NodeUnreachable", "JtrixError"]


def upload_codebase(client: "HostingClient", data: bytes, sha: str) -> bool:
    """Make the node hold the archive ``data`` (sha256 ``sha``): nothing if it has it, otherwise
    in chunks of at most ``codebases.MAX_CHUNK_BYTES`` (each its own authenticated call; a chunk
    the node did not take is resent from where it is), then committed. True if it was sent."""
    from hosting.codebases import MAX_CHUNK_BYTES

    if client.call("has_codebase", sha):
        return False
    held = stalled = 0
    while held < len(data):
        took = client.call("upload_chunk", sha, held, data[held:held + MAX_CHUNK_BYTES])
        stalled = stalled + 1 if took <= held else 0  # took < held: the node lost the partial (restarted)
        if stalled > 2:
            raise JtrixError(f"upload of codebase {sha[:12]} makes no progress (the node holds {took} bytes)")
        held = took
    client.call("upload_commit", sha)
    return True
