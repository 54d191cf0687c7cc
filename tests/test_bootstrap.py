"""Custom bootstraps (descriptor ``<bootstrap class=…>``): a real node runs them as their own process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from testkit.node import descriptor_xml, events_of
from testkit.procs import kill_recorded, process_dead, process_gone
from testkit.wait import wait_for

ECHO2 = '  <netlet type="w" class="workers:Echo" replicas="2"/>'


def with_bootstrap(name: str, class_ref: str) -> str:
    return descriptor_xml(name, f'{ECHO2}\n  <bootstrap class="{class_ref}"/>')


@pytest.fixture
def bnode(node):
    """The node fixture, plus at teardown: apps are terminated (so the node reaps its children, which is
    quicker than the harness killing orphans) and any bootstrap still alive is killed with its group."""
    yield node
    try:
        for app in node.client.call("status")["apps"]:
            node.client.call("terminate", app["name"], 0.5, 10)
    except Exception:
        pass  # the node may be gone; the harness still kills what it recorded
    node_pid = (node.info or {}).get("pid")
    for e in events_of(node, "bootstrap.started"):
        pid = e["detail"]["pid"]
        try:
            if psutil.Process(pid).ppid() == node_pid:
                kill_recorded(pid, None)
        except psutil.NoSuchProcess:
            pass


def bootstrap_end(node, app: str, timeout: float = 15.0) -> dict:
    """The bootstrap.finished/failed event of ``app`` (waits for it)."""
    def ended():
        return [e for e in node.events(0, app) if e["kind"] in ("bootstrap.finished", "bootstrap.failed")]
    return wait_for(ended, timeout, f"the bootstrap of {app} to end")[-1]


def test_custom_bootstrap_starts_slots_in_its_order_and_exits(bnode, tmp_path):
    node = bnode
    node.launch(with_bootstrap("ordered", "bootstraps:SecondFirst"), tmp_path)
    end = bootstrap_end(node, "ordered")
    assert end["kind"] == "bootstrap.finished", end
    app = node.wait_running("ordered", timeout=5)
    assert sorted(n["slot"] for n in app["netlets"]) == ["w/0", "w/1"]  # the bootstrap is not a slot
    started = [e for e in node.events(0, "ordered") if e["kind"] in ("netlet.started", "netlet.ready")]
    assert [(e["kind"], e["slot"]) for e in started] == [
        ("netlet.started", "w/1"), ("netlet.ready", "w/1"), ("netlet.started", "w/0"), ("netlet.ready", "w/0")]
    boot = events_of(node, "bootstrap.started", "ordered")
    assert len(boot) == 1 and boot[0]["detail"]["mode"] == "cold"
    assert boot[0]["index"] < started[0]["index"] < end["index"]
    detail = end["detail"]
    assert detail["exit_code"] == 0 and detail["pid"] == boot[0]["detail"]["pid"]
    log_path = Path(detail["log"])
    assert log_path.parent == node.home / "logs" / "ordered" / "bootstrap" and log_path.is_file()
    assert "started ordered/w/1#1" in log_path.read_text()
    assert process_gone(detail["pid"])  # reaped by the node, not a zombie
    assert not events_of(node, "bootstrap.started", "ordered")[1:]  # never restarted


@pytest.mark.parametrize("class_ref, code, says", [
    ("bootstraps:Fails", 1, "RuntimeError: bootstrap failed on purpose"),
    ("bootstraps:NotABootstrap", 70, "is not a subclass of netlets.Bootstrap"),
])
def test_failing_bootstrap_is_recorded_with_exit_code_and_log(bnode, tmp_path, class_ref, code, says):
    node = bnode
    node.launch(with_bootstrap("broken", class_ref), tmp_path)
    end = bootstrap_end(node, "broken")
    assert end["kind"] == "bootstrap.failed"
    assert end["detail"]["exit_code"] == code
    log_path = Path(end["detail"]["log"])
    assert log_path.parent == node.home / "logs" / "broken" / "bootstrap"
    assert says in log_path.read_text()
    # the bootstrap log is readable through the hosting API like a netlet's
    assert says.encode() in node.client.call("logs", "broken", "bootstrap")["data"]
    assert not events_of(node, "netlet.started", "broken")  # nothing was started in its place
    assert all(n["netlet"] is None for n in node.app("broken")["netlets"])


def test_a_bootstrap_warrant_without_its_live_run_opens_nothing(bnode, tmp_path):
    """A warrant bound to a bootstrap run the node is not watching (never ran, or exited) is refused
    even with the app's current instance (tests/test_bound_warrants.py: what a live run's opens)."""
    import warrants
    from hosting import bindings
    from hosting.client import HostingClient

    node = bnode
    node.launch(descriptor_xml("mine", ECHO2), tmp_path, start=False)
    binding = bindings.bind(bindings.BOOTSTRAP, bindings.instance_of(node.app_secret("mine")),
                            "mine/bootstrap#" + "0" * 16)
    xml, key = bindings.issue(warrants.load_private_key(node.home / "node.key.pem"),
                              warrants.load_cert(node.home / "node.crt.pem"), node.client.service, binding)
    client = HostingClient(node.info["uri"], xml, key)
    try:
        for method, args in [("status", ("mine",)), ("run_netlet", ("mine", "w/0"))]:
            with pytest.raises(bindings.HolderGone, match="not alive on this node"):
                client.call(method, *args)
        assert not events_of(node, "netlet.started")  # the refused calls changed nothing
    finally:
        client.close()


def test_terminate_kills_a_running_bootstrap_and_its_group(bnode, tmp_path):
    node = bnode
    node.launch(with_bootstrap("slow", "bootstraps:Slow"), tmp_path)
    boot_pid = wait_for(lambda: events_of(node, "bootstrap.started", "slow"), 10, "bootstrap start")[0]["detail"]["pid"]
    children = wait_for(lambda: [c.pid for c in psutil.Process(boot_pid).children() if c.name() == "sleep"], 10,
                        "the bootstrap's child")
    netlet_pid = wait_for(lambda: node.slot("slow", "w/0")["pid"], 10, "w/0 started")
    assert node.client.call("terminate", "slow", 1.0, 20) is True
    end = bootstrap_end(node, "slow", timeout=5)
    assert end["kind"] == "bootstrap.failed"
    assert end["detail"]["reason"] == "terminated" and end["detail"]["signal"] == "SIGKILL"
    assert process_gone(boot_pid) and process_gone(netlet_pid)
    assert all(process_dead(c) for c in children)  # killed with the group (reaped by whoever adopted it)
    node_pid = node.info["pid"]
    assert psutil.Process(node_pid).children() == []
    assert node.client.call("status")["apps"] == []


def test_warm_start_runs_the_custom_bootstrap(bnode, tmp_path):
    """Every replica of a master-eligible type SIGKILLed: the node re-runs the bootstrap in warm mode."""
    node = bnode
    kvstore = Path(__file__).resolve().parent.parent / "examples" / "kvstore"
    xml = (kvstore / "bootstrap.xml").read_text().replace('<codebase path="."/>', f'<codebase path="{kvstore}"/>')
    xml = xml.replace('durability="fsync"', 'durability="memory"')
    xml = xml.replace("</app>", '  <bootstrap class="netlets.bootstrap:Bootstrap"/>\n</app>')
    node.launch(xml, tmp_path)
    wait_for(lambda: events_of(node, "election.won", "kvstore"), 20, "the cold election to end")
    before = node.app("kvstore")
    assert bootstrap_end(node, "kvstore")["kind"] == "bootstrap.finished"
    for n in before["netlets"]:
        os.kill(n["pid"], signal.SIGKILL)
    wait_for(lambda: (a := node.app("kvstore"))["master"] and a["epoch"] > before["epoch"], 30, "a new master")
    runs = wait_for(lambda: (e := [x for x in node.events(0, "kvstore") if x["kind"].startswith("bootstrap.")])
                    and len(e) >= 4 and e, 10, "the warm bootstrap to end")
    assert [(e["kind"], e["detail"]["mode"]) for e in runs] == [
        ("bootstrap.started", "cold"), ("bootstrap.finished", "cold"),
        ("bootstrap.started", "warm"), ("bootstrap.finished", "warm")]
