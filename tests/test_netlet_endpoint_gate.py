"""A holder of only the client credential cannot keep the node's elector (or a master) out of an
app's netlets (security review B4), through a real node and real kvstore replicas on loopback.

Netlet endpoints had no bound on established client connections: a client took every worker of
each replica's endpoint, and after the master died the node could not reach any backup to
promote it (207 elections started and failed in 45 s; a master 0.1 s after the attacker let go).
"""

from __future__ import annotations

import resource
import socket

import pytest
from Pyro5 import protocol

from rpc.credential import client_handshake
from test_replication_e2e import launch_kvstore, wait_master
from test_wire_attacks import address, connect_data, pyro_message, read_reply

pytestmark = pytest.mark.slow


def grab(endpoint: str, handshake) -> socket.socket | None:
    """A client connection established on ``endpoint``, or None if refused."""
    s = socket.create_connection(address(endpoint), timeout=10)
    try:
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data(handshake, "jtrix.netlet")))
        if read_reply(s)[0] == protocol.MSG_CONNECTOK:
            return s
    except (ConnectionError, OSError):
        pass
    s.close()
    return None


def test_clients_holding_every_connection_they_can_do_not_stop_a_failover(node, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    launch_kvstore(node, tmp_path)
    app = node.app("kvstore")
    secret = node.app_secret("kvstore")
    held, refused = [], 0
    try:
        for netlet in app["netlets"]:
            for _ in range(540):
                s = grab(netlet["endpoint"], client_handshake(secret, "kvstore", netlet["netlet"]))
                if s is None:
                    refused += 1
                else:
                    held.append(s)
        old = app["epoch"]
        node.client.call("signal", "kvstore", app["master"], "KILL")
        promoted = wait_master(node, above_epoch=old, timeout=30)  # while every client connection is held
        assert promoted["master"] != app["master"]
        assert refused > 0 and len(held) <= 3 * 256, f"{len(held)} client connections held"
    finally:
        for s in held:
            s.close()
