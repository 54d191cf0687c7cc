"""An access point waits out a restarting node: a call fails only with ``Unavailable`` after its timeout.

Found by the outside safety review: ``NodeUnreachable`` was a ``NotFound`` ("the
app is gone"), so a call made while the node restarted failed at once, with an
error that says nothing will ever answer, although the command's outcome was
unknown (a retry under a new request id could apply it twice).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import netlets
from hosting.client import HostingClient
from hosting.daemon import start_background
from testkit.kvstore import launch_kvstore, wait_master
from testkit.node import master_of
from testkit.procs import process_dead
from testkit.wait import wait_for

NODE_DOWN_S = 1.0  # how long the node stays dead: the fault under test, not a synchronisation


@pytest.mark.parametrize("path", ["call", "submit"])
def test_a_command_during_a_node_restart_is_waited_out_not_failed(node, tmp_path, path):
    launch_kvstore(node, tmp_path, ttl=0.6)
    kv = netlets.connect("kvstore", timeout=30)
    kv.put("k", "before")
    before = node.app("kvstore")
    node_pid = node.info["pid"]
    os.kill(master_of(before)["pid"], signal.SIGKILL)
    os.kill(node_pid, signal.SIGKILL)
    wait_for(lambda: process_dead(node_pid), 5, "the node's death")

    def restart() -> None:
        time.sleep(NODE_DOWN_S)
        start_background(node.home)
        node.client = HostingClient.for_home(node.home)

    restarter = threading.Thread(target=restart)
    restarter.start()
    started = time.monotonic()
    try:
        (kv.put("k", "during") if path == "call" else kv.submit("put", "k", "during").result())
        outcome = "ok"
    except Exception as err:
        outcome = repr(err)
    took = time.monotonic() - started
    restarter.join()
    wait_master(node, above_epoch=before["epoch"], timeout=30)
    assert outcome == "ok", f"put failed after {took:.2f}s of its 30 s budget with {outcome}"
    assert kv.get_latest("k") == "during"
