"""Bootstrap descriptors: defaults, full parse, cross-field errors with the right line, packaging."""

import datetime as dt
import hashlib
import io
import tarfile
import textwrap

import pytest

import warrants
from warrants import BadInput, XmlRejected, load_descriptor, package_codebase, parse_descriptor

FULL = """\
<app xmlns="urn:jtrix:descriptor:1" name="kvstore">
  <codebase path="code"/>
  <lease ttl="0.5" grace="3"/>
  <restart backoff-base="0.2" backoff-cap="5" healthy-after="4" give-up-after="7"/>
  <replication ack="async" durability="write"/>
  <netlet type="store" class="kvstore.app:Store" replicas="3" master-eligible="true">
    <resource kind="directory" name="data"/>
    <resource kind="port" name="http" port="0"/>
    <param name="greeting">hello world</param>
    <param name="empty"></param>
  </netlet>
  <netlet type="gateway" class="kvstore.gw:Gateway">
    <resource kind="port" name="public" port="8080"/>
  </netlet>
  <bootstrap class="kvstore.boot:Boot"/>
  <warrant href="w.xml"/>
</app>
"""


@pytest.fixture
def app_dir(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "kvstore").mkdir()
    (code / "kvstore" / "__init__.py").write_text("")
    (code / "kvstore" / "app.py").write_text("class Store: pass\n")
    key = warrants.generate_key()
    cert = warrants.make_self_signed_cert(key, "admin")
    now = dt.datetime.now(dt.timezone.utc)
    (tmp_path / "w.xml").write_bytes(
        warrants.issue_warrant(key, cert, rights=["launch"], service="local", not_after=now + dt.timedelta(days=1))
    )
    return tmp_path


def write(tmp_path, text, name="app.xml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_full_descriptor(app_dir):
    d = load_descriptor(write(app_dir, FULL))
    assert d.name == "kvstore"
    assert d.codebase.path == app_dir / "code" and d.codebase.sha256 is None
    assert (d.lease_ttl, d.grace) == (0.5, 3.0)
    assert d.restart == warrants.RestartPolicy(0.2, 5.0, 4.0, 7)
    assert (d.ack, d.durability) == ("async", "write")
    store = d.netlet_type("store")
    assert store.class_ref == "kvstore.app:Store" and store.replicas == 3 and store.master_eligible
    assert store.resources == (
        warrants.Resource("directory", "data", 0),
        warrants.Resource("port", "http", 0),
    )
    assert store.params == (("greeting", "hello world"), ("empty", ""))
    assert store.slots == ("store/0", "store/1", "store/2")
    assert d.master_type is store
    gw = d.netlet_type("gateway")
    assert gw.replicas == 1 and not gw.master_eligible and gw.resources[0].port == 8080
    assert d.bootstrap_class == "kvstore.boot:Boot"
    assert d.warrant_xml == (app_dir / "w.xml").read_bytes()
    assert d.warrant_source == str(app_dir / "w.xml")
    assert d.source == str(app_dir / "app.xml")


def test_minimal_descriptor_has_model_defaults(app_dir):
    d = load_descriptor(
        write(
            app_dir,
            """\
            <app xmlns="urn:jtrix:descriptor:1" name="a">
              <codebase path="code"/>
              <netlet type="t" class="m:C"/>
            </app>
            """,
        )
    )
    defaults = warrants.Descriptor(name="a", codebase=d.codebase, netlet_types=d.netlet_types)
    assert (d.lease_ttl, d.grace, d.restart, d.ack, d.durability) == (
        defaults.lease_ttl,
        defaults.grace,
        defaults.restart,
        defaults.ack,
        defaults.durability,
    )
    assert d.warrant_xml is None and d.warrant_source is None and d.bootstrap_class is None
    assert d.master_type is None


def test_embedded_warrant(app_dir):
    wxml = (app_dir / "w.xml").read_bytes().decode()
    doc = (
        '<app xmlns="urn:jtrix:descriptor:1" name="a">\n  <codebase path="code"/>\n'
        '  <netlet type="t" class="m:C"/>\n  <warrant>' + wxml + "</warrant>\n</app>\n"
    )
    d = load_descriptor(write(app_dir, doc))
    assert d.warrant_source.endswith("app.xml:4")
    # The embedded copy still verifies (exclusive C14N is context-free).
    cert_der = warrants.read_unverified(d.warrant_xml)["chain"][0]["issuer_fingerprint"]
    assert cert_der == warrants.read_unverified(wxml.encode())["chain"][0]["issuer_fingerprint"]


def _err(app_dir, body: str) -> str:
    doc = '<app xmlns="urn:jtrix:descriptor:1" name="a">\n' + body + "</app>\n"
    with pytest.raises(BadInput) as exc:
        load_descriptor(write(app_dir, doc, "bad.xml"))
    return str(exc.value)


CODE = '  <codebase path="code"/>\n'  # line 2


@pytest.mark.parametrize(
    "body, line, cause",
    [
        (CODE + '  <netlet type="t" class="m:C"/>\n  <netlet type="t" class="m:D"/>\n', 4, "duplicate netlet type"),
        (
            CODE + '  <netlet type="a" class="m:C" master-eligible="true"/>\n'
            '  <netlet type="b" class="m:C" master-eligible="true"/>\n',
            4,
            "only one type may be master-eligible",
        ),
        (CODE + '  <lease ttl="0.1"/>\n  <netlet type="t" class="m:C"/>\n', 3, "0.2 s minimum"),
        (
            CODE + '  <restart backoff-base="5" backoff-cap="1"/>\n  <netlet type="t" class="m:C"/>\n',
            3,
            "backoff-base",
        ),
        (
            CODE + '  <restart backoff-base="0"/>\n  <netlet type="t" class="m:C"/>\n',
            3,
            "backoff-base",
        ),
        (CODE + '  <restart healthy-after="0"/>\n  <netlet type="t" class="m:C"/>\n', 3, "healthy-after"),
        (
            CODE + '  <netlet type="t" class="m:C">\n    <resource kind="directory" name="d"/>\n'
            '    <resource kind="port" name="d"/>\n  </netlet>\n',
            5,
            "duplicate resource",
        ),
        (
            CODE + '  <netlet type="t" class="m:C">\n    <param name="p">1</param>\n'
            '    <param name="p">2</param>\n  </netlet>\n',
            5,
            "duplicate param",
        ),
        (
            CODE + '  <netlet type="t" class="m:C">\n    <resource kind="directory" name="d" port="5"/>\n'
            "  </netlet>\n",
            4,
            "only allowed on kind",
        ),
        (
            CODE + '  <netlet type="t" class="m:C" replicas="2">\n    <resource kind="port" name="p" port="9000"/>\n'
            "  </netlet>\n",
            4,
            "cannot serve 2 replicas",
        ),
        (
            CODE + '  <netlet type="a" class="m:C">\n    <resource kind="port" name="p" port="9000"/>\n  </netlet>\n'
            '  <netlet type="b" class="m:C">\n    <resource kind="port" name="p" port="9000"/>\n  </netlet>\n',
            7,
            "already used",
        ),
        (CODE + '  <netlet type="t" class="m:C"/>\n  <warrant href="missing.xml"/>\n', 4, "missing.xml not found"),
        (CODE + '  <netlet type="t" class="m:C"/>\n  <warrant/>\n', 4, "give href"),
        ('  <codebase path="nowhere"/>\n  <netlet type="t" class="m:C"/>\n', 2, "not found"),
        ('  <codebase path="code" sha256="' + "0" * 64 + '"/>\n  <netlet type="t" class="m:C"/>\n', 2, "archive"),
        # schema violations: line and what was expected
        (CODE + '  <netlet type="Bad" class="m:C"/>\n', 3, "pattern"),
        (CODE + '  <netlet type="t" class="not a class"/>\n', 3, "class"),
        (CODE + '  <netlet type="t" class="m:C" replicas="0"/>\n', 3, "replicas"),
        (CODE + '  <replication durability="never"/>\n  <netlet type="t" class="m:C"/>\n', 3, "durability"),
        (CODE + '  <replication ack="quorum"/>\n  <netlet type="t" class="m:C"/>\n', 3, "ack"),
        (CODE + "\n\n  <surprise/>\n", 5, "Expected"),
        (CODE, 1, "Missing child element"),
    ],
)
def test_errors_report_the_right_line(app_dir, body, line, cause):
    msg = _err(app_dir, body)
    assert msg.startswith(f"{app_dir / 'bad.xml'}:{line}: "), msg
    assert cause in msg, msg


def test_referenced_file_that_is_not_a_warrant(app_dir):
    (app_dir / "notw.xml").write_text("<!DOCTYPE x><x/>")
    msg = _err(app_dir, CODE + '  <netlet type="t" class="m:C"/>\n  <warrant href="notw.xml"/>\n')
    assert msg.startswith(f"{app_dir / 'bad.xml'}:4: warrant is not a valid warrant document")


def test_missing_descriptor_file(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_descriptor(tmp_path / "nope.xml")


def test_hostile_descriptor_is_xml_rejected(tmp_path):
    with pytest.raises(XmlRejected):
        parse_descriptor(b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', "d.xml")


def test_parse_descriptor_from_bytes_does_not_require_the_codebase(tmp_path):
    doc = b'<app xmlns="urn:jtrix:descriptor:1" name="a"><codebase path="gone"/><netlet type="t" class="m:C"/></app>'
    d = parse_descriptor(doc, "remote.xml", base_dir=tmp_path)
    assert d.codebase.path == tmp_path / "gone"
    with pytest.raises(BadInput, match="not found"):
        parse_descriptor(doc, "remote.xml", base_dir=tmp_path, check_paths=True)


# --- packaging ------------------------------------------------------------------------------------


def test_package_directory_is_deterministic_and_filtered(app_dir):
    code = app_dir / "code"
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (code / "stale.pyc").write_bytes(b"junk")
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("ref")
    d = load_descriptor(write(app_dir, FULL))
    data1, sha1 = package_codebase(d)
    (code / "kvstore" / "app.py").touch()  # mtime change only
    data2, sha2 = package_codebase(d)
    assert data1 == data2 and sha1 == sha2 == hashlib.sha256(data1).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data1)) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert names == ["kvstore", "kvstore/__init__.py", "kvstore/app.py"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    (code / "kvstore" / "app.py").write_text("changed\n")
    assert package_codebase(d)[1] != sha1


def test_package_archive_checks_sha(app_dir):
    archive = app_dir / "code.tar.gz"
    archive.write_bytes(warrants.pack_directory(app_dir / "code"))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    base = '<app xmlns="urn:jtrix:descriptor:1" name="a">\n  <codebase path="code.tar.gz" sha256="{}"/>\n' \
        '  <netlet type="t" class="m:C"/>\n</app>\n'
    d = load_descriptor(write(app_dir, base.format(sha)))
    assert package_codebase(d) == (archive.read_bytes(), sha)
    bad = load_descriptor(write(app_dir, base.format("f" * 64)))
    with pytest.raises(BadInput, match="sha256"):
        package_codebase(bad)
