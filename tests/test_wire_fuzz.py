"""Bounded fuzzing of the RPC envelope against real ``wire.Daemon``s (a plain one and a netlet's
``AppDaemon`` with its credential check) on loopback.

Property: whatever bytes a peer sends — random, a valid exchange mutated, any
handshake payload — the server answers or closes the connection once the peer
stops sending, never crashes a worker with an unhandled exception, keeps
serving a well-behaved client, forgets every connection it closed, and serves
every call in its pool's workers: no message makes it start a thread of its own
(Pyro5 did for each call flagged oneway: security review B5).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import msgpack
import Pyro5.api
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from Pyro5 import protocol, svr_threads

from rpc import wire
from hosting.election.grants import GrantSigner, GrantVerifier
from rpc.credential import HandshakeChecker, client_handshake
from netlets.endpoint import AppDaemon
from testkit.wait import wait_for

SECRET, APP, NETLET = b"s" * 32, "fuzz", "fuzz/w/0#1"
#: every flag a Pyro5 message header may carry
PYRO_FLAGS = [getattr(protocol, name) for name in dir(protocol) if name.startswith("FLAGS_")]


@Pyro5.api.expose
class Echo:
    def echo(self, x):
        return x

    def invoke(self, method, args, kwargs, req_id=None):
        return [method, args]

    def hold(self, seconds):
        """Occupy the thread serving the call for a moment (so a stray thread is still alive to see)."""
        threading.Event().wait(min(float(seconds), 0.5))
        return seconds


def message(msgtype: int, data: bytes, seq: int = 1, flags: int = 0, serializer: int = 4) -> bytes:
    return struct.pack(protocol._header_format, b"PYRO", protocol.PROTOCOL_VERSION, msgtype, serializer, flags, seq,
                       len(data), 0, b"\0" * 16, 0, 0x4DC5) + data


def valid_exchange(obj: str, handshake) -> bytes:
    connect = msgpack.packb({"handshake": handshake, "object": obj}, use_bin_type=True)
    call = msgpack.packb((obj, "echo", [1, "two", b"3"], {}), use_bin_type=True)
    return message(protocol.MSG_CONNECT, connect) + message(protocol.MSG_INVOKE, call, seq=2)


def _grant_signer() -> GrantSigner:
    """A lone node's grant signer (the netlet endpoint verifies grants with what it trusts)."""
    from types import SimpleNamespace

    import warrants

    key = warrants.generate_key()
    return GrantSigner.for_node(SimpleNamespace(tls=None, node_key=key,
                                                node_cert=warrants.make_self_signed_cert(key, "node")))


@pytest.fixture(scope="module")
def servers():
    wire.configure()
    plain = wire.Daemon("127.0.0.1", 0)
    plain_uri = str(plain.register(Echo(), "jtrix.hosting"))
    netlet = AppDaemon(HandshakeChecker(SECRET, APP, NETLET), GrantVerifier(_grant_signer().trust()))
    netlet_uri = str(netlet.register(Echo(), "jtrix.netlet"))
    threads = [threading.Thread(target=d.requestLoop, daemon=True) for d in (plain, netlet)]
    for t in threads:
        t.start()
    yield {"plain": (plain, plain_uri), "netlet": (netlet, netlet_uri)}
    for d in (plain, netlet):
        d.shutdown()
    for t in threads:
        t.join(timeout=10)


def well_behaved_call(kind: str, uri: str) -> None:
    with wire.proxy(uri, timeout=5) as p:
        if kind == "netlet":
            p._pyroHandshake = client_handshake(SECRET, APP, NETLET)
        assert p.echo(7) == 7


def send_and_drain(uri: str, data: bytes) -> None:
    """Send ``data``, stop sending, and read until the server closes (it must, promptly)."""
    host, port = uri.split("@", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the server already closed: fine
        deadline = time.monotonic() + wire.FIRST_MESSAGE_S + 3
        while time.monotonic() < deadline:
            try:
                if not s.recv(65536):
                    return
            except socket.timeout:
                break
            except OSError:
                return
        raise AssertionError("the server kept a connection open after its peer stopped sending")


json_like = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
                         | st.binary(max_size=20),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)


@st.composite
def envelopes(draw, obj: str):
    kind = draw(st.sampled_from(["random", "mutated", "handshake", "header", "call"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "handshake":
        payload = draw(json_like | st.fixed_dictionaries({"app": st.just(APP), "to": st.just(NETLET), "ts": st.floats(),
                                                          "nonce": st.text(max_size=40), "mac": st.text(max_size=70)}))
        return valid_exchange(obj, payload)
    if kind == "header":  # every header field chosen by the attacker, with a short body
        fields = [draw(st.integers(0, 2**16 - 1)) if f == "H" else draw(st.integers(0, 255)) if f == "B"
                  else draw(st.integers(0, 2**32 - 1)) for f in "HBBHHII"]
        fields[0] = draw(st.sampled_from([protocol.PROTOCOL_VERSION, fields[0]]))
        head = struct.pack("!4sHBBHHII16sHH", b"PYRO", *fields, b"\0" * 16, 0, 0x4DC5)
        return head + draw(st.binary(max_size=200))
    if kind == "call":  # a valid connection, then a valid call whose flags the attacker chooses
        connect = msgpack.packb({"handshake": client_handshake(SECRET, APP, NETLET), "object": obj}, use_bin_type=True)
        call = msgpack.packb((obj, "hold", [0.5], {}), use_bin_type=True)
        flags = draw(st.lists(st.sampled_from(PYRO_FLAGS), max_size=3))
        return message(protocol.MSG_CONNECT, connect) + message(protocol.MSG_INVOKE, call, seq=2, flags=sum(set(flags)))
    data = bytearray(valid_exchange(obj, client_handshake(SECRET, APP, NETLET)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 40))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=40))
        elif data:
            data[i] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 2]))
    return bytes(data)


class _Unhandled(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("kind", ["plain", "netlet"])
def test_no_envelope_crashes_or_wedges_the_server(servers, kind):
    daemon, uri = servers[kind]
    obj = "jtrix.netlet" if kind == "netlet" else "jtrix.hosting"
    unhandled = _Unhandled()
    pyro_log = logging.getLogger("Pyro5")
    pyro_log.addHandler(unhandled)
    try:
        @settings(max_examples=120, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(data=envelopes(obj))
        def run(data):
            send_and_drain(uri, data)
            strays = [t for t in threading.enumerate()
                      if t not in before and t.is_alive() and not isinstance(t, svr_threads.Worker)]
            assert not strays, f"the server started threads outside its pool: {strays}"
            well_behaved_call(kind, uri)

        before = set(threading.enumerate())

        run()
    finally:
        pyro_log.removeHandler(unhandled)
    assert not unhandled.records, [r.getMessage() for r in unhandled.records][:3]
    wait_for(lambda: daemon.gate.counts() == {"pending": 0, "established": 0, "reserved": 0}, 10,
             "the gate to forget every closed connection")
