"""When netlets start: a bounded number at once, apps without a master first.

Starting a netlet costs a Python interpreter's imports (about 0.3 s of CPU).
When a node refills many slots at once (every replica of every app killed,
the OOM killer, a reboot), starting them all together would eat every core
while the elections that need only the node run; and the apps that cannot
serve at all (no master) would wait behind those that can.

Contracts:
  * At most ``limit`` starts are *in flight*: from being picked until the
    netlet is ready (first renewal), gone, or the start started nothing.
  * Each pick takes the queued slot whose app has the lowest
    ``priority(app)`` now (evaluated at the pick: an app that got its master
    meanwhile moves back), then the app queued earliest (an app's slots start
    together: a warm start needs all of them), then the slot queued earliest.
  * A slot is queued at most once (a second request while it waits is the
    same request); a pick that finds the slot running already starts nothing.
  * ``start`` runs on a thread of its own, never on the caller's (the pid
    watcher, the timers), and neither it nor ``priority`` runs under the
    queue's lock (callers may submit while holding locks ``priority`` takes).

The seam for cheaper starts (forking a pre-imported template): a starter
whose starts cost little CPU just uses a larger ``limit``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


def default_limit() -> int:
    """Two starts per core: a start is mostly CPU (imports) but also waits (fsyncs of its
    recovery, its first renewal), and one per core left the cores idle in those waits (the
    50-app benchmark's replicas took three times as long to come back with one per core)."""
    return 2 * (os.cpu_count() or 1)


class StartQueue:
    def __init__(self, start: Callable[[str, str, str], str | None], priority: Callable[[str], Any],
                 limit: int | None = None) -> None:
        self._start = start
        self._priority = priority
        self.limit = limit or default_limit()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._queued: dict[tuple[str, str], tuple[int, str]] = {}  # (app, slot) -> (seq, mode)
        self._in_flight: set[object] = set()  # netlet ids (or a picking token until start returns)
        self._app_first: dict[str, int] = {}  # app -> seq of its first request still queued or being picked
        self._early: set[str] = set()  # finished while a start was running (maybe before it returned its id)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="jtrix-starts", daemon=True)
        self._thread.start()

    def submit(self, app: str, slot: str, mode: str) -> None:
        with self._cond:
            seq, _ = self._queued.setdefault((app, slot), (next(self._seq), mode))
            self._app_first.setdefault(app, seq)
            self._cond.notify_all()

    def finished(self, netlet_id: str) -> None:
        """``netlet_id`` is ready or gone: its place is free (unknown ids: nothing)."""
        with self._cond:
            if netlet_id in self._in_flight:
                self._in_flight.discard(netlet_id)
                self._cond.notify_all()
            elif any(not isinstance(f, str) for f in self._in_flight):
                self._early.add(netlet_id)

    def in_flight(self) -> int:
        with self._cond:
            return len(self._in_flight)

    def queued(self) -> list[tuple[str, str]]:
        with self._cond:
            return sorted(self._queued, key=lambda k: self._queued[k][0])

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not (self._queued and len(self._in_flight) < self.limit):
                    self._cond.wait()
                if self._stopped:
                    return
                apps = {app for app, _ in self._queued}
            # Outside the lock: the priority reads the node's state (its locks), while the node
            # submits to this queue holding some of them.
            priorities = {app: self._priority_of(app) for app in apps}
            with self._cond:
                if self._stopped or not self._queued or len(self._in_flight) >= self.limit:
                    continue
                key, mode = self._pick(priorities)
                token = object()
                self._in_flight.add(token)
            threading.Thread(target=self._run_start, args=(key, mode, token), daemon=True,
                             name=f"start-{key[0]}/{key[1]}").start()

    def _pick(self, priorities: dict[str, Any]) -> tuple[tuple[str, str], str]:
        """The next slot to start (caller holds the lock; the queue is not empty). An app queued
        since the priorities were read counts as first."""
        key = min(self._queued, key=lambda k: (priorities.get(k[0], 0), self._app_first[k[0]], self._queued[k][0]))
        mode = self._queued.pop(key)[1]
        if not any(app == key[0] for app, _ in self._queued):
            del self._app_first[key[0]]
        return key, mode

    def _priority_of(self, app: str) -> Any:
        try:
            return self._priority(app)
        except Exception:
            log.exception("start priority of %s", app)
            return 0

    def _run_start(self, key: tuple[str, str], mode: str, token: object) -> None:
        netlet_id = None
        try:
            netlet_id = self._start(key[0], key[1], mode)
        except Exception:
            log.exception("starting %s/%s failed", *key)
        with self._cond:
            self._in_flight.discard(token)
            if netlet_id is not None and netlet_id not in self._early:
                self._in_flight.add(netlet_id)
            self._early.discard(netlet_id)
            if all(isinstance(f, str) for f in self._in_flight):
                self._early.clear()  # no start is running: no id can arrive late any more
            self._cond.notify_all()
