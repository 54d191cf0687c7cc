"""``jtrix status|events|logs|terminate|kill|reset``: inspect and stop running apps.

Every command takes ``--home`` (which node) and ``--warrant``/``--key`` (act
with a warrant other than the admin one). Errors are ``JtrixError``s mapped to
exit codes by ``launcher.cli.run_cli``: an unknown app or netlet is exit 3, a
node that is not running is exit 3, a malformed argument is exit 2.
"""

from __future__ import annotations

import time

import click

from launcher.common import (EVENT_POLL_S, client_for, clock, complete_app, complete_netlet, echo_json,
                             echo_ndjson, home_option, json_option, key_option, parse_netlet, stdout_is_terminal,
                             tail_log, warrant_option)
from warrants.errors import JtrixError, NotFound

EVENT_PAGE = 1000  # the node returns at most this many events per call


# -- status --------------------------------------------------------------------
def render_status(data: dict, console) -> None:
    from launcher.progress import app_header, app_table

    if not data["apps"]:
        console.print("no apps")
        return
    for app in data["apps"]:
        console.print(app_header(app))
        console.print(app_table(app, full=True))


def _console():
    from rich.console import Console

    return Console() if stdout_is_terminal() else Console(width=200, no_color=True)


@click.command("status")
@click.argument("app", required=False, shell_complete=complete_app)
@home_option
@warrant_option
@key_option
@json_option
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between redraws with --watch.")
def status(app, home, warrant, key, as_json, watch, interval) -> None:
    """Apps and their netlets (APP: only that app; unknown APP exits 3).

    With --json the shape is {"apps": [{"name", "state", "epoch", "master",
    "netlets": [{"slot", "type", "node", "pid", "state", "role", "epoch",
    "seq", "restarts", "last_exit", "lease_ms", "uptime_s", "cpu_percent",
    "rss_bytes", ...}]}]}; with --json --watch, one such document per line.
    """
    client = client_for(home, warrant, key)
    data = client.call("status", app)
    if not watch:
        echo_json(data) if as_json else render_status(data, _console())
        return
    try:
        if as_json:
            while True:
                echo_ndjson({"time": time.time(), **data})
                time.sleep(interval)
                data = client.call("status", app)
        elif stdout_is_terminal():
            from rich.console import Group
            from rich.live import Live

            from launcher.progress import app_header, app_table

            def view(d):
                head = f"[dim]{clock()}  every {interval:g}s, Ctrl-C to stop[/]"
                tables = [app_table(a, full=True, title=app_header(a)) for a in d["apps"]]
                return Group(head, *(tables or ["no apps"]))

            with Live(view(data), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    data = client.call("status", app)
                    live.update(view(data), refresh=True)
        else:
            console = _console()
            while True:
                console.print(f"--- {clock()}")
                render_status(data, console)
                time.sleep(interval)
                data = client.call("status", app)
    except KeyboardInterrupt:
        return


# -- events --------------------------------------------------------------------
def format_event(e: dict) -> str:
    detail = " ".join(f"{k}={v}" for k, v in sorted((e.get("detail") or {}).items()))
    where = "/".join(x for x in (e.get("app"), e.get("slot")) if x) or "-"
    node = f"{e['node']:<8} " if e.get("node") else ""
    return f"{clock(e['time'], date=True)}  #{e['index']:<6} {node}{where:<20} {e['kind']:<18} {detail}".rstrip()


@click.command("events")
@click.argument("app", required=False, shell_complete=complete_app)
@home_option
@warrant_option
@key_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--since", default=0, show_default=True, type=click.IntRange(min=0),
              help="Only events with an index greater than N.", metavar="N")
@click.option("--node", "node_only", is_flag=True,
              help="In a cluster: only the asked node's own log (its own indexes).")
@json_option
def events(app, home, warrant, key, follow, since, node_only, as_json) -> None:
    """The event log (APP: only that app's events), oldest first.

    In a cluster: every node's events, each naming its node, indexed by etcd
    revision (--node: only the asked node's). Each event has an index, time,
    app, slot, kind and detail; --json prints one JSON object per line (ndjson).
    """
    client = client_for(home, warrant, key, timeout=EVENT_POLL_S + 10)
    emit = echo_ndjson if as_json else (lambda e: click.echo(format_event(e)))
    scope = "node" if node_only else "cluster"
    try:
        while True:  # the backlog, page by page
            page = client.call("events", since, app, 0.0, scope)
            for e in page:
                emit(e)
            if page:
                since = page[-1]["index"]
            if len(page) < EVENT_PAGE:
                break
        while follow:
            for e in client.call("events", since, app, EVENT_POLL_S, scope):
                emit(e)
                since = e["index"]
    except KeyboardInterrupt:
        return


# -- logs ----------------------------------------------------------------------
def _write(data: bytes) -> None:
    click.echo(bytes(data).decode("utf-8", errors="replace"), nl=False)


def follow_log(client, app: str, slot: str, path: str, offset: int, poll: float = 0.25) -> None:
    """Print what is appended to the log; when the netlet is replaced, finish its file and go on with the new one."""
    while True:
        try:
            chunk = client.call("logs", app, slot, False, offset, 65536)
        except NotFound:  # no log yet (slot between runs)
            time.sleep(poll)
            continue
        if chunk["path"] != path:
            try:  # drain the end of the file we were reading, now the previous run
                old = client.call("logs", app, slot, True, offset, 1024 * 1024)
                if old["path"] == path:
                    _write(old["data"])
            except NotFound:
                pass
            path, offset = chunk["path"], 0
            click.echo(f"--- {app}/{slot}: new run, {path} ---")
            continue
        if chunk["data"]:
            _write(chunk["data"])
            offset = chunk["offset"]
        else:
            time.sleep(poll)


@click.command("logs")
@click.argument("netlet", metavar="APP/SLOT|APP/bootstrap", shell_complete=complete_netlet)
@home_option
@warrant_option
@key_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output (across replacements) until Ctrl-C.")
@click.option("--previous", "-p", is_flag=True, help="The log of the slot's previous run (the one that died).")
@click.option("--lines", "-n", "lines", default=50, show_default=True, type=click.IntRange(min=0),
              help="Print the last N lines.")
def logs(netlet, home, warrant, key, follow, previous, lines) -> None:
    """The output (stdout and stderr) of the netlet in APP/SLOT, e.g. kvstore/store/0."""
    app, slot = parse_netlet(netlet, allow_bootstrap=True)
    if follow and previous:
        raise click.UsageError("--follow and --previous cannot be combined")
    client = client_for(home, warrant, key)
    got, chunk = tail_log(client, app, slot, lines, previous)
    if chunk is None:
        client.call("status", app)  # unknown app: NotFound (exit 3) naming it
        if not follow:
            raise NotFound(f"no {'previous ' if previous else ''}log for {app}/{slot}")
    for line in got:
        click.echo(line)
    if follow:
        try:
            follow_log(client, app, slot, chunk["path"] if chunk else "", chunk["offset"] if chunk else 0)
        except KeyboardInterrupt:
            return


# -- terminate / kill --------------------------------------------------------------
@click.command("terminate")
@click.argument("app", shell_complete=complete_app)
@home_option
@warrant_option
@key_option
@click.option("--grace", default=None, type=click.FloatRange(min=0), metavar="S",
              help="Seconds between SIGTERM and SIGKILL (default: the descriptor's lease grace).")
@click.option("--force", is_flag=True, help="No grace period: SIGKILL at once (same as --grace 0).")
@click.option("--wait", "wait_s", default=60.0, show_default=True, type=click.FloatRange(min=1, max=600),
              metavar="S", help="Fail (exit 1) if processes remain after S seconds.")
def terminate(app, home, warrant, key, grace, force, wait_s) -> None:
    """Stop every netlet of APP and forget the app; returns when every process is gone."""
    if force:
        grace = 0.0
    status_client = client_for(home, warrant, key)
    netlets = status_client.call("status", app)["apps"][0]["netlets"]  # unknown app: exit 3
    live = [n for n in netlets if n.get("pid")]
    started = time.monotonic()
    client = client_for(home, warrant, key, timeout=wait_s + (grace or 0) + 15)
    if not client.call("terminate", app, grace, wait_s):
        raise JtrixError(f"{app}: processes still running after {wait_s:g}s")
    click.echo(f"{app} terminated: {len(live)} netlet(s) stopped in {time.monotonic() - started:.1f}s")


@click.command("kill")
@click.argument("netlet", metavar="APP/SLOT", shell_complete=complete_netlet)
@home_option
@warrant_option
@key_option
@click.option("--signal", "-s", "signame", default="KILL", show_default=True,
              type=click.Choice(["KILL", "TERM", "STOP", "CONT"], case_sensitive=False),
              help="The signal to send.")
def kill(netlet, home, warrant, key, signame) -> None:
    """Send a signal to the netlet in APP/SLOT (the node replaces it if it dies)."""
    app, slot = parse_netlet(netlet)
    client = client_for(home, warrant, key)
    netlet_id = client.call("signal", app, slot, signame.upper())
    click.echo(f"sent SIG{signame.upper()} to {app}/{slot} ({netlet_id})")


@click.command("reset")
@click.argument("netlet", metavar="APP/SLOT", shell_complete=complete_netlet)
@home_option
@warrant_option
@key_option
def reset(netlet, home, warrant, key) -> None:
    """Rebuild the backup in APP/SLOT from the master: wipe its replica storage, restart it.

    For a slot whose storage is corrupt (or suspected to be). Needs the kill right;
    the master itself cannot be reset. The replica rejoins empty and catches up."""
    app, slot = parse_netlet(netlet)
    client = client_for(home, warrant, key)
    stopped = client.call("reset", app, slot)
    click.echo(f"reset {app}/{slot}: replica storage wiped" + (f" ({stopped} stopped)" if stopped else "")
               + "; it restarts and catches up from the master")


# `jtrix call APP METHOD` lives in launcher/cli_call.py (access points).
COMMANDS = [status, events, logs, terminate, kill, reset]
