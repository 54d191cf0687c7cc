"""Pipelined calls: one client keeps many calls in flight, with futures.

``AppProxy.submit(method, *args)`` returns a ``concurrent.futures.Future`` at
once; a :class:`Pipeline` (one per proxy, created on first use) ships whatever
has been submitted in ``invoke_batch`` RPCs to the master, where the commands
of a batch are submitted together and group-committed.

Contracts:
  * At most once, as for ``AppProxy.call``: every command gets its request id
    when submitted and keeps it across every re-send, so a re-sent command is
    applied at most once; its future gets the outcome of that one application.
  * A call answered NotMaster, or a whole batch lost to a failed connection or
    timeout, is re-sent to the re-resolved master (waiting between attempts
    as ``AppProxy.recover`` does) until the proxy's ``timeout`` has passed
    since the call was submitted; then its future fails with ``Unavailable`` (outcome unknown).
    Any other outcome is final: a value, or the error a direct call raises.
  * No order among calls in flight: they behave like calls made at the same
    time by separate callers. A call that must follow another is submitted
    after the other's future is done.
  * Back-pressure: ``submit`` blocks while ``max_in_flight`` calls are
    outstanding. At most ``window`` batches are in flight at once, each of at
    most ``max_batch`` calls; batches form from whatever is queued, so under
    light load a call is sent alone at once and under heavy load they merge.
  * ``close()`` fails calls still queued with ``Unavailable`` and ends the
    sender threads; it does not wait for calls in flight to be answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from Pyro5.errors import CommunicationError

from netlets.netlet import COMMAND
from netlets.outcomes import unwrap
from rpc.errors import NotMaster, Unavailable
from warrants.errors import NotFound

if TYPE_CHECKING:
    from netlets.access import AppProxy


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """Checked at construction: a pipeline with nothing in flight would hang."""

    window: int = 2  # batches in flight at once (sender threads)
    max_batch: int = 512  # calls per invoke_batch RPC (the node's limit is netlets.host.MAX_BATCH)
    max_in_flight: int = 8192  # outstanding calls before submit() blocks

    def __post_init__(self) -> None:
        from netlets.host import MAX_BATCH

        if self.window < 1 or not 1 <= self.max_batch <= MAX_BATCH or self.max_in_flight < 1:
            raise ValueError(f"pipeline needs window >= 1, 1 <= max_batch <= {MAX_BATCH}, "
                             f"max_in_flight >= 1 (got {self})")


@dataclass
class _Call:
    method: str
    args: list
    kwargs: dict
    req_id: str | None
    future: Future
    deadline: float
    attempts: int = field(default=0)

    def wire(self) -> list:
        return [self.method, self.args, self.kwargs, self.req_id]


class Pipeline:
    """See the module contracts. Made by ``AppProxy.submit``; share it freely between threads."""

    def __init__(self, proxy: "AppProxy", config: PipelineConfig = PipelineConfig()) -> None:
        self.proxy = proxy
        self.config = config
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._closed = False
        self._senders = [threading.Thread(target=self._send_loop, name=f"pipeline-{i}", daemon=True)
                         for i in range(config.window)]
        for sender in self._senders:
            sender.start()

    def submit(self, method: str, args: list, kwargs: dict, req_id: str | None) -> Future:
        if self._closed:
            raise Unavailable(f"the pipeline to {self.proxy.app} is closed")
        self._slots.acquire()
        future: Future = Future()
        future.add_done_callback(lambda _f: self._slots.release())
        self._queue.put(_Call(method, list(args), dict(kwargs), req_id, future,
                              time.monotonic() + self.proxy.timeout))
        return future

    def close(self) -> None:
        self._closed = True
        for _ in self._senders:
            self._queue.put(None)
        for sender in self._senders:
            sender.join(timeout=5)
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.future.set_exception(Unavailable(f"the pipeline to {self.proxy.app} was closed"))

    # -- one sender: take what is queued, ship it, retry what needs it ----------
    def _send_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.config.max_batch:
                try:
                    call = self._queue.get_nowait()
                except queue.Empty:
                    break
                if call is None:
                    self._queue.put(None)  # leave the stop marker for this or another sender
                    break
                batch.append(call)
            while batch:
                try:
                    batch = self._ship(batch)
                except Exception as err:  # noqa: BLE001 -- a bug must not strand every caller's future
                    log.exception("pipeline to %s: shipping a batch failed", self.proxy.app)
                    for call in batch:
                        if not call.future.done():
                            call.future.set_exception(Unavailable(
                                f"{self.proxy.app}: {type(err).__name__}: {err}; outcome unknown"))
                    batch = []

    def _ship(self, batch: list[_Call]) -> list[_Call]:
        """Send ``batch`` once; settle what got a final outcome, return what must be re-sent."""
        try:
            outcomes = self.proxy.send_batch([c.wire() for c in batch])
        except (Unavailable, CommunicationError, NotMaster) as err:
            outcomes = [{"ok": False, "error": {"type": "Unavailable", "message": str(err), "retryable": True}}
                        ] * len(batch)
        retry = []
        for call, outcome in zip(batch, outcomes):
            if outcome.get("ok") or not (outcome.get("error") or {}).get("retryable"):
                _settle(call.future, outcome)
            elif time.monotonic() >= call.deadline:
                message = (outcome.get("error") or {}).get("message", "")
                call.future.set_exception(Unavailable(
                    f"{self.proxy.app}: no master answered within {self.proxy.timeout:.0f}s ({message}); "
                    "outcome unknown"))
            else:
                call.attempts += 1
                retry.append(call)
        if retry:
            try:
                self.proxy.recover(COMMAND, min(c.attempts for c in retry) - 1, max(c.deadline for c in retry))
            except NotFound as err:  # the app is gone: nothing will ever answer
                for call in retry:
                    call.future.set_exception(err)
                return []
        return retry


def _settle(future: Future, outcome: dict) -> None:
    try:
        future.set_result(unwrap(outcome))
    except Exception as err:
        future.set_exception(err)
