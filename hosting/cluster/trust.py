"""Whose warrants a node accepts: its own certificate's, and in a cluster every member's.

Contracts:
  * Trust only grows: a node certificate once trusted stays trusted, so a
    warrant it issued stays valid until it expires, even after that node is
    gone. Each member publishes its certificate at join under
    ``certs/<service id>``; the service id is derived from the certificate's
    fingerprint, so a key published there cannot be rebound to another service.
  * A warrant is for the service of the certificate at the root of its chain:
    a node accepts warrants for its own service and, in a cluster, for any
    member's service when issued by that member (``service_for``) — so any
    node's admin warrant works on every node.
  * Warrants rooted in another node's certificate cannot use the netlet-only
    rights (``lease``, ``report``): a netlet deals only with its own node.
"""

from __future__ import annotations

import logging
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hosting.cluster import keys
from hosting.cluster.etcd import Etcd, WatchEvent
from hosting.home import service_id_of
from warrants.errors import InsufficientRights

log = logging.getLogger(__name__)

NETLET_ONLY_RIGHTS = frozenset({"lease", "report"})


def service_for(warrant, own_fingerprint: str, own_service: str, trusted: Callable, right: str) -> str:
    """The service ``warrant`` (already verified up to a trusted root) may act on here.

    Raises InsufficientRights for a foreign-rooted warrant claiming a service
    that is not its issuer's, or asking for a netlet-only right.
    """
    root = warrant.root
    if root.issuer_fingerprint == own_fingerprint:
        return own_service
    cert = trusted(root.issuer_fingerprint)
    issuer_service = service_id_of(cert) if cert is not None else None
    if warrant.service != issuer_service:
        raise InsufficientRights(f"warrant {warrant.serial} is for service {warrant.service!r},"
                                 f" but its issuer is {issuer_service!r}")
    if right in NETLET_ONLY_RIGHTS:
        raise InsufficientRights(f"warrant {warrant.serial} from node {issuer_service} cannot use {right!r}"
                                 f" here (a netlet deals only with its own node)")
    return warrant.service


class EtcdTrust:
    """Publishes this node's certificate and feeds every member's to ``on_certs``."""

    def __init__(self, etcd: Etcd, own_cert, on_certs: Callable[[list], None]) -> None:
        self.etcd, self.on_certs = etcd, on_certs
        self.etcd.create(keys.cert(service_id_of(own_cert)), own_cert.public_bytes(serialization.Encoding.PEM))
        kvs, revision = etcd.get_prefix(keys.CERTS)
        self.on_certs([c for c in (self._load(kv.key, kv.value) for kv in kvs) if c is not None])
        self._watch = etcd.watch_prefix(keys.CERTS, revision + 1, self._changed)

    def _load(self, key: str, pem: bytes):
        """The certificate under ``key``, or None if it does not match its service id."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as err:  # someone wrote garbage into etcd
            log.warning("ignoring %s: not a certificate (%s)", key, err)
            return None
        parsed = keys.match(key)
        if parsed is None or parsed.kind != "cert" or parsed.name != service_id_of(cert):
            log.warning("ignoring %s: its certificate is for %s", key, service_id_of(cert))
            return None
        return cert

    def _changed(self, event: WatchEvent) -> None:
        if event.kind == "put":
            cert = self._load(event.key, event.value)
            if cert is not None:
                self.on_certs([cert])

    def close(self) -> None:
        self._watch.cancel()
