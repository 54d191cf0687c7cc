"""The app credential: who may call an app's netlets.

Every connection to a netlet endpoint opens with a handshake carrying an
HMAC-SHA256, under the app's secret, of (app, timestamp, nonce). A netlet
accepts the connection only if the MAC verifies, the timestamp is within the
replay window and the nonce is new. Holders of the secret: the app's netlets
(given by the node at start) and clients holding a warrant with the ``call``
right (given by the node through ``app_credential``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any

from warrants.errors import BadInput
from warrants.replay import NonceCache

REPLAY_WINDOW_S = 120.0


class CredentialRefused(BadInput):
    """A connection did not prove it holds the app's credential."""


def _mac(secret: bytes, app: str, ts: float, nonce: str) -> str:
    return hmac.new(secret, f"jtrix-app/1\0{app}\0{ts!r}\0{nonce}".encode(), hashlib.sha256).hexdigest()


def make_handshake(secret: bytes, app: str) -> dict[str, Any]:
    ts, nonce = time.time(), os.urandom(16).hex()
    return {"app": app, "ts": ts, "nonce": nonce, "mac": _mac(secret, app, ts, nonce)}


class HandshakeChecker:
    def __init__(self, secret: bytes, app: str) -> None:
        self.secret = secret
        self.app = app
        self._nonces = NonceCache(REPLAY_WINDOW_S)

    def check(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise CredentialRefused("no app credential presented")
        app, ts, nonce, mac = data.get("app"), data.get("ts"), data.get("nonce"), data.get("mac")
        if app != self.app or not isinstance(ts, (int, float)) or not isinstance(nonce, str) \
                or not isinstance(mac, str):
            raise CredentialRefused("malformed app credential")
        if not self._nonces.in_window(float(ts)):
            raise CredentialRefused("app credential outside the replay window")
        if not hmac.compare_digest(mac, _mac(self.secret, app, float(ts), nonce)):
            raise CredentialRefused("wrong app credential")
        if not self._nonces.fresh(nonce, float(ts)):
            raise CredentialRefused("replayed app credential")
