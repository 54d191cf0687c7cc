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
  * Capacity for the node's own netlets: a connection whose first message
    proves it is one (``reserved``) is always established; any other is
    established only while fewer than ``max_open`` such are, so with at most
    ``max_pending`` pending, ``pool - max_pending - max_open`` workers are left
    to the node's netlets whatever everyone else does.
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
#: the name under which a node's netlets prove, in their first message, that they are its own
#: (``netlets.credential.make_handshake`` with the node's per-process door key)
OWN_NETLETS = "jtrix/own-netlets"


class ConnectionGate:
    def __init__(self, per_peer_pending: int = PER_PEER_PENDING, max_pending: int = MAX_PENDING,
                 observer: Callable[[str, str], None] | None = None, max_open: int | None = None) -> None:
        if not 1 <= per_peer_pending <= max_pending:
            raise ValueError("a gate needs 1 <= per_peer_pending <= max_pending")
        self.per_peer_pending, self.max_pending = per_peer_pending, max_pending
        self.observer = observer
        self._lock = threading.Lock()
        self._pending: OrderedDict[object, tuple[str, int, int]] = OrderedDict()  # conn -> (peer, fd, family)
        self._by_peer: dict[str, OrderedDict[object, None]] = {}
        self._established: dict[object, bool] = {}  # conn -> reserved
        self.max_open = max_open
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
            self._pending[conn] = (peer, sock.fileno(), sock.family)
            self._by_peer.setdefault(peer, OrderedDict())[conn] = None
        for old, reason in evicted:
            self.refuse(reason, peer)

    def established(self, conn, reserved: bool = False) -> bool:
        """Move a pending connection to established; False (and nothing changes) when it is not
        ``reserved`` and ``max_open`` others already are (the caller refuses it)."""
        with self._lock:
            if conn not in self._pending:
                return conn in self._established
            if not reserved and self.max_open is not None and \
                    sum(1 for r in self._established.values() if not r) >= self.max_open:
                return False
            self._forget(conn)
            self._established[conn] = reserved
            return True

    def closed(self, conn) -> None:
        with self._lock:
            self._forget(conn)
            self._established.pop(conn, None)

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
            reserved = sum(self._established.values())
            return {"pending": len(self._pending), "established": len(self._established) - reserved,
                    "reserved": reserved}

    def _forget(self, conn) -> None:
        entry = self._pending.pop(conn, None)
        if entry is not None:
            mine = self._by_peer[entry[0]]
            mine.pop(conn, None)
            if not mine:
                del self._by_peer[entry[0]]

    def _shut(self, conn) -> None:
        _, fd, family = self._pending[conn]
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
