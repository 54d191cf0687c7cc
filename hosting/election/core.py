"""The election of a replicated app's master as a state machine without I/O.

``ElectionCore.step(app, event) -> [action]`` is the whole policy; it never
calls anything, reads no clock and starts no thread, so the hosting node
(``hosting.election.elector``) and the simulator (``tests/sim``) run the same code:
each is a *host* that turns actions into arbiter calls and RPCs and feeds
their outcomes back as events (``ElectionRunner`` does the plumbing).

One attempt, per app::

    Requested ─▶ Gather ─(Gathered facts)─▶ Begin ─(Began epoch)─▶ Prepare × n
      ─(Promised × n)─▶ Choose ─(Chosen winner)─▶ Promote ─(Promoted)─▶ Won

Contracts (the arbiter holds the invariants; this only sequences):
  * At most one attempt per app at a time; a request during one is remembered
    and runs right after it (never lost, never two at once).
  * An attempt begins only when nobody holds the control lease, this node runs
    the app's elections, and the app is registered and not terminating.
  * Normal election: candidates are the live in-sync backups, and the attempt
    waits for *every* candidate's answer to ``prepare`` (each RPC ends by its
    own timeout; a non-answer counts as no promise) before choosing: no
    attempt ever waits on another attempt, so simultaneous elections proceed
    in parallel and cannot starve each other.
  * Warm start (no live in-sync backup): the node restarts every slot (once per
    warm start), and the attempt begins only when *every* slot of the master
    type is live; choosing from a subset could miss acknowledged commands.
    In a cluster, a warm start that could only choose among re-created slots
    is refused (``Blocked``) until the facts change.
    A warm start chooses only from storage that can prove what it holds
    (``hosting.election.warm_proof``): unproven (wiped, lost, not caught up) storage is
    left out, and if no member of the last in-sync set answered with the
    proven storage its trusted process had, nothing is elected (``Blocked``).
    The trusted set comes from the arbiter's state (recorded when the holder
    was revoked), so a node restart or an owner change does not lose it.
  * Answers that do not belong to the attempt in progress (a late ``Promised``
    of an earlier epoch, a duplicate) change nothing.
  * Whether an attempt is a cold start (nothing was ever acknowledged, so no
    storage has anything to prove) is decided from durable state only: the
    arbiter's record that no epoch was ever granted (``Facts.trusted == {}``).
    Nothing in memory (a flag set at submission, cleared by a ``Won``) may make
    an app "cold": a grant whose promotion outcome the host never learned may
    have made a master that acknowledged writes.
  * A failed attempt that could succeed later is retried (``Retry``) after
    ``ELECTION_RETRY_S`` (``hosting.timing``). A promotion whose RPC failed is *not known to have
    failed* (``Promoted(ok=False)``: the winner may have become master and the
    answer was lost): no ``Won``, no retry. If the winner is master it renews at
    its epoch, and the host counts that renewal as the promotion's completion;
    if it is not, it never renews, its control lease runs out and that loss
    requests the next election. Either way the grant counts as an election
    (the arbiter recorded it before the RPC).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence, Union

from hosting.timing import ELECTION_RETRY_S
from hosting.election.warm_proof import unproven, warm_refusal

log = logging.getLogger(__name__)

Position = tuple  # (last_epoch, last_seq) as the replica reports it
Replica = tuple  # (netlet id, endpoint)


@dataclass(frozen=True)
class Facts:
    """What the host knows about ``app`` when an attempt starts (one consistent-enough read)."""

    registered: bool
    terminating: bool = False
    owner: bool = True  # this node runs the app's elections (always alone; the owner in a cluster)
    held: bool = False  # somebody holds the control lease now
    slots: Sequence[str] = ()  # the master type's slots (empty: the app has no replicated type)
    live: Mapping[str, Replica] = field(default_factory=dict)  # ready replicas of the master type
    eligible: Sequence[str] = ()  # live in-sync slots the arbiter would elect (holder excluded)
    warm_blocked: bool = False  # cluster: every slot that may hold the newest writes was re-created
    #: the last master's trusted set as the arbiter's state records it (``AppState.last_trusted``;
    #: ``{}``: no epoch was ever granted, so nothing was acknowledged; None: not known)
    trusted: Mapping[str, str | None] | None = None


# --- events (host -> core) ----------------------------------------------------------
@dataclass(frozen=True)
class Requested:
    pass


@dataclass(frozen=True)
class Gathered:
    facts: Facts


@dataclass(frozen=True)
class Began:
    epoch: int


@dataclass(frozen=True)
class Promised:
    epoch: int
    slot: str
    position: Position | None  # None: no answer, or refused
    storage: Mapping | None = None  # the promise's storage identity (generation, unproven, openers)


@dataclass(frozen=True)
class Chosen:
    epoch: int
    winner: str | None  # None: nobody eligible promised, or the epoch went stale


@dataclass(frozen=True)
class Promoted:
    epoch: int
    ok: bool


@dataclass(frozen=True)
class Failed:
    """A host step raised (store error, ...): the attempt is over and is retried."""
    why: str


Event = Union[Requested, Gathered, Began, Promised, Chosen, Promoted, Failed]


# --- actions (core -> host) ---------------------------------------------------------
@dataclass(frozen=True)
class Gather:
    app: str


@dataclass(frozen=True)
class Begin:
    app: str
    candidates: tuple[str, ...]
    mode: str  # "cold" | "warm" | "failover"


@dataclass(frozen=True)
class Prepare:
    app: str
    slot: str
    endpoint: str
    epoch: int
    netlet: str = ""  # the candidate's netlet id: the addressee of the node's grant


@dataclass(frozen=True)
class Choose:
    app: str
    epoch: int
    positions: Mapping[str, Position]
    warm: tuple[str, ...]  # every slot at a warm/cold start; () for a normal election
    promisers: Mapping[str, str] = field(default_factory=dict)  # slot -> the netlet id that promised


@dataclass(frozen=True)
class Promote:
    app: str
    slot: str
    netlet: str
    endpoint: str
    epoch: int


@dataclass(frozen=True)
class Won:
    app: str
    slot: str
    netlet: str
    epoch: int
    positions: Mapping[str, Position]
    mode: str


@dataclass(frozen=True)
class WarmStart:
    app: str


@dataclass(frozen=True)
class Blocked:
    app: str
    reason: str


@dataclass(frozen=True)
class Retry:
    app: str
    delay: float


Action = Union[Gather, Begin, Prepare, Choose, Promote, Won, WarmStart, Blocked, Retry]

BLOCKED_REASON = ("every replica that may hold the newest acknowledged writes was re-created on another node"
                  " (its data died with its node)")


@dataclass
class Attempt:
    """One election attempt in progress. ``epoch`` is None until the arbiter began it."""

    mode: str = ""
    live: Mapping[str, Replica] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    warm: tuple[str, ...] = ()
    epoch: int | None = None
    pending: set[str] = field(default_factory=set)  # candidates whose prepare has not answered
    positions: dict[str, Position] = field(default_factory=dict)
    promises: dict[str, dict] = field(default_factory=dict)  # slot → {"storage": identity} of each promise
    trusted: Mapping[str, str | None] | None = None  # Facts.trusted as gathered for this attempt
    winner: str | None = None


@dataclass
class AppElection:
    """Everything the core remembers about one app between events."""

    warming: bool = False  # a warm start was begun (its slots restarted) and has not elected yet
    blocked: bool = False  # the Blocked event was emitted for the current blockage
    attempt: Attempt | None = None
    again: bool = False  # requested while the attempt ran


def never_granted(f: Facts) -> bool:
    """The arbiter's durable record says no epoch of the app was ever granted (``AppState.elected``
    false, as ``trusted == {}``): nothing can have been acknowledged, nothing has to be proven."""
    return f.trusted is not None and not f.trusted


class ElectionCore:
    """Per-app election state and the transition function. Not thread-safe (the runner locks)."""

    def __init__(self) -> None:
        self.apps: dict[str, AppElection] = {}

    def _app(self, app: str) -> AppElection:
        return self.apps.setdefault(app, AppElection())

    def submitted(self, app: str) -> None:
        """A new app instance: nothing remembered of an earlier one of that name. (Whether its
        first election is a cold start is the arbiter's record: ``Facts.trusted``.)"""
        self.apps[app] = AppElection()

    def forget(self, app: str) -> None:
        """The app is gone (terminated); an attempt in progress ends with it."""
        self.apps.pop(app, None)

    def running(self, app: str) -> bool:
        st = self.apps.get(app)
        return st is not None and st.attempt is not None

    def step(self, app: str, event: Event) -> list[Action]:
        st = self._app(app)
        if isinstance(event, Requested):
            if st.attempt is not None:
                st.again = True
                return []
            st.attempt = Attempt()
            return [Gather(app)]
        a = st.attempt
        if a is None:
            return []  # an answer to an attempt that is over
        if isinstance(event, Failed):
            return self._finish(app, st, retry=True)
        if isinstance(event, Gathered):
            if a.epoch is not None or a.mode:
                return []
            return self._gathered(app, st, a, event.facts)
        if isinstance(event, Began):
            if a.epoch is not None or not a.mode:
                return []
            a.epoch = event.epoch
            a.pending = set(a.candidates)
            if not a.pending:
                return self._finish(app, st, retry=True)
            return [Prepare(app, s, a.live[s][1], a.epoch, a.live[s][0]) for s in a.candidates]
        if getattr(event, "epoch", None) != a.epoch:
            return []  # belongs to another attempt
        if isinstance(event, Promised):
            if event.slot not in a.pending:
                return []  # duplicate, or not a candidate
            a.pending.discard(event.slot)
            if event.position is not None:
                a.positions[event.slot] = tuple(event.position)
                a.promises[event.slot] = {"storage": dict(event.storage or {})}
            if a.pending:
                return []
            return self._choose(app, st, a)
        if isinstance(event, Chosen):
            if a.pending or a.winner is not None:
                return []
            if event.winner is None or event.winner not in a.live:
                return self._finish(app, st, retry=True)
            a.winner = event.winner
            netlet, endpoint = a.live[a.winner]
            return [Promote(app, a.winner, netlet, endpoint, a.epoch)]
        if isinstance(event, Promoted):
            if a.winner is None:
                return []
            out: list[Action] = []
            st.warming = False  # granted: the warm start's restarts are done with, whatever came of it
            if event.ok:
                out.append(Won(app, a.winner, a.live[a.winner][0], a.epoch, dict(a.positions), a.mode))
            # not ok: outcome unknown. A master renews (the host counts that as the promotion's
            # completion); a replica that is not one never does, and its lease's expiry elects again.
            return out + self._finish(app, st, retry=False)
        raise TypeError(f"not an election event: {event!r}")

    def _gathered(self, app: str, st: AppElection, a: Attempt, f: Facts) -> list[Action]:
        if not (f.registered and f.owner and f.slots) or f.terminating or f.held:
            return self._finish(app, st, retry=False)
        eligible = tuple(s for s in f.eligible if s in f.live)
        warm = not eligible
        cold = warm and never_granted(f)
        out: list[Action] = []
        if warm and not cold and f.warm_blocked:
            if not st.blocked:
                st.blocked = True
                out.append(Blocked(app, BLOCKED_REASON))
            return out + self._finish(app, st, retry=False)  # re-evaluated at the next readiness or lease event
        st.blocked = False
        if warm:
            if not cold and not st.warming:
                st.warming = True
                out.append(WarmStart(app))
            if set(f.live) != set(f.slots):
                return out + self._finish(app, st, retry=True)  # wait until every slot restored its state
            candidates = tuple(sorted(f.live))
        else:
            candidates = eligible
        a.mode = "cold" if cold else ("warm" if warm else "failover")
        a.live = dict(f.live)
        a.candidates = candidates
        a.warm = tuple(f.slots) if warm else ()
        a.trusted = dict(f.trusted) if f.trusted is not None else None
        return out + [Begin(app, candidates, a.mode)]

    def _choose(self, app: str, st: AppElection, a: Attempt) -> list[Action]:
        """Every candidate answered. A warm start (not a cold one) chooses only from storage that can
        prove what it holds (``hosting.election.warm_proof``): refused outright when no replica of the last
        in-sync set answered with the storage it had; otherwise unproven storage is left out."""
        positions, warm = dict(a.positions), a.warm
        if a.mode == "warm" and not set(warm) <= set(positions):
            # A slot's prepare failed (a timeout, the node short of descriptors): nothing to prove
            # or refuse yet, and every slot is live already, so no readiness event would come to
            # re-evaluate a refusal: ask again (second safety review F3: blocked for good).
            return self._finish(app, st, retry=True)
        if a.mode == "warm":
            refusal = warm_refusal(a.promises, a.trusted)
            if refusal is not None:
                out: list[Action] = [] if st.blocked else [Blocked(app, refusal)]
                st.blocked = True
                return out + self._finish(app, st, retry=False)  # re-evaluated at the next readiness event
            left_out = unproven(a.promises, a.trusted)
            positions = {s: p for s, p in positions.items() if s not in left_out}
            warm = tuple(s for s in warm if s not in left_out)
        return [Choose(app, a.epoch, positions, warm, {s: a.live[s][0] for s in positions})]

    def _finish(self, app: str, st: AppElection, retry: bool) -> list[Action]:
        st.attempt = None
        if st.again:
            st.again = False
            st.attempt = Attempt()
            return [Gather(app)]
        return [Retry(app, ELECTION_RETRY_S)] if retry else []


class ElectionHost(Protocol):
    """What a runner needs from its surroundings. Every method may raise except ``prepare``'s
    ``reply``, which the host must call exactly once per ``prepare`` (None on any failure)."""

    def submit(self, fn: Callable[[], None]) -> None: ...

    def gather(self, app: str) -> Facts: ...

    def begin(self, action: Begin) -> int: ...

    def prepare(self, action: Prepare, reply: Callable[[Position | None], None]) -> None: ...

    def choose(self, action: Choose) -> str | None: ...

    def promote(self, action: Promote) -> bool: ...

    def won(self, action: Won) -> None: ...

    def warm_start(self, action: WarmStart) -> None: ...

    def blocked(self, action: Blocked) -> None: ...

    def retry(self, action: Retry) -> None: ...


class ElectionRunner:
    """Feeds a host's outcomes to the core and carries out the core's actions through the host.

    Thread-safe: the core runs under one lock, actions outside it (so a host may
    answer synchronously, as the simulator does, or from any thread, as the node's
    RPC pool does). ``Gather`` runs on ``host.submit`` so ``request`` never blocks
    its caller on I/O.
    """

    def __init__(self, host: ElectionHost, core: ElectionCore | None = None) -> None:
        self.host = host
        self.core = core or ElectionCore()
        self._lock = threading.Lock()

    def request(self, app: str) -> None:
        self.feed(app, Requested())

    def submitted(self, app: str) -> None:
        with self._lock:
            self.core.submitted(app)

    def forget(self, app: str) -> None:
        with self._lock:
            self.core.forget(app)

    def feed(self, app: str, event: Event) -> None:
        with self._lock:
            actions = self.core.step(app, event)
        for action in actions:
            self._do(action)

    def _do(self, action: Action) -> None:
        app = action.app
        if isinstance(action, Gather):
            self.host.submit(lambda: self._attempt(app, lambda: Gathered(self.host.gather(app))))
        elif isinstance(action, Begin):
            self._attempt(app, lambda: Began(self.host.begin(action)))
        elif isinstance(action, Prepare):
            self.host.prepare(action, lambda position, storage=None: self.feed(
                app, Promised(action.epoch, action.slot, position, storage)))
        elif isinstance(action, Choose):
            self._attempt(app, lambda: Chosen(action.epoch, self.host.choose(action)))
        elif isinstance(action, Promote):
            self._attempt(app, lambda: Promoted(action.epoch, self.host.promote(action)))
        else:
            handler = {Won: self.host.won, WarmStart: self.host.warm_start, Blocked: self.host.blocked,
                       Retry: self.host.retry}[type(action)]
            try:
                handler(action)
            except Exception:
                log.exception("election of %s: %s failed", app, type(action).__name__)

    def _attempt(self, app: str, outcome: Callable[[], Event]) -> None:
        """Run one host step and feed its outcome; a step that raises ends the attempt (Failed)."""
        try:
            event = outcome()
        except Exception as err:
            log.exception("election of %s failed", app)
            event = Failed(f"{type(err).__name__}: {err}")
        self.feed(app, event)
