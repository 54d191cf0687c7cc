"""Store-dependent work that outlives a store outage: retried, in order, never dropped.

The node's stores (the SQLite registry; in a cluster, etcd behind the arbiter and the
incarnation counters) can fail for a while without anyone's fault but theirs: "database
is locked", a full disk, an etcd timeout. What the supervisor must do after a netlet
exits (record it, tell the election policy, decide the restart) and when it starts one
cannot be abandoned halfway because of that: a slot whose restart decision was lost
stays empty forever.

Contracts of :class:`StoreRetry`:

* ``run(key, steps)`` runs ``steps`` (callables) in order. Each runs until it returns;
  a step that raised a store error (``STORE_ERRORS``) is run again — never one that
  already returned — after a jittered exponential backoff (tenacity's "full jitter":
  uniform in [0, min(cap_s, initial_s * 2**attempt)]). Nothing is given up while the retrier runs (``close`` ends it). A step
  must therefore be safe to run again after it raised a store error (its writes are
  idempotent, or it wrote nothing before it failed).
* Per ``key`` the work runs in submission order: a later ``run`` for the same key
  starts only after every earlier one's steps have all returned (so, for a slot, a
  netlet's start is recorded before its exit, and its exit before the next start).
* ``run`` runs its own steps on the caller's thread when the key is idle, and
  returns once they are done, or as soon as one fails for the store's fault: the
  rest, and whatever was queued behind them meanwhile, continues on a thread of the
  retrier's own. So the common case costs nothing, the caller (the pid watcher, a
  timer) is never held in a backoff, and never runs another caller's work (a start
  queued behind an exit does not spawn on the pid watcher's thread).
* An outage is visible: once a key's work has been failing for ``visible_after_s``
  seconds (from the start of the first failed attempt: a store that blocks before it
  fails counts), ``on_down(key, error)`` is called (once per outage); when its work completes
  after that, ``on_recovered(key, attempts, seconds, error)``.
* An exception that is not a store error is a bug of the step, not the store's
  fault: it is logged and the step counts as done (the rest still runs).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from hosting.election.arbiter import StoreConflict, StoreUnavailable
from hosting.cluster.etcd import EtcdUnavailable

log = logging.getLogger(__name__)

#: failures of a store, retryable (the registry's SQLite errors: locked, disk I/O, full)
STORE_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, StoreConflict, EtcdUnavailable,
                                                  sqlite3.OperationalError)

Step = Callable[[], Any]


class _Closed(Exception):
    """The retrier was closed while work waited (the node is shutting down)."""


@dataclass
class _Outage:
    since: float
    attempts: int = 0
    error: BaseException | None = None
    reported: bool = False


@dataclass
class _Queue:
    steps: collections.deque = field(default_factory=collections.deque)
    busy: bool = False  # a thread is running this key's steps
    outage: _Outage | None = None


class StoreRetry:
    def __init__(self, *, on_down: Callable[[Hashable, BaseException], None] = lambda key, err: None,
                 on_recovered: Callable[[Hashable, int, float, BaseException], None]
                 = lambda key, attempts, seconds, err: None,
                 initial_s: float = 0.05, cap_s: float = 2.0, visible_after_s: float = 1.0) -> None:
        self.on_down = on_down
        self.on_recovered = on_recovered
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.visible_after_s = visible_after_s
        self._lock = threading.Lock()
        self._queues: dict[Hashable, _Queue] = {}
        self._closed = threading.Event()

    def run(self, key: Hashable, steps: Iterable[Step]) -> None:
        """Queue ``steps`` for ``key`` and run the key's queue here until it is empty or a
        step fails for the store's fault (see the module docstring)."""
        with self._lock:
            q = self._queues.setdefault(key, _Queue())
            steps = list(steps)
            q.steps.extend(steps)
            if q.busy or not q.steps:
                return  # whoever runs the key's queue runs these after the earlier ones
            q.busy = True
        self._drain(key, q, inline=len(steps))

    def pending(self, key: Hashable) -> bool:
        """Whether work for ``key`` is queued or running."""
        with self._lock:
            q = self._queues.get(key)
            return q is not None and (q.busy or bool(q.steps))

    def down(self, key: Hashable) -> str | None:
        """The store error ``key``'s work is waiting out, if it has been failing visibly."""
        with self._lock:
            q = self._queues.get(key)
            o = q.outage if q is not None else None
            return str(o.error) if o is not None and o.reported else None

    def close(self) -> None:
        """Stop retrying (waiting work is dropped: the node is going away, and its successor
        rebuilds the slots from the registry)."""
        self._closed.set()

    # -- internals --------------------------------------------------------------
    def _drain(self, key: Hashable, q: _Queue, inline: int) -> None:
        """Run ``key``'s queue. ``inline`` > 0: on the caller's thread, only its own ``inline``
        steps (at the head of the queue); steps queued behind them, or a store error, hand the
        rest to a thread of our own (``inline`` 0: that thread, retrying)."""
        while True:
            with self._lock:
                if not q.steps:
                    q.busy = False
                    outage, q.outage = q.outage, None
                    self._queues.pop(key, None)
                    break
                step = q.steps[0]
            try:
                if inline:
                    self._once(key, q, step)
                else:
                    self._until_done(key, q, step)
            except STORE_ERRORS:  # inline only: continue on a thread of our own
                self._hand_off(key, q)
                return
            except _Closed:
                return
            with self._lock:
                q.steps.popleft()
                if inline:
                    inline -= 1
                    if not inline and q.steps:  # others' work: not on this caller's thread
                        self._hand_off(key, q)
                        return
        if outage is not None and outage.reported:
            self.on_recovered(key, outage.attempts, time.monotonic() - outage.since, outage.error)

    def _hand_off(self, key: Hashable, q: _Queue) -> None:
        threading.Thread(target=self._drain, args=(key, q, 0), name=f"store-retry-{key}", daemon=True).start()

    def _once(self, key: Hashable, q: _Queue, step: Step) -> None:
        began = time.monotonic()
        try:
            step()
        except STORE_ERRORS as err:
            self._failed(key, q, err, began)
            raise
        except Exception:
            log.exception("store-dependent step for %s failed (not the store's fault)", key)

    def _until_done(self, key: Hashable, q: _Queue, step: Step) -> None:
        retrying = Retrying(retry=retry_if_exception_type(STORE_ERRORS),
                            wait=wait_random_exponential(multiplier=self.initial_s, max=self.cap_s),
                            sleep=self._sleep, reraise=True)
        retrying(self._once, key, q, step)

    def _sleep(self, seconds: float) -> None:
        if self._closed.wait(seconds):
            raise _Closed()

    def _failed(self, key: Hashable, q: _Queue, err: BaseException, began: float) -> None:
        with self._lock:
            o = q.outage = q.outage or _Outage(began)
            o.attempts += 1
            o.error = err
            report = not o.reported and time.monotonic() - o.since >= self.visible_after_s
            o.reported = o.reported or report
            first = o.attempts == 1
        if first:
            log.warning("store failed for %s (retrying): %s", key, err)
        if report:
            self.on_down(key, err)
