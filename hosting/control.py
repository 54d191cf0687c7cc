"""The control lease: one holder per app, each grant with a strictly larger epoch.

Who holds it, at which epoch, and the in-sync set are the arbiter's
(``hosting.election.arbiter``, persisted in the registry); this module adds the *time*
dimension with the lessor.

Safety model:
  * At most one netlet holds an app's control lease at any instant on the
    node's clock; a new grant is only made after the previous one was
    released, revoked (holder dead) or expired.
  * Every grant carries an epoch strictly greater than every epoch granted
    before for that app — across node restarts (the arbiter commits it to the
    registry before it is used). Epochs are fencing tokens: replicas refuse
    messages from lower epochs.
  * The holder treats its lease as ending ``ttl·(1-ε)`` after it *sent* the
    renewal (its own monotonic clock), never later than the node's view; so
    it stops acting as master before anyone else can be elected.
  * One lease length per app: every renewal answers the app's ``lease_ttl``,
    whoever grants it (a re-adopting node, a new owner, an election), so no
    holder ever believes in a longer grant than one ``lease_ttl`` from its
    last renewal *sent*. A node or owner that cannot know the last grant
    (it restarted, or took the app over) therefore waits one ``lease_ttl``
    for a holder it cannot see dead before electing another.
  * Leases granted before the node serves (during recovery) cannot be renewed
    yet, so their node-side timing starts when it serves (``start_serving``):
    a slow recovery never expires a lease its holder had no chance to renew.
    (Only the node's side waits longer; the holder's own view is unchanged.)

Mechanism only: what a lost lease means (elect, warm start) is the
``on_lost(app, holder_netlet, epoch, why)`` policy's business.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from hosting import lease_ids
from hosting.election.arbiter import Arbiter
from hosting.lessor import Lessor
from hosting.registry import Registry
from hosting.store_retry import STORE_ERRORS
from hosting.timing import UNTIL_SERVING_S
from warrants.errors import BadInput, JtrixError
from warrants.names import NetletId

log = logging.getLogger(__name__)


class LeaseFenced(JtrixError):
    """The caller does not hold the control lease at the epoch it claims."""


class ControlLeases:
    def __init__(self, registry: Registry, arbiter: Arbiter, lessor: Lessor,
                 on_lost: Callable[[str, str, int, str], None], serving: bool = True) -> None:
        """``serving`` False: renewals cannot arrive yet (the node is recovering) until
        :meth:`start_serving`."""
        self.registry = registry
        self.arbiter = arbiter
        self.lessor = lessor
        self.on_lost = on_lost
        self._lock = threading.RLock()
        self._serving = serving
        self._before_serving: dict[str, float] = {}  # app -> ttl of a lease granted before serving

    @staticmethod
    def lease_id(app: str) -> str:
        return lease_ids.control(app)

    def _grant(self, app: str, ttl: float) -> None:
        """(Re)start the app's lease for ``ttl`` seconds: its running out is :meth:`expired`."""
        self.lessor.grant(self.lease_id(app), ttl, lambda: self.expired(app))

    def holder(self, app: str) -> str | None:
        """The netlet id holding the lease now (None when free or lapsed)."""
        return self.current(app)["holder"]

    def current(self, app: str) -> dict:
        """``{"epoch", "holder" (netlet id or None), "isr", "remaining_s"}``."""
        with self._lock:
            st = self.arbiter.state(app)
            lease = self.lessor.get(self.lease_id(app))
            holder = st.holder_netlet() if lease else None
            return {"epoch": st.epoch, "holder": holder, "isr": sorted(st.isr),
                    "remaining_s": lease.remaining() if lease else 0.0}

    def start_timing(self, app: str, holder: str, epoch: int, ttl: float, event: bool = True) -> None:
        """The arbiter granted ``epoch`` to ``holder``: its lease runs from now (from serving, if
        the node does not serve yet)."""
        with self._lock:
            if self._serving:
                self._grant(app, ttl)
            else:
                self._before_serving[app] = ttl
                self._grant(app, UNTIL_SERVING_S)
            if event:
                self.registry.add_event("control.granted", app, NetletId.parse(holder).slot, holder=holder, epoch=epoch)

    def start_serving(self) -> None:
        """The node answers renewals from now: leases granted before run their ttl from now."""
        with self._lock:
            self._serving = True
            pending, self._before_serving = self._before_serving, {}
            for app, ttl in pending.items():
                if self.lessor.get(self.lease_id(app)) is not None:  # not revoked meanwhile
                    self._grant(app, ttl)

    def acquire(self, app: str, holder: str, ttl: float) -> int:
        """For non-replicated apps: take the lease if free; returns the epoch."""
        with self._lock:
            cur = self.current(app)
            if cur["holder"] is not None and cur["holder"] != holder:
                raise LeaseFenced(f"control lease of {app} is held by {cur['holder']} (epoch {cur['epoch']})")
            if cur["holder"] == holder:
                self._grant(app, ttl)
                return cur["epoch"]
            slot = NetletId.parse(holder).slot
            self.arbiter.netlet_started(app, slot, holder)
            epoch = self.arbiter.bootstrap(app, slot)
            self.start_timing(app, holder, epoch, ttl)
            return epoch

    def renew(self, app: str, holder: str, epoch: int, ttl: float) -> float:
        """Renew for the app's lease length ``ttl`` from now, and return it. LeaseFenced (naming the
        current epoch) unless ``holder`` holds the live lease at ``epoch``."""
        with self._lock:
            cur = self.current(app)
            if cur["holder"] != holder or cur["epoch"] != epoch:
                raise LeaseFenced(f"{holder} does not hold the control lease of {app} at epoch {epoch}"
                             f" (current epoch {cur['epoch']})")
            if self.lessor.get(self.lease_id(app)) is None:
                raise LeaseFenced(f"control lease of {app} at epoch {epoch} has expired (current epoch {cur['epoch']})")
            self._grant(app, ttl)
            return ttl

    def release(self, app: str, holder: str, epoch: int) -> None:
        with self._lock:
            cur = self.current(app)
            if cur["holder"] == holder and cur["epoch"] == epoch:
                self._drop(app, holder, epoch, "released")

    def revoke_if_held_by(self, app: str, holder: str, why: str) -> bool:
        """The holder is gone (pidfd): end its lease at once. True if it held it."""
        with self._lock:
            st = self.arbiter.state(app)
            if st.holder is None or st.holder_netlet() != holder:
                return False
            self._drop(app, holder, st.epoch, why)
            return True

    def expired(self, app: str) -> None:
        """Lessor callback: the control lease ran out."""
        with self._lock:
            st = self.arbiter.state(app)
            if st.holder is None:
                return
            self._drop(app, st.holder_netlet() or st.holder, st.epoch, "expired", revoke=False)

    def _drop(self, app: str, holder: str, epoch: int, why: str, revoke: bool = True) -> None:
        """The lease is gone: the next election is requested whatever the store does (the event is
        a record, best effort: a store error here must not lose the election request)."""
        if revoke:
            self.lessor.revoke(self.lease_id(app))
        threading.Thread(target=self.on_lost, args=(app, holder, epoch, why), daemon=True,
                         name=f"control-lost-{app}").start()
        try:
            slot = NetletId.parse(holder).slot
        except BadInput:
            slot = holder  # the grant's process was never recorded: ``holder`` is its slot
        try:
            self.registry.add_event("control.lost", app, slot, holder=holder, epoch=epoch, why=why)
        except STORE_ERRORS as err:
            log.warning("control.lost of %s at epoch %d not recorded: %s", app, epoch, err)
