"""What a peer can make a real node (or netlet endpoint) spend before it is authenticated.

Security review findings B3 and B5: a call's body buffered at its method's full
limit from its first 296 bytes, deserialized whole (and expanded ~60x) before
the warrant is looked at, and a oneway flag that makes Pyro5 start an unpooled
thread per message. Raw Pyro5 messages are built byte by byte; memory is the
kernel's peak RSS (VmHWM) of the attacked process and threads are read from
its /proc status, so a transient is seen even if it is gone at once.
"""

from __future__ import annotations

import re
import select
import socket

import msgpack
import pytest
from Pyro5 import protocol

from hosting.auth import make_auth
from testkit.wait import wait_for
from test_wire_attacks import address, connect_data, launch_echo, pyro_message, read_reply


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^Threads:\s+(\d+)$", f.read(), re.M).group(1))


def connected(addr: tuple[str, int], handshake=None, obj: str = "jtrix.hosting") -> socket.socket:
    """A raw connection whose first message was accepted."""
    s = socket.create_connection(addr, timeout=10)
    s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data(handshake, obj)))
    assert read_reply(s)[0] == protocol.MSG_CONNECTOK
    return s


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


@pytest.mark.parametrize("flag", ["oneway", "batch"])
def test_oneway_and_batch_calls_are_refused_and_start_no_thread(node, flag):
    # B5: each oneway call was run by Pyro5 in a thread of its own, outside the worker pool:
    # 200 events(wait_s=5) calls on one connection held 200 more threads for 5 s.
    pid, client = node.info["pid"], node.client
    flags = protocol.FLAGS_ONEWAY if flag == "oneway" else protocol.FLAGS_BATCH
    args = (1 << 40, None, 5.0)  # no event that late: each call waits its 5 s
    before = threads_of(pid)
    with connected(address(client.uri)) as s:
        for seq in range(2, 202):
            auth = make_auth(client.warrant_xml, client.key, client.service, "events", args)
            call = msgpack.packb(("jtrix.hosting", "events", [auth, *args], {}), use_bin_type=True)
            try:
                s.sendall(pyro_message(protocol.MSG_INVOKE, call, flags=flags, seq=seq))
            except OSError:
                break  # refused and closed: the rest is never read
        wait_for(lambda: answered(s) or threads_of(pid) > before + 100, 10, "a refusal or new threads")
        grown = threads_of(pid) - before
        assert grown < 20, f"{flag} calls made the node start {grown} threads"
        msgtype, reply_flags, error = read_reply(s)
    assert msgtype == protocol.MSG_RESULT and reply_flags & protocol.FLAGS_EXCEPTION
    assert "oneway and batch calls are refused" in str(error["args"])
    assert client.call("host_status")["pid"] == pid


def test_a_netlet_endpoint_refuses_oneway_calls(node, tmp_path):
    from rpc.credential import client_handshake

    launch_echo(node, tmp_path, "ow", 1)
    view = node.slot("ow", "w/0")
    handshake = client_handshake(node.app_secret("ow"), "ow", view["netlet"])
    with connected(address(view["endpoint"]), handshake, "jtrix.netlet") as s:
        call = msgpack.packb(("jtrix.netlet", "ping", [], {}), use_bin_type=True)
        s.sendall(pyro_message(protocol.MSG_INVOKE, call, flags=protocol.FLAGS_ONEWAY, seq=2))
        msgtype, reply_flags, error = read_reply(s)  # a oneway call gets no answer: only a refusal answers
    assert msgtype == protocol.MSG_RESULT and reply_flags & protocol.FLAGS_EXCEPTION
    assert "oneway and batch calls are refused" in str(error["args"])


def largest_node_call() -> tuple[str, int]:
    """The node method that takes the largest call, and that size."""
    from hosting.api_limits import NODE_LIMITS

    return max(NODE_LIMITS.methods.items(), key=lambda item: item[1])


def test_a_calls_declared_size_costs_the_node_nothing_until_it_is_sent(node):
    # B3 (attack a1): 296 bytes naming the largest method made the node allocate that method's whole
    # limit (65 MB for upload_codebase) and hold it for minutes, before any authentication.
    from test_wire_attacks import peak_rss

    pid, (method, limit) = node.info["pid"], largest_node_call()
    prefix = (b"\x94" + msgpack.packb("jtrix.hosting") + msgpack.packb(method)).ljust(256, b"\0")
    before = peak_rss(pid)
    held = [connected(address(node.client.uri)) for _ in range(8)]
    try:
        for s in held:
            s.sendall(pyro_message(protocol.MSG_INVOKE, prefix, seq=2, declared=limit - 16))
        wait_for(lambda: peak_rss(pid) - before > 256 << 20 or node.client.call("host_status"), 10,
                 "the node to read what was sent")
        grown = peak_rss(pid) - before
        assert grown < 32 << 20, f"8 calls of 296 bytes declaring {limit} bytes cost the node {grown >> 20} MiB"
    finally:
        for s in held:
            s.close()


def test_a_call_that_would_expand_when_deserialized_is_refused_before_pyro5_reads_it(node):
    # B3 (attack a4): a whole call of empty maps (1 byte each on the wire, ~64 as a dict) was
    # deserialized by Pyro5 before the warrant was looked at: 65 MB of it took the node to 3.8 GB.
    # Here: four such calls at once, each as large as the largest node call (at most 2 MiB).
    from test_wire_attacks import peak_rss

    pid, (method, limit) = node.info["pid"], largest_node_call()
    inner = b"\xdc" + (1000).to_bytes(2, "big") + b"\x80" * 1000  # [{}, {}, ...]: 1003 bytes, ~72 KB as objects
    count = (min(limit, 2 << 20) - 64) // len(inner)
    head = b"\x94" + msgpack.packb("jtrix.hosting") + msgpack.packb(method)
    call = head + b"\xdc" + count.to_bytes(2, "big") + inner * count + b"\x80"
    before = peak_rss(pid)
    socks = [connected(address(node.client.uri)) for _ in range(4)]
    try:
        for s in socks:
            s.sendall(pyro_message(protocol.MSG_INVOKE, call, seq=2))
            s.settimeout(120)  # the previous code took its time to build what it was sent
        replies = [read_reply(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    grown = peak_rss(pid) - before
    assert grown < 128 << 20, f"4 calls of {len(call)} bytes cost the node {grown >> 20} MiB before authentication"
    for msgtype, flags, error in replies:
        assert msgtype == protocol.MSG_RESULT and flags & protocol.FLAGS_EXCEPTION
        assert re.search(r"deserializes to more than|budget", str(error["args"])), error
    assert node.client.call("host_status")["pid"] == pid
