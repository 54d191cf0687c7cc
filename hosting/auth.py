"""Authorising hosting calls: a warrant on every call, proof of possession, no replay.

Every hosting call carries ``auth = {"warrant": str, "ts": float, "nonce": str,
"proof": bytes|None}``. The proof is the holder's signature over
:func:`call_context` — service id, method, timestamp, nonce and the digest of
the call's arguments (``rpc.digest.call_digest``) — so a captured or relayed
proof is useless for another method, other arguments, another node, or after
the replay window.

Contracts:
  * :meth:`Authorizer.check` returns the verified warrant only if its chain is
    trusted, in its time window, grants ``right`` (each of them, for a tuple)
    on this service (and app),
    and — when it names a holder — the proof verifies; otherwise it raises a
    ``BadInput`` subclass named by the cause.
  * A (nonce) is accepted at most once within the replay window; timestamps
    further than the window from the node's clock are refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

import warrants
from rpc.digest import call_digest
from hosting.cluster.trust import service_for
from warrants.replay import REPLAY_WINDOW_S, NonceCache
from warrants.errors import BadInput

#: ``app`` for operations that concern no particular app (content-addressed
#: uploads): a warrant scoped to any one app is enough.
ANY_APP = object()
#: the digest of a call with no arguments besides ``auth``
EMPTY_ARGS = call_digest((), None)


class CallRefused(BadInput):
    """The call's authentication envelope is missing, stale or replayed."""


def call_context(service: str, method: str, ts: float, nonce: str, args_digest: str) -> bytes:
    """The bytes a holder signs to prove possession for one call with these arguments."""
    return f"jtrix-call/2\0{service}\0{method}\0{ts!r}\0{nonce}\0{args_digest}".encode()


def make_auth(warrant_xml: bytes, key, service: str, method: str, args: tuple | list = (),
              kwargs: dict | None = None) -> dict[str, Any]:
    """Client side: the ``auth`` argument for one call of ``method(auth, *args, **kwargs)``
    (``key`` may be None for bearer warrants)."""
    ts, nonce = time.time(), os.urandom(16).hex()
    proof = None
    if key is not None:
        proof = warrants.sign_proof(key, call_context(service, method, ts, nonce, call_digest(args, kwargs)))
    return {"warrant": warrant_xml.decode() if isinstance(warrant_xml, bytes) else warrant_xml,
            "ts": ts, "nonce": nonce, "proof": proof}


class Authorizer:
    """Node side: checks the auth envelope of every call.

    ``own_cert`` is this node's certificate; :meth:`trust` adds the certificates
    of other cluster members, whose warrants are then accepted for their own
    services (``hosting.cluster.trust``).
    """

    def __init__(self, own_cert, service: str) -> None:
        self.service = service
        self._own = warrants.cert_fingerprint(own_cert)
        self._verifier = warrants.WarrantVerifier([own_cert], service)
        self._nonces = NonceCache(REPLAY_WINDOW_S)

    def trust(self, certs) -> None:
        self._verifier.add_trusted(certs)

    def check(self, auth: Any, method: str, right: str | tuple[str, ...], app: str | None = None,
              args_digest: str = EMPTY_ARGS):
        """``right``: the right the call needs, or a tuple of rights it needs all of;
        ``args_digest``: ``call_digest`` of the arguments the call arrived with (after ``auth``)."""
        rights = (right,) if isinstance(right, str) else tuple(right)
        if not isinstance(auth, dict) or not isinstance(auth.get("warrant"), str):
            raise CallRefused("call refused: no warrant presented")
        ts, nonce = auth.get("ts"), auth.get("nonce")
        if not isinstance(ts, (int, float)) or not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise CallRefused("call refused: malformed call envelope (ts/nonce)")
        if not self._nonces.in_window(float(ts)):
            raise CallRefused("call refused: timestamp outside the replay window (clock skew?)")
        proof = auth.get("proof")
        context = call_context(self.service, method, float(ts), nonce, args_digest)
        xml = auth["warrant"].encode()
        verified = self._verifier.verify(xml)  # cached; the full check follows
        if app is ANY_APP:
            app = verified.app
        service = service_for(verified, self._own, self.service, self._verifier.trusted, rights[0])
        warrant = self._verifier.check(xml, rights[0], app=app, proof=proof, context=context, service=service)
        for more in rights[1:]:
            service_for(verified, self._own, self.service, self._verifier.trusted, more)
            warrant.authorize(more, service, app)
        if not self._nonces.fresh(nonce, float(ts)):
            raise CallRefused("call refused: replayed nonce")
        return warrant
