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
* **Every member of the stored ISR is counted by the current master** (its
  commits wait for that member's acks). The ISR carries a version,
  ``isr_version``, that increases with every change of the set (shrink,
  expand, a process starting or dying, an election) and with every applied
  ``shrink``/``expand``, even a no-op one. A change request names the version
  it was computed from and is decided only if that is the current version
  (:meth:`Arbiter.change_isr`; otherwise refused as stale, changing nothing).
  A decided request that is *refused* (a shrink of the holder, an expand of
  another process than the one recorded) changes nothing either: no version
  step, no save — so a master re-asking it cannot drive the store or the
  version (issue 13 follow-up F4). The state at a version is fixed, so a
  request naming ``v`` is refused at ``v`` however often it arrives, and takes
  effect at most once. Once the master holds an answer at version ``v``, no
  request it sent earlier (all name versions below ``v``) can still take
  effect: the stored set grows only by an expand the master is counting from
  the moment it sent it, and the master stops counting a slot only on an
  answer, of a version above every one it named, whose set lacks it. (Proof
  sketch in docs/replication.md, "Versioned in-sync set".)
* Nothing is answered from unsaved state: a save that fails in any way drops
  the cached state (the next call reloads the stored one) and the caller gets
  :class:`StoreUnavailable` (retryable) — or the store's own
  :class:`StoreConflict` / :class:`OwnershipLost`.

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

from hosting.election.warm_proof import trusted_set


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


class StoreUnavailable(Exception):
    """The store failed to save a change (SQLite locked or disk full, an etcd timeout...): the
    store's fault, retryable. Whether it took effect is unknown (a timed-out etcd transaction
    may have committed); the arbiter dropped its cached state and reloads it on the next call."""


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
    isr_version: int = 0  # see the module docstring: increases with every ISR change or decision
    #: ``hosting.election.warm_proof`` trusted set (slot -> netlet id) recorded when ``begin_election`` revoked a
    #: holder, kept until the next grant (None: none recorded); see :meth:`last_trusted`
    trusted: dict[str, str | None] | None = None
    elected: bool = False  # some epoch was ever granted (before that, nothing can have been acknowledged)

    def last_trusted(self) -> dict[str, str | None] | None:
        """The last master's trusted set: derived from the holder and ISR while one is recorded,
        else the one recorded at its revocation; ``{}`` if no epoch was ever granted (nothing was
        acknowledged: nothing to prove); None: not known (state saved before it was recorded)."""
        if not self.elected:
            return {}
        if self.holder is not None:
            return trusted_set(self.isr, self.holder, self.holder_netlet(), self.incarnations)
        return dict(self.trusted) if self.trusted is not None else None

    def holder_netlet(self) -> str | None:
        """The process holding the current grant (None: no holder). A newer process started in
        the holder's slot since (``netlet_started``) is not it: the grant died with its process.
        (State saved before ``granted`` existed: the slot's current process, as it used to be.)"""
        if self.holder is None:
            return None
        return self.granted if self.granted is not None else self.incarnations.get(self.holder)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "holder": self.holder, "isr": sorted(self.isr),
                "electing": self.electing, "incarnations": dict(self.incarnations), "granted": self.granted,
                "isr_version": self.isr_version, "trusted": self.trusted, "elected": self.elected}

    @classmethod
    def from_dict(cls, d: Mapping) -> AppState:
        return cls(int(d["epoch"]), d.get("holder"), set(d.get("isr", ())), d.get("electing"),
                   dict(d.get("incarnations") or {}), d.get("granted"), int(d.get("isr_version", 0)),
                   dict(d["trusted"]) if d.get("trusted") is not None else None,
                   bool(d.get("elected", int(d["epoch"]) > 0)))  # older state: elected unless epoch 0

    def copy(self) -> AppState:
        return AppState.from_dict(self.to_dict())

    def isr_answer(self, ok: bool) -> dict:
        """The answer to an ISR request (a msgpack-able dict): the decision and the current
        ``epoch``, ``version`` and ``isr`` as ``{slot: incarnation recorded for it}``."""
        return {"ok": ok, "epoch": self.epoch, "version": self.isr_version,
                "isr": {s: self.incarnations.get(s) for s in sorted(self.isr)}}


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
        """Persist ``st``; if that fails in any way the cached state is dropped (the in-memory
        change is discarded with it; the next call reloads what the store holds) and the caller
        gets the store's :class:`StoreConflict` / :class:`OwnershipLost`, or
        :class:`StoreUnavailable` for any other failure.

        ``owner_only``: a change only the app's owner may make (elections, the
        in-sync set); a process starting or dying may be recorded by any node.
        """
        try:
            self.store.save(app, st.to_dict(), owner_only=owner_only)
        except (StoreConflict, OwnershipLost):
            self._apps.pop(app, None)
            raise
        except Exception as err:
            self._apps.pop(app, None)
            raise StoreUnavailable(f"{app}: arbiter state not saved: {err}") from err

    def state(self, app: str) -> AppState:
        """A copy of the app's current state."""
        with self._lock:
            st = self._get(app)
            return st.copy()

    def eligible(self, app: str, live: Iterable[str]) -> list[str]:
        """Live slots that may be elected normally: ISR members, holder excluded."""
        with self._lock:
            st = self._get(app)
            return sorted(s for s in live if s in st.isr and s != st.holder)

    # --- election ---------------------------------------------------------------
    @_retry_on_conflict
    def begin_election(self, app: str, candidates: Iterable[str] = ()) -> int:
        """Revoke the holder and return a fresh epoch for ``prepare`` (persisted first). The
        revoked holder's trusted set is recorded (``AppState.trusted``) until the next grant."""
        with self._lock:
            st = self._get(app)
            if st.holder is not None:
                st.trusted = st.last_trusted()
                st.isr.discard(st.holder)
            st.epoch += 1
            st.isr_version += 1
            st.holder = st.granted = None
            st.electing = st.epoch
            self._save(app, st)
            return st.epoch

    @_retry_on_conflict
    def choose(self, app: str, epoch: int, positions: Mapping[str, Sequence[int]],
               warm: Collection[str] = (), promisers: Mapping[str, str] | None = None) -> str | None:
        """Grant ``epoch`` to the best of ``positions`` (slots that promised it).

        ``promisers``: the process (netlet id) each promise came from. A slot whose recorded
        process is another one now (replaced since it promised: say its disk was lost and the
        node restarted it) counts as not having promised, and the grant names the process that
        promised, never merely the slot's current one: the warm-start proof trusts the granted
        process's storage (``hosting.election.warm_proof``), so granting a replacement that never
        promised let its empty storage pass as proof (second safety review F1, F2).

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
            if promisers is not None:  # a promise of a process the slot no longer runs is void
                positions = {s: p for s, p in positions.items()
                             if st.incarnations.get(s) in (None, promisers.get(s))}
            if warm and not set(warm) <= set(positions):
                return None
            pool = dict(positions) if warm else {s: p for s, p in positions.items() if s in st.isr}
            winner = best_position(pool)
            if winner is None:
                return None
            st.holder = winner
            st.granted = promisers.get(winner) if promisers is not None else st.incarnations.get(winner)
            st.trusted = None  # the holder's own set from now on (``last_trusted``)
            st.elected = True
            st.electing = None
            st.isr = {winner} if warm else st.isr | {winner}
            st.isr_version += 1
            self._save(app, st)
            return winner

    def bootstrap(self, app: str, slot: str) -> int:
        """Cold start: the first master ``slot`` with a new epoch and ISR ``{slot}``."""
        epoch = self.begin_election(app, [slot])
        self.choose(app, epoch, {slot: (0, 0)}, warm=[slot])
        return epoch

    @_retry_on_conflict
    def new_instance(self, app: str) -> int:
        """A new instance of ``app`` (a name submitted again after a terminate, or ``--replace``)
        starts from a fresh state: no holder, in-sync set, processes or trusted set, and never
        elected (its first election is a cold start, whoever runs it: a restarted node, a new
        owner). Only the epoch carries over, so epochs never go back. Returns the epoch."""
        with self._lock:
            st = self._get(app)
            self._apps[app] = fresh = AppState(epoch=st.epoch, isr_version=st.isr_version + 1)
            self._save(app, fresh)
            return fresh.epoch

    # --- in-sync set ------------------------------------------------------------
    def isr_view(self, app: str) -> dict:
        """The current ISR as :meth:`AppState.isr_answer` (``ok`` True): what a new master asks
        first, to learn the version its changes must name."""
        with self._lock:
            return self._get(app).isr_answer(True)

    @_retry_on_conflict
    def change_isr(self, app: str, kind: str, epoch: int, slot: str, version: int | None,
                   incarnation: str | None = None) -> dict:
        """The holder at ``epoch`` asks to ``"shrink"`` (drop) or ``"expand"`` (add) ``slot``,
        computed from the ISR at ``version``. Returns :meth:`AppState.isr_answer`.

        Refused, changing nothing, when ``epoch`` is not current or there is no holder (the
        answer's higher epoch fences the caller) or when ``version`` is not the current one
        (stale: the answer carries the current version and set to resync from). Otherwise the
        request is *decided*: a shrink of the holder is refused; an expand is refused unless
        ``incarnation`` is the process recorded for ``slot`` (a restarted slot's new process may
        not hold what the old one acked; one not recorded yet is recorded as ``incarnation``);
        a refusal changes nothing (the answer is at the current version, nothing is saved).
        Anything else is applied (a no-op when the slot already is, or is not, a member): the
        version advances and the state is saved before it is answered.
        """
        if kind not in ("shrink", "expand"):
            raise ValueError(f"unknown ISR change {kind!r}")
        with self._lock:
            st = self._get(app)
            if epoch != st.epoch or st.holder is None or version != st.isr_version:
                return st.isr_answer(False)
            if kind == "shrink":
                ok = slot != st.holder
                if ok:
                    st.isr.discard(slot)
            else:
                current = st.incarnations.get(slot)
                ok = incarnation is not None and current in (None, incarnation)
                if ok:
                    st.incarnations[slot] = incarnation
                    st.isr.add(slot)
            if not ok:
                return st.isr_answer(False)
            st.isr_version += 1
            self._save(app, st)
            return st.isr_answer(ok)

    @_retry_on_conflict
    def netlet_started(self, app: str, slot: str, incarnation: str) -> None:
        """A new process (netlet id ``incarnation``) now runs ``slot``."""
        with self._lock:
            st = self._get(app)
            st.incarnations[slot] = incarnation
            if slot != st.holder:
                st.isr.discard(slot)
            st.isr_version += 1  # a member's recorded process changed, or it left
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
                st.isr_version += 1
                self._save(app, st, owner_only=False)

    def forget(self, app: str) -> None:
        """Drop the cached state (the app was terminated; the store keeps the epoch)."""
        with self._lock:
            self._apps.pop(app, None)
