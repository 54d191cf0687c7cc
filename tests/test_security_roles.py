"""What a client of an app (the ``call`` right: the client credential; or no credential at all)
can make a netlet do beyond its client surface, through a real node and real netlet endpoints.

Attacks (issue 14 follow-ups): a client's call is read under a client's limits, not a
replica's, whatever method it names (the 256 MiB a snapshot may take is a replica's only).
"""

from __future__ import annotations

import socket

import msgpack
from Pyro5 import protocol

from netlets.credential import client_handshake
from nodeutil import descriptor_xml
from test_wire_attacks import ECHO, address, connect_data, peak_rss, pyro_message, read_reply


def test_a_client_cannot_make_a_netlet_buffer_a_replica_sized_message(node, tmp_path):
    node.launch(descriptor_xml("big", ECHO.format(n=1)), tmp_path)
    node.wait_running("big")
    view = node.slot("big", "w/0")
    with socket.create_connection(address(view["endpoint"]), timeout=5) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT,
                               connect_data(client_handshake(node.app_secret("big"), "big"), "jtrix.netlet")))
        assert read_reply(s)[0] == protocol.MSG_CONNECTOK
        before = peak_rss(view["pid"])
        # a call naming replication_handle, declaring 200 MiB (under a replica's 256): only its first bytes
        call = msgpack.packb(("jtrix.netlet", "replication_handle", [], {}), use_bin_type=True)
        s.sendall(pyro_message(protocol.MSG_INVOKE, call, seq=2, declared=200 << 20))
        msgtype, flags, data = read_reply(s)  # answered from its first bytes, not after 200 MiB
    assert msgtype == protocol.MSG_RESULT and flags & protocol.FLAGS_EXCEPTION
    assert "more than the" in str(data)
    assert peak_rss(view["pid"]) - before < 32 << 20
