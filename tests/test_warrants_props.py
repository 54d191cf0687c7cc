"""Property tests: round-trips, tamper evidence, and delegation that never widens."""

import datetime as dt

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

import warrants
from warrants import BadInput, BrokenDelegation, issue_warrant, verify_warrant
from warrants import issue as issue_mod
from warrants import wxml

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)

ADMIN_KEY = warrants.generate_key()
ADMIN_CERT = warrants.make_self_signed_cert(ADMIN_KEY, "admin")
HOLDER_KEY = warrants.generate_key()
HOLDER_CERT = warrants.make_self_signed_cert(HOLDER_KEY, "holder")

rights_st = st.sets(st.sampled_from(sorted(warrants.KNOWN_RIGHTS)), min_size=1)
app_st = st.none() | st.from_regex(r"[a-z][a-z0-9_\-]{0,20}", fullmatch=True)
time_st = st.datetimes(
    min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
)
span_st = st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650))
xml_char = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"
) | st.sampled_from("\t\n\r")
data_st = st.none() | st.text(alphabet=xml_char, max_size=60)

PROPS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@PROPS
@given(rights=rights_st, app=app_st, nb=time_st, span=span_st, data=data_st, with_holder=st.booleans())
def test_issue_serialize_parse_verify_round_trip(rights, app, nb, span, data, with_holder):
    xml = issue_warrant(
        ADMIN_KEY,
        ADMIN_CERT,
        rights=rights,
        service="svc-1",
        app=app,
        holder=HOLDER_CERT if with_holder else None,
        not_before=nb,
        not_after=nb + span,
        data=data,
    )
    # serialize -> parse -> serialize again is a fixed point for the verifier
    reparsed = etree.tostring(etree.fromstring(xml))
    for doc in (xml, reparsed):
        w = verify_warrant(doc, [ADMIN_CERT], now=nb + span / 2)
        assert w.rights == rights and w.app == app and w.service == "svc-1"
        assert w.not_before == nb and w.not_after == nb + span
        assert w.data == data
        assert (w.holder_public_key_der is not None) == with_holder


SIGNED_DOC = issue_warrant(
    ADMIN_KEY,
    ADMIN_CERT,
    rights=["status", "launch"],
    service="local",
    app="kv",
    holder=HOLDER_CERT,
    not_before=NOW - dt.timedelta(days=1),
    not_after=NOW + dt.timedelta(days=1),
    data="payload",
)


def _signed_ranges(doc: bytes) -> list[tuple[int, int]]:
    """Byte ranges covered by the signature: all but the Signature element, plus its SignedInfo."""
    sig_start = doc.rindex(b"<ds:Signature xmlns")
    sig_end = doc.rindex(b"</ds:Signature>") + len(b"</ds:Signature>")
    si_start = doc.index(b"<ds:SignedInfo", sig_start)
    si_end = doc.index(b"</ds:SignedInfo>", si_start) + len(b"</ds:SignedInfo>")
    return [(0, sig_start), (si_start, si_end), (sig_end, len(doc.rstrip()))]


def _c14n(doc: bytes) -> bytes:
    return etree.tostring(warrants.parse_untrusted(doc, "c14n"), method="c14n", exclusive=True)


SIGNED_POSITIONS = [i for a, b in _signed_ranges(SIGNED_DOC) for i in range(a, b)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(pos=st.sampled_from(SIGNED_POSITIONS), new=st.integers(0, 255))
def test_flipping_a_signed_byte_fails_verification(pos, new):
    assume(SIGNED_DOC[pos] != new)
    mutated = SIGNED_DOC[:pos] + bytes([new]) + SIGNED_DOC[pos + 1 :]
    try:
        verify_warrant(mutated, [ADMIN_CERT])
    except BadInput:
        return
    # Only a change XML itself deems insignificant (e.g. space vs tab between attributes) may pass.
    assert _c14n(mutated) == _c14n(SIGNED_DOC)


def test_every_field_byte_flip_is_caught():
    """Deterministic sweep over the warrant's field values (the semantic content)."""
    for value in (b"status", b"launch", b">kv<", b"payload", b"local"):
        start = SIGNED_DOC.index(value)
        for i in range(start, start + len(value)):
            mutated = SIGNED_DOC[:i] + bytes([SIGNED_DOC[i] ^ 0x01]) + SIGNED_DOC[i + 1 :]
            with pytest.raises(BadInput):
                verify_warrant(mutated, [ADMIN_CERT])


def _within(child: dict, parent: dict) -> bool:
    return (
        child["rights"] <= parent["rights"]
        and child["service"] == parent["service"]
        and (parent["app"] is None or child["app"] == parent["app"])
        and child["not_before"] >= parent["not_before"]
        and child["not_after"] <= parent["not_after"]
    )


parent_st = st.fixed_dictionaries(
    {
        "rights": rights_st.map(lambda r: r | {"delegate"}),
        "app": st.none() | st.sampled_from(["kv", "web"]),
        "not_before": st.integers(-10, 0).map(lambda h: NOW + dt.timedelta(hours=h)),
        "not_after": st.integers(1, 10).map(lambda h: NOW + dt.timedelta(hours=h)),
    }
)
child_st = st.fixed_dictionaries(
    {
        "rights": rights_st,
        "app": st.none() | st.sampled_from(["kv", "web"]),
        "service": st.sampled_from(["local", "local", "other"]),
        "not_before": st.integers(-12, 0).map(lambda h: NOW + dt.timedelta(hours=h)),
        "not_after": st.integers(1, 12).map(lambda h: NOW + dt.timedelta(hours=h)),
    }
)


def _parent_xml(p: dict) -> bytes:
    return issue_warrant(
        ADMIN_KEY,
        ADMIN_CERT,
        rights=p["rights"],
        service="local",
        app=p["app"],
        holder=HOLDER_CERT,
        not_before=p["not_before"],
        not_after=p["not_after"],
    )


@PROPS
@given(parent=parent_st, child=child_st)
def test_delegation_never_widens(parent, child):
    parent_xml = _parent_xml(parent)
    parent = dict(parent, service="local")
    # 1. The honest API refuses exactly the widening requests (app=None there means "the parent's app").
    effective = dict(child, app=child["app"] if child["app"] is not None else parent["app"])
    try:
        xml = issue_warrant(HOLDER_KEY, HOLDER_CERT, parent_xml=parent_xml, **child)
    except BrokenDelegation:
        assert not _within(effective, parent)
    else:
        assert _within(effective, parent)
        w = verify_warrant(xml, [ADMIN_CERT])
        assert w.rights <= w.parent.rights and w.parent.not_after >= w.not_after
    # 2. A forged child (signed by the holder, bypassing the API's checks) verifies iff it is narrower.
    root = wxml.build_unsigned(
        serial="forged",
        service=child["service"],
        app=child["app"],
        rights=frozenset(child["rights"]),
        holder_der=None,
        not_before=child["not_before"],
        not_after=child["not_after"],
        data=None,
        parent=etree.fromstring(parent_xml),
    )
    forged = issue_mod._sign(root, HOLDER_KEY, HOLDER_CERT)
    try:
        w = verify_warrant(forged, [ADMIN_CERT])
    except BrokenDelegation:
        assert not _within(child, parent)
    else:
        assert _within(child, parent)
        assert w.rights <= w.parent.rights
