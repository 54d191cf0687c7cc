"""A real hosting node in a temporary home, cleaned up by pid.

:func:`start_node` starts a node daemon on a home of its own, on an ephemeral
loopback port (joined to a cluster when given its etcd URL), and returns a
:class:`RunningNode`: the home, a client, and helpers to launch apps and read
their status and events. :func:`cleanup_node` SIGKILLs (by process group, if
still alive) the node itself and every process it ever started (read from its
registry, matched by pid *and* start time), so nothing survives a test or a
benchmark.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import warrants
from hosting.client import HostingClient
from hosting.daemon import is_node_process, read_node_info, start_background
from testkit.procs import kill_recorded, processes_under
from testkit.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
JTRIX = [str(Path(sys.executable).parent / "jtrix")]  # the installed console script


def descriptor_xml(name: str, netlets: str, codebase: Path = APPS / "workers", lease: str = 'ttl="1.0" grace="1.0"',
                   restart: str = "", replication: str = "") -> str:
    parts = [f'<app xmlns="urn:jtrix:descriptor:1" name="{name}">', f'  <codebase path="{codebase}"/>',
             f"  <lease {lease}/>"]
    if restart:
        parts.append(f"  <restart {restart}/>")
    if replication:
        parts.append(f"  <replication {replication}/>")
    parts += [netlets, "</app>"]
    return "\n".join(parts)


@dataclass
class RunningNode:
    home: Path
    client: HostingClient
    extra_pids: list = field(default_factory=list)

    @property
    def info(self) -> dict:
        return read_node_info(self.home)

    def launch(self, xml: str, tmp: Path, start: bool = True) -> dict:
        path = tmp / f"desc-{time.monotonic_ns()}.xml"
        path.write_text(xml)
        d = warrants.load_descriptor(path)
        data, sha = warrants.package_codebase(d)
        self.client.call("upload_codebase", data, sha)
        return self.client.call("submit_app", path.read_bytes(), str(path), sha, False, start)

    def app(self, app: str) -> dict:
        return self.client.call("status", app)["apps"][0]

    def slot(self, app: str, slot: str) -> dict:
        return next(n for n in self.app(app)["netlets"] if n["slot"] == slot)

    def wait_running(self, app: str, timeout: float = 20.0) -> dict:
        def ready():
            a = self.app(app)
            return a if all(n["state"] == "running" and n["phase"] == "running" for n in a["netlets"]) else None
        return wait_for(ready, timeout, f"every netlet of {app} running")

    def events(self, since: int = 0, app: str | None = None) -> list[dict]:
        return self.client.call("events", since, app)

    def jtrix(self, *args: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
        env = {**os.environ, "JTRIX_HOME": str(self.home)}
        return subprocess.run([*JTRIX, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)

    def recorded_pids(self) -> list[tuple[int, float]]:
        db = sqlite3.connect(str(self.home / "registry.sqlite"))
        try:
            return [(r[0], r[1]) for r in db.execute("SELECT pid, create_time FROM netlets WHERE pid IS NOT NULL")]
        except sqlite3.Error:
            return []
        finally:
            db.close()

    def app_secret(self, app: str) -> bytes:
        """The app's secret, opened from the registry with the home's key (it is sealed there)."""
        from hosting.secretbox import SecretBox

        db = sqlite3.connect(str(self.home / "registry.sqlite"))
        try:
            sealed = db.execute("SELECT secret FROM apps WHERE name=?", (app,)).fetchone()[0]
        finally:
            db.close()
        return SecretBox(self.home / "secrets.key").open(app, sealed)


def start_node(home: Path, **options) -> RunningNode:
    """Start a node daemon on ``home`` (``options``: those of :func:`hosting.daemon.start_background`,
    e.g. ``cluster`` and ``name`` to join one) and return it once it answers."""
    start_background(home, **options)
    return RunningNode(home, HostingClient.for_home(home))


def cleanup_node(node: RunningNode) -> None:
    """Kill the node first (so it cannot start replacements), then every netlet it ever recorded."""
    info = node.info or {}
    node_pid = info.get("pid")
    if node_pid and is_node_process(node_pid, node.home):
        victim = kill_recorded(node_pid, None)
        if victim is not None:
            psutil.wait_procs([victim], timeout=5)
    victims = [kill_recorded(pid, ct) for pid, ct in node.recorded_pids() + list(node.extra_pids)]
    victims += [kill_recorded(p.pid, p.create_time()) for p in processes_under(node.home)]
    psutil.wait_procs([v for v in victims if v is not None], timeout=10)  # all at once, not one by one
    node.client.close()


def kill_node_with_its_netlets(node: RunningNode) -> None:
    """SIGKILL a node's daemon and every process it runs, as a machine dying would."""
    victims = [kill_recorded(node.info["pid"], None)]
    victims += [kill_recorded(pid, ct) for pid, ct in node.recorded_pids()]
    victims += [kill_recorded(p.pid, p.create_time()) for p in processes_under(node.home)]
    psutil.wait_procs([v for v in victims if v is not None], timeout=10)


def master_of(app: dict) -> dict:
    """The master's entry in an app's status (``app["master"]`` must be set)."""
    return next(n for n in app["netlets"] if n["slot"] == app["master"])


def events_since(node: RunningNode, since: int = 0, app: str | None = None) -> list[dict]:
    """Every event (of ``app``, or all) after index ``since``: the node answers at most 1000 per call."""
    out: list[dict] = []
    while batch := node.events(since, app):
        out += batch
        since = batch[-1]["index"]
    return out


def events_of(node: RunningNode, kind: str, app: str | None = None) -> list[dict]:
    return [e for e in node.events(0, app) if e["kind"] == kind]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
