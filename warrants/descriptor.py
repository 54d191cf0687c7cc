"""Bootstrap descriptor parsing (``urn:jtrix:descriptor:1``) into the immutable model.

The XSD (``warrants/schemas/descriptor.xsd``) checks structure and value
syntax; this module checks the cross-field rules listed in
``warrants.descriptor_model`` and resolves paths. Every violation is a
:class:`~warrants.errors.BadInput` whose message starts with ``file:line:``.
See the README, "Bootstrap descriptors", for an annotated example.
"""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree

from warrants.descriptor_model import Codebase, Descriptor, NetletType, Resource, RestartPolicy
from warrants.errors import BadInput, XmlRejected
from warrants.inputs import read_user_file
from warrants.safexml import parse_untrusted, validate
from warrants.wxml import NS as WARRANT_NS

NS = "urn:jtrix:descriptor:1"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
MAX_WARRANT_BYTES = 1_000_000
MAX_DESCRIPTOR_BYTES = 1_000_000  # parse_untrusted's cap: refuse larger files before reading them whole


def _d(tag: str) -> str:
    return f"{{{NS}}}{tag}"


class _Ctx:
    def __init__(self, source: str):
        self.source = source

    def fail(self, el: etree._Element | None, cause: str) -> BadInput:
        line = (el.sourceline if el is not None else None) or 1
        return BadInput(f"{self.source}:{line}: {cause}")


def _float(el: etree._Element | None, attr: str, default: float) -> float:
    if el is None or el.get(attr) is None:
        return default
    return float(el.get(attr))


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip() in ("true", "1")


def _netlet(ctx: _Ctx, el: etree._Element) -> NetletType:
    name = el.get("type")
    replicas = int(el.get("replicas", "1"))
    resources: list[Resource] = []
    seen: set[str] = set()
    for r in el.findall(_d("resource")):
        rname, kind = r.get("name"), r.get("kind")
        if rname in seen:
            raise ctx.fail(r, f"netlet type {name!r}: duplicate resource name {rname!r}")
        seen.add(rname)
        port_text = r.get("port")
        if kind != "port" and port_text is not None:
            raise ctx.fail(r, f"resource {rname!r}: 'port' is only allowed on kind=\"port\"")
        port = int(port_text) if port_text is not None else 0
        if port and replicas > 1:
            raise ctx.fail(
                r,
                f"resource {rname!r}: fixed port {port} cannot serve {replicas} replicas on one host "
                '(use port="0" to allocate one per slot)',
            )
        resources.append(Resource(kind=kind, name=rname, port=port))
    params: list[tuple[str, str]] = []
    pseen: set[str] = set()
    for p in el.findall(_d("param")):
        pname = p.get("name")
        if pname in pseen:
            raise ctx.fail(p, f"netlet type {name!r}: duplicate param {pname!r}")
        pseen.add(pname)
        params.append((pname, p.text or ""))
    return NetletType(
        name=name,
        class_ref=el.get("class"),
        replicas=replicas,
        master_eligible=_bool(el.get("master-eligible"), False),
        resources=tuple(resources),
        params=tuple(params),
    )


def _read_capped(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data


def _warrant(ctx: _Ctx, el: etree._Element | None, base_dir: Path,
             read_files: bool = True) -> tuple[bytes | None, str | None]:
    if el is None:
        return None, None
    href = el.get("href")
    children = [c for c in el if isinstance(c.tag, str)]
    if href is not None and children:
        raise ctx.fail(el, "warrant: give either href=\"...\" or an embedded warrant, not both")
    if href is None and not children:
        raise ctx.fail(el, "warrant: give href=\"FILE\" or embed a <warrant xmlns=\"urn:jtrix:warrant:1\">")
    if children:
        child = children[0]
        if child.tag != f"{{{WARRANT_NS}}}warrant":
            raise ctx.fail(child, "warrant: the embedded element must be {urn:jtrix:warrant:1}warrant")
        return etree.tostring(child), f"{ctx.source}:{child.sourceline or 1}"
    if not read_files:
        return None, href  # network-facing callers never open files a document names
    path = Path(href)
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = _read_capped(path, MAX_WARRANT_BYTES)
    except FileNotFoundError:
        raise ctx.fail(el, f"warrant file {href} not found") from None
    except IsADirectoryError:
        raise ctx.fail(el, f"warrant file {href} is a directory") from None
    except PermissionError:
        raise ctx.fail(el, f"warrant file {href}: permission denied") from None
    if len(data) > MAX_WARRANT_BYTES:
        raise ctx.fail(el, f"warrant file {href} is larger than {MAX_WARRANT_BYTES} bytes")
    return data, str(path)


def _check_warrant_shape(ctx: _Ctx, el: etree._Element, data: bytes, source: str) -> None:
    """Structural check of the referenced/embedded warrant (its signature is checked by the host)."""
    try:
        root = parse_untrusted(data, source)
        validate(root, "warrant.xsd", source)
    except XmlRejected as err:
        raise ctx.fail(el, f"warrant is not a valid warrant document: {err}") from None


def parse_descriptor(
    data: bytes,
    source: str = "<descriptor>",
    *,
    base_dir: str | os.PathLike | None = None,
    check_paths: bool = False,
    read_files: bool = True,
) -> Descriptor:
    """Parse and validate a bootstrap descriptor.

    Relative paths (codebase, warrant href) resolve against ``base_dir``
    (default: the directory of ``source`` when it names a file, else the
    current directory). With ``check_paths`` (what :func:`load_descriptor`
    does) the codebase must exist and be a directory or an archive. A
    referenced warrant (``href``) is always read, and checked for shape, not
    trust. Network-facing callers (the hosting node) pass ``read_files=False``:
    then no file named by the document is opened, and an ``href`` warrant is
    left unread (``warrant_xml`` None, ``warrant_source`` the href).
    """
    ctx = _Ctx(source)
    if base_dir is None:
        src = Path(source)
        base_dir = src.parent if not source.startswith("<") and src.parent != Path("") else Path.cwd()
    base_dir = Path(base_dir).absolute()
    root = parse_untrusted(data, source)
    validate(root, "descriptor.xsd", source)

    cb_el = root.find(_d("codebase"))
    cb_path = Path(cb_el.get("path"))
    if not cb_path.is_absolute():
        cb_path = base_dir / cb_path
    cb_path = Path(os.path.normpath(cb_path))
    sha = cb_el.get("sha256")
    is_archive = cb_path.name.endswith(ARCHIVE_SUFFIXES)
    if check_paths:
        if not cb_path.exists():
            raise ctx.fail(cb_el, f"codebase {cb_el.get('path')} not found")
        if cb_path.is_dir():
            is_archive = False
        elif not (cb_path.is_file() and is_archive):
            raise ctx.fail(cb_el, f"codebase {cb_el.get('path')} must be a directory or a .tar.gz/.tgz/.zip archive")
    if sha is not None and not is_archive:
        raise ctx.fail(cb_el, "codebase: sha256 can only be recorded for an archive")

    lease = root.find(_d("lease"))
    ttl = _float(lease, "ttl", 1.0)
    grace = _float(lease, "grace", 2.0)
    if ttl < 0.2:
        raise ctx.fail(lease, f"lease ttl {ttl:g} s is below the 0.2 s minimum")

    rs = root.find(_d("restart"))
    base = _float(rs, "backoff-base", 0.1)
    cap = _float(rs, "backoff-cap", 10.0)
    healthy = _float(rs, "healthy-after", 10.0)
    if not 0 < base <= cap:
        raise ctx.fail(rs, f"restart: need 0 < backoff-base ({base:g}) <= backoff-cap ({cap:g})")
    if healthy <= 0:
        raise ctx.fail(rs, "restart: healthy-after must be > 0")
    restart = RestartPolicy(
        backoff_base=base,
        backoff_cap=cap,
        healthy_after=healthy,
        give_up_after=int(rs.get("give-up-after", "0")) if rs is not None else 0,
    )

    rep = root.find(_d("replication"))
    ack = rep.get("ack", "all") if rep is not None else "all"
    durability = rep.get("durability", "fsync") if rep is not None else "fsync"

    types: list[NetletType] = []
    names: set[str] = set()
    master_line: int | None = None
    fixed_ports: dict[int, str] = {}
    for n_el in root.findall(_d("netlet")):
        t = _netlet(ctx, n_el)
        if t.name in names:
            raise ctx.fail(n_el, f"duplicate netlet type {t.name!r}")
        names.add(t.name)
        if t.master_eligible:
            if master_line is not None:
                raise ctx.fail(
                    n_el,
                    f"netlet type {t.name!r}: only one type may be master-eligible (line {master_line} already is)",
                )
            master_line = n_el.sourceline
        for r, r_el in zip(t.resources, n_el.findall(_d("resource"))):
            if r.port:
                if r.port in fixed_ports:
                    raise ctx.fail(r_el, f"port {r.port} is already used by {fixed_ports[r.port]}")
                fixed_ports[r.port] = f"{t.name}/{r.name}"
        types.append(t)

    boot = root.find(_d("bootstrap"))
    w_el = root.find(_d("warrant"))
    warrant_xml, warrant_source = _warrant(ctx, w_el, base_dir, read_files)
    if warrant_xml is not None:
        _check_warrant_shape(ctx, w_el, warrant_xml, warrant_source)

    return Descriptor(
        name=root.get("name"),
        codebase=Codebase(path=cb_path, sha256=sha),
        netlet_types=tuple(types),
        lease_ttl=ttl,
        grace=grace,
        restart=restart,
        ack=ack,
        durability=durability,
        bootstrap_class=boot.get("class") if boot is not None else None,
        warrant_xml=warrant_xml,
        warrant_source=warrant_source,
        source=source,
    )


def load_descriptor(path: str | os.PathLike) -> Descriptor:
    """Read and parse the descriptor at ``path`` (paths in it resolve against its directory)."""
    path = Path(path)
    data = read_user_file(path, "descriptor file", MAX_DESCRIPTOR_BYTES)
    return parse_descriptor(data, str(path), base_dir=path.absolute().parent, check_paths=True)
