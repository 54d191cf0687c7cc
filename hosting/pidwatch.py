"""Instant process-exit notification with pidfds.

A pidfd refers to one process for its whole life: it cannot be confused with a
later process that reuses the pid. The watcher polls all pidfds with epoll on
one thread and reports each watched process's end as soon as it happens
(microseconds to a millisecond after its death).

Contracts:
  * ``status`` is the ``os.waitid`` result for processes that are our children
    (the watcher reaps them, so no zombie is left), or ``None`` for adopted
    processes that are not our children (their parent reaps them).
  * Every ``watch`` is reported exactly once, on the watcher thread: either to
    ``on_exit(key, status)`` one by one, or to ``on_exits([(key, status), ...])``
    with *every* exit one epoll wakeup found (a batch: processes killed together
    are reaped together and their handler pays its fixed costs -- locks,
    transactions -- once per batch, not once per death). A ``watch`` given its
    own ``on_exit`` is reported to that handler alone, so one watcher (one
    thread) serves processes of different owners, each to its own handler.
    Handlers run one after another on that thread: none may wait for anything
    slow (a spawn, a lock held across one), or every other exit waits too.
  * ``signal(key, sig)`` never reaches a process other than the watched one.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal as _signal
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

#: ``on_exit(key, status)``
Handler = Callable[[Any, Any], None]


class ProcessGone(Exception):
    """The process to watch no longer exists."""


class PidWatcher:
    """epoll over pidfds; one daemon thread."""

    def __init__(self, on_exit: Handler | None = None,
                 on_exits: Callable[[list[tuple[Any, Any]]], None] | None = None) -> None:
        if (on_exit is None) == (on_exits is None):
            raise TypeError("give exactly one of on_exit, on_exits")
        self._on_exits = on_exits or (lambda batch: _each(on_exit, batch))
        self._epoll = select.epoll()
        self._by_fd: dict[int, tuple[Any, int, bool, Handler | None]] = {}  # fd -> (key, pid, is_child, own)
        self._fd_by_key: dict[Any, int] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="jtrix-pidwatch", daemon=True)
        self._thread.start()

    def watch(self, key: Any, pid: int, is_child: bool, on_exit: Handler | None = None) -> int:
        """Start watching ``pid`` under ``key``; returns the pidfd. Raises ProcessGone.
        ``on_exit``: this process's end is reported to it, not to the watcher's handler."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError as err:
            raise ProcessGone(pid) from err
        with self._lock:
            self._by_fd[fd] = (key, pid, is_child, on_exit)
            self._fd_by_key[key] = fd
            self._epoll.register(fd, select.EPOLLIN)
        return fd

    def signal(self, key: Any, sig: int) -> bool:
        """Send ``sig`` to the watched process of ``key``; False if not watched or gone."""
        with self._lock:
            fd = self._fd_by_key.get(key)
            if fd is None:
                return False
            try:
                _signal.pidfd_send_signal(fd, sig)
                return True
            except ProcessLookupError:
                return False

    def signal_group(self, key: Any, sig: int) -> bool:
        """Send ``sig`` to the process group led by the watched process.

        Safe against pid reuse: the group id is only used while the leader is
        alive or an unreaped zombie (checked through its pidfd under the lock).
        """
        with self._lock:
            fd = self._fd_by_key.get(key)
            if fd is None:
                return False
            _, pid, _, _ = self._by_fd[fd]
            try:
                _signal.pidfd_send_signal(fd, 0)
            except ProcessLookupError:
                return False
            try:
                os.killpg(pid, sig)
                return True
            except ProcessLookupError:
                return False

    def is_watched(self, key: Any) -> bool:
        with self._lock:
            return key in self._fd_by_key

    def stop(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            exits = [exit for fd, _ in events if fd != self._wake_r and (exit := self._reap(fd)) is not None]
            for key, status, own in exits:
                if own is not None:
                    _each(own, [(key, status)])
            batch = [(key, status) for key, status, own in exits if own is None]
            if not batch:
                continue
            try:
                self._on_exits(batch)
            except Exception:
                log.exception("exit callback failed for %s", [key for key, _ in batch])

    def _reap(self, fd: int) -> tuple[Any, Any, Handler | None] | None:
        """Stop watching ``fd`` (its process ended) and reap it if it is our child:
        (key, status, the watch's own handler or None)."""
        with self._lock:
            entry = self._by_fd.pop(fd, None)
            if entry is None:
                return None
            key, pid, is_child, own = entry
            self._fd_by_key.pop(key, None)
            self._epoll.unregister(fd)
            status = None
            if is_child:
                # Kill stragglers of the group while the zombie still pins the pgid.
                try:
                    os.killpg(pid, _signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    status = os.waitid(os.P_PIDFD, fd, os.WEXITED)
                except ChildProcessError:
                    status = None
                except OSError as err:
                    if err.errno != errno.ECHILD:
                        raise
            os.close(fd)
        return key, status, own


def _each(on_exit: Handler, batch: list[tuple[Any, Any]]) -> None:
    for key, status in batch:
        try:
            on_exit(key, status)
        except Exception:
            log.exception("on_exit callback failed for %s", key)


def mark_reaped(popen: Any, status: Any) -> None:
    """Tell ``subprocess`` that the watcher reaped ``popen``'s child, so it never waits on the pid again."""
    if popen is not None and status is not None:
        popen.returncode = status.si_status if status.si_code == os.CLD_EXITED else -status.si_status


def describe_status(status: Any) -> dict[str, Any]:
    """Turn a waitid result into ``{"exit_code": n}`` / ``{"signal": "SIGKILL"}`` / ``{"unknown": True}``."""
    if status is None:
        return {"unknown": True}
    if status.si_code == os.CLD_EXITED:
        return {"exit_code": status.si_status}
    try:
        name = _signal.Signals(status.si_status).name
    except ValueError:
        name = str(status.si_status)
    return {"signal": name}
