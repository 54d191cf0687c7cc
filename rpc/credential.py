"""Who may connect to an app's netlets, and what each connection may ask.

Two credentials are derived from the app's secret (which only the node and
the app's netlets hold), one per *role*:

* ``client`` — what the node hands to holders of a warrant with the ``call``
  right (``app_access``). It opens the client surface of a netlet endpoint
  (``ping``, ``describe``, ``invoke``, ``invoke_batch``) and nothing else.
* ``replica`` — never leaves the node and the app's netlets. It is required
  for the replication surface (``replication_*``), which additionally asks for
  grants signed by a node (``hosting.election.grants``): holding the replica credential
  is necessary, never sufficient.

Knowing the client credential reveals nothing about the replica one (both are
HMAC-SHA256 of the secret under distinct labels). Every connection opens with
a handshake carrying its role and an HMAC, under that role's credential, of
(role, app, addressee, timestamp, nonce); the addressee is the netlet id of the
one process the handshake is for (``APP/TYPE/INDEX#N``: a later process of the
same slot is another addressee). A netlet accepts it only if it is the
addressee, the MAC verifies, the timestamp is within the replay window and the
nonce is new, and records the role on the connection (:func:`current_peer`).
Each process's nonce cache is its own and starts empty, so binding the
addressee is what makes "accepted once" hold: a handshake sent to (or sniffed
on its way to) one netlet opens no other netlet of the app and not the next
process of its slot (security review B7).

The same proof, under a third kind of key, opens a node's door
(:class:`DoorChecker`): each process the node starts (a netlet, a bootstrap)
gets its own *door key*, ``door_key(root, holder)`` for its holder name (its
netlet id), and proves it in its first message to the node, holder named
(role ``door``, addressee :data:`NODE`: a door key is already one node's
alone, and its door root is new at every node start, so a proof opens no other
node nor a restarted one). The node honours it only while that holder is alive,
so a key says who holds the connection and a dead holder's key opens nothing;
knowing one holder's key reveals nothing about another's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from warrants.errors import BadInput
from warrants.replay import REPLAY_WINDOW_S, NonceCache

CLIENT, REPLICA = "client", "replica"
ROLES = (CLIENT, REPLICA)
#: the role of a node-started process proving its door key to its node (never a netlet endpoint's)
DOOR = "door"
#: the addressee of door proofs: the node (the key itself is one node incarnation's)
NODE = "node"
_PEER_ATTR = "jtrix_peer"


class CredentialRefused(BadInput):
    """A connection did not prove it holds the app credential its role needs."""


def credential(app_secret: bytes, role: str) -> bytes:
    """The credential of ``role`` derived from the app's secret."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return hmac.new(app_secret, f"jtrix-credential/1\0{role}".encode(), hashlib.sha256).digest()


def _mac(key: bytes, role: str, app: str, to: str, ts: float, nonce: str) -> str:
    return hmac.new(key, f"jtrix-app/3\0{role}\0{app}\0{to}\0{ts!r}\0{nonce}".encode(),
                    hashlib.sha256).hexdigest()


def make_handshake(key: bytes, app: str, role: str, to: str, **extra: Any) -> dict[str, Any]:
    """A handshake proving ``key`` (the credential of ``role``) to the one addressee ``to`` (a
    netlet id; :data:`NODE` for a door proof); ``extra`` rides along unMACed (a grant and a
    master proof, which carry their own signatures)."""
    ts, nonce = time.time(), os.urandom(16).hex()
    return {**extra, "role": role, "app": app, "to": to, "ts": ts, "nonce": nonce,
            "mac": _mac(key, role, app, to, ts, nonce)}


def client_handshake(app_secret: bytes, app: str, to: str) -> dict[str, Any]:
    """A client's handshake for the netlet ``to``, made from the app secret (the node's side;
    clients hold only the derived client credential and use :func:`make_handshake`)."""
    return make_handshake(credential(app_secret, CLIENT), app, CLIENT, to)


def replica_handshake(app_secret: bytes, app: str, to: str, **extra: Any) -> dict[str, Any]:
    """The node's and the netlets' own handshake (role ``replica``) for the netlet ``to``."""
    return make_handshake(credential(app_secret, REPLICA), app, REPLICA, to, **extra)


def door_key(root: bytes, holder: str) -> bytes:
    """The door key of ``holder`` (a netlet id) under a node's door ``root`` (the node's only)."""
    return hmac.new(root, f"jtrix-door/1\0{holder}".encode(), hashlib.sha256).digest()


def door_handshake(key: bytes, holder: str) -> dict[str, Any]:
    """A node-started process's first-message proof that it is ``holder`` (``DoorChecker``)."""
    return make_handshake(key, holder, DOOR, NODE)


class ProofChecker:
    """Checks proofs made by :func:`make_handshake` for one addressee, ``me`` (the one process
    whose nonce cache this checker is): ``key_for(role, name)`` is the key a proof for that role
    and name must be made with (None: no such proof is accepted). A proof is accepted once: it
    is addressed to ``me``, its MAC verifies, its timestamp is within the replay window and its
    nonce is new. A proof made for another addressee is refused, so no proof is accepted by two
    checkers (two caches) unless they share an addressee."""

    def __init__(self, key_for: Callable[[str, str], bytes | None], me: str) -> None:
        self._key_for = key_for
        self.me = me
        self._nonces = NonceCache(REPLAY_WINDOW_S)

    def check_proof(self, data: Any) -> tuple[str, str]:
        """(role, name) the proof proves; raises :class:`CredentialRefused` otherwise."""
        if not isinstance(data, dict):
            raise CredentialRefused("no app credential presented")
        role, name, to, ts, nonce, mac = (data.get(k) for k in ("role", "app", "to", "ts", "nonce", "mac"))
        if not isinstance(role, str) or not isinstance(name, str) or not isinstance(to, str) \
                or not isinstance(ts, (int, float)) or isinstance(ts, bool) or not isinstance(nonce, str) \
                or not isinstance(mac, str):
            raise CredentialRefused("malformed app credential")
        key = self._key_for(role, name)
        if key is None:
            raise CredentialRefused("malformed app credential")
        if to != self.me:
            raise CredentialRefused(f"app credential made for another netlet ({to[:80]!r}), not {self.me}")
        if not self._nonces.in_window(float(ts)):
            raise CredentialRefused("app credential outside the replay window")
        if not hmac.compare_digest(mac, _mac(key, role, name, to, float(ts), nonce)):
            raise CredentialRefused("wrong app credential")
        if not self._nonces.fresh(nonce, float(ts)):
            raise CredentialRefused("replayed app credential")
        return role, name


class HandshakeChecker(ProofChecker):
    """Checks handshakes for the endpoint of one netlet, ``netlet_id`` (a process of ``app``);
    knows the credential of each role."""

    def __init__(self, app_secret: bytes, app: str, netlet_id: str) -> None:
        self.keys = {role: credential(app_secret, role) for role in ROLES}
        self.app = app
        super().__init__(lambda role, name: self.keys.get(role) if name == self.app else None, netlet_id)

    def check(self, data: Any) -> str:
        """The role the handshake proves; raises :class:`CredentialRefused` otherwise."""
        return self.check_proof(data)[0]


class DoorChecker(ProofChecker):
    """Checks door proofs for one node (its door ``root``): who made the proof. Whether that
    holder is still alive is the node's to check (``rpc.gate``: a dead holder's
    connection is refused)."""

    def __init__(self, root: bytes) -> None:
        super().__init__(lambda role, name: door_key(root, name) if role == DOOR else None, NODE)

    def holder(self, data: Any) -> str | None:
        """The holder the proof proves, or None (no proof, a wrong, replayed or stale one)."""
        try:
            return self.check_proof(data)[1]
        except CredentialRefused:
            return None


@dataclass(frozen=True)
class Peer:
    """What one connection proved at its handshake: its role and, for a master replicating
    to a backup, the (epoch, slot) a node's promote grant names (``hosting.election.grants``)."""

    role: str
    master: tuple[int, str] | None = None


def set_peer(conn: Any, peer: Peer) -> None:
    setattr(conn, _PEER_ATTR, peer)


def peer_of(conn: Any) -> Peer | None:
    """What ``conn`` proved at its handshake (None: nothing yet)."""
    return getattr(conn, _PEER_ATTR, None)


def current_peer() -> Peer | None:
    """The peer of the connection whose request this thread is serving (None: no handshake)."""
    from Pyro5.callcontext import current_context

    return peer_of(current_context.client)
