"""``jtrix warrant ...`` and ``jtrix descriptor ...``: keys, warrants and descriptor checks.

Every user error is a ``warrants.errors.BadInput`` (exit 2, one line naming the
cause); ``launcher.cli.run_cli`` prints it. Reference: the README's XML formats section.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path

import click

from warrants.descriptor import MAX_WARRANT_BYTES
from warrants.inputs import read_user_file
from warrants import (
    CLIENT_RIGHTS,
    BadInput,
    Warrant,
    cert_fingerprint,
    generate_key,
    issue_warrant,
    load_cert,
    load_descriptor,
    load_private_key,
    make_self_signed_cert,
    read_unverified,
    save_cert,
    save_private_key,
    verify_warrant,
)

DEFAULT_SERVICE = "local"


def _local_service_id() -> str:
    """The service id of the local default node (its certificate in $JTRIX_HOME), else ``local``."""
    from hosting.home import Home, default_home, service_id_of

    cert_path = Home(default_home()).node_cert
    if cert_path.exists():
        return service_id_of(load_cert(cert_path))
    return DEFAULT_SERVICE
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``12h``, ``30d``, ``2w`` or combinations such as ``1h30m``."""
    t = text.strip().lower()
    if not t or _DURATION.sub("", t):
        raise BadInput(f"bad duration {text!r}: use e.g. 30s, 15m, 12h, 30d (units s m h d w)")
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(t))
    if seconds <= 0:
        raise BadInput(f"bad duration {text!r}: must be positive")
    if seconds > 100 * 365 * 86400:
        raise BadInput(f"bad duration {text!r}: more than 100 years")
    return dt.timedelta(seconds=seconds)


def cert_path_for(key_path: str | os.PathLike) -> Path:
    """``KEY.pem`` -> ``KEY.crt.pem`` (the certificate written beside a key by keygen)."""
    p = Path(key_path)
    stem = p.name[: -len(".pem")] if p.name.endswith(".pem") else p.name
    return p.with_name(stem + ".crt.pem")


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        raise BadInput(f"{path}: cannot write ({err.strerror})") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _load_signer(key_path: str, cert_path: str | None):
    key = load_private_key(key_path)
    cert = load_cert(cert_path or cert_path_for(key_path))
    return key, cert


def _delegating_signer(key_path: str, cert_path: str | None, not_after: dt.datetime):
    """The key signing a delegation and a certificate carrying it: ``cert_path`` or KEY's
    .crt.pem if there is one, else one made now. A delegated link's certificate is trusted
    by nobody — it only carries the key the parent names as holder — so any certificate for
    that key will do, as long as it is valid while the warrant is (the admin key in a
    node's home has none)."""
    if cert_path is not None or cert_path_for(key_path).exists():
        return _load_signer(key_path, cert_path)
    key = load_private_key(key_path)
    days = max(1, (not_after - _now()).days + 2)
    return key, make_self_signed_cert(key, "jtrix delegator", days=days)


def _holder(path: str | None):
    return load_cert(path) if path else None


def _rights(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(r.strip() for r in v.split(",") if r.strip())
    if "member" in out:
        raise BadInput("right 'member' is a cluster node's own credential: no warrant issued here may carry it")
    return out


def _warrant_dict(w: Warrant) -> dict:
    return {
        "serial": w.serial,
        "service": w.service,
        "app": w.app,
        "rights": sorted(w.rights),
        "holder_key_sha256": hashlib.sha256(w.holder_public_key_der).hexdigest()
        if w.holder_public_key_der
        else None,
        "not_before": _iso(w.not_before),
        "not_after": _iso(w.not_after),
        "data": w.data,
        "issuer_fingerprint": w.issuer_fingerprint,
    }


def _fields_dict(f: dict) -> dict:
    return {
        "serial": f["serial"],
        "service": f["service"],
        "app": f["app"],
        "rights": sorted(f["rights"]),
        "holder_key_sha256": hashlib.sha256(f["holder_public_key_der"]).hexdigest()
        if f["holder_public_key_der"]
        else None,
        "not_before": _iso(f["not_before"]),
        "not_after": _iso(f["not_after"]),
        "data": f["data"],
        "issuer_fingerprint": f["issuer_fingerprint"],
        "issuer": f.get("issuer"),
    }


def _echo_chain(chain: list[dict]) -> None:
    for depth, f in enumerate(chain):
        pad = "  " * depth
        head = "warrant" if depth == 0 else "delegated from"
        click.echo(f"{pad}{head} {f['serial']}")
        click.echo(f"{pad}  service:   {f['service']}")
        click.echo(f"{pad}  app:       {f['app'] or '(every app)'}")
        click.echo(f"{pad}  rights:    {', '.join(f['rights'])}")
        click.echo(f"{pad}  holder:    {f['holder_key_sha256'] or '(bearer)'}")
        click.echo(f"{pad}  valid:     {f['not_before']} .. {f['not_after']}")
        click.echo(f"{pad}  issuer:    {f['issuer_fingerprint']}" + (f" ({f['issuer']})" if f.get("issuer") else ""))
        if f["data"] is not None:
            click.echo(f"{pad}  data:      {f['data']!r}")


@click.group("warrant")
def warrant() -> None:
    """Make keys; issue, delegate, verify and show warrants."""


@warrant.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="private key file (PEM, 0600)")
@click.option("--name", "name", default=None, help="certificate common name (default: the file's stem)")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500), help="certificate lifetime")
@click.option("--force", is_flag=True, help="overwrite existing files")
def keygen(out: str, name: str | None, days: int, force: bool) -> None:
    """Write an ECDSA P-256 key to OUT and its self-signed certificate to OUT's .crt.pem."""
    cert_path = cert_path_for(out)
    for p in (Path(out), cert_path):
        if p.exists() and not force:
            raise BadInput(f"{p}: already exists (use --force to overwrite)")
    key = generate_key()
    cn = name or Path(out).name.removesuffix(".pem") or "jtrix"
    cert = make_self_signed_cert(key, cn[:64], days=days)
    try:
        save_private_key(key, out)
        save_cert(cert, cert_path)
    except OSError as err:
        raise BadInput(f"{out}: cannot write ({err.strerror})") from None
    click.echo(f"key:         {out}")
    click.echo(f"certificate: {cert_path}")
    click.echo(f"fingerprint: {cert_fingerprint(cert)}")


_RIGHT_HELP = f"a right to grant (repeatable, or comma-separated): {', '.join(sorted(CLIENT_RIGHTS))}"


@warrant.command("issue")
@click.option("--key", "key_path", required=True, help="issuer's private key (PEM)")
@click.option("--cert", "cert_path", default=None, help="issuer's certificate (default: KEY's .crt.pem)")
@click.option("--right", "rights", multiple=True, required=True, help=_RIGHT_HELP)
@click.option("--expires", required=True, help="lifetime from now: 30s, 15m, 12h, 30d")
@click.option("--app", default=None, help="narrow the warrant to one app")
@click.option("--holder", "holder_path", default=None, help="holder's certificate: the bearer must prove its key")
@click.option("--service", default=None,
              help="hosting service id (default: the local node's, from $JTRIX_HOME, else 'local')")
@click.option("--data", default=None, help="opaque warrant data")
@click.option("--serial", default=None, help="serial (default: random)")
@click.option("--out", required=True, help="warrant file to write")
def issue(key_path, cert_path, rights, expires, app, holder_path, service, data, serial, out) -> None:
    """Issue a root warrant signed by KEY."""
    key, cert = _load_signer(key_path, cert_path)
    service = service or _local_service_id()
    now = _now()
    xml = issue_warrant(
        key,
        cert,
        rights=_rights(rights),
        service=service,
        app=app,
        holder=_holder(holder_path),
        not_before=now,
        not_after=now + parse_duration(expires),
        serial=serial,
        data=data,
    )
    _write(out, xml)
    click.echo(f"wrote {out}")


@warrant.command("delegate")
@click.argument("parent_file")
@click.option("--key", "key_path", required=True, help="the parent's holder private key (PEM)")
@click.option("--cert", "cert_path", default=None,
              help="holder's certificate (default: KEY's .crt.pem if there is one; none is needed)")
@click.option("--right", "rights", multiple=True, required=True, help=_RIGHT_HELP)
@click.option("--expires", required=True, help="lifetime from now (no later than the parent's expiry)")
@click.option("--app", default=None, help="narrow to one app (default: the parent's app)")
@click.option("--holder", "holder_path", default=None, help="new holder's certificate")
@click.option("--data", default=None, help="opaque warrant data")
@click.option("--out", required=True, help="warrant file to write")
def delegate(parent_file, key_path, cert_path, rights, expires, app, holder_path, data, out) -> None:
    """Issue a narrower warrant from PARENT_FILE, signed by the parent's holder."""
    parent_xml = read_user_file(parent_file, "warrant file", MAX_WARRANT_BYTES)
    not_after = _now() + parse_duration(expires)
    key, cert = _delegating_signer(key_path, cert_path, not_after)
    xml = issue_warrant(
        key,
        cert,
        rights=_rights(rights),
        app=app,
        holder=_holder(holder_path),
        not_after=not_after,
        data=data,
        parent_xml=parent_xml,
    )
    _write(out, xml)
    click.echo(f"wrote {out}")


@warrant.command("verify")
@click.argument("file")
@click.option("--trust", "trust", multiple=True, required=True, help="trusted issuer certificate (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the verified chain as JSON")
def verify(file: str, trust: tuple[str, ...], as_json: bool) -> None:
    """Verify FILE's signatures, chain, narrowing and validity window."""
    xml = read_user_file(file, "warrant file", MAX_WARRANT_BYTES)
    trusted = [load_cert(t) for t in trust]
    w = verify_warrant(xml, trusted, source=file)
    chain = [_warrant_dict(x) for x in w.chain]
    if as_json:
        click.echo(json.dumps({"valid": True, "chain": chain}, indent=2))
    else:
        click.echo(f"{file}: valid")
        _echo_chain(chain)


@warrant.command("show")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def show(file: str, as_json: bool) -> None:
    """Show FILE's content WITHOUT verifying it (use `verify` for that)."""
    xml = read_user_file(file, "warrant file", MAX_WARRANT_BYTES)
    chain = [_fields_dict(f) for f in read_unverified(xml, file)["chain"]]
    if as_json:
        click.echo(json.dumps({"verified": False, "chain": chain}, indent=2))
    else:
        click.echo(f"{file}: NOT verified (signatures unchecked)")
        _echo_chain(chain)


@click.group("descriptor")
def descriptor() -> None:
    """Check bootstrap descriptors."""


@descriptor.command("check")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="print the parsed descriptor as JSON")
def check(file: str, as_json: bool) -> None:
    """Validate descriptor FILE (schema, cross-field rules, paths, warrant shape)."""
    d = load_descriptor(file)
    summary = {
        "name": d.name,
        "codebase": str(d.codebase.path),
        "codebase_sha256": d.codebase.sha256,
        "lease_ttl": d.lease_ttl,
        "grace": d.grace,
        "restart": {
            "backoff_base": d.restart.backoff_base,
            "backoff_cap": d.restart.backoff_cap,
            "healthy_after": d.restart.healthy_after,
            "give_up_after": d.restart.give_up_after,
        },
        "ack": d.ack,
        "durability": d.durability,
        "bootstrap_class": d.bootstrap_class,
        "warrant": d.warrant_source or "(local node's admin warrant)",
        "netlets": [
            {
                "type": t.name,
                "class": t.class_ref,
                "replicas": t.replicas,
                "master_eligible": t.master_eligible,
                "resources": [{"kind": r.kind, "name": r.name, "port": r.port} for r in t.resources],
                "params": dict(t.params),
            }
            for t in d.netlet_types
        ],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{file}: ok — app {d.name!r}")
    for t in d.netlet_types:
        flag = " (master-eligible)" if t.master_eligible else ""
        click.echo(f"  {t.name}: {t.class_ref} x{t.replicas}{flag}")
    click.echo(f"  warrant: {summary['warrant']}")


COMMANDS: list = [warrant, descriptor]
