"""Warrants: keys, issuing, verification causes, delegation, signature wrapping, the cached verifier."""

import datetime as dt
import os
import stat
import threading

import pytest
from lxml import etree

import warrants
from warrants import (
    BadInput,
    BadSignature,
    BrokenDelegation,
    HolderProofFailed,
    InsufficientRights,
    UntrustedIssuer,
    WarrantExpired,
    WarrantMalformed,
    WarrantNotYetValid,
    WarrantVerifier,
    XmlRejected,
    issue_warrant,
    sign_proof,
    verify_proof,
    verify_warrant,
)

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def admin():
    key = warrants.generate_key()
    return key, warrants.make_self_signed_cert(key, "admin")


@pytest.fixture(scope="module")
def alice():
    key = warrants.generate_key()
    return key, warrants.make_self_signed_cert(key, "alice")


@pytest.fixture(scope="module")
def bob():
    key = warrants.generate_key()
    return key, warrants.make_self_signed_cert(key, "bob")


def root_warrant(admin, holder=None, rights=("launch", "status", "delegate"), app=None, **kw):
    key, cert = admin
    kw.setdefault("not_before", NOW - DAY)
    kw.setdefault("not_after", NOW + 10 * DAY)
    return issue_warrant(key, cert, rights=rights, service="local", app=app, holder=holder, **kw)


# --- keys ---------------------------------------------------------------------------------------


def test_private_key_file_is_0600_and_round_trips(tmp_path):
    key = warrants.generate_key()
    path = tmp_path / "k.pem"
    warrants.save_private_key(key, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = warrants.load_private_key(path)
    assert warrants.public_key_der(again) == warrants.public_key_der(key)


def test_cert_round_trip_and_fingerprint(tmp_path, admin):
    key, cert = admin
    warrants.save_cert(cert, tmp_path / "c.pem")
    loaded = warrants.load_cert(tmp_path / "c.pem")
    assert warrants.cert_fingerprint(loaded) == warrants.cert_fingerprint(cert)
    assert warrants.public_key_der(loaded) == warrants.public_key_der(key)
    assert len(warrants.cert_fingerprint(cert)) == 64


def test_bad_key_files_are_bad_input(tmp_path):
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(BadInput):
        warrants.load_private_key(tmp_path / "junk.pem")
    with pytest.raises(BadInput):
        warrants.load_cert(tmp_path / "junk.pem")
    with pytest.raises(BadInput, match="not found"):
        warrants.load_private_key(tmp_path / "missing.pem")


# --- issue and verify ---------------------------------------------------------------------------


def test_issue_verify_round_trip(admin, alice):
    xml = root_warrant(admin, holder=alice[1], app="kv", data="opaque <&> data", serial="s-1")
    w = verify_warrant(xml, [admin[1]])
    assert w.serial == "s-1"
    assert w.rights == {"launch", "status", "delegate"}
    assert w.service == "local" and w.app == "kv"
    assert w.holder_public_key_der == warrants.public_key_der(alice[1])
    assert w.data == "opaque <&> data"
    assert w.parent is None and w.root is w and w.chain == (w,)
    assert w.issuer_fingerprint == warrants.cert_fingerprint(admin[1])
    assert w.xml == xml
    with pytest.raises(AttributeError):
        w.serial = "x"  # frozen


def test_signature_is_standard_enveloped_ecdsa(admin):
    root = etree.fromstring(root_warrant(admin))
    ns = {"ds": "http://www.w3.org/2000/09/xmldsig#"}
    sig = root.find("ds:Signature", ns)
    assert sig is not None and root[-1] is sig
    assert sig.find("ds:SignedInfo/ds:Reference", ns).get("URI") == ""
    algs = {el.get("Algorithm") for el in sig.iter() if el.get("Algorithm")}
    assert algs == {
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    }
    assert sig.find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", ns) is not None


def test_expired_and_not_yet_valid(admin):
    xml = root_warrant(admin, not_before=NOW + DAY, not_after=NOW + 2 * DAY)
    with pytest.raises(WarrantNotYetValid):
        verify_warrant(xml, [admin[1]])
    assert verify_warrant(xml, [admin[1]], now=NOW + DAY).serial
    with pytest.raises(WarrantExpired):
        verify_warrant(xml, [admin[1]], now=NOW + 2 * DAY + dt.timedelta(seconds=1))


def test_untrusted_issuer(admin, alice):
    with pytest.raises(UntrustedIssuer):
        verify_warrant(root_warrant(admin), [alice[1]])
    with pytest.raises(UntrustedIssuer):
        verify_warrant(root_warrant(admin), [])


def test_forged_certificate_swap_is_refused(admin, alice):
    """Replacing KeyInfo's certificate with the trusted one does not make a forgery verify."""
    forged = root_warrant(alice)  # signed by alice
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding

    root = etree.fromstring(forged)
    ns = {"ds": "http://www.w3.org/2000/09/xmldsig#"}
    root.find(".//ds:X509Certificate", ns).text = base64.b64encode(admin[1].public_bytes(Encoding.DER)).decode()
    with pytest.raises(BadSignature):
        verify_warrant(etree.tostring(root), [admin[1]])


def test_tampered_field_is_bad_signature(admin):
    xml = root_warrant(admin, rights=("status",))
    tampered = xml.replace(b"<right>status</right>", b"<right>kill</right>")
    assert tampered != xml
    with pytest.raises(BadSignature):
        verify_warrant(tampered, [admin[1]])


def test_removed_signature_is_malformed(admin):
    root = etree.fromstring(root_warrant(admin))
    root.remove(root[-1])
    with pytest.raises(WarrantMalformed):
        verify_warrant(etree.tostring(root), [admin[1]])


def test_garbage_is_rejected(admin):
    with pytest.raises(XmlRejected):
        verify_warrant(b"<<<", [admin[1]])
    with pytest.raises(WarrantMalformed):
        verify_warrant(b"<other/>", [admin[1]])


def test_signature_wrapping_is_refused(admin):
    """Move the signed warrant under a new root that claims more rights: refused."""
    signed = etree.fromstring(root_warrant(admin, rights=("status",)))
    evil = etree.fromstring(root_warrant(admin, rights=("status",)))
    # Variant 1: wrapper warrant with extra rights, the genuine signed warrant hidden inside.
    wrapper = etree.Element("{urn:jtrix:warrant:1}warrant", nsmap={None: "urn:jtrix:warrant:1"})
    wrapper.set("version", "1")
    for el in list(evil)[:-1]:
        wrapper.append(el)
    wrapper.find("{urn:jtrix:warrant:1}rights")[0].text = "kill"
    wrapper.append(signed)
    with pytest.raises((WarrantMalformed, BadSignature)):
        verify_warrant(etree.tostring(wrapper), [admin[1]])
    # Variant 2: the genuine signature moved to the wrapper, the signed content in an unknown element.
    signed2 = etree.fromstring(root_warrant(admin, rights=("status",)))
    sig = signed2[-1]
    wrapper2 = etree.fromstring(etree.tostring(signed2))
    wrapper2.find("{urn:jtrix:warrant:1}rights")[0].text = "kill"
    wrapper2.remove(wrapper2[-1])
    holder = etree.SubElement(wrapper2, "{urn:evil}x")
    holder.append(signed2)
    wrapper2.append(sig)
    with pytest.raises((WarrantMalformed, BadSignature)):
        verify_warrant(etree.tostring(wrapper2), [admin[1]])


def test_second_signature_is_refused(admin):
    root = etree.fromstring(root_warrant(admin))
    root.append(etree.fromstring(etree.tostring(root[-1])))
    with pytest.raises(WarrantMalformed):
        verify_warrant(etree.tostring(root), [admin[1]])


def test_issue_refuses_bad_arguments(admin, alice):
    key, cert = admin
    later = NOW + DAY
    with pytest.raises(BadInput, match="unknown right"):
        issue_warrant(key, cert, rights=["fly"], service="local", not_after=later)
    with pytest.raises(BadInput, match="at least one right"):
        issue_warrant(key, cert, rights=[], service="local", not_after=later)
    with pytest.raises(BadInput, match="service"):
        issue_warrant(key, cert, rights=["status"], service="bad service", not_after=later)
    with pytest.raises(BadInput, match="app"):
        issue_warrant(key, cert, rights=["status"], service="s", app="Bad App", not_after=later)
    with pytest.raises(BadInput, match="does not match"):
        issue_warrant(alice[0], cert, rights=["status"], service="s", not_after=later)
    with pytest.raises(BadInput, match="expire before"):
        issue_warrant(key, cert, rights=["status"], service="s", not_before=later, not_after=NOW)
    with pytest.raises(BadInput, match="XML"):
        issue_warrant(key, cert, rights=["status"], service="s", not_after=later, data="\x00")


# --- authorize ----------------------------------------------------------------------------------


def test_authorize_scopes(admin):
    w = verify_warrant(root_warrant(admin, rights=("status",), app="kv"), [admin[1]])
    w.authorize("status", "local", "kv")
    with pytest.raises(InsufficientRights, match="does not grant"):
        w.authorize("kill", "local", "kv")
    with pytest.raises(InsufficientRights, match="service"):
        w.authorize("status", "other", "kv")
    with pytest.raises(InsufficientRights, match="app"):
        w.authorize("status", "local", "web")
    with pytest.raises(InsufficientRights, match="whole service"):
        w.authorize("status", "local", None)
    service_wide = verify_warrant(root_warrant(admin, rights=("status",)), [admin[1]])
    service_wide.authorize("status", "local", "anything")
    service_wide.authorize("status", "local")
    with pytest.raises(WarrantExpired):
        service_wide.authorize("status", "local", now=NOW + 11 * DAY)


# --- delegation ---------------------------------------------------------------------------------


def delegate(parent_xml, signer, **kw):
    key, cert = signer
    kw.setdefault("rights", ("status",))
    kw.setdefault("not_after", NOW + DAY)
    return issue_warrant(key, cert, parent_xml=parent_xml, **kw)


def test_delegation_chain_verifies(admin, alice, bob):
    parent = root_warrant(admin, holder=alice[1])
    child = delegate(parent, alice, holder=bob[1], rights=("status", "delegate"), app="kv")
    grandchild = delegate(child, bob, rights=("status",))
    w = verify_warrant(grandchild, [admin[1]])
    assert len(w.chain) == 3 and w.root.serial == verify_warrant(parent, [admin[1]]).serial
    assert w.app == "kv" and w.service == "local"  # both inherited
    assert w.parent.holder_public_key_der == warrants.public_key_der(bob[1])
    # the chain is trusted only through its root
    with pytest.raises(UntrustedIssuer):
        verify_warrant(grandchild, [alice[1], bob[1]])


def test_delegation_refuses_widening(admin, alice, bob):
    parent = root_warrant(admin, holder=alice[1], rights=("status", "delegate"), app="kv")
    with pytest.raises(BrokenDelegation, match="kill"):
        delegate(parent, alice, rights=("kill",))
    with pytest.raises(BrokenDelegation, match="app"):
        delegate(parent, alice, app="other")
    with pytest.raises(BrokenDelegation, match="service"):
        delegate(parent, alice, service="elsewhere")
    with pytest.raises(BrokenDelegation, match="expiry"):
        delegate(parent, alice, not_after=NOW + 30 * DAY)
    with pytest.raises(BrokenDelegation, match="not-before"):
        delegate(parent, alice, not_before=NOW - 2 * DAY)
    with pytest.raises(BrokenDelegation, match="holder"):
        delegate(parent, bob)  # bob is not the holder
    no_delegate = root_warrant(admin, holder=alice[1], rights=("status",))
    with pytest.raises(BrokenDelegation, match="delegate"):
        delegate(no_delegate, alice)
    bearer = root_warrant(admin)
    with pytest.raises(BrokenDelegation):
        delegate(bearer, alice)


def _forge_child(parent_xml, signer, **fields):
    """Build a delegated warrant bypassing issue_warrant's checks (what an attacker would do)."""
    from warrants import issue as issue_mod
    from warrants import wxml

    key, cert = signer
    values = dict(
        serial="forged",
        service="local",
        app=None,
        rights=frozenset({"status"}),
        holder_der=None,
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + DAY,
        data=None,
    )
    values.update(fields)
    root = wxml.build_unsigned(parent=etree.fromstring(parent_xml), **values)
    return issue_mod._sign(root, key, cert)


@pytest.mark.parametrize(
    "fields, cause",
    [
        ({"rights": frozenset({"kill"})}, "widens rights"),
        ({"service": "other"}, "service"),
        ({"app": "other"}, "app"),
        ({"not_after": NOW + 30 * DAY}, "validity"),
    ],
)
def test_verifier_refuses_forged_widening(admin, alice, fields, cause):
    parent = root_warrant(admin, holder=alice[1], app=None if "app" not in fields else "kv")
    forged = _forge_child(parent, alice, **fields)
    with pytest.raises(BrokenDelegation, match=cause):
        verify_warrant(forged, [admin[1]])


def test_verifier_refuses_child_not_signed_by_holder(admin, alice, bob):
    parent = root_warrant(admin, holder=alice[1])
    forged = _forge_child(parent, bob)
    with pytest.raises(BrokenDelegation, match="holder"):
        verify_warrant(forged, [admin[1]])


def test_tampered_parent_inside_chain_is_refused(admin, alice):
    parent = root_warrant(admin, holder=alice[1], rights=("status", "delegate"))
    child = delegate(parent, alice)
    # Any change inside the embedded parent breaks the child's signature (and the parent's own).
    tampered = child.replace(b"<right>delegate</right>", b"<right>kill</right>", 1)
    assert tampered != child
    with pytest.raises(BadSignature):
        verify_warrant(tampered, [admin[1]])


def test_expired_parent_expires_the_chain(admin, alice):
    parent = root_warrant(admin, holder=alice[1], not_after=NOW + 2 * DAY)
    child = delegate(parent, alice, not_after=NOW + DAY)
    w = verify_warrant(child, [admin[1]])
    with pytest.raises(WarrantExpired):
        w.check_time(NOW + 3 * DAY)


# --- proofs and the cached verifier ---------------------------------------------------------------


def test_proof_of_possession(admin, alice, bob):
    w = verify_warrant(root_warrant(admin, holder=alice[1]), [admin[1]])
    proof = sign_proof(alice[0], b"ctx")
    verify_proof(w, proof, b"ctx")
    with pytest.raises(HolderProofFailed):
        verify_proof(w, proof, b"other ctx")
    with pytest.raises(HolderProofFailed):
        verify_proof(w, sign_proof(bob[0], b"ctx"), b"ctx")
    with pytest.raises(HolderProofFailed):
        verify_proof(w, None, b"ctx")
    with pytest.raises(HolderProofFailed):
        verify_proof(w, b"garbage", b"ctx")


def test_verifier_checks_every_call(admin, alice):
    v = WarrantVerifier([admin[1]], "local")
    holder_xml = root_warrant(admin, holder=alice[1], rights=("status",), not_after=NOW + 2 * DAY)
    ctx = b"local|status|1|nonce"
    w = v.check(holder_xml, "status", proof=sign_proof(alice[0], ctx), context=ctx)
    assert w.rights == {"status"}
    assert len(v) == 1
    with pytest.raises(HolderProofFailed):
        v.check(holder_xml, "status")  # cached chain, but no proof
    with pytest.raises(InsufficientRights):
        v.check(holder_xml, "kill", proof=sign_proof(alice[0], ctx), context=ctx)
    with pytest.raises(WarrantExpired):
        v.check(holder_xml, "status", proof=sign_proof(alice[0], ctx), context=ctx, now=NOW + 3 * DAY)
    other = WarrantVerifier([admin[1]], "elsewhere")
    with pytest.raises(InsufficientRights):
        other.check(holder_xml, "status", proof=sign_proof(alice[0], ctx), context=ctx)
    bearer = root_warrant(admin, rights=("status",))
    assert v.check(bearer, "status").holder_public_key_der is None
    assert len(v) == 2


def test_verifier_does_not_cache_refusals_and_evicts(admin, alice):
    v = WarrantVerifier([admin[1]], "local", cache_size=2)
    with pytest.raises(UntrustedIssuer):
        v.check(root_warrant(alice), "status")
    assert len(v) == 0
    docs = [root_warrant(admin, rights=("status",)) for _ in range(3)]
    for d in docs:
        v.check(d, "status")
    assert len(v) == 2
    v.clear()
    assert len(v) == 0


def test_verifier_is_thread_safe(admin):
    v = WarrantVerifier([admin[1]], "local", cache_size=8)
    docs = [root_warrant(admin, rights=("status",)) for _ in range(12)]
    errors = []

    def worker(i):
        try:
            for j in range(30):
                v.check(docs[(i + j) % len(docs)], "status")
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(v) <= 8


def test_read_unverified(admin, alice):
    parent = root_warrant(admin, holder=alice[1])
    child = delegate(parent, alice)
    info = warrants.read_unverified(child)
    assert [f["rights"] for f in info["chain"]] == [{"status"}, {"launch", "status", "delegate"}]
    assert info["chain"][1]["issuer"] == "admin"


def test_cached_check_is_cheap(admin):
    """Loose guard (real numbers are printed by the benchmark): a cached check costs well under 1 ms."""
    import time

    v = WarrantVerifier([admin[1]], "local")
    xml = root_warrant(admin, rights=("status",))
    v.check(xml, "status")
    n = 500
    start = time.perf_counter()
    for _ in range(n):
        v.check(xml, "status")
    assert (time.perf_counter() - start) / n < 1e-3
