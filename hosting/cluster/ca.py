"""The cluster's certificate authority: one per cluster, kept in etcd, issuing every TLS identity.

Safety model (what must hold):
  * The CA is made once per cluster, at the first node's join, and stored in
    etcd (``tls/ca``, created only if absent, so racing first nodes agree on
    one). Whoever can read the cluster's etcd prefix can mint certificates:
    etcd is the cluster's root of trust and must be protected accordingly
    (``--etcd-ca/--etcd-cert/--etcd-key``).
  * Nodes issue their own certificate and those of their netlets at start;
    nothing is revoked: a certificate is valid until it expires
    (``LEAF_DAYS``).
  * What an issued identity proves, and what it does not, is ``rpc.tls``'s.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hosting.cluster import keys as etcd_keys
from rpc.tls import TLSIdentity
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
