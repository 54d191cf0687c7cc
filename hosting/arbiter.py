"""Election and in-sync-set (ISR) arbitration for replicated apps: pure logic.

The hosting node owns one :class:`Arbiter`; it supplies persistence (an
:class:`EpochStore`) and does the RPCs. Per app the arbiter keeps the current
``epoch`` (the fencing token), the ``holder`` (master slot, or None during an
election) and the ``isr`` (slots known to hold every committed entry).

Invariants:

* Epochs strictly increase and are never reused: a new epoch is saved before
  it is handed out, so a crash after the save at worst skips a number.
* Only a member of the ISR (holding every committed entry) is elected, except
  at a warm start, where the most up-to-date restored log is chosen.
* ``shrink``/``expand`` only come from the holder at the current epoch (fenced
  otherwise): the master never commits without a member unless the arbiter
  removed it first.

Election protocol (driven by the node):

1. ``epoch = begin_election(app, candidates)`` — the old holder is revoked
   (and leaves the ISR); ``candidates`` are the live master-eligible slots the
   node will ask (filter with :meth:`eligible`).
2. The node calls ``prepare(epoch)`` on each candidate; each promises the epoch
   (from then on it refuses the old master) and returns its position
   ``(last_epoch, last_seq)``. Candidates that do not answer are skipped: safe,
   since every ISR member holds every committed entry.
3. ``choose(app, epoch, positions)`` picks the highest position, ties broken by
   the lowest slot name, grants it ``epoch`` and returns it; the node then
   calls ``become_master(epoch, isr, peers)`` on it.

Warm start (no live eligible candidate): ``begin_election(app, all_slots)``
and ``choose(..., warm=all_slots)``: only once *every* slot has promised and
reported its position is the best one chosen (a slot that did not answer may
be the old master, holding the newest acknowledged entries); the ISR becomes
just the chosen slot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Protocol, Sequence


class EpochStore(Protocol):
    """Persistence for the arbiter's per-app state (a JSON-able dict).

    A store shared by several nodes (etcd) makes ``save`` conditional on the
    state it last loaded (raising :class:`StoreConflict`), and may offer
    ``subscribe(callback)`` to report other nodes' changes.
    """

    def load(self, app: str) -> dict | None: ...

    def save(self, app: str, state: dict, owner_only: bool = False) -> None: ...


class MemoryEpochStore:
    """An :class:`EpochStore` in a dict (tests; a node uses its registry)."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}

    def load(self, app: str) -> dict | None:
        s = self.data.get(app)
        return _copy(s) if s else None

    def save(self, app: str, state: dict, owner_only: bool = False) -> None:
        self.data[app] = _copy(state)


def _copy(state: dict) -> dict:
    return dict(state, isr=list(state["isr"]), incarnations=dict(state.get("incarnations") or {}))


class StoreConflict(Exception):
    """The store's copy moved on since this arbiter read it (another node changed it):
    nothing was saved; the arbiter reloads before its next decision."""


class OwnershipLost(Exception):
    """Only the app's owner may make this change, and this node no longer owns it."""


class StaleEpoch(Exception):
    """The caller's epoch is not the app's current one (it is fenced)."""

    def __init__(self, app: str, epoch: int, current: int) -> None:
        super().__init__(f"{app}: epoch {epoch} is stale (current {current})")
        self.epoch, self.current = epoch, current


@dataclass
class AppState:
    epoch: int = 0
    holder: str | None = None
    isr: set[str] = field(default_factory=set)
    electing: int | None = None  # epoch of the election in progress
    incarnations: dict[str, str] = field(default_factory=dict)  # slot -> current netlet id
    granted: str | None = None  # the netlet id the holder's epoch was granted to

    def holder_netlet(self) -> str | None:
        """The process holding the current grant (None: no holder). A newer process started in
        the holder's slot since (``netlet_started``) is not it: the grant died with its process.
        (State saved before ``granted`` existed: the slot's current process, as it used to be.)"""
        if self.holder is None:
            return None
        return self.granted if self.granted is not None else self.incarnations.get(self.holder)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "holder": self.holder, "isr": sorted(self.isr),
                "electing": self.electing, "incarnations": dict(self.incarnations), "granted": self.granted}

    @classmethod
    def from_dict(cls, d: Mapping) -> AppState:
        return cls(int(d["epoch"]), d.get("holder"), set(d.get("isr", ())), d.get("electing"),
                   dict(d.get("incarnations") or {}), d.get("granted"))


def best_position(positions: Mapping[str, Sequence[int]]) -> str | None:
    """Slot with the highest ``(epoch, seq)``; ties → lowest slot name; None if empty."""
    if not positions:
        return None
    return min(positions, key=lambda s: (-int(positions[s][0]), -int(positions[s][1]), s))


def _retry_on_conflict(method):
    """Re-run a state change from freshly loaded state when another node saved first.

    Every change is a function of the state it reads, so re-running it on the
    state as the other node left it is exactly as if it had run after that
    change (which may now refuse it: a stale epoch, say). Gives up after a few
    rounds of contention, raising :class:`StoreConflict`.
    """
    def run(self, *args, **kwargs):
        for _ in range(CONFLICT_RETRIES - 1):
            try:
                return method(self, *args, **kwargs)
            except StoreConflict:
                continue  # _save dropped the cached state: the next round reloads it
        return method(self, *args, **kwargs)
    run.__name__, run.__doc__ = method.__name__, method.__doc__
    return run


CONFLICT_RETRIES = 8


class Arbiter:
    """Thread-safe; every state change is saved through the store before returning
    (re-run from fresh state if another node saved first: ``_retry_on_conflict``)."""

    def __init__(self, store: EpochStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._apps: dict[str, AppState] = {}
        subscribe = getattr(store, "subscribe", None)
        if subscribe is not None:  # a store shared with other nodes tells us when they change it
            subscribe(self.forget)

    def _get(self, app: str) -> AppState:
        st = self._apps.get(app)
        if st is None:
            d = self.store.load(app)
            st = AppState.from_dict(d) if d else AppState()
            self._apps[app] = st
        return st

    def _save(self, app: str, st: AppState, owner_only: bool = True) -> None:
        """Persist ``st``; on :class:`StoreConflict` or :class:`OwnershipLost` the cached state
        is dropped and the error propagates (the in-memory change is discarded with it).

        ``owner_only``: a change only the app's owner may make (elections, the
        in-sync set); a process starting or dying may be recorded by any node.
        """
        try:
            self.store.save(app, st.to_dict(), owner_only=owner_only)
        except (StoreConflict, OwnershipLost):
            self._apps.pop(app, None)
            raise

    def state(self, app: str) -> AppState:
        """A copy of the app's current state."""
        with self._lock:
            st = self._get(app)
            return AppState(st.epoch, st.holder, set(st.isr), st.electing, dict(st.incarnations), st.granted)

    def eligible(self, app: str, live: Iterable[str]) -> list[str]:
        """Live slots that may be elected normally: ISR members, holder excluded."""
        with self._lock:
            st = self._get(app)
            return sorted(s for s in live if s in st.isr and s != st.holder)

    # --- election ---------------------------------------------------------------
    @_retry_on_conflict
    def begin_election(self, app: str, candidates: Iterable[str] = ()) -> int:
        """Revoke the holder and return a fresh epoch for ``prepare`` (persisted first)."""
        with self._lock:
            st = self._get(app)
            if st.holder is not None:
                st.isr.discard(st.holder)
            st.epoch += 1
            st.holder = st.granted = None
            st.electing = st.epoch
            self._save(app, st)
            return st.epoch

    @_retry_on_conflict
    def choose(self, app: str, epoch: int, positions: Mapping[str, Sequence[int]],
               warm: Collection[str] = ()) -> str | None:
        """Grant ``epoch`` to the best of ``positions`` (slots that promised it).

        Normal election (``warm`` empty): only ISR members count. Warm start
        (``warm`` = every slot of the master type): nothing is chosen unless
        every one of them is in ``positions``; then the best wins and the ISR
        becomes the chosen slot alone. Returns the new holder, or None (nobody
        eligible answered: the node retries or warm-starts; the election stays
        open). Raises :class:`StaleEpoch` unless ``epoch`` is the election in
        progress.
        """
        with self._lock:
            st = self._get(app)
            if st.electing != epoch or st.epoch != epoch:
                raise StaleEpoch(app, epoch, st.epoch)
            if warm and not set(warm) <= set(positions):
                return None
            pool = dict(positions) if warm else {s: p for s, p in positions.items() if s in st.isr}
            winner = best_position(pool)
            if winner is None:
                return None
            st.holder = winner
            st.granted = st.incarnations.get(winner)
            st.electing = None
            st.isr = {winner} if warm else st.isr | {winner}
            self._save(app, st)
            return winner

    def bootstrap(self, app: str, slot: str) -> int:
        """Cold start: the first master ``slot`` with a new epoch and ISR ``{slot}``."""
        epoch = self.begin_election(app, [slot])
        self.choose(app, epoch, {slot: (0, 0)}, warm=[slot])
        return epoch

    # --- in-sync set ------------------------------------------------------------
    def _check(self, st: AppState, app: str, epoch: int) -> None:
        if epoch != st.epoch or st.holder is None:
            raise StaleEpoch(app, epoch, st.epoch)

    def _holder_change(self, app: str, epoch: int, change) -> tuple[bool, int]:
        """Apply ``change(state) -> ok`` only for the holder at the current ``epoch``.

        Returns ``(ok, current_epoch)``; a stale ``epoch`` (the caller is fenced)
        gives ``(False, current)`` and changes nothing.
        """
        with self._lock:
            st = self._get(app)
            try:
                self._check(st, app, epoch)
            except StaleEpoch:
                return False, st.epoch
            return change(st), st.epoch

    @_retry_on_conflict
    def shrink(self, app: str, epoch: int, slot: str) -> tuple[bool, int]:
        """The holder at ``epoch`` drops ``slot`` from the ISR.

        Returns ``(ok, current_epoch)``; ``ok`` is False with a higher epoch when
        the caller is fenced, False with the same epoch if ``slot`` is the holder.
        """
        def change(st: AppState) -> bool:
            if slot == st.holder:
                return False
            if slot in st.isr:
                st.isr.discard(slot)
                self._save(app, st)
            return True
        return self._holder_change(app, epoch, change)

    @_retry_on_conflict
    def expand(self, app: str, epoch: int, slot: str,
               incarnation: str | None = None) -> tuple[bool, int]:
        """The holder at ``epoch`` adds a caught-up ``slot`` to the ISR.

        ``incarnation``: the netlet id whose acks the master counted; refused
        (``ok`` False, same epoch) if the slot has been restarted since (the new
        process may not hold what the old one acked).
        """
        def change(st: AppState) -> bool:
            current = st.incarnations.get(slot)
            if incarnation is not None and current is not None and current != incarnation:
                return False
            if slot not in st.isr:
                st.isr.add(slot)
                self._save(app, st)
            return True
        return self._holder_change(app, epoch, change)

    @_retry_on_conflict
    def netlet_started(self, app: str, slot: str, incarnation: str) -> None:
        """A new process (netlet id ``incarnation``) now runs ``slot``."""
        with self._lock:
            st = self._get(app)
            st.incarnations[slot] = incarnation
            if slot != st.holder:
                st.isr.discard(slot)
            self._save(app, st, owner_only=False)

    @_retry_on_conflict
    def netlet_died(self, app: str, slot: str) -> None:
        """``slot``'s process is gone: it leaves the ISR (a restarted process must
        catch up and be expanded again). The holder stays recorded until the node
        calls :meth:`begin_election`."""
        with self._lock:
            st = self._get(app)
            if slot in st.isr and slot != st.holder:
                st.isr.discard(slot)
                self._save(app, st, owner_only=False)

    def forget(self, app: str) -> None:
        """Drop the cached state (the app was terminated; the store keeps the epoch)."""
        with self._lock:
            self._apps.pop(app, None)
