"""The connection gate (hosting/wire_gate.py) as a state machine over real socket pairs.

Invariants checked after every step: at most ``per_peer_pending`` pending connections per
peer and ``max_pending`` in all; at most ``max_open`` established that are not reserved, while
reserved ones (the node's netlets) are always admitted; a connection the gate evicted has its socket shut down (its
peer reads EOF) and is no longer counted; established and closed connections are never
touched; every eviction is counted and reported once.
"""

from __future__ import annotations

import socket

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hosting.wire_gate import ConnectionGate, RefusalEvents

PEERS = ["10.0.0.1", "10.0.0.2", "127.0.0.1"]


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
        self.gate = ConnectionGate(per_peer_pending=3, max_pending=5, max_open=2,
                                   observer=lambda reason, peer: self.reports.append((reason, peer)))
        self.pending: dict[_Conn, str] = {}  # the model: conn -> peer, oldest first
        self.established: list[_Conn] = []
        self.reserved: set[_Conn] = set()  # established by the node's own netlets
        self.evicted: list[_Conn] = []
        self.closed: list[_Conn] = []

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

    @precondition(lambda self: self.pending)
    @rule(i=st.integers(0, 10), reserved=st.booleans())
    def establish(self, i, reserved):
        conn = list(self.pending)[i % len(self.pending)]
        room = reserved or len(self.established) - len(self.reserved) < 2
        assert self.gate.established(conn, reserved) is room
        if room:
            del self.pending[conn]
            self.established.append(conn)
            if reserved:
                self.reserved.add(conn)

    @precondition(lambda self: self.pending or self.established)
    @rule(i=st.integers(0, 10), from_pending=st.booleans())
    def close(self, i, from_pending):
        pool = list(self.pending) if from_pending and self.pending else self.established or list(self.pending)
        conn = pool[i % len(pool)]
        self.gate.closed(conn)
        self.pending.pop(conn, None)
        if conn in self.established:
            self.established.remove(conn)
            self.reserved.discard(conn)
        conn.server.close()
        self.closed.append(conn)

    @invariant()
    def bounds_and_counts(self):
        assert self.gate.counts() == {"pending": len(self.pending), "reserved": len(self.reserved),
                                      "established": len(self.established) - len(self.reserved)}
        for peer in PEERS:
            assert sum(p == peer for p in self.pending.values()) <= 3
        assert len(self.pending) <= 5

    @invariant()
    def only_the_evicted_are_shut_down(self):
        assert all(c.peer_sees_eof() for c in self.evicted)
        assert not any(c.peer_sees_eof() for c in [*self.pending, *self.established])
        assert sum(self.gate.refused.values()) == len(self.evicted) == len(self.reports)

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
