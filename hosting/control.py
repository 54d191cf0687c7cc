"""The control lease: one holder per app, each grant with a strictly larger epoch.

Safety model:
  * At most one netlet holds an app's control lease at any instant on the
    node's clock; a new grant is only made after the previous one was
    released, revoked (holder dead) or expired.
  * Every grant carries an epoch strictly greater than every epoch granted
    before for that app — across node restarts (it is committed to the
    registry before the grant is returned). Epochs are fencing tokens: replicas
    refuse messages from lower epochs.
  * The holder must treat its lease as ending ``ttl`` after it *sent* the
    renewal (its own monotonic clock), which is never later than the node's
    view; so the holder stops acting as master before anyone else can start.

Mechanism only: what a lost lease means (elect, re-bootstrap) is the
``on_lost(app, holder, epoch, why)`` policy's business.
"""

from __future__ import annotations

import threading
from typing import Callable

from hosting.lessor import Lessor
from hosting.registry import Registry
from warrants.errors import JtrixError

CONTROL_LEASE_PREFIX = "control:"


class Fenced(JtrixError):
    """The caller does not hold the control lease at the epoch it claims."""


class ControlLeases:
    def __init__(self, registry: Registry, lessor: Lessor,
                 on_lost: Callable[[str, str, int, str], None]) -> None:
        self.registry = registry
        self.lessor = lessor
        self.on_lost = on_lost
        self._lock = threading.RLock()

    @staticmethod
    def lease_id(app: str) -> str:
        return CONTROL_LEASE_PREFIX + app

    def current(self, app: str) -> dict:
        """``{"epoch", "holder", "isr", "remaining_s"}`` (holder None when free)."""
        with self._lock:
            state = self.registry.control(app)
            lease = self.lessor.get(self.lease_id(app))
            if lease is None:
                state["holder"] = None
            state["remaining_s"] = lease.remaining() if lease else 0.0
            return state

    def grant(self, app: str, holder: str, ttl: float, isr: list[str] | None = None) -> int:
        """Give the lease to ``holder`` with a new epoch (caller ensured it is free)."""
        with self._lock:
            state = self.registry.control(app)
            epoch = state["epoch"] + 1
            self.registry.save_control(app, epoch, holder, state["isr"] if isr is None else isr)
            self.lessor.grant(self.lease_id(app), ttl)
            self.registry.add_event("control.granted", app, holder.split("/", 1)[1].split("#")[0],
                                    holder=holder, epoch=epoch)
            return epoch

    def acquire(self, app: str, holder: str, ttl: float) -> int:
        """Take the lease if nobody holds it; returns the epoch. Fenced if held by another."""
        with self._lock:
            cur = self.current(app)
            if cur["holder"] is not None and cur["holder"] != holder:
                raise Fenced(f"control lease of {app} is held by {cur['holder']} (epoch {cur['epoch']})")
            if cur["holder"] == holder:
                self.lessor.renew(self.lease_id(app))
                return cur["epoch"]
            return self.grant(app, holder, ttl)

    def renew(self, app: str, holder: str, epoch: int) -> float:
        """Renew; returns the ttl granted. Fenced unless ``holder`` holds it at ``epoch``."""
        with self._lock:
            state = self.registry.control(app)
            if state["holder"] != holder or state["epoch"] != epoch:
                raise Fenced(f"{holder} does not hold the control lease of {app} at epoch {epoch}"
                             f" (current epoch {state['epoch']})")
            lease = self.lessor.renew(self.lease_id(app))
            if lease is None:
                raise Fenced(f"control lease of {app} at epoch {epoch} has expired")
            return lease.ttl

    def release(self, app: str, holder: str, epoch: int) -> None:
        with self._lock:
            state = self.registry.control(app)
            if state["holder"] == holder and state["epoch"] == epoch:
                self._drop(app, state, "released")

    def revoke_if_held_by(self, app: str, holder: str, why: str) -> bool:
        """The holder is gone (pidfd): end its lease at once. True if it held it."""
        with self._lock:
            state = self.registry.control(app)
            if state["holder"] != holder:
                return False
            self._drop(app, state, why)
            return True

    def expired(self, app: str) -> None:
        """Lessor callback: the control lease ran out."""
        with self._lock:
            state = self.registry.control(app)
            if state["holder"] is None:
                return
            self._drop(app, state, "expired", revoke=False)

    def _drop(self, app: str, state: dict, why: str, revoke: bool = True) -> None:
        if revoke:
            self.lessor.revoke(self.lease_id(app))
        self.registry.save_control(app, state["epoch"], None, state["isr"])
        self.registry.add_event("control.lost", app, None, holder=state["holder"], epoch=state["epoch"], why=why)
        holder, epoch = state["holder"], state["epoch"]
        threading.Thread(target=self.on_lost, args=(app, holder, epoch, why), daemon=True,
                         name=f"control-lost-{app}").start()
