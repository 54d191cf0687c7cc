"""Processes found and killed by pid *and* start time, never by name.

A pid alone can be reused by an unrelated process once ours is gone, so every
kill here checks the start time recorded with it (when there is one) and kills
the process group (netlets and nodes lead their own). Killing then waits for
all victims at once, not one by one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil


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


def kill_and_wait(victims: list[tuple[int, float | None]], timeout: float = 10.0) -> list[int]:
    """:func:`kill_recorded` each (pid, create_time), then wait for them together; returns the pids killed."""
    killed = [v for v in (kill_recorded(pid, ct) for pid, ct in victims) if v is not None]
    psutil.wait_procs(killed, timeout=timeout)
    return [p.pid for p in killed]


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


def processes_of(root: Path) -> list[psutil.Process]:
    """Processes working inside ``root`` (:func:`processes_under`) or naming a path inside it in their
    command line (a node's daemon names its home, an etcd its data directory); never this process."""
    root_s = str(Path(root).resolve())
    found = {p.pid: p for p in processes_under(root)}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(a == root_s or root_s + os.sep in a for a in (proc.info["cmdline"] or [])):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def kill_under(root: Path, timeout: float = 10.0) -> list[int]:
    """SIGKILL whatever still runs from ``root`` (:func:`processes_of`), by pid and start time; returns
    the pids killed (a harness that cleaned up after itself leaves none)."""
    victims = []
    for proc in processes_of(root):
        try:
            victims.append((proc.pid, proc.create_time()))
        except psutil.Error:  # gone meanwhile
            continue
    return kill_and_wait(victims, timeout)


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
