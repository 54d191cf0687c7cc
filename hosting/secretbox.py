"""App secrets sealed at rest: AES-256-GCM under a key file only the node can read.

Why a key file and not secrets derived from a node key (HKDF): in a cluster
an app's secret must be the same on every node that hosts it, so it is made
once by the app's owner and travels through etcd (``hosting.cluster.store``);
each node then keeps its own copy sealed under its own ``secrets.key``. A
copy of ``registry.sqlite`` (its WAL, a backup, a home that was left
world-readable) no longer reveals any secret without that key.

Contract: ``open(app, seal(app, s)) == s``; a sealed value opens only under
the key and for the app it was sealed for (the app name is the associated
data: a sealed secret moved to another app's row does not open); the key file
is created once, 0600, and never rewritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"jxs1"
NONCE_BYTES = 12


class SecretBox:
    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._aead = AESGCM(self._load_or_create(key_path))

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        """The key in ``path``; made first if missing (written whole, then linked into place,
        so a crash never leaves a short key file)."""
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, AESGCM.generate_key(bit_length=256))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # made meanwhile: use that one
            finally:
                tmp.unlink()
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path} is not a 32-byte key")
        return key

    @staticmethod
    def is_sealed(blob: bytes) -> bool:
        return bytes(blob[:len(MAGIC)]) == MAGIC

    def seal(self, app: str, secret: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, bytes(secret), app.encode())

    def open(self, app: str, blob: bytes) -> bytes:
        blob = bytes(blob)
        if not self.is_sealed(blob):
            raise ValueError(f"the secret of {app} is not sealed")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE_BYTES]
        return self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], app.encode())
