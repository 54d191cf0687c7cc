"""Admission of connections to one endpoint: who may wait for a worker's attention, and how many.

Safety model (what must hold):
  * A connection is *pending* from accept until its first message is complete
    (``established``) or it closes. At most ``per_peer_pending`` pending
    connections come from one peer address and at most ``max_pending`` in
    all. Admitting one over either bound evicts the oldest pending connection
    of that peer (or overall): its socket is shut down, so the worker reading
    it returns at once. Hence silent or dripping connections hold at most
    ``max_pending`` workers — the rest of the pool always serves connections
    that completed their first message — and a new connection is never
    refused because of them: a client that sends its first message promptly
    is only evicted if ``per_peer_pending`` newer connections from its own
    address arrive before it has.
  * Capacity for the node's own processes: a connection whose first message
    proves it is held by one of them (``holder``: its app and netlet id, see
    ``rpc.credential.DoorChecker``) is *reserved*; any other is
    established only while fewer than ``max_open`` such are, so with at most
    ``max_pending`` pending, ``pool - max_pending - max_open`` workers are left
    to the node's netlets whatever everyone else does.
  * With ``per_peer_open``, at most that many of those other established
    connections come from one peer address (refused: ``open_peer_full``).
  * A connection the endpoint marks *proven* (``proven``: its caller authenticated, say a
    warrant checked by the node's API) keeps its place. When ``max_open`` unreserved
    connections are open, a new one evicts the oldest that never proved anything
    (``evicted_unproven``) instead of being refused; it is refused (``open_full``) only when
    every one of them is proven. So connections that authenticate nobody -- idle ones kept
    alive by failing calls -- cannot keep out a client with a warrant (second security review
    C1: 256 such connections locked the admin out of the node).
  * No holder takes that capacity from the others: a holder's first reserved
    connection is always established; a further one only while the holder has
    fewer than ``per_holder`` and its app fewer than ``per_app_extra`` such
    further ones. So an app holds at most one reserved connection per live
    netlet plus ``per_app_extra``, whatever its code does with its keys.
  * A holder's connections are reserved only while it is alive: ``holder_open``
    is asked under the gate's lock, and ``revoke(holder)`` (called once it is
    dead, under the same lock) shuts down every connection it holds; so a dead
    holder's key reserves nothing (its connection is an ordinary one, as
    without a key), and nothing it (or a process it left behind) opened stays
    reserved.
  * Every refusal (an eviction, a full pool, a refused first message) is
    counted by reason and reported to ``observer(reason, peer)`` so that
    exhaustion is visible (the node turns it into a metric and an event).
  * A socket is shut down by the gate only while its connection is
    registered; a connection leaves the gate before its socket is closed
    (``closed``), both under the gate's lock, so a file descriptor reused by
    a later connection is never touched.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter, OrderedDict
from typing import Callable

log = logging.getLogger(__name__)

PER_PEER_PENDING = 32
MAX_PENDING = 128
#: established connections that are not the node's own netlets (None: no limit, no reservation)
MAX_OPEN = 256
#: reserved connections of one holder (a netlet: its heartbeat, its arbiter requests, its reports)
PER_HOLDER = 4
#: reserved connections of one app beyond the first of each of its holders
PER_APP_EXTRA = 16

#: who holds a reserved connection: (app, holder), the holder a netlet id
Holder = tuple[str, str]


class ConnectionGate:
    def __init__(self, per_peer_pending: int = PER_PEER_PENDING, max_pending: int = MAX_PENDING,
                 observer: Callable[[str, str], None] | None = None, max_open: int | None = None,
                 per_holder: int = PER_HOLDER, per_app_extra: int = PER_APP_EXTRA,
                 holder_open: Callable[[str], bool] = lambda holder: True,
                 per_peer_open: int | None = None) -> None:
        # holder_open(holder): the holder is alive (asked under the gate's lock, so that a holder
        # revoked (``revoke``) after its proof was checked never gets a connection reserved)
        if not 1 <= per_peer_pending <= max_pending:
            raise ValueError("a gate needs 1 <= per_peer_pending <= max_pending")
        if per_holder < 1 or per_app_extra < 0:
            raise ValueError("a gate needs per_holder >= 1 and per_app_extra >= 0")
        self.per_peer_pending, self.max_pending = per_peer_pending, max_pending
        self.per_holder, self.per_app_extra = per_holder, per_app_extra
        self.holder_open = holder_open
        self.observer = observer
        self._lock = threading.Lock()
        self._socks: dict[object, tuple[int, int]] = {}  # every registered conn -> (fd, family)
        self._pending: OrderedDict[object, str] = OrderedDict()  # conn -> peer, oldest first
        self._by_peer: dict[str, OrderedDict[object, None]] = {}
        self._established: dict[object, Holder | None] = {}  # conn -> its holder (None: not reserved)
        self._held: dict[str, set[object]] = {}  # holder -> its reserved conns
        self._extra: Counter[str] = Counter()  # app -> reserved conns beyond each holder's first
        self.max_open = max_open
        self.per_peer_open = per_peer_open
        self._open_peer: dict[object, str] = {}  # established conn not reserved -> its peer, oldest first
        self._proven: set[object] = set()  # established conns whose caller authenticated
        self._evicting: set[object] = set()  # unproven conns shut down to make room, not yet closed
        self._open_by_peer: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, conn, peer: str, sock: socket.socket) -> None:
        """Register a new connection as pending, evicting the oldest pending ones over the bounds."""
        evicted = []
        with self._lock:
            mine = self._by_peer.get(peer, ())
            if len(mine) >= self.per_peer_pending:
                evicted.append((next(iter(mine)), "evicted_peer"))
            elif len(self._pending) >= self.max_pending:
                evicted.append((next(iter(self._pending)), "evicted_pending"))
            for old, _ in evicted:
                self._shut(old)
                self._forget(old)  # may drop the peer's (now empty) entry: look it up again below
                del self._socks[old]
            self._socks[conn] = (sock.fileno(), sock.family)
            self._pending[conn] = peer
            self._by_peer.setdefault(peer, OrderedDict())[conn] = None
        for old, reason in evicted:
            self.refuse(reason, peer)

    def established(self, conn, holder: Holder | None = None) -> str | None:
        """Move a pending connection to established, reserved for ``holder`` when given; the
        reason it is refused instead (nothing changes; the caller refuses it), None when done.
        A connection already established stays as it is."""
        with self._lock:
            if conn not in self._pending:
                return None if conn in self._established else "closed"
            if holder is not None and not self.holder_open(holder[1]):
                holder = None  # a dead holder's key reserves nothing: an ordinary connection
            evicted = None
            if holder is None:
                peer = self._pending[conn]
                if self.per_peer_open is not None and self._open_by_peer[peer] >= self.per_peer_open:
                    return "open_peer_full"
                if self.max_open is not None and len(self._open_peer) - len(self._evicting) >= self.max_open:
                    evicted = next((c for c in self._open_peer if c not in self._proven and c not in self._evicting),
                                   None)
                    if evicted is None:
                        return "open_full"
                    self._shut(evicted)  # it leaves the gate when its worker closes it (``closed``)
                    self._evicting.add(evicted)
                    evicted_peer = self._open_peer[evicted]
                self._open_peer[conn] = peer
                self._open_by_peer[peer] += 1
            else:
                app, name = holder
                mine = self._held.get(name, ())
                if mine and len(mine) >= self.per_holder:
                    return "reserved_netlet_full"
                if mine and self._extra[app] >= self.per_app_extra:
                    return "reserved_app_full"
                if mine:
                    self._extra[app] += 1
                self._held.setdefault(name, set()).add(conn)
            self._forget(conn)
            self._established[conn] = holder
        if evicted is not None:
            self.refuse("evicted_unproven", evicted_peer)
        return None

    def proven(self, conn) -> None:
        """``conn``'s caller authenticated: it keeps its place when the endpoint is full."""
        with self._lock:
            if conn in self._open_peer and conn not in self._evicting:
                self._proven.add(conn)

    def holder_of(self, conn) -> Holder | None:
        """Whom ``conn`` is reserved for (None: an ordinary connection, or not established)."""
        with self._lock:
            return self._established.get(conn)

    def revoke(self, holder: str) -> int:
        """Shut down every connection ``holder`` holds (it is gone: what it opened dies with it);
        how many. Each leaves the gate when its worker closes it (``closed``)."""
        with self._lock:
            mine = list(self._held.get(holder, ()))
            for conn in mine:
                self._shut(conn)
            return len(mine)

    def closed(self, conn) -> None:
        with self._lock:
            self._forget(conn)
            holder = self._established.pop(conn, None)
            self._socks.pop(conn, None)
            self._proven.discard(conn)
            self._evicting.discard(conn)
            peer = self._open_peer.pop(conn, None)
            if peer is not None:
                self._open_by_peer[peer] -= 1
                if not self._open_by_peer[peer]:
                    del self._open_by_peer[peer]
            if holder is not None:
                app, name = holder
                mine = self._held[name]
                mine.discard(conn)
                if mine:
                    self._extra[app] -= 1  # the holder still has its first: this one was extra
                else:
                    del self._held[name]
                if not self._extra[app]:
                    del self._extra[app]

    def refuse(self, reason: str, peer: str) -> None:
        with self._lock:
            self.refused[reason] += 1
        log.debug("connection from %s refused: %s", peer, reason)  # the observer reports, throttled
        if self.observer is not None:
            try:
                self.observer(reason, peer)
            except Exception:  # an observer's failure must not change who is admitted
                log.exception("connection observer failed")

    def counts(self) -> dict[str, int]:
        with self._lock:
            reserved = sum(h is not None for h in self._established.values())
            return {"pending": len(self._pending), "established": len(self._established) - reserved,
                    "reserved": reserved}

    def _forget(self, conn) -> None:
        """Drop ``conn`` from the pending connections (if it is one)."""
        peer = self._pending.pop(conn, None)
        if peer is not None:
            mine = self._by_peer[peer]
            mine.pop(conn, None)
            if not mine:
                del self._by_peer[peer]

    def _shut(self, conn) -> None:
        fd, family = self._socks[conn]
        try:
            # fromfd duplicates the descriptor: shutting the duplicate down shuts the connection down
            with socket.fromfd(fd, family, socket.SOCK_STREAM) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class RefusalEvents:
    """A gate observer recording refusals as events through ``add_event(kind, **detail)``: at most
    one ``connection.refused`` event per reason per ``interval_s``, carrying how many refusals of
    that reason it stands for, so a flood is visible without flooding the event log."""

    def __init__(self, add_event: Callable[..., object], interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.add_event, self.interval_s, self.clock = add_event, interval_s, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unreported: Counter[str] = Counter()

    def __call__(self, reason: str, peer: str) -> None:
        with self._lock:
            self._unreported[reason] += 1
            now = self.clock()
            if now - self._last.get(reason, -self.interval_s) < self.interval_s:
                return
            self._last[reason] = now
            count, self._unreported[reason] = self._unreported[reason], 0
        self.add_event("connection.refused", reason=reason, peer=peer, count=count)
