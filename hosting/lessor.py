"""Leases: time-bounded grants kept alive by renewal.

Mechanism only: the lessor detects expiry and calls the lease's expiry callback;
what expiry means (kill, elect, re-bootstrap) is its granter's policy, given with the
grant (``grant(lease_id, ttl, on_expire)``), so the lessor never interprets lease ids.

Contracts:
  * A lease expires ``ttl`` seconds (monotonic) after its last grant or renewal,
    unless revoked first. Its callback is called at most once per grant, on
    the timer thread, never for a revoked lease. A re-grant without a callback
    keeps the live lease's; a lease granted with none has the lessor's default
    (``Lessor(timers, on_expire)``, called with the lease id), if any.
  * ``renew`` of an unknown, revoked or expired lease returns None and does
    not resurrect it: the holder must be granted a new lease.
"""

from __future__ import annotations

import functools
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
    on_expire: Callable[[], None] | None = None

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))


class Lessor:
    """In-memory leases with expiry callbacks (single-machine implementation)."""

    def __init__(self, timers: Timers, on_expire: Callable[[str], None] | None = None) -> None:
        self._timers = timers
        self._on_expire = on_expire
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def grant(self, lease_id: str, ttl: float, on_expire: Callable[[], None] | None = None) -> Lease:
        """Grant (or re-grant) ``lease_id`` for ``ttl`` seconds from now; ``on_expire()`` runs if it
        expires (None: the live lease's callback on a re-grant, else the lessor's default)."""
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        with self._lock:
            old = self._leases.get(lease_id)
            if old is not None:
                Timers.cancel(old.timer)
                on_expire = on_expire or old.on_expire
            if on_expire is None and self._on_expire is not None:
                on_expire = functools.partial(self._on_expire, lease_id)
            lease = Lease(lease_id, ttl, time.monotonic() + ttl, on_expire=on_expire)
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
        if lease.on_expire is not None:
            lease.on_expire()
