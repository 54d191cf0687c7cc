"""Replay protection for authenticated calls: each nonce is accepted once within a time window."""

from __future__ import annotations

import threading
import time

#: how far a call's timestamp may be from now, and how long its nonce is remembered
REPLAY_WINDOW_S = 120.0


class NonceCache:
    """Remembers nonces for ``window`` seconds; thread-safe.

    Contract: :meth:`fresh` returns True the first time it sees a nonce whose
    timestamp lies within ``window`` of now, and False for a timestamp outside
    the window or a nonce already seen within the window. Memory stays bounded
    by the number of nonces presented within one window, and each call costs
    O(1) amortized: nonces are kept in arrival order (a dict preserves it, and
    arrival times come from the monotonic clock), so expired ones are dropped
    from the front, never by scanning them all.
    """

    def __init__(self, window: float = REPLAY_WINDOW_S) -> None:
        self.window = window
        self._seen: dict[str, float] = {}  # nonce -> monotonic arrival time, oldest first
        self._lock = threading.Lock()

    def in_window(self, ts: float, now: float | None = None) -> bool:
        return abs((time.time() if now is None else now) - ts) <= self.window

    def fresh(self, nonce: str, ts: float) -> bool:
        now = time.time()
        if not self.in_window(ts, now):
            return False
        arrived = time.monotonic()
        with self._lock:
            seen = self._seen
            while seen:
                oldest = next(iter(seen))
                if arrived - seen[oldest] <= self.window:
                    break
                del seen[oldest]
            if nonce in seen:
                return False
            seen[nonce] = arrived
        return True
