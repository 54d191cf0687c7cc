"""Proof of possession of a warrant holder's private key.

The hosting layer builds ``context`` (service id, method, timestamp, nonce …)
and handles replay windows; this module only signs and checks ECDSA P-256 /
SHA-256 signatures over ``DOMAIN + context``. The domain prefix keeps a proof
from ever being mistaken for any other signature made with the same key.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from warrants.errors import HolderProofFailed
from warrants.keys import PrivateKey
from warrants.model import Warrant

DOMAIN = b"jtrix-holder-proof-v1\x00"
_ECDSA = ec.ECDSA(hashes.SHA256())


def sign_proof(private_key: PrivateKey, context: bytes) -> bytes:
    """Prove possession of ``private_key`` for ``context`` (DER ECDSA signature)."""
    return private_key.sign(DOMAIN + bytes(context), _ECDSA)


@functools.lru_cache(maxsize=4096)
def _public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    return load_der_public_key(der)


def verify_proof(warrant: Warrant, proof: bytes | None, context: bytes) -> None:
    """Raise :class:`HolderProofFailed` unless ``proof`` was made by the warrant's holder for ``context``."""
    if warrant.holder_public_key_der is None:
        raise HolderProofFailed(f"warrant {warrant.serial} names no holder")
    if not proof:
        raise HolderProofFailed(f"warrant {warrant.serial} names a holder: proof of possession required")
    try:
        _public_key(warrant.holder_public_key_der).verify(bytes(proof), DOMAIN + bytes(context), _ECDSA)
    except (InvalidSignature, ValueError, TypeError):
        raise HolderProofFailed(f"proof of possession for warrant {warrant.serial} does not verify") from None
