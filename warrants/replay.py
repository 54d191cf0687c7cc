"""Replay protection for authenticated calls: each nonce is accepted once within a time window."""

from __future__ import annotations

import threading
import time

DEFAULT_WINDOW_S = 120.0


class NonceCache:
    """Remembers nonces for ``window`` seconds; thread-safe.

    Contract: :meth:`fresh` returns True the first time it sees a nonce whose
    timestamp lies within ``window`` of now, and False for a timestamp outside
    the window or a nonce already seen within the window. Memory stays bounded
    by the number of nonces presented within one window.
    """

    def __init__(self, window: float = DEFAULT_WINDOW_S, prune_above: int = 4096) -> None:
        self.window = window
        self._prune_above = prune_above
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def in_window(self, ts: float, now: float | None = None) -> bool:
        return abs((time.time() if now is None else now) - ts) <= self.window

    def fresh(self, nonce: str, ts: float) -> bool:
        now = time.time()
        if not self.in_window(ts, now):
            return False
        with self._lock:
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            if len(self._seen) > self._prune_above:
                self._seen = {n: t for n, t in self._seen.items() if now - t <= self.window}
        return True
