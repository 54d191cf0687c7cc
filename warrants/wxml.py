"""The warrant XML format (``urn:jtrix:warrant:1``): names, field reading and writing.

A warrant document (see the README, "Warrants", for an annotated example)::

    <warrant xmlns="urn:jtrix:warrant:1" version="1">
      <serial>…</serial>
      <service>local</service>
      <app>kvstore</app>                      optional: narrowed to one app
      <rights><right>launch</right>…</rights>
      <holder>base64 SubjectPublicKeyInfo</holder>   optional: proof of possession required
      <not-before>2025-01-01T00:00:00Z</not-before>
      <not-after>2025-01-31T00:00:00Z</not-after>
      <data>opaque</data>                     optional
      <delegated-from><warrant …>…</warrant></delegated-from>   optional: the parent, verbatim
      <ds:Signature>…</ds:Signature>          enveloped XML-DSig over the whole document
    </warrant>

This module only reads and writes fields; it neither signs nor verifies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterable

from lxml import etree

from warrants.errors import BadInput, WarrantMalformed
from warrants.model import KNOWN_RIGHTS
from warrants.names import APP_RE

NS = "urn:jtrix:warrant:1"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
MAX_CHAIN = 8  # warrants in one delegation chain, root included

SERIAL_RE = re.compile(r"[A-Za-z0-9._\-]{1,64}")
SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
MAX_DATA = 65536


def w(tag: str) -> str:
    """Clark name of a warrant element."""
    return f"{{{NS}}}{tag}"


def ds(tag: str) -> str:
    """Clark name of an XML-DSig element."""
    return f"{{{DS_NS}}}{tag}"


def format_time(t: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` for a timezone-aware time."""
    if t.tzinfo is None:
        raise BadInput("times must be timezone-aware")
    t = t.astimezone(dt.timezone.utc)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds" if t.microsecond else "seconds") + "Z"


def parse_time(text: str, where: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise WarrantMalformed(f"{where}: not a UTC time") from None


def check_rights(rights: Iterable[str]) -> frozenset[str]:
    rights = frozenset(rights)
    if not rights:
        raise BadInput("a warrant must grant at least one right")
    unknown = rights - KNOWN_RIGHTS
    if unknown:
        raise BadInput(
            f"unknown right(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_RIGHTS))}"
        )
    return rights


def check_service(service: str) -> str:
    if not isinstance(service, str) or not SERVICE_RE.fullmatch(service):
        raise BadInput(f"bad service id {service!r}: expected [A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}")
    return service


def check_app(app: str | None) -> str | None:
    if app is not None and (not isinstance(app, str) or not APP_RE.fullmatch(app)):
        raise BadInput(f"bad app name {app!r}: expected [a-z][a-z0-9_-]{{0,62}}")
    return app


def _text(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    return el.text or ""


def read_fields(root: etree._Element, source: str) -> dict:
    """The fields of one (schema-valid) warrant element, without its parent or signature."""
    where = f"{source}:{root.sourceline or 1}"
    holder_text = _text(root.find(w("holder")))
    holder = None
    if holder_text is not None:
        try:
            holder = base64.b64decode("".join(holder_text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise WarrantMalformed(f"{where}: holder is not base64") from None
    serial = _text(root.find(w("serial")))
    service = _text(root.find(w("service")))
    nb = _text(root.find(w("not-before")))
    na = _text(root.find(w("not-after")))
    if serial is None or service is None or nb is None or na is None:
        raise WarrantMalformed(f"{where}: missing serial, service or validity times")
    rights_el = root.find(w("rights"))
    rights = frozenset((r.text or "").strip() for r in (rights_el if rights_el is not None else ()))
    if not rights or not rights <= KNOWN_RIGHTS:
        raise WarrantMalformed(f"{where}: bad rights")
    fields = {
        "serial": serial.strip(),
        "service": service.strip(),
        "app": (_text(root.find(w("app"))) or "").strip() or None,
        "rights": rights,
        "holder_public_key_der": holder,
        "not_before": parse_time(nb, where),
        "not_after": parse_time(na, where),
        "data": _text(root.find(w("data"))),
    }
    if fields["not_before"] > fields["not_after"]:
        raise WarrantMalformed(f"{where}: not-before is after not-after")
    return fields


def signer_cert_der(root: etree._Element, source: str) -> bytes:
    """The DER of the single X509Certificate in the root's own (direct-child) signature."""
    where = f"{source}:{root.sourceline or 1}"
    sigs = root.findall(ds("Signature"))
    if len(sigs) != 1:
        raise WarrantMalformed(f"{where}: expected exactly one enveloped ds:Signature as the last child")
    certs = sigs[0].findall(f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}")
    if len(certs) != 1:
        raise WarrantMalformed(f"{where}: the signature must carry exactly one X509Certificate")
    try:
        return base64.b64decode("".join((certs[0].text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise WarrantMalformed(f"{where}: X509Certificate is not base64") from None


def build_unsigned(
    *,
    serial: str,
    service: str,
    app: str | None,
    rights: frozenset[str],
    holder_der: bytes | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    data: str | None,
    parent: etree._Element | None,
) -> etree._Element:
    """An unsigned warrant element (the signature is appended by the signer)."""
    root = etree.Element(w("warrant"), nsmap={None: NS})
    root.set("version", "1")

    def add(tag: str, text: str) -> etree._Element:
        el = etree.SubElement(root, w(tag))
        el.text = text
        return el

    try:
        add("serial", serial)
        add("service", service)
        if app is not None:
            add("app", app)
        rights_el = etree.SubElement(root, w("rights"))
        for r in sorted(rights):
            etree.SubElement(rights_el, w("right")).text = r
        if holder_der is not None:
            add("holder", base64.b64encode(holder_der).decode())
        add("not-before", format_time(not_before))
        add("not-after", format_time(not_after))
        if data is not None:
            if len(data) > MAX_DATA:
                raise BadInput(f"warrant data is {len(data)} characters, over the {MAX_DATA} limit")
            add("data", data)
    except ValueError:  # lxml: "All strings must be XML compatible"
        raise BadInput("warrant data contains characters that XML cannot carry") from None
    etree.indent(root, space="  ")
    if parent is not None:
        root[-1].tail = "\n  "
        holder = etree.SubElement(root, w("delegated-from"))
        holder.text = "\n"
        holder.append(parent)  # verbatim: its whitespace is part of what its signature covers
        parent.tail = "\n  "
    root[-1].tail = "\n"
    return root
