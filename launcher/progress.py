"""How a launch (and ``jtrix status``) shows an app's netlets.

Three renderers of the same stream of status snapshots (the ``status`` API's
per-app view):

* ``LiveProgress``: a rich Live table (slot, type, pid, state, role, ...) that
  redraws in place — for a terminal.
* ``PlainProgress``: one timestamped line per change of a netlet (pid, state,
  phase, role) or of the master — for logs and pipes.
* ``SilentProgress``: nothing (``--json``: the caller prints one result).

:func:`app_table` is the shared rich table, also used by ``jtrix status``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from launcher.common import clock, describe_exit


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def netlet_state(n: dict) -> str:
    """``state`` with the netlet's own phase when it differs (``running/starting``), and backoff delays."""
    state = n.get("state") or "-"
    phase = n.get("phase")
    if phase and phase != state and state == "running":
        state = f"{state}/{phase}"
    if n.get("next_attempt_s") is not None:
        state = f"{state} (retry in {n['next_attempt_s']:.1f}s)"
    return state


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return "-"


def app_header(app: dict) -> str:
    return (f"[bold]{app['name']}[/]  {app.get('state', '')}  epoch {_dash(app.get('epoch'))}"
            f"  master {_dash(app.get('master'))}")


def app_table(app: dict, full: bool = False, title: str | None = None):
    """A rich Table of the app's netlets (titled ``title`` if given); ``full`` adds epoch/seq/lease/uptime/cpu/rss."""
    from rich.table import Table

    master = app.get("master")
    table = Table(title=title, title_justify="left", expand=False)
    cols = ["slot", "type", "pid", "state", "role", "restarts", "last exit"]
    if full:
        cols[6:6] = ["epoch", "seq", "lease ms", "uptime s", "cpu %", "rss"]
    for c in cols:
        table.add_column(c, justify="right" if c in ("pid", "restarts", "epoch", "seq", "lease ms",
                                                      "uptime s", "cpu %", "rss") else "left")
    for n in app.get("netlets", []):
        role = n.get("role")
        if master and n["slot"] == master:
            role = f"[bold green]{role or 'master'}[/]"
        state = netlet_state(n)
        if n.get("state") in ("backoff", "failed", "corrupt"):
            state = f"[red]{state}[/]"
        elif n.get("state") == "running" and n.get("phase") == "running":
            state = f"[green]{state}[/]"
        row = [n["slot"], _dash(n.get("type")), _dash(n.get("pid")), state, _dash(role),
               _dash(n.get("restarts")), describe_exit(n.get("last_exit")) or "-"]
        if full:
            row[6:6] = [_dash(n.get("epoch")), _dash(n.get("seq")), _dash(n.get("lease_ms")),
                        _num(n.get("uptime_s")), _num(n.get("cpu_percent")), _bytes(n.get("rss_bytes"))]
        table.add_row(*row)
    return table


class SilentProgress:
    def note(self, text: str) -> None:
        pass

    def update(self, app: dict, elapsed: float) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress(SilentProgress):
    """One timestamped line per change."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.seen: dict[str, tuple] = {}
        self.master: str | None = None

    def _line(self, text: str) -> None:
        click.echo(f"{clock()}  {text}", file=self.out)
        self.out.flush()

    def note(self, text: str) -> None:
        self._line(text)

    def update(self, app: dict, elapsed: float) -> None:
        for n in app.get("netlets", []):
            key = (n.get("pid"), n.get("state"), n.get("phase"), n.get("role"))
            if self.seen.get(n["slot"]) != key:
                self.seen[n["slot"]] = key
                extra = f"  last exit: {describe_exit(n['last_exit'])}" \
                    if n.get("state") in ("backoff", "failed", "restarting") and n.get("last_exit") else ""
                self._line(f"{n['slot']:<12} pid {_dash(n.get('pid')):>7}  {netlet_state(n):<20} "
                           f"role {_dash(n.get('role'))}{extra}")
        master = app.get("master")
        if master != self.master:
            self._line(f"master: {master} (epoch {_dash(app.get('epoch'))})" if master else "master: none")
            self.master = master


class LiveProgress(SilentProgress):
    """A rich Live table redrawn in place (terminal only)."""

    def __init__(self, app_name: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.app_name = app_name
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{clock()}[/]  {text}")

    def update(self, app: dict, elapsed: float) -> None:
        title = (f"[bold]{app['name']}[/]  {elapsed:5.1f}s  epoch {_dash(app.get('epoch'))}  "
                 f"master {_dash(app.get('master'))}")
        self.live.update(app_table(app, title=title), refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_progress(app_name: str, as_json: bool) -> SilentProgress:
    from launcher.common import stdout_is_terminal

    if as_json:
        return SilentProgress()
    if stdout_is_terminal():
        return LiveProgress(app_name)
    return PlainProgress()
