"""Cluster TLS: one CA per cluster, a certificate per node, per netlet and per home's clients.

Safety model (what must hold):
  * Mutual authentication. A TLS endpoint (a node's API, a netlet's endpoint)
    completes a handshake only with a peer presenting a certificate issued by
    the cluster CA; a client completes one only with a server whose
    certificate, from the same CA, names the address it dialled (IP or DNS
    subject alternative name). TLS 1.3 only; keys are ECDSA P-256.
  * Authority is still the warrant's (and, for netlets, the app credential's):
    a cluster certificate proves membership of the cluster, never rights.
  * The CA is made once per cluster, at the first node's join, and stored in
    etcd (``tls/ca``, created only if absent, so racing first nodes agree on
    one). Whoever can read the cluster's etcd prefix can mint certificates:
    etcd is the cluster's root of trust and must be protected accordingly
    (``--etcd-ca/--etcd-cert/--etcd-key``).
  * Nodes issue their own certificate and those of their netlets at start;
    nothing is revoked: a certificate is valid until it expires
    (``LEAF_DAYS``).

A single node (no ``--cluster``) speaks plain TCP and only on loopback.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hosting.cluster import keys as etcd_keys
from warrants.errors import BadInput
from warrants.keys import private_key_pem

CA_KEY = etcd_keys.CA
CA_DAYS = 3650
LEAF_DAYS = 365


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class TLSIdentity:
    """A certificate, its key and the cluster CA: everything one process needs for TLS.

    The same identity serves (``server_context``) and connects
    (``client_context``); contexts are built once per identity.
    """

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def _context(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem.decode())
        # load_cert_chain wants a path: an anonymous in-memory file keeps the key off disk.
        fd = os.memfd_create("jtrix-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.cert_pem + self.key_pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return ctx

    @functools.cached_property
    def server_context(self) -> ssl.SSLContext:
        """Requires a client certificate from the cluster CA."""
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    @functools.cached_property
    def client_context(self) -> ssl.SSLContext:
        """Checks the server's certificate against the CA and the dialled address."""
        return self._context(ssl.PROTOCOL_TLS_CLIENT)

    def to_json(self) -> dict[str, str]:
        return {"cert": self.cert_pem.decode(), "key": self.key_pem.decode(), "ca": self.ca_pem.decode()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "TLSIdentity":
        return cls(data["cert"].encode(), data["key"].encode(), data["ca"].encode())

    def save(self, directory: Path, name: str) -> None:
        """Write ``ca.crt.pem``, ``<name>.crt.pem`` and ``<name>.key.pem`` (0600) into ``directory``."""
        from hosting.home import write_secret

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(directory / f"{name}.key.pem", self.key_pem)
        write_secret(directory / f"{name}.crt.pem", self.cert_pem)
        write_secret(directory / "ca.crt.pem", self.ca_pem)

    @classmethod
    def load(cls, directory: Path, name: str) -> "TLSIdentity | None":
        """The identity saved under ``name`` in ``directory``; None when there is none."""
        try:
            return cls((directory / f"{name}.crt.pem").read_bytes(), (directory / f"{name}.key.pem").read_bytes(),
                       (directory / "ca.crt.pem").read_bytes())
        except FileNotFoundError:
            return None


class ClusterCA:
    """The certificate authority of one cluster (ECDSA P-256, self-signed)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert, self.key = cert, key
        self.cert_pem = _pem_cert(cert)

    @classmethod
    def create(cls, cluster: str) -> "ClusterCA":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"jtrix cluster CA {cluster}"[:64])])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def to_json(self) -> str:
        return json.dumps({"cert": self.cert_pem.decode(), "key": private_key_pem(self.key).decode()})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ClusterCA":
        data = json.loads(raw)
        return cls(x509.load_pem_x509_certificate(data["cert"].encode()),
                   serialization.load_pem_private_key(data["key"].encode(), password=None))

    def issue(self, name: str, hosts: tuple[str, ...] = (), days: int = LEAF_DAYS,
              extra_usages: tuple[x509.ObjectIdentifier, ...] = ()) -> TLSIdentity:
        """A new key and a certificate for ``name`` (its common name, cut to 64 characters),
        good for serving on ``hosts`` and for connecting; without hosts it can only connect.
        ``extra_usages``: further extended key usages (a node's: ``hosting.election.grants.GRANT_SIGNER``)."""
        if not name:
            raise BadInput("a TLS certificate needs a name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if hosts else []) \
            + list(extra_usages)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return TLSIdentity(_pem_cert(cert), private_key_pem(key), self.cert_pem)


def cluster_ca(etcd, cluster: str) -> ClusterCA:
    """The cluster's CA from etcd, made and stored first if this is the cluster's first node.

    Racing first nodes agree: only one create succeeds, the others read its CA."""
    existing = etcd.get(CA_KEY)
    if existing is None:
        candidate = ClusterCA.create(cluster)
        if etcd.create(CA_KEY, candidate.to_json()) is not None:
            return candidate
        existing = etcd.get(CA_KEY)
    return ClusterCA.from_json(existing.value)


def client_identity(home_root: Path) -> TLSIdentity | None:
    """The TLS identity clients acting from this home use (None: the home's node speaks plain TCP)."""
    return TLSIdentity.load(Path(home_root) / "tls", "client")
