"""Options and helpers shared by the ``jtrix`` subcommands and ``jtrix-launch``."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from hosting.home import default_home
from warrants import names
from warrants.errors import BadInput

# The hosting API's own call timeout is 10 s; blocking calls (terminate, long
# polls) need a client whose timeout is longer than the wait they ask for.
EVENT_POLL_S = 5.0
LOG_TAIL_CHUNK = 64 * 1024


def resolve_home(home: str | None) -> Path:
    return Path(home).expanduser().resolve() if home else default_home().resolve()


home_option = click.option("--home", "home", type=click.Path(file_okay=False), default=None,
                           envvar="JTRIX_HOME", show_envvar=True,
                           help="The hosting node's home directory (default ~/.jtrix).")
warrant_option = click.option("--warrant", "warrant", type=click.Path(dir_okay=False), default=None,
                              help="Act with this warrant instead of the node's admin warrant.")
key_option = click.option("--key", "key", type=click.Path(dir_okay=False), default=None,
                          help="Private key proving possession of --warrant's holder.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


#: ``jtrix --host URI``: the node to talk to instead of the home's own (set by the group)
target_host: str | None = None


def check_pyro_uri(uri: str, option: str = "--host") -> str:
    """``uri`` if it parses as a Pyro URI; BadInput (exit 2) naming ``option`` otherwise."""
    from Pyro5.core import URI
    from Pyro5.errors import PyroError

    try:
        URI(uri)
    except PyroError as err:
        raise BadInput(f"{option}: {uri!r} is not a Pyro URI ({err})") from None
    return uri


def client_for(home: str | None, warrant: str | None = None, key: str | None = None,
               timeout: float | None = None):
    """A hosting client of the node of ``home`` — or of ``jtrix --host URI`` — acting with the
    home's admin warrant or ``warrant`` (NotFound, exit 3, when no node runs)."""
    from rpc import wire
    from hosting.client import HostingClient

    return HostingClient.for_home(resolve_home(home), Path(warrant) if warrant else None,
                                  Path(key) if key else None, timeout=timeout or wire.CALL_TIMEOUT_S,
                                  uri=check_pyro_uri(target_host) if target_host else None)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo_ndjson(data: Any) -> None:
    """One compact JSON document on one line (flushed: followers read it at once)."""
    click.echo(json.dumps(data, sort_keys=True, default=str, separators=(",", ":")))
    sys.stdout.flush()


def stdout_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def clock(ts: float | None = None, date: bool = False) -> str:
    """Local wall-clock time of ``ts`` (default now): ``HH:MM:SS.mmm`` (with the date if asked)."""
    t = dt.datetime.fromtimestamp(ts if ts is not None else dt.datetime.now().timestamp())
    return t.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]


def parse_netlet(target: str, allow_bootstrap: bool = False) -> tuple[str, str]:
    """``APP/TYPE/INDEX`` -> ``(APP, "TYPE/INDEX")``; BadInput (exit 2) otherwise.

    With ``allow_bootstrap``, ``APP/bootstrap`` (a custom bootstrap's log) is accepted too.
    """
    app, sep, slot = target.partition("/")
    try:
        return names.check_app(app), names.check_slot(slot, allow_bootstrap=allow_bootstrap)
    except BadInput:
        raise BadInput(f"expected APP/TYPE/INDEX (e.g. kvstore/store/0), got {target!r}") from None


def describe_exit(last_exit: dict | None) -> str:
    """A short human form of a status ``last_exit`` record."""
    if not last_exit:
        return ""
    reason = str(last_exit.get("reason") or "exited")
    parts = [reason]
    if last_exit.get("signal") and str(last_exit["signal"]) not in reason:
        parts.append(str(last_exit["signal"]))
    if last_exit.get("exit_code") is not None:
        parts.append(f"code {last_exit['exit_code']}")
    fault = last_exit.get("fault") or {}
    if fault.get("kind") == "storage.corrupt":
        parts.append(f"corrupt {fault.get('file')} at {fault.get('offset')}")
    elif fault.get("kind") == "storage.error":
        parts.append(f"storage {fault.get('errno_name')} ({fault.get('op')})")
    elif fault.get("error"):
        parts.append(str(fault["error"]))
    return ", ".join(parts)


def tail_log(client, app: str, slot: str, lines: int, previous: bool = False) -> tuple[list[str], dict | None]:
    """The last ``lines`` lines of a netlet's log and the last chunk read (None: no such log)."""
    from warrants.errors import NotFound

    size = LOG_TAIL_CHUNK
    while True:
        try:
            chunk = client.call("logs", app, slot, previous, -1, size)
        except NotFound:
            return [], None
        data = bytes(chunk["data"])
        text = data.decode("utf-8", errors="replace")
        got = text.splitlines()
        start = chunk["offset"] - len(data)
        if start == 0 or len(got) > lines or size >= 1024 * 1024:
            if start > 0 and got:
                got = got[1:]  # the first line of a chunk that starts mid-file is partial
            return (got[-lines:] if lines > 0 else []), chunk
        size *= 4


# -- shell completion (best effort: never raises, never blocks long) ---------
def _completion_status(ctx: click.Context) -> dict:
    try:
        home = ctx.params.get("home") or os.environ.get("JTRIX_HOME")
        return client_for(home, timeout=2.0).call("status")
    except Exception:
        return {"apps": []}


def complete_app(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [a["name"] for a in _completion_status(ctx)["apps"] if a["name"].startswith(incomplete)]


def complete_netlet(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    names = [f"{a['name']}/{n['slot']}" for a in _completion_status(ctx)["apps"] for n in a["netlets"]]
    return [n for n in names if n.startswith(incomplete)]
