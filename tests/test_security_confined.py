"""A confined netlet against what the node and other apps keep (attack c of the issue 14
follow-ups), through a real node in both modes this machine can run: ``uid`` (the node as root,
one uid per app) and ``landlock`` (the node as nobody: netlets share its uid).

Beyond tests/test_confinement.py (the node's keys, registry, secrets key, another app's data
file, listings, signals to the node and another app): another app's log and the node's log
read by name; and the ways around paths through ``/proc`` — the node's and another app's
environment, open descriptors (the node's registry, another netlet's log) and working
directory (another app's slot through ``/proc/<pid>/cwd``).
"""

from __future__ import annotations

import os

import psutil
import pytest

from netlets import landlock
from testkit.node import cleanup_node
from testkit.wait import wait_for
from test_confinement import (NOBODY, launch, netlets_xml, open_home, published,  # noqa: F401 (fixtures)
                              python_for_others, start_node_as_nobody, start_node_as_root)


def _fd_of(pid: int, path) -> int:
    return next(f.fd for f in psutil.Process(pid).open_files() if f.path == str(path))


def _probe_the_node_and_a_victim(node, tmp):
    home = node.home
    launch(node, netlets_xml("victim"), tmp)
    published(node, "victim")
    victim = node.slot("victim", "probe/0")
    victim_slot = home / "apps" / "victim" / "slots" / "probe-0"
    wait_for(lambda: (victim_slot / "data" / "mine").exists(), 10, "the victim's own file")
    victim_log = max((home / "logs" / "victim" / "probe-0").glob("*.log"))
    node_pid = node.info["pid"]
    targets = [victim_log, home / "node.log",
               f"/proc/{node_pid}/environ", f"/proc/{node_pid}/fd/{_fd_of(node_pid, home / 'registry.sqlite')}",
               f"/proc/{node_pid}/cwd/registry.sqlite", f"/proc/{node_pid}/root{home}/node.key.pem",
               f"/proc/{victim['pid']}/environ", f"/proc/{victim['pid']}/fd/1",
               f"/proc/{victim['pid']}/cwd/data/mine", f"/proc/{victim['pid']}/mem"]
    listings = [home / "logs" / "victim" / "probe-0", f"/proc/{node_pid}/fd", f"/proc/{victim['pid']}/cwd",
                f"/proc/{victim['pid']}/fd"]
    launch(node, netlets_xml("mallory", read="|".join(map(str, targets)), listing="|".join(map(str, listings))), tmp)
    seen = published(node, "mallory")
    assert len(seen["probes"]) == len(targets) + len(listings)
    assert {k: v for k, v in seen["probes"].items() if not v.startswith("denied")} == {}
    assert seen["own"]["write data"] == "ok"
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="uid confinement needs the node to run as root")
def test_a_netlet_under_its_own_uid_reads_no_log_and_nothing_through_proc(open_home, tmp_path, monkeypatch,
                                                                           python_for_others):
    monkeypatch.setenv("JTRIX_HOME", str(open_home))
    node = start_node_as_root(open_home, python_for_others)
    try:
        assert node.client.call("host_status")["confinement"]["mode"] == "uid"
        _probe_the_node_and_a_victim(node, tmp_path)
    finally:
        cleanup_node(node)


@pytest.mark.skipif(landlock.abi() < 6, reason="landlock unavailable (or ABI < 6: no signal scoping)")
@pytest.mark.skipif(os.geteuid() != 0, reason="the node is started as nobody through setpriv (needs root)")
def test_a_netlet_with_the_nodes_uid_reads_no_log_and_nothing_through_proc(open_home, tmp_path, python_for_others):
    node = start_node_as_nobody(open_home, python_for_others)
    try:
        assert node.client.call("host_status")["confinement"]["mode"] == "landlock"
        seen = _probe_the_node_and_a_victim(node, tmp_path)
        assert seen["own"]["uid"] == NOBODY
    finally:
        cleanup_node(node)
