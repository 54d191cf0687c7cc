"""One thread that runs callbacks at monotonic deadlines.

Contract: a callback runs at or after its deadline, never before; callbacks run
one at a time on the timer thread, so they must be short (hand anything slow —
a kill with a grace period, an RPC — to another thread). ``cancel`` after the
callback started has no effect; callbacks must tolerate running once after a
cancel raced with them (check state, don't assume).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Timer:
    """Handle of one scheduled callback."""

    __slots__ = ("deadline", "callback", "cancelled", "seq")

    def __init__(self, deadline: float, callback: Callable[[], None], seq: int) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self.seq = seq

    def __lt__(self, other: "Timer") -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class Timers:
    """A heap of deadlines served by one daemon thread."""

    def __init__(self, name: str = "jtrix-timers") -> None:
        self._heap: list[Timer] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback, next(self._seq))
        with self._cond:
            heapq.heappush(self._heap, timer)
            if self._heap[0] is timer:
                self._cond.notify()
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + max(0.0, delay), callback)

    @staticmethod
    def cancel(timer: Timer | None) -> None:
        if timer is not None:
            timer.cancelled = True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0].cancelled:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0].deadline <= time.monotonic():
                        timer = heapq.heappop(self._heap)
                        break
                    wait = self._heap[0].deadline - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                else:
                    return
            try:
                timer.callback()
            except Exception:  # a failing callback must not stop every other timer
                log.exception("timer callback failed")
