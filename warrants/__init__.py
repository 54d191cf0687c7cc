"""Warrants and bootstrap descriptors: safe XML, signed capabilities, delegation, app descriptions.

Everything else in jtrix reads XML only through :func:`parse_untrusted`, trusts
a caller only through a verified :class:`Warrant`, and learns about an app only
from a validated :class:`Descriptor`. See the README (XML formats) for both formats.
"""

from warrants.codebase import pack_directory, package_codebase
from warrants.descriptor import load_descriptor, parse_descriptor
from warrants.descriptor_model import Codebase, Descriptor, NetletType, Resource, RestartPolicy
from warrants.errors import (
    BadInput,
    BadSignature,
    BrokenDelegation,
    HolderProofFailed,
    InsufficientRights,
    JtrixError,
    NotFound,
    UntrustedIssuer,
    WarrantError,
    WarrantExpired,
    WarrantMalformed,
    WarrantNotYetValid,
    XmlRejected,
)
from warrants.issue import issue_warrant
from warrants.keys import (
    cert_fingerprint,
    generate_key,
    load_cert,
    load_private_key,
    make_self_signed_cert,
    private_key_pem,
    public_key_der,
    save_cert,
    save_private_key,
)
from warrants.model import CLIENT_RIGHTS, KNOWN_RIGHTS, Warrant
from warrants.proof import sign_proof, verify_proof
from warrants.safexml import parse_untrusted, validate
from warrants.verifier import WarrantVerifier
from warrants.verify import read_unverified, verify_warrant

__all__ = [
    # safe XML
    "parse_untrusted",
    "validate",
    # keys and certificates
    "generate_key",
    "save_private_key",
    "load_private_key",
    "make_self_signed_cert",
    "save_cert",
    "load_cert",
    "cert_fingerprint",
    "public_key_der",
    # warrants
    "CLIENT_RIGHTS",
    "KNOWN_RIGHTS",
    "Warrant",
    "issue_warrant",
    "verify_warrant",
    "read_unverified",
    "WarrantVerifier",
    "sign_proof",
    "verify_proof",
    # descriptors
    "Descriptor",
    "NetletType",
    "Resource",
    "RestartPolicy",
    "Codebase",
    "parse_descriptor",
    "load_descriptor",
    "package_codebase",
    "pack_directory",
    # errors
    "JtrixError",
    "BadInput",
    "NotFound",
    "XmlRejected",
    "WarrantError",
    "WarrantMalformed",
    "BadSignature",
    "WarrantExpired",
    "WarrantNotYetValid",
    "UntrustedIssuer",
    "BrokenDelegation",
    "InsufficientRights",
    "HolderProofFailed",
]
