"""The node's door (rpc/gate.py, rpc/credential.py DoorChecker) against a hostile netlet.

Issue 14 follow-up: the key that reserves the node's capacity for its own netlets was one key
per node, in every app's start document, and reserved connections were unbounded, so one app's
code could take every worker of the node (and a replacement netlet of another app could then
not reach the node: no lease, restarted again and again). Now each netlet has its own key,
the proof names the netlet, a netlet holds at most ``PER_HOLDER`` reserved connections and an
app ``PER_APP_EXTRA`` beyond one per netlet, and a dead netlet's key reserves nothing.
The attacker is a real app (``tests/apps/hostile``: ``DoorHog``) whose code does the attack.
"""

from __future__ import annotations

import re
import resource
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from rpc.gate import PER_HOLDER
from rpc.credential import door_handshake
from testkit.node import APPS, descriptor_xml, events_of
from testkit.wait import wait_for

sys.path.insert(0, str(APPS / "hostile"))
from hostile import open_door  # noqa: E402  (the attacker's own connection maker)

ECHO = '  <netlet type="w" class="workers:Echo" replicas="{n}"/>'


def hog_xml(name: str, connections: int, replicas: int = 1) -> str:
    return descriptor_xml(name, f"""
  <netlet type="hog" class="hostile:DoorHog" replicas="{replicas}">
    <param name="connections">{connections}</param>
  </netlet>""", codebase=APPS / "hostile")


def metric(node, name: str, label: str, value: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.info['metrics_port']}/metrics", timeout=5).read().decode()
    found = re.search(rf'^{name}{{{label}="{value}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def address(uri: str) -> tuple[str, int]:
    host, port = uri.split("@", 1)[1].rsplit(":", 1)
    return host, int(port)


def hog_status(node, app: str, slot: str = "hog/0") -> dict:
    return node.slot(app, slot).get("app_status", {}).get("hog") or {}


@pytest.fixture
def many_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


def test_a_netlet_taking_the_nodes_capacity_gets_its_share_and_other_apps_keep_their_netlets(node, tmp_path):
    node.launch(descriptor_xml("victim", ECHO.format(n=2)), tmp_path)
    node.wait_running("victim")
    victim_w0 = node.slot("victim", "w/0")["pid"]
    node.launch(hog_xml("hog", 600), tmp_path)
    # the hog has tried for more than it may hold (it publishes what it got and why not more)
    hog = wait_for(lambda: (h := hog_status(node, "hog")) and (h["refused"] or h["held"] >= 600) and h,
                   60, "the hog's first round of connections")
    # its runner holds one or two of its PER_HOLDER (heartbeat, reports): the hog gets the rest only
    assert hog["held"] <= PER_HOLDER, f"one netlet holds {hog['held']} reserved connections to the node"
    assert any("already holds" in why for why in hog["refused"]), hog
    # another app's replacement netlet still reaches the node and keeps its lease
    old = node.slot("victim", "w/1")["pid"]
    import os
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: node.slot("victim", "w/1")["pid"] not in (None, old), 15, "a replacement netlet")
    node.wait_running("victim", timeout=20)
    assert node.slot("victim", "w/0")["pid"] == victim_w0
    assert not events_of(node, "lease.expired", "victim")
    # the hog's extras are visible: counted by reason, and an event
    assert metric(node, "jtrix_api_connections_refused_total", "reason", "reserved_netlet_full") > 0
    assert any(e["detail"].get("reason") == "reserved_netlet_full" for e in events_of(node, "connection.refused"))
    assert metric(node, "jtrix_api_connections", "state", "reserved") <= 2 * PER_HOLDER + 3  # victims', hog's


def test_an_apps_netlets_share_a_bounded_number_of_extra_connections(node, tmp_path, many_files):
    from rpc.gate import PER_APP_EXTRA
    node.launch(descriptor_xml("victim", ECHO.format(n=1)), tmp_path)
    node.wait_running("victim")
    victim = node.slot("victim", "w/0")["pid"]
    # eight hogs race their own runners for the app's share: a runner refused its heartbeat
    # connection loses its netlet (the attacker's own loss), so only the node's side is checked
    node.launch(hog_xml("hogs", 600, replicas=8), tmp_path)
    wait_for(lambda: metric(node, "jtrix_api_connections_refused_total", "reason", "reserved_app_full") > 0,
             60, "the app's share exhausted")
    for _ in range(20):  # samples while the hogs keep trying
        reserved = metric(node, "jtrix_api_connections", "state", "reserved")
        assert reserved <= 8 + PER_APP_EXTRA + PER_HOLDER  # the hogs' share, and the victim's
    assert node.slot("victim", "w/0")["pid"] == victim and not events_of(node, "lease.expired", "victim")
    assert any(e["detail"].get("reason") == "reserved_app_full" for e in events_of(node, "connection.refused"))


def test_a_dead_netlets_key_reserves_nothing_and_what_it_left_open_is_shut(node, tmp_path):
    node.launch(hog_xml("gone", 1), tmp_path)
    node.wait_running("gone")
    door = wait_for(lambda: node.slot("gone", "hog/0").get("app_status", {}).get("door"), 30, "the hog's door")
    addr = address(node.client.uri)
    proof = lambda holder=door["holder"]: door_handshake(bytes.fromhex(door["key"]), holder)  # noqa: E731
    # what a process the netlet left behind would hold: the rest of the netlet's reserved connections
    left = []
    while True:
        s, why = open_door(*addr, proof())
        if s is None:
            assert "already holds" in why, why
            break
        left.append(s)
        assert len(left) <= PER_HOLDER
    assert left, "the live netlet's key opens its reserved connections"
    # the key names its holder: it proves no other netlet
    s, _ = open_door(*addr, proof(holder=door["holder"].replace("#", "#9")))
    assert s is not None  # an ordinary connection, not reserved for anyone
    s.close()
    pid = node.slot("gone", "hog/0")["pid"]
    import os
    os.kill(pid, signal.SIGKILL)
    for sock in left:  # shut down by the node once it saw the netlet die
        sock.settimeout(10)
        assert sock.recv(1) == b"", "a connection of a dead netlet stays open"
        sock.close()
    wait_for(lambda: node.slot("gone", "hog/0")["pid"] not in (None, pid), 15, "a replacement")
    # the dead netlet's key now opens only ordinary connections: more than PER_HOLDER, none reserved
    before = metric(node, "jtrix_api_connections", "state", "established")
    extra = [open_door(*addr, proof())[0] for _ in range(PER_HOLDER + 2)]
    try:
        assert all(s is not None for s in extra)
        assert metric(node, "jtrix_api_connections", "state", "established") >= before + PER_HOLDER + 2
    finally:
        for s in extra:
            if s is not None:
                s.close()
