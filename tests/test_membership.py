"""Cluster membership on a real etcd: members, app claims, and fencing of a paused node (SIGSTOP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hosting.cluster.etcd import Etcd
from hosting.cluster.membership import AppClaimed, EtcdMembership, EtcdMembershipConfig, LocalMembership
from warrants.errors import BadInput

from test_etcd import wait_for


def member(etcd, name, service="svc-a", fenced=None, ttl=2):
    return EtcdMembership(etcd, name, {"uri": f"PYRO:x@127.0.0.1:{len(name)}", "service": service},
                          on_fenced=(fenced.append if fenced is not None else lambda why: None),
                          config=EtcdMembershipConfig(ttl=ttl))


def test_members_are_listed_while_joined_and_gone_at_once_when_they_leave(etcd):
    a, b = member(etcd, "a"), member(etcd, "b", service="svc-b")
    a.join()
    b.join()
    try:
        nodes = {m.name: m for m in a.nodes()}
        assert set(nodes) == {"a", "b"} and all(m.healthy for m in nodes.values())
        assert nodes["b"].service == "svc-b" and nodes["b"].pid == os.getpid()
    finally:
        b.close(leave=True)
    assert [m.name for m in a.nodes()] == ["a"]
    a.close(leave=True)


def test_a_name_belongs_to_one_home_but_the_same_home_takes_its_stale_key_over(etcd):
    a = member(etcd, "n1", service="home-1")
    a.join()
    with pytest.raises(BadInput, match="taken by a live node of another home"):
        member(etcd, "n1", service="home-2").join()
    again = member(etcd, "n1", service="home-1")  # the same node restarted before its lease lapsed
    again.join()
    try:
        assert etcd.get("nodes/n1").lease == again.lease
        a._stop.set()  # the old incarnation is gone; it must not touch the new one's key
    finally:
        again.close()


def test_an_app_is_claimed_by_one_live_node_at_a_time(etcd):
    a, b = member(etcd, "a"), member(etcd, "b", service="svc-b")
    a.join()
    b.join()
    try:
        a.claim_app("kv")
        a.claim_app("kv")  # idempotent for its owner
        with pytest.raises(AppClaimed, match="runs on node a"):
            b.claim_app("kv")
        a.release_app("kv")
        b.claim_app("kv")
        b.close(leave=True)  # leaving drops its claims with its lease
        a.claim_app("kv")
    finally:
        a.close()


def test_local_membership_is_one_healthy_node():
    local = LocalMembership("local", {"uri": "PYRO:x@127.0.0.1:1", "service": "s", "pid": 7, "started": 1.0})
    local.join()
    local.claim_app("anything")
    [only] = local.nodes()
    assert (only.name, only.healthy, only.pid) == ("local", True, 7)


def test_ttl_below_one_second_is_refused_at_construction():
    with pytest.raises(BadInput, match="at least 1 s"):
        EtcdMembershipConfig(ttl=0)


PAUSABLE = """
import sys, time
from hosting.cluster.etcd import Etcd
from hosting.cluster.membership import EtcdMembership, EtcdMembershipConfig
etcd = Etcd(sys.argv[1], sys.argv[2])
m = EtcdMembership(etcd, "paused", {"uri": "PYRO:x@127.0.0.1:9", "service": "svc-p"},
                   on_fenced=lambda why: print("fenced:", why, flush=True), config=EtcdMembershipConfig(ttl=2))
m.join()
m.claim_app("kv")
print("joined", flush=True)
while True:
    time.sleep(1)
"""


def test_a_paused_node_is_declared_dead_after_its_lease_and_finds_itself_fenced_on_resume(etcd, tmp_path):
    out = open(tmp_path / "out", "w+")
    proc = subprocess.Popen([sys.executable, "-c", PAUSABLE, etcd.url, etcd.prefix], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    observer = member(etcd, "observer", service="svc-o")
    observer.join()
    try:
        wait_for(lambda: "joined" in (tmp_path / "out").read_text())
        assert {m.name for m in observer.nodes()} == {"observer", "paused"}
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: {m.name for m in observer.nodes()} == {"observer"}, timeout=15)
        observer.claim_app("kv")  # its claim went with its lease: the app can move
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: "fenced: membership lease expired" in (tmp_path / "out").read_text())
        wait_for(lambda: {m.name for m in observer.nodes()} == {"observer", "paused"})  # rejoined
        assert etcd.get("apps/kv/owner").value == b"observer"  # but did not take the app back
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        observer.close()
        out.close()
