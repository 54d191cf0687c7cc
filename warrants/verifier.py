"""The hosting node's per-call warrant check, with a cache of verified chains.

Verifying a chain (parsing, schema, XML-DSig) costs about a millisecond; the
hosting node checks a warrant on every API call. :class:`WarrantVerifier`
caches verified chains by the SHA-256 of the exact document bytes, and on
every call re-checks everything that can change between calls: the time
window of every link, the right, the service, the app and the holder's proof.
Refusals are never cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable

from cryptography import x509

from warrants.model import Warrant
from warrants.proof import verify_proof
from warrants.verify import trust_map, verify_chain


class WarrantVerifier:
    """Thread-safe checker of warrants for one hosting service."""

    def __init__(self, trusted: Iterable[x509.Certificate], service: str, cache_size: int = 4096):
        self._trusted = trust_map(trusted)
        self.service = service
        self._cache: OrderedDict[bytes, Warrant] = OrderedDict()
        self._cache_size = max(1, int(cache_size))
        self._lock = threading.Lock()

    def add_trusted(self, certs: Iterable[x509.Certificate]) -> None:
        """Trust more issuers (trust only grows: cached chains stay valid)."""
        with self._lock:
            self._trusted = {**self._trusted, **trust_map(certs)}

    def trusted(self, fingerprint: str) -> x509.Certificate | None:
        return self._trusted.get(fingerprint)

    def verify(self, xml: bytes, source: str = "<warrant>") -> Warrant:
        """The verified chain of ``xml`` (cached); its time window is NOT checked here."""
        xml = bytes(xml)
        key = hashlib.sha256(xml).digest()
        with self._lock:
            warrant = self._cache.get(key)
            if warrant is not None:
                self._cache.move_to_end(key)
                return warrant
        warrant = verify_chain(xml, self._trusted, source)  # the map is replaced, never mutated
        with self._lock:
            self._cache[key] = warrant
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return warrant

    def check(
        self,
        xml: bytes,
        right: str,
        app: str | None = None,
        proof: bytes | None = None,
        context: bytes = b"",
        now: dt.datetime | None = None,
        service: str | None = None,
    ) -> Warrant:
        """Verify ``xml`` (cached) and authorize ``right`` on this service — or on ``service``
        when the caller has established which one applies — (and ``app``).

        A warrant naming a holder additionally needs ``proof`` =
        ``sign_proof(holder_key, context)``. Raises a ``BadInput`` subclass named
        by the cause; returns the verified leaf warrant.
        """
        warrant = self.verify(xml)
        warrant.authorize(right, service or self.service, app, now)
        if warrant.holder_public_key_der is not None:
            verify_proof(warrant, proof, context)
        return warrant

    def clear(self) -> None:
        """Forget every cached chain."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
