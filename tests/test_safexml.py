"""The single XML parsing path refuses every dangerous construct, with file:line and no content echo."""

import pytest

from warrants.errors import BadInput, XmlRejected
from warrants.safexml import parse_untrusted, validate

SECRET = "TOP-SECRET-CONTENT-42"


@pytest.fixture
def secret_file(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text(SECRET)
    return p


def hostile_documents(secret_path) -> dict[str, bytes]:
    """Every attack the parser must refuse (shared with the CLI tests)."""
    uri = secret_path.as_uri()
    return {
        "xxe-file": (
            f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "{uri}">]>\n<r>&x;</r>'
        ).encode(),
        "xxe-network": (
            b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:9/evil">]>\n<r>&x;</r>'
        ),
        "billion-laughs": (
            b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
            + b"".join(
                f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode()
                for i in range(1, 10)
            )
            + b"]>\n<lolz>&lol9;</lolz>"
        ),
        "external-dtd": f'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "{uri}">\n<r/>'.encode(),
        "parameter-entity": (
            f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{uri}"> %p;]>\n<r/>'
        ).encode(),
        "doctype": b"<!DOCTYPE r>\n<r/>",
        "oversize": b"<r>" + b"a" * 1_100_000 + b"</r>",
        "deep": b"<a>" * 200 + b"</a>" * 200,
    }


@pytest.mark.parametrize(
    "name",
    ["xxe-file", "xxe-network", "billion-laughs", "external-dtd", "parameter-entity", "doctype", "oversize", "deep"],
)
def test_hostile_documents_are_refused(name, secret_file):
    data = hostile_documents(secret_file)[name]
    with pytest.raises(XmlRejected) as exc:
        parse_untrusted(data, "evil.xml")
    msg = str(exc.value)
    assert msg.startswith("evil.xml:")
    assert SECRET not in msg and "lol" not in msg
    assert isinstance(exc.value, BadInput)


def test_doctype_line_is_reported():
    with pytest.raises(XmlRejected, match=r"^x\.xml:3: DOCTYPE refused"):
        parse_untrusted(b"<?xml version='1.0'?>\n\n<!DOCTYPE r>\n<r/>", "x.xml")


def test_oversize_is_refused_before_parsing():
    with pytest.raises(XmlRejected, match="over the 10-byte limit"):
        parse_untrusted(b"<r>0123456789</r>", "x.xml", max_bytes=10)


def test_depth_limit_is_exact():
    parse_untrusted(b"<a>" * 64 + b"</a>" * 64, "ok.xml")
    with pytest.raises(XmlRejected, match=r"^d\.xml:1: elements nested deeper than 64"):
        parse_untrusted(b"<a>" * 65 + b"</a>" * 65, "d.xml")


def test_malformed_reports_line_without_content():
    with pytest.raises(XmlRejected) as exc:
        parse_untrusted(b"<r>\n<a>\n</b>\n</r>", "m.xml")
    assert str(exc.value).startswith("m.xml:3: not well-formed XML")


@pytest.mark.parametrize("data", [b"", b"   ", b"not xml at all", "<r/>".encode("utf-16")])
def test_garbage_and_non_utf8(data):
    with pytest.raises(XmlRejected):
        parse_untrusted(data, "g.xml")


def test_undeclared_entity_is_refused():
    with pytest.raises(XmlRejected):
        parse_untrusted(b"<r>&undeclared;</r>", "e.xml")


def test_comments_and_pis_are_dropped():
    root = parse_untrusted(b"<r><!-- c --><?pi x?><a>1</a></r>", "c.xml")
    assert [el.tag for el in root] == ["a"]


def test_plain_document_parses():
    root = parse_untrusted(b'<r xmlns="urn:x"><a k="v">t</a></r>', "p.xml")
    assert root.tag == "{urn:x}r" and root[0].get("k") == "v"


def test_rejects_str():
    with pytest.raises(TypeError):
        parse_untrusted("<r/>", "s.xml")  # type: ignore[arg-type]


def test_validate_names_line_and_expectation():
    doc = b'<app xmlns="urn:jtrix:descriptor:1" name="a">\n  <codebase path="."/>\n  <bogus/>\n</app>'
    root = parse_untrusted(doc, "v.xml")
    with pytest.raises(XmlRejected) as exc:
        validate(root, "descriptor.xsd", "v.xml")
    msg = str(exc.value)
    assert msg.startswith("v.xml:3:")
    assert "bogus" in msg and "Expected" in msg and "{urn:" not in msg


def test_validate_custom_error_class():
    from warrants.errors import WarrantMalformed

    root = parse_untrusted(b'<warrant xmlns="urn:jtrix:warrant:1" version="1"/>', "w.xml")
    with pytest.raises(WarrantMalformed, match=r"^w\.xml:1:"):
        validate(root, "warrant.xsd", "w.xml", error=WarrantMalformed)


def test_unknown_schema_name():
    root = parse_untrusted(b"<r/>", "r.xml")
    with pytest.raises((ValueError, FileNotFoundError)):
        validate(root, "../etc/passwd", "r.xml")
