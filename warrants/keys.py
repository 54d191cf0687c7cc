"""Keys and certificates: ECDSA P-256 private keys (PEM, 0600) and self-signed X.509 certificates."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from warrants.errors import BadInput
from warrants.inputs import read_user_file

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def generate_key() -> PrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def private_key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (a secret: write it 0600, or hand it over a pipe)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save_private_key(key: PrivateKey, path: str | os.PathLike) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only (mode 0600)."""
    _write_private(Path(path), private_key_pem(key))


def load_private_key(path: str | os.PathLike) -> PrivateKey:
    """Read a PEM private key written by :func:`save_private_key` (must be ECDSA P-256)."""
    data = read_user_file(path, "private key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInput(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadInput(f"{path}: expected an ECDSA P-256 private key")
    return key


def make_self_signed_cert(key: PrivateKey, common_name: str, days: int = 3650) -> x509.Certificate:
    """A self-signed certificate for ``key`` (usable as a trust anchor and as a signer)."""
    if not common_name or len(common_name) > 64:
        raise BadInput("certificate common name must be 1..64 characters")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def save_cert(cert: x509.Certificate, path: str | os.PathLike) -> None:
    """Write ``cert`` as PEM."""
    Path(path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_cert(path: str | os.PathLike) -> x509.Certificate:
    """Read a PEM (or DER) X.509 certificate."""
    data = read_user_file(path, "certificate file")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise BadInput(f"{path}: not an X.509 certificate") from None


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_der(key_or_cert: PrivateKey | PublicKey | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo of a private key, public key or certificate."""
    if isinstance(key_or_cert, x509.Certificate):
        public = key_or_cert.public_key()
    elif hasattr(key_or_cert, "public_key"):
        public = key_or_cert.public_key()
    else:
        public = key_or_cert
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
