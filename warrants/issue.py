"""Issuing and delegating warrants: build the document, sign it as enveloped XML-DSig.

The signature is standard XML-DSig (verifiable by ``xmlsec1 --verify``):
enveloped, ``URI=""``, exclusive C14N 1.0, SHA-256 digest, ECDSA P-256 with
SHA-256, the signer's X.509 certificate in ``KeyInfo/X509Data``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner
from signxml.algorithms import SignatureConstructionMethod

from warrants import wxml
from warrants.errors import BadInput
from warrants.keys import PrivateKey, public_key_der
from warrants.safexml import parse_untrusted
from warrants.verify import check_narrowing, verify_chain

HolderSpec = ec.EllipticCurvePublicKey | x509.Certificate | PrivateKey | bytes | None


def _holder_der(holder: HolderSpec) -> bytes | None:
    if holder is None:
        return None
    if isinstance(holder, bytes):
        return holder
    der = public_key_der(holder)
    key = holder.public_key() if hasattr(holder, "public_key") else holder
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadInput("the holder key must be ECDSA P-256")
    return der


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _sign(root: etree._Element, key: PrivateKey, cert: x509.Certificate) -> bytes:
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(root, key=key, cert=[cert])
    return etree.tostring(signed, encoding="UTF-8") + b"\n"


def issue_warrant(
    signer_key: PrivateKey,
    signer_cert: x509.Certificate,
    *,
    rights: Iterable[str],
    service: str | None = None,
    app: str | None = None,
    holder: HolderSpec = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime,
    serial: str | None = None,
    data: str | None = None,
    parent_xml: bytes | None = None,
) -> bytes:
    """Build and sign a warrant document; return its bytes.

    Without ``parent_xml`` this issues a root warrant: ``service`` is required
    and whoever trusts ``signer_cert`` will accept it.

    With ``parent_xml`` this delegates: the parent chain must verify (its root's
    trust is the verifier's business), grant ``delegate`` and name the signer's
    key as holder; the new warrant may only narrow it (subset of rights, same
    service, the parent's app if it names one, a window inside the parent's).
    ``service`` and ``app`` default to the parent's; ``not_before`` defaults to
    now (or the parent's not-before if later). Anything wider is refused with
    :class:`~warrants.errors.BrokenDelegation`.
    """
    rights = wxml.check_rights(rights)
    if public_key_der(signer_cert) != public_key_der(signer_key):
        raise BadInput("the signer certificate does not match the signer key")
    if not isinstance(signer_key, ec.EllipticCurvePrivateKey) or not isinstance(signer_key.curve, ec.SECP256R1):
        raise BadInput("the signer key must be ECDSA P-256")
    holder_der = _holder_der(holder)
    parent_root = None
    if parent_xml is not None:
        parent = verify_chain(parent_xml, None, "<parent warrant>")
        if service is None:
            service = parent.service
        if app is None:
            app = parent.app
        if not_before is None:
            not_before = max(_now(), parent.not_before)
        check_narrowing({"rights": rights, "service": service, "app": app, "not_before": not_before,
                         "not_after": not_after}, parent, public_key_der(signer_key))
        parent_root = parse_untrusted(parent_xml, "<parent warrant>")
    if service is None:
        raise BadInput("a warrant needs a service id")
    wxml.check_service(service)
    wxml.check_app(app)
    if not_before is None:
        not_before = _now()
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise BadInput("not-before and not-after must be timezone-aware")
    if not_after < not_before:
        raise BadInput("the warrant would expire before it becomes valid")
    if serial is None:
        serial = secrets.token_hex(16)
    if not wxml.SERIAL_RE.fullmatch(serial):
        raise BadInput(f"bad serial {serial!r}: expected [A-Za-z0-9._-]{{1,64}}")
    root = wxml.build_unsigned(
        serial=serial,
        service=service,
        app=app,
        rights=rights,
        holder_der=holder_der,
        not_before=not_before,
        not_after=not_after,
        data=data,
        parent=parent_root,
    )
    return _sign(root, signer_key, signer_cert)
