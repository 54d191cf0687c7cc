"""The connection gate (rpc/gate.py) as a state machine over real socket pairs.

Invariants checked after every step: at most ``per_peer_pending`` pending connections per
peer and ``max_pending`` in all; at most ``max_open`` established that are not reserved (a full gate
evicts the oldest that never proved anything, never a proven one, and refuses only when all are), while
a live holder's (one of the node's netlets) first reserved connection is always admitted, its
further ones only within ``per_holder`` and its app's ``per_app_extra``; a dead holder's proof
reserves nothing; a connection the gate evicted, or a revoked holder held, has its socket shut
down (its peer reads EOF) and is no longer counted once closed; other established and closed
connections are never touched; every refusal is counted and reported once.
"""

from __future__ import annotations

import socket

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rpc.gate import ConnectionGate, RefusalEvents

PEERS = ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
HOLDERS = [("a", "a/w/0#1"), ("a", "a/w/1#1"), ("b", "b/w/0#1")]
PER_HOLDER, PER_APP_EXTRA = 3, 2


class _Conn:
    """What the gate registers: any hashable object; the socket is the server end of a pair."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        self.client.setblocking(False)

    def peer_sees_eof(self) -> bool:
        try:
            return self.client.recv(1) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.server.close()
        self.client.close()


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[str, str]] = []
        self.dead: set[str] = set()  # holders revoked (their process exited)
        self.gate = ConnectionGate(per_peer_pending=3, max_pending=5, max_open=3, per_peer_open=2,
                                   per_holder=PER_HOLDER, per_app_extra=PER_APP_EXTRA,
                                   holder_open=lambda name: name not in self.dead,
                                   observer=lambda reason, peer: self.reports.append((reason, peer)))
        self.pending: dict[_Conn, str] = {}  # the model: conn -> peer, oldest first
        self.established: list[_Conn] = []
        self.holder: dict[_Conn, tuple[str, str]] = {}  # reserved conns -> holder
        self.open_peer: dict[_Conn, str] = {}  # established conns not reserved -> their peer
        self.evicted: list[_Conn] = []
        self.revoked: list[_Conn] = []  # shut down by the gate, not yet closed by their worker
        self.closed: list[_Conn] = []
        self.refusals = 0
        self.proven: set[_Conn] = set()  # established conns whose caller authenticated
        self.evicting: list[_Conn] = []  # open conns shut down to make room, not yet closed
        self.open_evictions = 0  # evicted_unproven refusals so far

    @rule(peer=st.sampled_from(PEERS))
    def admit(self, peer):
        conn = _Conn()
        mine = [c for c, p in self.pending.items() if p == peer]
        victim = mine[0] if len(mine) >= 3 else next(iter(self.pending)) if len(self.pending) >= 5 else None
        self.gate.admit(conn, peer, conn.server)
        if victim is not None:
            del self.pending[victim]
            self.evicted.append(victim)
        self.pending[conn] = peer

    def _expected(self, holder, peer: str) -> str | None:
        if holder is not None and holder[1] in self.dead:
            holder = None
        if holder is None:
            if sum(p == peer for p in self.open_peer.values()) >= 2:
                return "open_peer_full"
            if len(self.open_peer) - len(self.evicting) >= 3 and self._victim() is None:
                return "open_full"
            return None
        mine = sum(h == holder for h in self.holder.values())
        extra = sum(1 for h in self.holder.values() if h[0] == holder[0]) - \
            len({h for h in self.holder.values() if h[0] == holder[0]})
        if mine and mine >= PER_HOLDER:
            return "reserved_netlet_full"
        if mine and extra >= PER_APP_EXTRA:
            return "reserved_app_full"
        return None

    def _victim(self) -> _Conn | None:
        """The oldest open connection that never proved anything (and is not being evicted)."""
        return next((c for c in self.open_peer if c not in self.proven and c not in self.evicting), None)

    @precondition(lambda self: self.pending)
    @rule(i=st.integers(0, 10), holder=st.none() | st.sampled_from(HOLDERS))
    def establish(self, i, holder):
        conn = list(self.pending)[i % len(self.pending)]
        expected = self._expected(holder, self.pending[conn])
        reserved = holder is not None and holder[1] not in self.dead
        full = not reserved and len(self.open_peer) - len(self.evicting) >= 3
        victim = self._victim() if expected is None and full else None
        assert self.gate.established(conn, holder) == expected
        if expected is None:
            peer = self.pending.pop(conn)
            self.established.append(conn)
            if reserved:
                self.holder[conn] = holder
            else:
                self.open_peer[conn] = peer
            if victim is not None:
                self.evicting.append(victim)
                self.open_evictions += 1

    @precondition(lambda self: self.open_peer)
    @rule(i=st.integers(0, 10))
    def prove(self, i):
        conn = list(self.open_peer)[i % len(self.open_peer)]
        self.gate.proven(conn)
        if conn not in self.evicting:  # a late call on an evicted connection proves nothing
            self.proven.add(conn)

    @rule(holder=st.sampled_from(HOLDERS))
    def revoke(self, holder):
        self.dead.add(holder[1])
        mine = [c for c, h in self.holder.items() if h == holder]
        assert self.gate.revoke(holder[1]) == len(mine)
        self.revoked.extend(c for c in mine if c not in self.revoked)

    @precondition(lambda self: self.pending or self.established)
    @rule(i=st.integers(0, 10), from_pending=st.booleans())
    def close(self, i, from_pending):
        pool = list(self.pending) if from_pending and self.pending else self.established or list(self.pending)
        conn = pool[i % len(pool)]
        self.gate.closed(conn)
        self.pending.pop(conn, None)
        if conn in self.established:
            self.established.remove(conn)
            self.holder.pop(conn, None)
            self.open_peer.pop(conn, None)
            self.proven.discard(conn)
            if conn in self.evicting:
                self.evicting.remove(conn)
        if conn in self.revoked:
            self.revoked.remove(conn)
        conn.server.close()
        self.closed.append(conn)

    @invariant()
    def bounds_and_counts(self):
        assert self.gate.counts() == {"pending": len(self.pending), "reserved": len(self.holder),
                                      "established": len(self.established) - len(self.holder)}
        for peer in PEERS:
            assert sum(p == peer for p in self.pending.values()) <= 3
        assert len(self.pending) <= 5
        for peer in PEERS:
            assert sum(p == peer for p in self.open_peer.values()) <= 2
        for app in {a for a, _ in HOLDERS}:
            held = [h for h in self.holder.values() if h[0] == app]
            assert len(held) - len(set(held)) <= PER_APP_EXTRA

    @invariant()
    def only_the_evicted_and_revoked_are_shut_down(self):
        assert all(c.peer_sees_eof() for c in [*self.evicted, *self.revoked, *self.evicting])
        assert not any(c.peer_sees_eof() for c in [*self.pending, *self.established]
                       if c not in self.revoked and c not in self.evicting)
        assert not any(c in self.proven for c in self.evicting)  # an authenticated caller keeps its place
        assert sum(self.gate.refused.values()) == len(self.evicted) + self.open_evictions == len(self.reports)

    def teardown(self):
        for c in [*self.pending, *self.established, *self.evicted, *self.closed]:
            c.close()


TestGate = GateMachine.TestCase
TestGate.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_refusal_events_are_throttled_per_reason_and_carry_their_count():
    events, now = [], [0.0]
    report = RefusalEvents(lambda kind, **d: events.append((kind, d)), interval_s=10, clock=lambda: now[0])
    for _ in range(3):
        report("evicted_peer", "127.0.0.1")
    report("pool_full", "127.0.0.1")
    now[0] = 10.0
    report("evicted_peer", "127.0.0.2")
    assert events == [
        ("connection.refused", {"reason": "evicted_peer", "peer": "127.0.0.1", "count": 1}),
        ("connection.refused", {"reason": "pool_full", "peer": "127.0.0.1", "count": 1}),
        ("connection.refused", {"reason": "evicted_peer", "peer": "127.0.0.2", "count": 3}),
    ]
