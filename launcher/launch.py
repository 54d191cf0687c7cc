"""``jtrix-launch bootstrap.xml``: from a descriptor to a running app in one command.

Steps, each of which can stop the launch before anything is registered:

1. load and validate the descriptor (exit 2, ``file:line: cause``);
2. pick the hosting node: ``--host``/``$JTRIX_HOST`` (a Pyro URI; a warrant is
   then required: ``--warrant`` or the descriptor's ``<warrant>``), else the
   local default node of ``--home``/``$JTRIX_HOME``, started in the background
   if it is not running;
3. check the warrant locally (for the local node against its own certificate;
   for a remote node its validity window, right and scope) — refused: exit 2;
4. refuse an app that is already running (exit 2) unless ``--replace``;
5. upload the codebase unless the node already has it (content-addressed);
6. submit the app (cold start), then follow its status until every netlet is
   running and, when the app has a master-eligible type, a master is elected.

Exit 0 with a summary; 1 when a slot crash-loops or ``--timeout`` passes (with
the failing netlet's last log lines); 2 bad input; 3 node not reachable.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hosting.client import NodeUnreachable, upload_codebase
from launcher.common import (check_pyro_uri, describe_exit, echo_json, home_option, json_option, key_option,
                             resolve_home, tail_log, warrant_option)
from launcher.progress import make_progress
from warrants.descriptor import MAX_WARRANT_BYTES
from warrants.errors import BadInput, InsufficientRights, JtrixError, NotFound, WarrantError
from warrants.inputs import read_user_file

LOG_LINES = 20
FAILED_STATES = ("backoff", "failed")
SUBMIT_TIMEOUT_S = 75.0  # submit with --replace waits (up to 60 s on the node) for the old app to stop


class LaunchFailed(JtrixError):
    """The app was submitted but did not come up (exit 1)."""

    def __init__(self, reason: str, slot: str | None = None, log_path: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.slot = slot
        self.log_path = log_path  # a custom bootstrap's log (a path on the node's machine)


@dataclass
class Target:
    """The hosting node to launch on and the credentials to use there."""

    uri: str
    warrant_xml: bytes
    key: Any
    where: str  # for messages: "local node (home ...)" or the URI
    tls: Any = None  # the home's client TLS identity when its node is a cluster member

    def client(self, timeout: float | None = None):
        from rpc import wire
        from hosting.client import HostingClient

        return HostingClient(self.uri, self.warrant_xml, self.key, timeout or wire.CALL_TIMEOUT_S, tls=self.tls)


# -- warrants ------------------------------------------------------------------
def _warrant_label(descriptor) -> str:
    """``descriptor.xml:LINE`` of the descriptor's ``<warrant>`` element."""
    import warrants

    try:
        root = warrants.parse_untrusted(Path(descriptor.source).read_bytes(), descriptor.source)
        el = root.find("{urn:jtrix:descriptor:1}warrant")
        return f"{descriptor.source}:{el.sourceline if el is not None else 1}"
    except (OSError, JtrixError):
        return descriptor.source


def _choose_warrant(descriptor, warrant: str | None, key: str | None) -> tuple[bytes | None, str, Any]:
    """(warrant XML or None for the admin warrant, label for messages, private key or None)."""
    import warrants

    key_obj = warrants.load_private_key(key) if key else None
    if warrant:
        return read_user_file(warrant, "warrant file", MAX_WARRANT_BYTES), warrant, key_obj
    if descriptor.warrant_xml is not None:
        src = descriptor.warrant_source or "embedded"
        return descriptor.warrant_xml, f"{_warrant_label(descriptor)}: warrant {src}", key_obj
    return None, "", key_obj


def _refused(label: str, err: Exception) -> BadInput:
    return BadInput(f"{_prefix(label)} refused: {err}")


def _prefix(label: str) -> str:
    """``desc.xml:5: warrant FILE`` stays; a bare warrant file becomes ``FILE: warrant``."""
    return label if ": warrant " in label else f"{label}: warrant"


def _check_holder(label: str, holder_der: bytes | None, key) -> None:
    import warrants

    if holder_der is None:
        return
    if key is None:
        raise BadInput(f"{_prefix(label)} refused: it is bound to a holder key; give --key KEY.pem")
    if warrants.public_key_der(key) != holder_der:
        raise BadInput(f"{_prefix(label)} refused: --key is not the key of the warrant's holder")


def check_warrant_locally(xml: bytes, label: str, trusted: list, service: str, app: str, key,
                          rights: tuple[str, ...] = ("launch",)) -> None:
    """Full check against the node's certificate: signatures, trust, window, rights, scope, holder."""
    import warrants

    try:
        w = warrants.verify_warrant(xml, trusted, source=label)
        for right in rights:
            w.authorize(right, service, app)
    except WarrantError as err:
        raise _refused(label, err) from None
    _check_holder(label, w.holder_public_key_der, key)


def check_warrant_fields(xml: bytes, label: str, service: str, app: str, key,
                         rights: tuple[str, ...] = ("launch",)) -> None:
    """What can be checked without the node's certificate: window, right, service, app, holder."""
    import warrants

    try:
        chain = warrants.read_unverified(xml, label)["chain"]
    except WarrantError as err:
        raise _refused(label, err) from None
    now = dt.datetime.now(dt.timezone.utc)
    for f in chain:
        if now > f["not_after"]:
            raise BadInput(f"{_prefix(label)} refused: warrant {f['serial']} expired at {f['not_after']}")
        if now < f["not_before"]:
            raise BadInput(f"{_prefix(label)} refused: warrant {f['serial']} is not valid before {f['not_before']}")
    leaf = chain[0]
    for right in rights:
        if right not in leaf["rights"]:
            raise BadInput(f"{_prefix(label)} refused: it does not grant {right!r}")
    if leaf["service"] != service:
        raise BadInput(f"{_prefix(label)} refused: it is for service {leaf['service']!r}, not {service!r}")
    if leaf["app"] is not None and leaf["app"] != app:
        raise BadInput(f"{_prefix(label)} refused: it covers app {leaf['app']!r} only, not {app!r}")
    _check_holder(label, leaf["holder_public_key_der"], key)


# -- which node ----------------------------------------------------------------
def remote_target(uri: str, descriptor, warrant: str | None, key: str | None,
                  rights: tuple[str, ...] = ("launch",), home: str | None = None) -> Target:
    """The node at ``uri`` — over TLS with the client certificate of ``home`` (a member of the
    same cluster) when it has one."""
    from rpc.tls import client_identity

    check_pyro_uri(uri)
    xml, label, key_obj = _choose_warrant(descriptor, warrant, key)
    if xml is None:
        raise BadInput(f"{descriptor.source}: --host needs a warrant: give --warrant FILE or a <warrant> "
                       "in the descriptor")
    target = Target(uri, xml, key_obj, uri, client_identity(resolve_home(home)))
    service = target.client().service  # hello; NodeUnreachable (exit 3) if nobody answers
    check_warrant_fields(xml, label, service, descriptor.name, key_obj, rights)
    return target


def local_target(home: str | None, descriptor, warrant: str | None, key: str | None,
                 rights: tuple[str, ...] = ("launch",)) -> Target:
    import warrants
    from hosting.daemon import start_background
    from hosting.home import ensure_home, service_id_of
    from rpc.tls import client_identity

    root = resolve_home(home)
    xml, label, key_obj = _choose_warrant(descriptor, warrant, key)
    h = ensure_home(root)  # what the node does at start (idempotent): its certificate is the trust root
    cert = warrants.load_cert(h.node_cert)
    if xml is None:
        xml, label, key_obj = h.admin_warrant.read_bytes(), str(h.admin_warrant), warrants.load_private_key(h.admin_key)
    check_warrant_locally(xml, label, [cert], service_id_of(cert), descriptor.name, key_obj, rights)
    info = start_background(root)  # only once the warrant is known to be good
    return Target(info["uri"], xml, key_obj, f"the local node (pid {info['pid']}, home {root})",
                  client_identity(root))


# -- waiting -------------------------------------------------------------------
def master_ready(descriptor, app: dict) -> bool:
    """An app with a master-eligible type is ready once a master is elected (the node's
    ``master``) and that netlet has itself reported the role (so calls to it succeed)."""
    if descriptor.master_type is None:
        return True
    master = app.get("master")
    return master is not None and any(n["slot"] == master and n.get("role") == "master" for n in app["netlets"])


def netlets_ready(app: dict) -> bool:
    return bool(app["netlets"]) and all(n["state"] == "running" and n.get("phase") == "running"
                                        for n in app["netlets"])


def _app_view(client, name: str) -> dict:
    try:
        return client.call("status", name)["apps"][0]
    except NodeUnreachable:
        raise
    except NotFound:
        raise LaunchFailed(f"app {name!r} disappeared while starting (terminated?)") from None


def last_event_index(client, app: str) -> int:
    """The index of the app's newest event (0 if none): events after it belong to this launch."""
    since = 0
    while True:
        page = client.call("events", since, app, 0.0)
        if not page:
            return since
        since = page[-1]["index"]


def check_bootstrap_events(events: list[dict], name: str) -> None:
    """A custom bootstrap (``<bootstrap class=...>``) that failed fails the launch."""
    for e in events:
        if e["kind"] == "bootstrap.failed":
            d = e.get("detail") or {}
            raise LaunchFailed(f"the bootstrap of {name} failed: {describe_exit(d) or 'exited'}", None, d.get("log"))


def wait_ready(client, descriptor, timeout: float, progress, since: int = 0) -> dict:
    """Follow the app until it is ready; LaunchFailed on a crash-looping slot, a failed
    bootstrap (events after ``since``) or timeout."""
    name = descriptor.name
    started = time.monotonic()
    deadline = started + timeout
    while True:
        app = _app_view(client, name)
        progress.update(app, time.monotonic() - started)
        for n in app["netlets"]:
            if n["state"] in FAILED_STATES:
                why = describe_exit(n.get("last_exit")) or "no exit recorded"
                count = n.get("failures") or n.get("restarts")
                what = "is crash-looping (backoff)" if n["state"] == "backoff" else "was given up"
                raise LaunchFailed(f"{name}/{n['slot']} {what} after {count} failed start(s); "
                                   f"last exit: {why}", n["slot"])
        if netlets_ready(app) and master_ready(descriptor, app):
            return app
        left = deadline - time.monotonic()
        if left <= 0:
            waiting = [n for n in app["netlets"] if not (n["state"] == "running" and n.get("phase") == "running")]
            if waiting:
                n = waiting[0]
                raise LaunchFailed(f"timed out after {timeout:g}s: {name}/{n['slot']} is still "
                                   f"{n['state']}{'/' + n['phase'] if n.get('phase') else ''}", n["slot"])
            raise LaunchFailed(f"timed out after {timeout:g}s: every netlet runs but no master was elected",
                               descriptor.master_type.slots[0] if descriptor.master_type else None)
        # Sleep until the app's next event (or a short poll for changes that have none).
        events = client.call("events", since, name, min(0.25, left))
        if events:
            since = events[-1]["index"]
            check_bootstrap_events(events, name)


# -- output --------------------------------------------------------------------
def summary(app: dict) -> dict:
    master = app.get("master")
    return {
        "ok": True, "app": app["name"], "state": app.get("state"), "epoch": app.get("epoch"), "master": master,
        "backups": [n["slot"] for n in app["netlets"] if n.get("role") == "backup"],
        "netlets": [{k: n.get(k) for k in ("slot", "type", "pid", "state", "role", "endpoint")}
                    for n in app["netlets"]],
        "call": {"cli": f"jtrix call {app['name']} METHOD [ARGS...]", "python": f'netlets.connect("{app["name"]}")'},
    }


def print_summary(result: dict, elapsed: float, where: str) -> None:
    name = result["app"]
    click.echo(f"{name} is ready: {len(result['netlets'])} netlet(s) running after {elapsed:.1f}s on {where}")
    pids = {n["slot"]: n["pid"] for n in result["netlets"]}
    if result["master"]:
        click.echo(f"  master:   {result['master']} (pid {pids.get(result['master'])}, epoch {result['epoch']})")
        click.echo(f"  backups:  {', '.join(result['backups']) or '(none)'}")
    else:
        click.echo("  master:   none (no master-eligible netlet type)")
        click.echo(f"  netlets:  {', '.join(f'{s} (pid {p})' for s, p in pids.items())}")
    click.echo(f"  call it:  {result['call']['cli']}")
    click.echo(f"            python: import netlets; {result['call']['python']}")
    click.echo(f"  watch:    jtrix status {name} --watch      stop: jtrix terminate {name}")


def report_failure(client, err: LaunchFailed, app: str, as_json: bool) -> int:
    lines: list[str] = []
    if err.slot:
        try:
            lines, _ = tail_log(client, app, err.slot, LOG_LINES)
        except JtrixError:
            lines = []
    elif err.log_path:  # readable when the node runs on this machine
        try:
            lines = Path(err.log_path).read_text(errors="replace").splitlines()[-LOG_LINES:]
        except OSError:
            lines = []
    if as_json:
        echo_json({"ok": False, "app": app, "reason": err.reason, "slot": err.slot, "log": lines})
        return 1
    click.echo(f"jtrix-launch: {err.reason}", err=True)
    what = f"{app}/{err.slot}" if err.slot else f"the bootstrap ({err.log_path})"
    if lines:
        click.echo(f"--- last {len(lines)} log line(s) of {what} ---", err=True)
        for line in lines:
            click.echo(f"  {line}", err=True)
        click.echo("---", err=True)
    elif err.slot or err.log_path:
        click.echo(f"(no log output from {what})", err=True)
    click.echo(f"the app stays registered: see `jtrix status {app}`, `jtrix logs {app}/SLOT`; "
               f"stop it with `jtrix terminate {app}`", err=True)
    return 1


# -- the command -----------------------------------------------------------------
@click.command("jtrix-launch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("descriptor", metavar="BOOTSTRAP.xml", type=click.Path(dir_okay=False))
@home_option
@click.option("--host", "host", default=None, envvar="JTRIX_HOST", show_envvar=True, metavar="URI",
              help="Launch on the hosting node at this Pyro URI (needs a warrant) instead of the local node.")
@warrant_option
@key_option
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Fail if the app is not ready after this many seconds.")
@click.option("--detach", is_flag=True, help="Return as soon as the app is submitted.")
@click.option("--replace", is_flag=True, help="Replace the app if it is already running (terminates it first: needs the terminate right).")
@json_option
def launch(descriptor, home, host, warrant, key, timeout, detach, replace, as_json) -> int:
    """Verify BOOTSTRAP.xml, upload its codebase, start the app and wait until it is ready.

    \b
    Exit codes: 0 ready (or submitted, with --detach); 1 the app failed to
    come up (crash loop, --timeout); 2 bad descriptor or refused warrant,
    or the app is already running; 3 the hosting node is not reachable.
    """
    import warrants

    desc = warrants.load_descriptor(descriptor)
    source = str(Path(descriptor).resolve())
    desc_bytes = Path(descriptor).read_bytes()
    rights = ("launch",) if detach else ("launch", "status")  # following the app needs `status`
    if replace:
        rights += ("terminate",)  # replacing terminates the running app
    target = (remote_target(host, desc, warrant, key, rights, home) if host
              else local_target(home, desc, warrant, key, rights))
    client = target.client()
    name = desc.name

    try:
        client.call("status", name)
        exists = True
    except NodeUnreachable:
        raise
    except NotFound:
        exists = False
    except InsufficientRights:  # a launch-only warrant: submit_app refuses a running app itself
        exists = False
    if exists and not replace:
        raise BadInput(f"app {name!r} is already running on {target.where} "
                       f"(use --replace to replace it, or `jtrix terminate {name}`)")

    progress = make_progress(name, as_json or detach)
    started = time.monotonic()
    try:
        data, sha = warrants.package_codebase(desc)
        uploaded = upload_codebase(client, data, sha)
        progress.note(f"codebase {sha[:12]} {'uploaded' if uploaded else 'already on the node'} "
                      f"({len(data)} bytes)")
        since = 0 if detach else last_event_index(client, name)
        submitted = target.client(SUBMIT_TIMEOUT_S).call("submit_app", desc_bytes, source, sha, replace, True)
        progress.note(f"{name} submitted to {target.where}: {len(submitted['slots'])} slot(s)"
                      + (" (replacing the running app)" if exists else ""))
        if detach:
            result = {"ok": True, "app": name, "submitted": True, "slots": submitted["slots"], "codebase": sha}
            if as_json:
                echo_json(result)
            else:
                click.echo(f"{name} submitted ({len(submitted['slots'])} slots); "
                           f"follow it with `jtrix status {name} --watch`")
            return 0
        app = wait_ready(client, desc, timeout, progress, since)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"\ninterrupted (if it was submitted, {name} keeps starting: see `jtrix status {name}`)", err=True)
        return 130
    except LaunchFailed as err:
        progress.close()
        return report_failure(client, err, name, as_json)
    finally:
        progress.close()  # idempotent; also when submitting raised
    elapsed = time.monotonic() - started
    result = summary(app)
    result.update(codebase=sha, uploaded=uploaded, elapsed_s=round(elapsed, 3))
    if as_json:
        echo_json(result)
    else:
        print_summary(result, elapsed, target.where)
    return 0


def main() -> None:
    """Entry point of the ``jtrix-launch`` console script."""
    from launcher.cli import run_cli

    sys.exit(run_cli(launch, prog_name="jtrix-launch"))


__all__ = ["launch", "main", "master_ready", "netlets_ready", "wait_ready"]

if __name__ == "__main__":
    main()
