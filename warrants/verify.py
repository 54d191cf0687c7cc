"""Warrant verification: structure, enveloped signatures, delegation chain, narrowing, time.

Signature checks follow docs/architecture.md ("Pitfalls", signxml): the signature must be the
direct child of the warrant (``location="./"``), carry exactly one reference,
use ECDSA-SHA256 over SHA-256 digests, and only what the verifier returns as
signed (``signed_xml``) is read. Trust is pinned by certificate: the root of a
chain must be signed by one of the trusted certificates (compared by SHA-256
fingerprint of the DER); a delegated warrant must be signed by a certificate
carrying exactly the public key its parent names as holder. Each embedded
parent is verified on its own, with its own pinned signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLVerifier
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
    SignXMLException,
)
from signxml.verifier import SignatureConfiguration

from warrants import wxml
from warrants.errors import (
    BadSignature,
    BrokenDelegation,
    UntrustedIssuer,
    WarrantMalformed,
)
from warrants.keys import cert_fingerprint, public_key_der
from warrants.model import Warrant
from warrants.safexml import parse_untrusted, validate

SIGNATURE_CONFIG = SignatureConfiguration(
    location="./",
    expect_references=1,
    signature_methods=frozenset({SignatureMethod.ECDSA_SHA256}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)

TrustMap = Mapping[str, x509.Certificate]  # fingerprint -> certificate


def trust_map(trusted: Iterable[x509.Certificate]) -> dict[str, x509.Certificate]:
    """Index trusted certificates by SHA-256 fingerprint."""
    if isinstance(trusted, x509.Certificate):
        trusted = [trusted]
    return {cert_fingerprint(c): c for c in trusted}


def _check_signature(root: etree._Element, cert: x509.Certificate, where: str) -> etree._Element:
    """Verify the enveloped signature of ``root`` with ``cert``; return only the signed element."""
    try:
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=SIGNATURE_CONFIG)
    except (InvalidSignature, InvalidDigest):
        raise BadSignature(f"{where}: signature does not verify (document altered)") from None
    except InvalidCertificate:
        raise UntrustedIssuer(f"{where}: signer certificate is outside its validity period") from None
    except InvalidInput as err:
        raise WarrantMalformed(f"{where}: bad signature element ({_short(err)})") from None
    except (SignXMLException, etree.LxmlError, ValueError, TypeError) as err:
        raise WarrantMalformed(f"{where}: bad signature element ({type(err).__name__})") from None
    ref = result.signature_xml.find(f"{wxml.ds('SignedInfo')}/{wxml.ds('Reference')}")
    if ref is None or ref.get("URI") != "":
        raise WarrantMalformed(f"{where}: the signature must cover the whole document (URI=\"\")")
    signed = result.signed_xml
    if signed is None or signed.tag != wxml.w("warrant"):
        raise WarrantMalformed(f"{where}: signed content is not a warrant")
    return signed


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:120]


def _load_holder(der: bytes, where: str) -> None:
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        raise WarrantMalformed(f"{where}: holder is not a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WarrantMalformed(f"{where}: holder key must be ECDSA P-256")


def check_narrowing(child: dict, parent: Warrant, signer_key_der: bytes, where: str = "") -> None:
    """The delegation rule, used both when issuing and when verifying a delegated warrant.

    ``child`` has ``rights`` (frozenset), ``service``, ``app``, ``not_before``
    and ``not_after``. Holds iff the parent grants ``delegate``, names a holder,
    that holder's key signed the child, and the child only narrows: a subset of
    the rights, the same service, the parent's app when it names one, and a
    window inside the parent's. Otherwise raises ``BrokenDelegation``.
    """
    prefix = f"{where}: " if where else ""

    def refuse(why: str) -> BrokenDelegation:
        return BrokenDelegation(prefix + why)

    if "delegate" not in parent.rights:
        raise refuse(f"parent warrant {parent.serial} does not grant 'delegate'")
    if parent.holder_public_key_der is None:
        raise refuse(f"parent warrant {parent.serial} names no holder who could delegate")
    if signer_key_der != parent.holder_public_key_der:
        raise refuse(f"not signed by the holder of parent warrant {parent.serial}")
    extra = child["rights"] - parent.rights
    if extra:
        raise refuse(f"delegation widens rights ({', '.join(sorted(extra))})")
    if child["service"] != parent.service:
        raise refuse(f"delegation changes the service ({parent.service!r} to {child['service']!r})")
    if parent.app is not None and child["app"] != parent.app:
        raise refuse(f"delegation widens the app scope (the parent warrant covers app {parent.app!r} only)")
    if child["not_before"] < parent.not_before:
        raise refuse("delegation extends the validity window (not-before is earlier than the parent warrant's)")
    if child["not_after"] > parent.not_after:
        raise refuse("delegation extends the validity window (expiry is later than the parent warrant's, "
                     f"{parent.not_after.isoformat()})")


def _verify_element(
    root: etree._Element,
    trusted: TrustMap | None,
    source: str,
    depth: int,
    xml: bytes,
) -> Warrant:
    where = f"{source}:{root.sourceline or 1}"
    if depth >= wxml.MAX_CHAIN:
        raise WarrantMalformed(f"{where}: delegation chain longer than {wxml.MAX_CHAIN}")
    cert_der = wxml.signer_cert_der(root, source)
    fp = hashlib.sha256(cert_der).hexdigest()
    pinned = trusted.get(fp) if trusted is not None else None
    if pinned is not None:
        cert = pinned
    else:
        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError:
            raise WarrantMalformed(f"{where}: X509Certificate is not a certificate") from None
    signed = _check_signature(root, cert, where)
    fields = wxml.read_fields(signed, source)
    if fields["holder_public_key_der"] is not None:
        _load_holder(fields["holder_public_key_der"], where)
    parent_el = signed.find(f"{wxml.w('delegated-from')}/{wxml.w('warrant')}")
    if parent_el is None:
        if trusted is not None and pinned is None:
            raise UntrustedIssuer(f"{where}: issuer certificate {fp[:16]}… is not trusted")
        parent = None
    else:
        parent_xml = etree.tostring(parent_el)
        parent = _verify_element(parent_el, trusted, source, depth + 1, parent_xml)
        check_narrowing(fields, parent, public_key_der(cert), where)
    return Warrant(
        serial=fields["serial"],
        issuer_cert_der=cert_der,
        issuer_fingerprint=fp,
        rights=fields["rights"],
        service=fields["service"],
        app=fields["app"],
        holder_public_key_der=fields["holder_public_key_der"],
        not_before=fields["not_before"],
        not_after=fields["not_after"],
        data=fields["data"],
        parent=parent,
        xml=xml,
    )


def verify_chain(xml: bytes, trusted: TrustMap | None, source: str = "<warrant>") -> Warrant:
    """Verify structure, signatures, chain and narrowing, but not the time window.

    With ``trusted=None`` the root's issuer is not checked against any trust
    anchor (used to check a parent before delegating from it).
    """
    root = parse_untrusted(xml, source)
    validate(root, "warrant.xsd", source, error=WarrantMalformed)
    return _verify_element(root, trusted, source, 0, bytes(xml))


def verify_warrant(
    xml: bytes,
    trusted: Iterable[x509.Certificate],
    *,
    now: dt.datetime | None = None,
    source: str = "<warrant>",
) -> Warrant:
    """Verify a warrant document completely and return the verified leaf.

    Checks: safe parsing and schema, every signature of the chain, trust of the
    root issuer, narrowing at each delegation, and that every link is valid at
    ``now`` (default: the current time). Raises a
    :class:`~warrants.errors.BadInput` subclass named by the cause.
    """
    warrant = verify_chain(xml, trust_map(trusted), source)
    warrant.check_time(now)
    return warrant


def read_unverified(xml: bytes, source: str = "<warrant>") -> dict:
    """The fields of a warrant and its parents, for display. Signatures are NOT checked."""
    root = parse_untrusted(xml, source)
    validate(root, "warrant.xsd", source, error=WarrantMalformed)
    out: list[dict] = []
    el = root
    while el is not None:
        fields = wxml.read_fields(el, source)
        cert_der = wxml.signer_cert_der(el, source)
        fields["issuer_fingerprint"] = hashlib.sha256(cert_der).hexdigest()
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
            fields["issuer"] = str(cn[0].value) if cn else cert.subject.rfc4514_string()
        except ValueError:
            fields["issuer"] = None
        out.append(fields)
        el = el.find(f"{wxml.w('delegated-from')}/{wxml.w('warrant')}")
    return {"chain": out}
