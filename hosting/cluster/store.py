"""What a node of the cluster needs to run any app, kept in etcd: app specs, codebases, and
which slots were re-created elsewhere and have not caught up yet.

Contracts:
  * ``apps/<app>/spec`` holds what the app's owner registered: the descriptor
    (the exact bytes submitted), its source label, the codebase hash and the
    app credential. etcd is the cluster's root of trust (whoever can write it
    can rewrite every epoch), so the credential is no safer anywhere else;
    run etcd with TLS and client certificates off loopback.
  * A codebase is stored under its SHA-256, in chunks below etcd's request
    limit, its index (size, chunk count) written only after every chunk: a
    reader that finds the index finds the whole codebase. ``get_codebase``
    returns bytes whose hash it has checked, or raises; it never returns a
    partial or altered archive.
  * ``apps/<app>/moved`` is a set of slots changed only by compare-and-swap
    (``update_moved``): concurrent changes never lose one another.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Callable

from hosting.cluster import keys
from hosting.cluster.etcd import Etcd
from warrants.errors import BadInput, NotFound

CHUNK_BYTES = 1024 * 1024  # etcd's default request limit is 1.5 MiB


class ClusterStore:
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    # -- codebases (content-addressed) -------------------------------------
    def has_codebase(self, sha: str) -> bool:
        return self.etcd.get(keys.codebase(sha)) is not None

    def put_codebase(self, sha: str, data: bytes) -> None:
        """Store ``data`` under ``sha`` (BadInput if it does not hash to it); idempotent."""
        if hashlib.sha256(data).hexdigest() != sha:
            raise BadInput(f"codebase does not hash to {sha[:12]}")
        if self.has_codebase(sha):
            return
        chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            self.etcd.put(keys.codebase_chunk(sha, i), base64.b64encode(chunk))
        self.etcd.put(keys.codebase(sha), json.dumps({"size": len(data), "chunks": len(chunks)}))

    def get_codebase(self, sha: str) -> bytes:
        """The archive stored under ``sha`` (NotFound if none; JtrixError if it fails its hash)."""
        index = self.etcd.get(keys.codebase(sha))
        if index is None:
            raise NotFound(f"codebase {sha[:12]} is not in the cluster store")
        count = int(index.json()["chunks"])
        parts = []
        for i in range(count):
            kv = self.etcd.get(keys.codebase_chunk(sha, i))
            if kv is None:
                raise NotFound(f"codebase {sha[:12]}: chunk {i} of {count} is missing")
            parts.append(base64.b64decode(kv.value))
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != sha:
            raise BadInput(f"codebase {sha[:12]} in the cluster store does not match its hash")
        return data

    # -- app specs ------------------------------------------------------------
    def put_app(self, app: str, descriptor_xml: bytes, source: str, codebase_sha: str, secret: bytes) -> None:
        self.etcd.put(keys.spec(app), json.dumps({
            "descriptor": base64.b64encode(descriptor_xml).decode(), "source": source,
            "codebase": codebase_sha, "secret": secret.hex()}))

    def get_app(self, app: str) -> dict | None:
        """``{"descriptor": bytes, "source", "codebase", "secret": bytes}`` or None."""
        kv = self.etcd.get(keys.spec(app))
        if kv is None:
            return None
        spec = kv.json()
        return {"descriptor": base64.b64decode(spec["descriptor"]), "source": spec["source"],
                "codebase": spec["codebase"], "secret": bytes.fromhex(spec["secret"])}

    def delete_app(self, app: str) -> None:
        """Forget ``app``: its spec and its moved set (its codebase stays: content-addressed)."""
        self.etcd.delete(keys.spec(app))
        self.etcd.delete(keys.moved(app))

    # -- moved slots ------------------------------------------------------------
    def moved(self, app: str) -> set[str]:
        """Slots of ``app`` re-created on another node that have not caught up since."""
        kv = self.etcd.get(keys.moved(app))
        return set(kv.json()) if kv else set()

    def update_moved(self, app: str, change: Callable[[set[str]], set[str]]) -> set[str]:
        """Replace the moved set by ``change(current)``, compare-and-swapped on the revision read
        (``change`` runs again on a conflict); returns the new set."""
        key = keys.moved(app)
        while True:
            kv = self.etcd.get(key)
            current = set(kv.json()) if kv else set()
            new = change(current)
            if new == current or self.etcd.swap(key, json.dumps(sorted(new)), kv.mod_revision if kv else 0):
                return new
