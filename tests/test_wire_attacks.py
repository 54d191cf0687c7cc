"""Hostile connections against a real node and real netlet endpoints (rpc/wire.py, rpc/guard.py, rpc/gate.py).

Issue 14, items 3 and 6: a compressed first message must cost no memory, an
oversize message is refused from its header, and hundreds of connections that
drip a byte now and then hold up no new client, no replacement netlet and no
netlet endpoint. Raw Pyro5 messages are built here byte by byte (the attacker
does not use Pyro5's client); memory is the kernel's peak RSS (VmHWM) of the
attacked process, so a transient inflation is seen even if freed at once.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import socket
import struct
import threading
import time
import urllib.request
import zlib

import msgpack
import pytest
from Pyro5 import protocol

from hosting.client import HostingClient
from testkit.node import descriptor_xml, events_of
from testkit.wait import wait_for

ECHO = '  <netlet type="w" class="workers:Echo" replicas="{n}"/>'
MSGPACK = 4


def pyro_message(msgtype: int, data: bytes, flags: int = 0, seq: int = 1, declared: int | None = None) -> bytes:
    """A Pyro5 wire message (protocol 502) whose header declares ``declared`` data bytes (default: len(data))."""
    header = struct.pack(protocol._header_format, b"PYRO", protocol.PROTOCOL_VERSION, msgtype, MSGPACK, flags, seq,
                         len(data) if declared is None else declared, 0, b"\0" * 16, 0, 0x4DC5)
    return header + data


def connect_data(handshake=None, obj: str = "jtrix.hosting") -> bytes:
    return msgpack.packb({"handshake": handshake, "object": obj}, use_bin_type=True)


def read_reply(sock: socket.socket) -> tuple[int, int, object]:
    """(type, flags, deserialized data) of the next message on ``sock``."""
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    fields = struct.unpack(protocol._header_format, exact(protocol._header_size))
    msgtype, flags, data_size, ann_size = fields[2], fields[4], fields[6], fields[7]
    body = exact(data_size + ann_size)[ann_size:]
    return msgtype, flags, msgpack.unpackb(body, raw=False)


def address(uri: str) -> tuple[str, int]:
    host, port = uri.split("@", 1)[1].rsplit(":", 1)
    return host, int(port)


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of ``pid``'s resident memory, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def compressed_zeros(inflated: int) -> bytes:
    """A zlib stream of ``inflated`` zero bytes (about a thousandth of that), made without holding them."""
    z, chunk, out = zlib.compressobj(9), bytes(1 << 20), []
    for _ in range(inflated // len(chunk)):
        out.append(z.compress(chunk))
    return b"".join(out) + z.flush()


def launch_echo(node, tmp_path, app: str, replicas: int) -> None:
    node.launch(descriptor_xml(app, ECHO.format(n=replicas)), tmp_path)
    node.wait_running(app)


def call_netlet(node, app: str, slot: str, method: str = "info"):
    from rpc import wire
    from rpc.credential import client_handshake

    netlet = node.slot(app, slot)
    with wire.proxy(netlet["endpoint"], timeout=5) as p:
        p._pyroHandshake = client_handshake(node.app_secret(app), app, netlet["netlet"])
        return p.invoke(method, [], {})


@pytest.mark.parametrize("target", ["node", "netlet"])
def test_a_compressed_first_message_is_refused_without_costing_memory(node, tmp_path, target):
    if target == "node":
        pid, addr, obj = node.info["pid"], address(node.client.uri), "jtrix.hosting"
    else:
        launch_echo(node, tmp_path, "bomb", 1)
        view = node.slot("bomb", "w/0")
        pid, addr, obj = view["pid"], address(view["endpoint"]), "jtrix.netlet"
    bomb = compressed_zeros(256 * 1024 * 1024 - 4096)  # ~250 KB on the wire, just under Pyro5's old 256 MiB cap
    before = peak_rss(pid)
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, bomb, flags=protocol.FLAGS_COMPRESSED))
        msgtype, _, reason = read_reply(s)
    grown = peak_rss(pid) - before
    assert grown < 32 * 1024 * 1024, f"a {len(bomb)}-byte message cost the {target} {grown >> 20} MiB"
    assert msgtype == protocol.MSG_CONNECTFAIL and "compressed" in reason
    if target == "node":
        assert node.client.call("host_status")["pid"] == pid
    else:
        assert call_netlet(node, "bomb", "w/0")["pid"] == pid


def test_an_oversize_first_message_is_refused_from_its_header(node):
    with socket.create_connection(address(node.client.uri), timeout=3) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, b"\x80" * 100, declared=1 << 20))
        msgtype, _, reason = read_reply(s)  # the other 1 MiB is never sent: it must not be waited for
    assert msgtype == protocol.MSG_CONNECTFAIL and "more than the 8192" in reason


def test_a_call_is_held_to_its_methods_limit_before_its_body_is_read(node):
    big = b"x" * (2 << 20)  # more than any small call takes, far less than an upload may be
    with socket.create_connection(address(node.client.uri), timeout=3) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data()))
        assert read_reply(s)[0] == protocol.MSG_CONNECTOK
        call = msgpack.packb(("jtrix.hosting", "status", [big], {}), use_bin_type=True)
        s.sendall(pyro_message(protocol.MSG_INVOKE, call[:300], seq=2, declared=len(call)))
        msgtype, flags, error = read_reply(s)  # answered without the body
    assert msgtype == protocol.MSG_RESULT and flags & protocol.FLAGS_EXCEPTION
    assert error["__exception__"] and "status: message of" in str(error["args"])
    with socket.create_connection(address(node.client.uri), timeout=10) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data()))
        assert read_reply(s)[0] == protocol.MSG_CONNECTOK
        call = msgpack.packb(("jtrix.hosting", "upload_codebase", [{"bogus": 1}, big], {}), use_bin_type=True)
        s.sendall(pyro_message(protocol.MSG_INVOKE, call, seq=2))
        msgtype, flags, error = read_reply(s)  # read whole, then refused by the API itself (no warrant)
    assert msgtype == protocol.MSG_RESULT and flags & protocol.FLAGS_EXCEPTION
    assert "message of" not in str(error.get("args"))


class Drip:
    """``n`` connections to ``addr`` that each send one byte every ``every_s`` seconds, forever; a
    connection the server closes is opened again at the next round (the attacker keeps ``n`` open)."""

    def __init__(self, addr: tuple[str, int], n: int, every_s: float = 2.0) -> None:
        self.addr, self.every_s = addr, every_s
        self.socks = [self._open() for _ in range(n)]
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=10)
        s.sendall(b"P")
        return s

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            for i, s in enumerate(self.socks):
                try:
                    s.sendall(b"Y")
                except OSError:
                    s.close()
                    try:
                        self.socks[i] = self._open()
                        self.reopened += 1
                    except OSError:
                        pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for s in self.socks:
            s.close()


def refused_metric(node, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.info['metrics_port']}/metrics", timeout=5).read().decode()
    found = re.search(rf'^jtrix_api_connections_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_hundreds_of_dripping_connections_hold_up_no_client_no_netlet_and_no_replacement(node, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    launch_echo(node, tmp_path, "drip", 2)
    drips = [Drip(address(node.client.uri), 520), Drip(address(node.slot("drip", "w/0")["endpoint"]), 520)]
    try:
        for _ in range(5):  # new clients, each on a new connection, while 1040 connections drip
            fresh = HostingClient(node.client.uri, node.client.warrant_xml, node.client.key, timeout=5)
            assert fresh.call("host_status")["pid"] == node.info["pid"]
            fresh.close()
            assert call_netlet(node, "drip", "w/0")["pid"] == node.slot("drip", "w/0")["pid"]
        assert node.jtrix("status", timeout=30).returncode == 0  # a new CLI process
        old = node.slot("drip", "w/1")["pid"]
        signal_sent = time.monotonic()
        import os
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: node.slot("drip", "w/1")["pid"] not in (None, old), 15, "a replacement netlet")
        node.wait_running("drip", timeout=20)
        assert call_netlet(node, "drip", "w/1")["pid"] != old
        assert time.monotonic() - signal_sent < 20
        # the refusals are visible: a metric and (throttled) events
        assert refused_metric(node, "evicted_peer") > 0
        assert any(e["detail"]["reason"] == "evicted_peer" for e in events_of(node, "connection.refused"))
    finally:
        for d in drips:
            d.close()


@pytest.fixture
def echo_daemon():
    """A real wire.Daemon on loopback serving an echo object; shut down after the test."""
    import Pyro5.api

    from rpc import wire

    @Pyro5.api.expose
    class Echo:
        def echo(self, x):
            return x

    wire.configure()
    daemon = wire.Daemon("127.0.0.1", 0)
    uri = str(daemon.register(Echo(), "jtrix.hosting"))
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    yield uri
    daemon.shutdown()
    thread.join(timeout=10)


def drip_until_closed(sock: socket.socket, data: bytes, every_s: float, limit_s: float) -> float:
    """Send ``data`` a byte every ``every_s`` s until the server answers or closes; seconds it took
    (fails after ``limit_s``). The message is never complete before then: its last byte is never sent."""
    started = time.monotonic()
    for i in range(len(data) - 1):
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return time.monotonic() - started
        if time.monotonic() - started > limit_s:
            break
        sock.settimeout(every_s)
        try:
            sock.recv(1)  # an answer (the refusal) or the end of the connection
            return time.monotonic() - started
        except socket.timeout:
            pass
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"the server still read a dripping peer after {limit_s}s")


def test_the_first_message_has_a_total_deadline_that_dripping_does_not_extend(echo_daemon, monkeypatch):
    from rpc import wire
    monkeypatch.setattr(wire, "FIRST_MESSAGE_S", 1.5, raising=False)
    with socket.create_connection(address(echo_daemon), timeout=5) as s:
        took = drip_until_closed(s, pyro_message(protocol.MSG_CONNECT, connect_data()), every_s=0.3, limit_s=6)
    assert took < 1.5 + 1.5


def test_a_later_message_must_complete_once_started_however_slowly_it_drips(echo_daemon, monkeypatch):
    from rpc import guard as wire_guard
    monkeypatch.setattr(wire_guard, "HEADER_S", 1.5, raising=False)
    with socket.create_connection(address(echo_daemon), timeout=5) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data()))
        assert read_reply(s)[0] == protocol.MSG_CONNECTOK
        call = msgpack.packb(("jtrix.hosting", "echo", [1], {}), use_bin_type=True)
        took = drip_until_closed(s, pyro_message(protocol.MSG_INVOKE, call, seq=2), every_s=0.3, limit_s=6)
    assert took < 1.5 + 1.5


def test_a_client_sending_an_oversize_call_is_told_why(node):
    from warrants.errors import BadInput
    # 1.5 MiB for `status` (more than it takes, less than the node's largest call): refused from its
    # first bytes; the rest is read and dropped for a moment (never buffered) so that the sender gets
    # the refusal, not a broken pipe
    with pytest.raises(BadInput, match=r"status: message of \d+ bytes, more than the \d+ it takes"):
        node.client.call("status", "x" * (3 << 19))
    with pytest.raises(BadInput, match=r"message of \d+ bytes, more than the \d+ this endpoint takes"):
        node.client.call("upload_codebase", bytes(4 << 20), None)  # over the node's largest: from its header
    assert node.client.call("host_status")["pid"] == node.info["pid"]


def test_connections_that_complete_their_handshake_cannot_take_the_capacity_of_the_nodes_netlets(node, tmp_path):
    # The node's API authenticates per call, so anyone on loopback can complete the first message and
    # hold a worker; the node's own netlets prove themselves in theirs and keep capacity reserved.
    # The attacker is greedy: it holds every connection it gets and keeps trying for more, so a
    # worker freed by the killed netlet goes to whoever asks first unless capacity is reserved.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    launch_echo(node, tmp_path, "held", 2)
    held, refused, stop = [], [0], threading.Event()

    def grab() -> bool:
        s = socket.create_connection(address(node.client.uri), timeout=10)
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data()))
        try:
            if read_reply(s)[0] == protocol.MSG_CONNECTOK:
                held.append(s)
                return True
        except (ConnectionError, OSError):
            pass
        refused[0] += 1
        s.close()
        return False

    def greedy() -> None:
        while not stop.is_set() and len(held) < 600:
            if not grab():
                stop.wait(0.01)  # the attacker's pace, not a synchronization

    for _ in range(520):
        grab()
    attacker = threading.Thread(target=greedy, daemon=True)
    attacker.start()
    try:
        # none that proves nothing keeps its place once the gate is full: the attacker churns
        wait_for(lambda: refused_metric(node, "evicted_unproven") > 0, 10, "unproven connections evicted")
        old = node.slot("held", "w/1")["pid"]
        import os
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: node.slot("held", "w/1")["pid"] not in (None, old), 15, "a replacement netlet")
        node.wait_running("held", timeout=20)
        assert call_netlet(node, "held", "w/1")["pid"] != old
    finally:
        stop.set()
        attacker.join(timeout=30)
        for s in held:
            s.close()


def test_connections_that_authenticate_nobody_cannot_keep_a_warrant_holder_out(node):
    """Second security review C1: 256 connections that completed their first message and then
    authenticated nobody (kept alive by failing calls) locked the admin out of the node's API
    ("more than 256 connections are open"). Now a full gate evicts the oldest connection that never
    authenticated, and a connection whose caller did keeps its place. Fails on the old gate: the
    admin's call is refused with open_full."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    held = []

    def grab() -> None:
        s = socket.create_connection(address(node.client.uri), timeout=10)
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data()))
        held.append(s)
        with contextlib.suppress(ConnectionError, OSError):
            read_reply(s)

    try:
        admin = HostingClient.for_home(node.home)
        assert admin.call("host_status")["pid"] == node.info["pid"]  # an authenticated connection
        for _ in range(300):  # more than the 256 the gate keeps open for callers like these
            grab()
        fresh = HostingClient.for_home(node.home)  # a new client while the gate is full
        assert fresh.call("host_status")["pid"] == node.info["pid"]
        for _ in range(300):  # and the attacker keeps coming
            grab()
        assert admin.call("host_status")["pid"] == node.info["pid"]  # its place was kept
        assert fresh.call("host_status")["pid"] == node.info["pid"]
        assert refused_metric(node, "evicted_unproven") > 0
    finally:
        for s in held:
            s.close()
