"""End to end: real node, real netlet processes, real signals."""

from __future__ import annotations

import os
import signal
import time

import pytest

from testkit.node import descriptor_xml, events_of
from testkit.procs import node_children_zombies, process_dead, process_gone
from testkit.wait import wait_for

ECHO2 = """  <netlet type="w" class="workers:Echo" replicas="2">
    <resource kind="directory" name="data"/>
    <resource kind="port" name="http"/>
    <param name="greeting">hi</param>
  </netlet>"""


def call_netlet(node, app, slot, method, *args, netlet=None):
    """Call a netlet's endpoint directly (``netlet``: its status entry; default: the slot's now),
    with the app credential (read from the registry)."""
    from rpc import wire
    from rpc.credential import client_handshake

    netlet = netlet or node.slot(app, slot)
    with wire.proxy(netlet["endpoint"]) as p:
        p._pyroHandshake = client_handshake(node.app_secret(app), app, netlet["netlet"])
        return p.invoke(method, list(args), {})


def test_sigkill_is_replaced_in_the_same_slot_with_the_same_resources(node, tmp_path):
    node.launch(descriptor_xml("echo", ECHO2), tmp_path)
    node.wait_running("echo")
    before = call_netlet(node, "echo", "w/0", "info")
    assert before["inherited"] == {"data": False, "http": False}
    old_pid = before["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: node.slot("echo", "w/0")["pid"] not in (None, old_pid), 10, "a replacement in w/0")
    node.wait_running("echo")
    after = call_netlet(node, "echo", "w/0", "info")
    assert after["pid"] != old_pid
    assert after["resources"] == before["resources"]  # same directory, same port
    assert after["inherited"] == {"data": True, "http": True}
    starts = (node.home / "apps/echo/slots/w-0/data/starts").read_text().split()
    assert starts == [str(old_pid), str(after["pid"])]
    view = node.slot("echo", "w/0")
    assert view["restarts"] == 1 and view["last_exit"] == {"reason": "crashed", "signal": "SIGKILL"}
    exited = [e for e in events_of(node, "netlet.exited", "echo") if e["slot"] == "w/0"]
    assert exited and exited[-1]["detail"]["signal"] == "SIGKILL"
    assert process_gone(old_pid)
    assert node_children_zombies(node.info["pid"]) == []
    # the other slot was untouched
    assert node.slot("echo", "w/1")["restarts"] == 0


def test_sigstop_hang_expires_the_lease_then_kill_and_replace(node, tmp_path):
    ttl, grace = 0.6, 0.5
    node.launch(descriptor_xml("hang", ECHO2, lease=f'ttl="{ttl}" grace="{grace}"'), tmp_path)
    node.wait_running("hang")
    old_pid = node.slot("hang", "w/1")["pid"]
    stopped_at = time.monotonic()
    os.kill(old_pid, signal.SIGSTOP)
    wait_for(lambda: process_gone(old_pid), ttl + grace + 5, "the hung netlet to be killed")
    gone_after = time.monotonic() - stopped_at
    node.wait_running("hang")
    assert gone_after < ttl + grace + 2.0, f"hung netlet lived {gone_after:.2f}s"
    assert node.slot("hang", "w/1")["last_exit"]["reason"] == "lease expired"
    assert any(e["slot"] == "w/1" for e in events_of(node, "lease.expired", "hang"))
    assert node.slot("hang", "w/0")["restarts"] == 0


def test_crash_loop_backs_off_visibly_then_gives_up(node, tmp_path):
    netlets = '  <netlet type="c" class="workers:CrashAtStart" replicas="1"/>'
    restart = 'backoff-base="0.3" backoff-cap="0.6" healthy-after="30" give-up-after="4"'
    node.launch(descriptor_xml("crashy", netlets, restart=restart), tmp_path)
    backoff = wait_for(lambda: (v := node.slot("crashy", "c/0"))["state"] == "backoff" and v, 20,
                       "the slot to show backoff")
    assert backoff["next_attempt_s"] is not None and 0 <= backoff["next_attempt_s"] <= 0.6
    assert backoff["last_exit"]["exit_code"] == 3  # its own sys.exit(3)
    final = wait_for(lambda: (v := node.slot("crashy", "c/0"))["state"] == "failed" and v, 30,
                     "the slot to give up")
    assert final["failures"] == 4
    delays = [e["detail"]["delay_s"] for e in events_of(node, "slot.backoff", "crashy")]
    assert len(delays) == 2 and 0.15 <= delays[0] <= 0.3 and 0.3 <= delays[1] <= 0.6
    assert len(events_of(node, "netlet.started", "crashy")) == 4
    assert len(events_of(node, "slot.gave_up", "crashy")) == 1


def test_user_kill_is_replaced_like_a_crash(node, tmp_path):
    node.launch(descriptor_xml("killme", ECHO2), tmp_path)
    node.wait_running("killme")
    old_pid = node.slot("killme", "w/0")["pid"]
    node.client.call("signal", "killme", "w/0", "KILL")
    wait_for(lambda: node.slot("killme", "w/0")["pid"] not in (None, old_pid), 10, "replacement")
    node.wait_running("killme")
    assert node.slot("killme", "w/0")["last_exit"] == {"reason": "killed by user (SIGKILL)", "signal": "SIGKILL"}


def test_terminate_leaves_no_process_behind(node, tmp_path):
    node.launch(descriptor_xml("bye", ECHO2.replace('replicas="2"', 'replicas="3"')), tmp_path)
    app = node.wait_running("bye")
    pids = [n["pid"] for n in app["netlets"]]
    assert node.client.call("terminate", "bye", 2.0, 30) is True
    assert all(process_gone(p) for p in pids), "a netlet survived terminate"
    assert node_children_zombies(node.info["pid"]) == []
    assert node.client.call("status")["apps"] == []
    kinds = [e["kind"] for e in node.events(0, "bye")]
    assert kinds[-1] == "app.terminated"
    with pytest.raises(Exception, match="no app named"):
        node.client.call("status", "bye")


def test_node_sigkill_leaves_netlets_serving_and_restart_readopts_them(node, tmp_path):
    from hosting.daemon import start_background
    from hosting.client import HostingClient

    node.launch(descriptor_xml("durable", ECHO2), tmp_path)
    netlets = node.wait_running("durable")["netlets"]
    before = {n["slot"]: n["pid"] for n in netlets}
    by_slot = {n["slot"]: n for n in netlets}
    old_node = node.info["pid"]
    os.kill(old_node, signal.SIGKILL)
    wait_for(lambda: process_dead(old_node), 5, "node death")
    # netlets keep running and serving while the node is down
    for slot, pid in before.items():
        assert not process_gone(pid)
        assert call_netlet(node, "durable", slot, "echo", "still here", netlet=by_slot[slot]) == "still here"
    start_background(node.home)
    node.client = HostingClient.for_home(node.home)
    app = node.wait_running("durable")
    assert {n["slot"]: n["pid"] for n in app["netlets"]} == before  # same processes, re-attached
    assert all(n["restarts"] == 0 for n in app["netlets"])
    adopted = {e["slot"] for e in events_of(node, "netlet.adopted", "durable")}
    assert adopted == set(before)
    # their leases are renewed again by the new node
    wait_for(lambda: all(n["lease_ms"] > 0 for n in node.app("durable")["netlets"]), 5, "renewed leases")
    # and crash detection works for adopted (non-child) netlets too
    os.kill(before["w/0"], signal.SIGKILL)
    wait_for(lambda: node.slot("durable", "w/0")["pid"] not in (None, before["w/0"]), 10, "replacement")
    assert node.slot("durable", "w/0")["last_exit"]["reason"] == "crashed"
