"""Node-issued warrants (a netlet's, a bootstrap's) open nothing once their process is gone or
their app instance is not the current one (``hosting.bindings``): reproductions of an outside
attack (a hostile bootstrap and a hostile netlet exfiltrating their warrants) on a real node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import warrants
from hosting.client import HostingClient
from testkit.node import APPS, descriptor_xml, events_of
from testkit.procs import process_dead
from testkit.wait import wait_for

HOSTILE = APPS / "hostile"


def _shop(cls: str, codebase: Path, boot: str = "") -> str:
    return descriptor_xml("shop", f'<netlet type="w" class="hostile:{cls}" replicas="1">'
                                  '<resource kind="directory" name="data"/></netlet>' + boot, codebase=codebase)


def _thief(node, stolen: dict) -> HostingClient:
    return HostingClient(node.client.uri, stolen["warrant"].encode(),
                         load_pem_private_key(stolen["key_pem"].encode(), None))


def _outcome(client: HostingClient, method: str, *args) -> str:
    try:
        client.call(method, *args)
        return "opened"
    except warrants.NotFound as err:
        return f"gone: {err}"
    except warrants.InsufficientRights as err:
        return f"refused: {err}"


def _gone(node, app: str) -> None:
    assert node.client.call("terminate", app, 0.5, 30.0)
    wait_for(lambda: app not in {a["name"] for a in node.client.call("status")["apps"]}, 30, f"{app} gone")


def _package(tmp_path: Path, xml: str) -> tuple[Path, bytes, str]:
    path = tmp_path / f"desc-{os.urandom(4).hex()}.xml"
    path.write_text(xml)
    data, sha = warrants.package_codebase(warrants.load_descriptor(path))
    return path, data, sha


@pytest.fixture
def listener():
    s = socket.create_server(("127.0.0.1", 0))
    s.settimeout(30)
    yield s
    s.close()


def test_a_bootstrap_warrant_opens_only_run_netlet_and_status_and_dies_with_its_bootstrap(node, tmp_path,
                                                                                         listener):
    """The attack: a hostile bootstrap sent its warrant out; once the app was terminated and another
    tenant launched an app of the same name, the thief uploaded its code and replaced that app
    (``submit_app(replace=True)``), running as it in its slot directories."""
    code = tmp_path / "code"
    shutil.copytree(HOSTILE, code, ignore=shutil.ignore_patterns("__pycache__"))
    (code / "port.txt").write_text(str(listener.getsockname()[1]))
    node.launch(descriptor_xml("other", '<netlet type="w" class="workers:Echo" replicas="1"/>'), tmp_path,
                start=False)
    node.launch(_shop("Reader", code, '<bootstrap class="hostile:Thief"/>'), tmp_path)
    conn, _ = listener.accept()
    conn.settimeout(10)
    raw = b""
    while chunk := conn.recv(65536):
        raw += chunk
    thief = _thief(node, json.loads(raw))
    # while its bootstrap runs: run_netlet and status of its own app, nothing else
    assert thief.call("status", "shop")["apps"][0]["name"] == "shop"
    _, data, sha = _package(tmp_path, _shop("Reader", HOSTILE))
    xml_path = tmp_path / "evil.xml"
    xml_path.write_text(_shop("Reader", HOSTILE))
    for method, args in [("has_codebase", (sha,)), ("upload_codebase", (data, sha)),
                         ("submit_app", (xml_path.read_bytes(), str(xml_path), sha, True, True)),
                         ("terminate", ("shop",)), ("signal", ("shop", "w/0", "KILL")),
                         ("logs", ("shop", "bootstrap")), ("events", (0, "shop")), ("control_state", ("shop",)),
                         ("status", ()), ("host_status", ()), ("status", ("other",)),
                         ("run_netlet", ("other", "w/0"))]:
        assert _outcome(thief, method, *args).startswith("refused"), method
    assert thief.call("run_netlet", "shop", "w/0") == "shop/w/0#1"
    conn.close()  # the bootstrap goes on (start_if_missing: nothing left to start) and exits
    wait_for(lambda: events_of(node, "bootstrap.finished", "shop"), 30, "the bootstrap to finish")
    assert _outcome(thief, "status", "shop").startswith("gone"), "its bootstrap is gone"
    _gone(node, "shop")
    # another tenant: an app "shop" with its own data
    node.launch(_shop("Writer", HOSTILE), tmp_path)
    wait_for(lambda: node.slot("shop", "w/0")["app_status"].get("wrote"), 30, "the new tenant's file")
    pid = node.slot("shop", "w/0")["pid"]
    for method, args in [("upload_codebase", (data, sha)),
                         ("submit_app", (xml_path.read_bytes(), str(xml_path), sha, True, True)),
                         ("run_netlet", ("shop", "w/0")), ("status", ("shop",))]:
        assert not _outcome(thief, method, *args).startswith("opened"), method
    thief.close()
    assert node.slot("shop", "w/0")["pid"] == pid and not node.slot("shop", "w/0")["app_status"].get("found")


def test_a_netlet_warrant_opens_its_own_calls_only_while_its_netlet_lives_in_its_app_instance(node, tmp_path):
    """The attack: a hostile netlet published its warrant; after the netlet died, the app was
    terminated and another tenant launched an app of the same name, the warrant still opened
    ``status``, ``logs``, ``events`` and ``control_state`` of the new app."""
    node.launch(descriptor_xml("shop", '<netlet type="w" class="hostile:Exfil" replicas="1"/>',
                               codebase=HOSTILE), tmp_path)
    first = wait_for(lambda: node.slot("shop", "w/0")["app_status"].get("warrant") and
                     node.slot("shop", "w/0")["app_status"], 30, "the exfiltrated warrant")
    thief = _thief(node, first)
    assert thief.call("status", "shop")["apps"][0]["name"] == "shop"  # its netlet lives: its own app's status
    for method, args in [("logs", ("shop", "w/0")), ("events", (0, "shop")), ("control_state", ("shop",)),
                         ("run_netlet", ("shop", "w/0")), ("status", ())]:
        assert _outcome(thief, method, *args).startswith("refused"), method
    # its netlet dies and is replaced (same app instance): the old warrant is dead with it
    os.kill(node.slot("shop", "w/0")["pid"], signal.SIGKILL)
    second = wait_for(lambda: (s := node.slot("shop", "w/0")["app_status"]).get("netlet_id") not in
                      (None, first["netlet_id"]) and s, 30, "the replacement's warrant")
    for method, args in [("status", ("shop",)), ("renew", (first["netlet_id"], {})),
                         ("report", (first["netlet_id"], {"app_status": {"forged": True}}))]:
        assert _outcome(thief, method, *args).startswith("gone"), method
    thief.close()
    thief = _thief(node, second)
    assert _outcome(thief, "status", "shop") == "opened"
    _gone(node, "shop")
    # another tenant's app of the same name: its netlet gets the same id (shop/w/0#1) as the first
    node.launch(descriptor_xml("shop", '<netlet type="w" class="hostile:Exfil" replicas="2"/>',
                               codebase=HOSTILE), tmp_path)
    node.wait_running("shop")
    assert node.slot("shop", "w/0")["netlet"] == first["netlet_id"]
    for stolen in (first, second):
        thief = _thief(node, stolen)
        for method, args in [("status", ("shop",)), ("logs", ("shop", "w/0")), ("events", (0, "shop")),
                             ("control_state", ("shop",)), ("renew", (stolen["netlet_id"], {}))]:
            assert not _outcome(thief, method, *args).startswith("opened"), (stolen["netlet_id"], method)
        thief.close()


def test_an_adopted_netlets_warrant_still_works_after_the_node_restarts(node, tmp_path):
    """Liveness comes from what the node re-adopts (registry + pidfd), not from memory of issuing."""
    from hosting.daemon import start_background

    node.launch(descriptor_xml("shop", '<netlet type="w" class="hostile:Exfil" replicas="1"/>',
                               codebase=HOSTILE), tmp_path)
    stolen = wait_for(lambda: node.slot("shop", "w/0")["app_status"].get("warrant") and
                      node.slot("shop", "w/0")["app_status"], 30, "the netlet's warrant")
    pid = node.slot("shop", "w/0")["pid"]
    old_node = node.info["pid"]
    os.kill(old_node, signal.SIGKILL)
    wait_for(lambda: process_dead(old_node), 5, "node death")
    start_background(node.home)
    node.client = HostingClient.for_home(node.home)
    wait_for(lambda: events_of(node, "netlet.adopted", "shop"), 20, "the netlet re-adopted")
    netlet = _thief(node, stolen)
    assert netlet.call("status", "shop")["apps"][0]["netlets"][0]["pid"] == pid
    assert netlet.call("renew", stolen["netlet_id"], {})["lease_s"] > 0
    netlet.close()
    # and the netlet's own heartbeat goes on being accepted: its lease stays renewed, never replaced
    wait_for(lambda: node.slot("shop", "w/0")["lease_ms"] > 0, 10, "renewed lease")
    assert node.slot("shop", "w/0")["pid"] == pid and node.slot("shop", "w/0")["restarts"] == 0


def _delegate(node, rights: list[str], app: str):
    import datetime as dt

    admin_key = warrants.load_private_key(node.home / "admin.key.pem")
    holder = warrants.generate_key()
    now = dt.datetime.now(dt.timezone.utc)
    xml = warrants.issue_warrant(admin_key, warrants.make_self_signed_cert(admin_key, "admin"), rights=rights,
                                 service=node.client.service, app=app, holder=holder.public_key(),
                                 not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1),
                                 parent_xml=(node.home / "admin.warrant.xml").read_bytes())
    return xml, holder


def test_replacing_an_app_needs_the_terminate_right(node, tmp_path):
    """``submit_app(replace=True)`` terminates the running app: ``launch`` alone must not do it."""
    xml = descriptor_xml("mine", '<netlet type="w" class="workers:Echo" replicas="1"/>')
    path, data, sha = _package(tmp_path, xml)
    node.client.call("upload_codebase", data, sha)
    node.client.call("submit_app", path.read_bytes(), str(path), sha, False, True)
    pid = node.wait_running("mine")["netlets"][0]["pid"]
    launcher = HostingClient(node.client.uri, *_delegate(node, ["launch", "status"], "mine"))
    with pytest.raises(warrants.InsufficientRights, match="terminate"):
        launcher.call("submit_app", path.read_bytes(), str(path), sha, True, True)
    launcher.close()
    assert node.slot("mine", "w/0")["pid"] == pid and not events_of(node, "app.terminating", "mine")
    replacer = HostingClient(node.client.uri, *_delegate(node, ["launch", "terminate", "status"], "mine"))
    assert replacer.call("submit_app", path.read_bytes(), str(path), sha, True, True)["app"] == "mine"
    replacer.close()
    wait_for(lambda: node.slot("mine", "w/0")["pid"] not in (None, pid), 30, "the replaced app's netlet")
