"""Test harness: a real hosting node in a temporary home, cleaned up by pid.

Every test that uses ``node`` gets its own ``JTRIX_HOME`` and node process on
an ephemeral loopback port; at teardown every process the node ever started
(read from its registry, matched by pid *and* start time) and the node itself
are SIGKILLed by process group if still alive, so nothing survives a test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

import warrants
from hosting.client import HostingClient
from hosting.daemon import is_node_process, read_node_info, start_background

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
JTRIX = [str(Path(sys.executable).parent / "jtrix")]  # the installed console script


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:  # the condition may not be observable yet
            last_err = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))


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


def kill_recorded(pid: int, create_time: float | None) -> psutil.Process | None:
    """SIGKILL ``pid``'s process group if ``pid`` is still the process we recorded; returns it to wait on."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        return proc
    except psutil.NoSuchProcess:
        return None


def start_node(home: Path) -> RunningNode:
    start_background(home)
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


def processes_under(home: Path) -> list[psutil.Process]:
    """Processes whose working directory is inside ``home`` (netlets run in their slot directory).

    Catches a netlet the node spawned but had not yet recorded when the test killed it.
    """
    root = str(Path(home).resolve())
    found = []
    for proc in psutil.process_iter():
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.append(proc)
    return found


@pytest.fixture
def node(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("JTRIX_HOME", str(home))
    running = start_node(home)
    try:
        yield running
    finally:
        cleanup_node(running)


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists at all (a zombie still exists)."""
    return not psutil.pid_exists(pid)


def process_dead(pid: int) -> bool:
    """True once ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def node_children_zombies(node_pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(node_pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def events_of(node: RunningNode, kind: str, app: str | None = None) -> list[dict]:
    return [e for e in node.events(0, app) if e["kind"] == kind]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
