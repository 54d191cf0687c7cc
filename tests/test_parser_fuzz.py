"""Bounded fuzzing of the XML parsers that take untrusted input (warrants/safexml.py, descriptor.py,
verify.py): random documents and mutations of valid ones (a delegated warrant chain with an embedded
data element, a full descriptor with an embedded warrant) give a result or a documented error —
``BadInput`` and its subclasses (``XmlRejected``, ``WarrantError``...) — and never another exception.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import warrants
from warrants import BadInput, issue_warrant, parse_descriptor, parse_untrusted, read_unverified, verify_warrant

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)
ADMIN_KEY = warrants.generate_key()
ADMIN_CERT = warrants.make_self_signed_cert(ADMIN_KEY, "admin")
HOLDER_KEY = warrants.generate_key()
HOLDER_CERT = warrants.make_self_signed_cert(HOLDER_KEY, "holder")

ROOT = issue_warrant(ADMIN_KEY, ADMIN_CERT, rights={"launch", "status", "call", "delegate"}, service="svc", app="kv",
                     holder=HOLDER_CERT, not_after=NOW + dt.timedelta(days=1), data="d<&>")
CHAIN = issue_warrant(HOLDER_KEY, HOLDER_CERT, rights={"status"}, service="svc", app="kv",
                      not_after=NOW + dt.timedelta(hours=1), parent_xml=ROOT)
DESCRIPTOR = (b'<app xmlns="urn:jtrix:descriptor:1" name="kv"><codebase path="code"/>'
              b'<lease ttl="0.5" grace="3"/><restart backoff-base="0.2" backoff-cap="5"/>'
              b'<replication ack="async" durability="write"/>'
              b'<netlet type="s" class="kv.app:Store" replicas="3" master-eligible="true">'
              b'<resource kind="directory" name="data"/><resource kind="port" name="http" port="0"/>'
              b'<param name="p">v</param></netlet><bootstrap class="kv.boot:Boot"/>'
              b'<warrant>' + ROOT.split(b"?>", 1)[-1] + b'</warrant></app>')
SEEDS = [ROOT, CHAIN, DESCRIPTOR]
TOKENS = [b"<", b">", b"/>", b"</", b'"', b"&", b"&amp;", b"<!DOCTYPE x>", b"<!ENTITY e 'x'>", b"<?xml?>",
          b"\x00", b"\xff\xfe", b"]]>", b"<![CDATA[", b"xmlns=\"\"", b"encoding=\"latin-1\"", b"\xc3", b"&#0;"]


@st.composite
def documents(draw):
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "token", "dup"]))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 200))]
        elif op == "token":
            data[i:i] = draw(st.sampled_from(TOKENS))
        else:
            j = draw(st.integers(i, min(len(data), i + 300)))
            data[i:i] = data[i:j]
    return bytes(data)


PARSERS = {
    "safexml": lambda d: parse_untrusted(d, "<fuzz>"),
    "descriptor": lambda d: parse_descriptor(d, "<fuzz>", read_files=False),
    "verify": lambda d: verify_warrant(d, [ADMIN_CERT], source="<fuzz>"),
    "read_unverified": lambda d: read_unverified(d, "<fuzz>"),
}


def test_the_seeds_parse():
    assert verify_warrant(CHAIN, [ADMIN_CERT]).rights == frozenset({"status"})
    assert parse_descriptor(DESCRIPTOR, "<seed>", read_files=False).name == "kv"


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), parser=st.sampled_from(sorted(PARSERS)))
@example(doc=b"", parser="verify")
def test_untrusted_xml_gives_a_result_or_a_documented_error(doc, parser):
    try:
        PARSERS[parser](doc)
    except BadInput as err:
        assert str(err) and "\n" not in str(err), f"{type(err).__name__} without a one-line message"
