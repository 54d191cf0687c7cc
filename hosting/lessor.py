"""Leases: time-bounded grants kept alive by renewal.

Mechanism only: the lessor detects expiry and calls ``on_expire(lease_id)``;
what expiry means (kill, elect, re-bootstrap) is the caller's policy.

Contracts:
  * A lease expires ``ttl`` seconds (monotonic) after its last grant or renewal,
    unless revoked first. ``on_expire`` is called at most once per grant, on
    the timer thread, never for a revoked lease.
  * ``renew`` of an unknown, revoked or expired lease returns None and does
    not resurrect it: the holder must be granted a new lease.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from hosting.timers import Timer, Timers


@dataclass
class Lease:
    lease_id: str
    ttl: float
    deadline: float  # monotonic
    timer: Timer | None = None

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))


class Lessor:
    """In-memory leases with expiry callbacks (single-machine implementation)."""

    def __init__(self, timers: Timers, on_expire: Callable[[str], None]) -> None:
        self._timers = timers
        self._on_expire = on_expire
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def grant(self, lease_id: str, ttl: float) -> Lease:
        """Grant (or re-grant) ``lease_id`` for ``ttl`` seconds from now."""
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        with self._lock:
            old = self._leases.get(lease_id)
            if old is not None:
                Timers.cancel(old.timer)
            lease = Lease(lease_id, ttl, time.monotonic() + ttl)
            self._leases[lease_id] = lease
            lease.timer = self._timers.call_at(lease.deadline, lambda: self._expire(lease))
            return lease

    def renew(self, lease_id: str) -> Lease | None:
        """Extend a live lease by its ttl from now; None if it is not live."""
        with self._lock:
            lease = self._leases.get(lease_id)
            if lease is None:
                return None
            Timers.cancel(lease.timer)
            lease.deadline = time.monotonic() + lease.ttl
            lease.timer = self._timers.call_at(lease.deadline, lambda: self._expire(lease))
            return lease

    def revoke(self, lease_id: str) -> bool:
        """End a lease now without calling ``on_expire``; True if it was live."""
        with self._lock:
            lease = self._leases.pop(lease_id, None)
            if lease is not None:
                Timers.cancel(lease.timer)
            return lease is not None

    def get(self, lease_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(lease_id)

    def _expire(self, lease: Lease) -> None:
        with self._lock:
            current = self._leases.get(lease.lease_id)
            if current is not lease or lease.deadline > time.monotonic():
                return  # renewed, re-granted or revoked meanwhile
            del self._leases[lease.lease_id]
        self._on_expire(lease.lease_id)
