"""A process the node spawns for an app, from before its fork until its pidfd fires.

Two owners spawn such processes: the supervisor (a slot's netlet,
``hosting.supervisor``) and the bootstrapper (an app's bootstrap run,
``hosting.bootstrapper``). Both watch them on the supervisor's one
``PidWatcher``, whose thread takes the owners' locks to handle exits; so both
follow one life, and these functions are its steps (each called with the
owner's lock held):

  * Reserved: the owner puts the process's record (pid 0) where its "is one
    running" checks look *before* the fork, under its lock, then forks
    *outside* the lock, so no exit handling waits for a spawn.
  * :func:`arrived`: the fork returned; the record gets its pid and is watched.
    A record someone ended while it was being spawned is SIGKILLed at once.
  * :func:`end`: the first reason to end it is kept (the exit is reported with
    it) and its process group is signalled (a reservation: killed on arrival).
    Only its pidfd says it is gone.
  * :func:`gone`: its pidfd fired; its ``Popen`` learns the watcher reaped it.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

from hosting.pidwatch import Handler, PidWatcher, ProcessGone, describe_status, mark_reaped
from hosting.spawn import Spawned


class Watched(Protocol):
    """The record of a spawned process (``LiveNetlet``, ``BootstrapRun``)."""

    pid: int  # 0 while it is being spawned
    popen: Any
    end_reason: str | None  # why the node ended it (None: it ended on its own)


def arrived(watcher: PidWatcher, key: Any, proc: Watched, spawned: Spawned, on_exit: Handler | None = None) -> None:
    """``spawned`` is ``proc``'s process: watch it under ``key`` (reported to ``on_exit`` if
    given); killed at once if ``proc`` was ended while it was being spawned."""
    proc.pid, proc.popen = spawned.pid, spawned.popen
    try:
        watcher.watch(key, spawned.pid, is_child=True, on_exit=on_exit)
    except ProcessGone:
        pass  # cannot happen for an unreaped child; its record stays consistent anyway
    if proc.end_reason is not None:
        watcher.signal_group(key, signal.SIGKILL)


def end(watcher: PidWatcher, key: Any, proc: Watched, reason: str, sig: int = signal.SIGKILL) -> None:
    """End ``proc`` for ``reason`` (unless it was already ended for another): ``sig`` to its
    process group now, or SIGKILL on arrival if it is still being spawned."""
    proc.end_reason = proc.end_reason or reason
    watcher.signal_group(key, sig)


def gone(proc: Watched, status: Any) -> dict[str, Any]:
    """``proc``'s pidfd fired with ``status``: how it ended (``describe_status``)."""
    mark_reaped(proc.popen, status)
    return describe_status(status)
