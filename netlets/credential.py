"""Who may connect to an app's netlets, and what each connection may ask.

Two credentials are derived from the app's secret (which only the node and
the app's netlets hold), one per *role*:

* ``client`` — what the node hands to holders of a warrant with the ``call``
  right (``app_access``). It opens the client surface of a netlet endpoint
  (``ping``, ``describe``, ``invoke``, ``invoke_batch``) and nothing else.
* ``replica`` — never leaves the node and the app's netlets. It is required
  for the replication surface (``replication_*``), which additionally asks for
  grants signed by a node (``hosting.grants``): holding the replica credential
  is necessary, never sufficient.

Knowing the client credential reveals nothing about the replica one (both are
HMAC-SHA256 of the secret under distinct labels). Every connection opens with
a handshake carrying its role and an HMAC, under that role's credential, of
(role, app, timestamp, nonce); a netlet accepts it only if the MAC verifies,
the timestamp is within the replay window and the nonce is new, and records
the role on the connection (:func:`current_peer`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any

from warrants.errors import BadInput
from warrants.replay import NonceCache

REPLAY_WINDOW_S = 120.0
CLIENT, REPLICA = "client", "replica"
ROLES = (CLIENT, REPLICA)
_PEER_ATTR = "jtrix_peer"


class CredentialRefused(BadInput):
    """A connection did not prove it holds the app credential its role needs."""


def credential(app_secret: bytes, role: str) -> bytes:
    """The credential of ``role`` derived from the app's secret."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return hmac.new(app_secret, f"jtrix-credential/1\0{role}".encode(), hashlib.sha256).digest()


def _mac(key: bytes, role: str, app: str, ts: float, nonce: str) -> str:
    return hmac.new(key, f"jtrix-app/2\0{role}\0{app}\0{ts!r}\0{nonce}".encode(), hashlib.sha256).hexdigest()


def make_handshake(key: bytes, app: str, role: str = CLIENT, **extra: Any) -> dict[str, Any]:
    """A handshake proving ``key`` (the credential of ``role``); ``extra`` rides along unMACed
    (a grant, which carries its own signature)."""
    ts, nonce = time.time(), os.urandom(16).hex()
    return {**extra, "role": role, "app": app, "ts": ts, "nonce": nonce, "mac": _mac(key, role, app, ts, nonce)}


def client_handshake(app_secret: bytes, app: str) -> dict[str, Any]:
    """A client's handshake made from the app secret (the node's side; clients hold only
    the derived client credential and use :func:`make_handshake`)."""
    return make_handshake(credential(app_secret, CLIENT), app, CLIENT)


def replica_handshake(app_secret: bytes, app: str, **extra: Any) -> dict[str, Any]:
    """The node's and the netlets' own handshake (role ``replica``)."""
    return make_handshake(credential(app_secret, REPLICA), app, REPLICA, **extra)


class HandshakeChecker:
    """Checks handshakes for one app; knows the credential of each role."""

    def __init__(self, app_secret: bytes, app: str) -> None:
        self.keys = {role: credential(app_secret, role) for role in ROLES}
        self.app = app
        self._nonces = NonceCache(REPLAY_WINDOW_S)

    def check(self, data: Any) -> str:
        """The role the handshake proves; raises :class:`CredentialRefused` otherwise."""
        if not isinstance(data, dict):
            raise CredentialRefused("no app credential presented")
        role, app, ts, nonce, mac = (data.get(k) for k in ("role", "app", "ts", "nonce", "mac"))
        if role not in self.keys or app != self.app or not isinstance(ts, (int, float)) \
                or not isinstance(nonce, str) or not isinstance(mac, str):
            raise CredentialRefused("malformed app credential")
        if not self._nonces.in_window(float(ts)):
            raise CredentialRefused("app credential outside the replay window")
        if not hmac.compare_digest(mac, _mac(self.keys[role], role, app, float(ts), nonce)):
            raise CredentialRefused("wrong app credential")
        if not self._nonces.fresh(nonce, float(ts)):
            raise CredentialRefused("replayed app credential")
        return role


@dataclass(frozen=True)
class Peer:
    """What one connection proved at its handshake: its role and, for a master replicating
    to a backup, the (epoch, slot) a node's promote grant names (``hosting.grants``)."""

    role: str
    master: tuple[int, str] | None = None


def set_peer(conn: Any, peer: Peer) -> None:
    setattr(conn, _PEER_ATTR, peer)


def current_peer() -> Peer | None:
    """The peer of the connection whose request this thread is serving (None: no handshake)."""
    from Pyro5.callcontext import current_context

    return getattr(current_context.client, _PEER_ATTR, None)
