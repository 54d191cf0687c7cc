"""Hosting nodes joined on a real etcd: membership, app claims, cluster-wide epochs, fencing.

Two nodes (two homes, two daemons) share one private etcd under a prefix of
this test's own. What is checked is what a user of several machines relies on
today: every node sees every member and its health; an app name runs on one
node only; the app's fencing epochs live in etcd; a node paused past its
membership lease is declared dead, and on resuming finds itself fenced, kills
its netlets (the cluster presumed them dead) and brings the app back by a warm
start without losing an acknowledged write.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import netlets
from hosting.client import HostingClient
from hosting.daemon import start_background
from hosting.cluster_store import ClusterStore
from hosting.etcd import Etcd
from warrants.errors import BadInput
from etcdutil import unique_prefix
from nodeutil import RunningNode, cleanup_node, descriptor_xml, events_of, process_dead, wait_for
from test_replication_e2e import KVSTORE, master_of

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(etcd_url, tmp_path):
    url = etcd_url + unique_prefix().rstrip("/")
    nodes: list[RunningNode] = []

    def join(name: str) -> RunningNode:
        home = tmp_path / name
        start_background(home, cluster=url, name=name)
        node = RunningNode(home, HostingClient.for_home(home))
        nodes.append(node)
        return node

    join.url = url
    try:
        yield join
    finally:
        for node in nodes:
            cleanup_node(node)


def launch_kvstore(node: RunningNode, tmp_path: Path) -> None:
    xml = (KVSTORE / "bootstrap.xml").read_text().replace('<codebase path="."/>', f'<codebase path="{KVSTORE}"/>')
    node.launch(xml, tmp_path)


def kvstore_master(node: RunningNode, above_epoch: int = 0) -> dict:
    def ready():
        a = node.app("kvstore")
        return a if a["master"] and a["epoch"] > above_epoch and master_of(a)["role"] == "master" else None
    return wait_for(ready, 30, f"a kvstore master above epoch {above_epoch}")


def test_nodes_see_each_other_and_an_app_name_runs_on_one_node(cluster, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    status = json.loads(n2.jtrix("host", "status", "--json").stdout)
    assert status["name"] == "n2" and status["cluster"] == cluster.url
    assert {n["name"]: n["healthy"] for n in status["nodes"]} == {"n1": True, "n2": True}
    human = n1.jtrix("host", "status").stdout
    assert "n1" in human and "n2" in human and "healthy" in human

    launch_kvstore(n1, tmp_path)
    app = kvstore_master(n1)
    assert {n["node"] for n in app["netlets"]} == {"n1"}
    arbiter = Etcd(cluster.url).get("apps/kvstore/arbiter").json()
    assert arbiter["epoch"] == app["epoch"] and arbiter["holder"] == app["master"]
    # what any node would need to run or take over the app: its spec and codebase, by hash
    store = ClusterStore(Etcd(cluster.url))
    spec = store.get_app("kvstore")
    assert spec["secret"] == n1.app_secret("kvstore")
    assert store.get_codebase(spec["codebase"]) == (n1.home / "codebases" / f"{spec['codebase']}.tar.gz").read_bytes()

    with pytest.raises(BadInput, match="runs on node n1"):
        launch_kvstore(n2, tmp_path)
    assert n2.client.call("status", None, "node")["apps"] == []  # refused before anything was registered
    # ...while n2's cluster-wide view shows n1's app, and where each netlet runs
    [seen] = json.loads(n2.jtrix("status", "--json").stdout)["apps"]
    assert seen["name"] == "kvstore" and {n["node"] for n in seen["netlets"]} == {"n1"}
    # terminated on n1: its claim and spec leave etcd, and the name is free for n2
    assert n1.client.call("terminate", "kvstore", None, 30)
    assert ClusterStore(Etcd(cluster.url)).get_app("kvstore") is None
    launch_kvstore(n2, tmp_path)
    assert {n["node"] for n in kvstore_master(n2)["netlets"]} == {"n2"}


def test_any_nodes_admin_warrant_works_on_every_node_and_outsiders_are_refused(cluster, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    launch_kvstore(n1, tmp_path)
    kvstore_master(n1)
    # n1's admin warrant and key, pointed at n2 (jtrix --host): n2 trusts every member's warrants
    at_n2 = n1.jtrix("--host", n2.info["uri"], "host", "status", "--json")
    assert at_n2.returncode == 0, at_n2.stderr
    assert json.loads(at_n2.stdout)["name"] == "n2"
    status = n1.jtrix("--host", n2.info["uri"], "status", "kvstore", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["apps"][0]["name"] == "kvstore"
    # a node that never joined: its admin warrant is nobody's in this cluster
    outsider = RunningNode(tmp_path / "outsider", None)
    start_background(outsider.home)
    try:
        refused = outsider.jtrix("--host", n2.info["uri"], "status")
        assert refused.returncode == 2 and "is not trusted" in refused.stderr, refused.stderr
    finally:
        outsider.client = HostingClient.for_home(outsider.home)
        cleanup_node(outsider)
    bad = n1.jtrix("--host", "not-a-uri", "status")
    assert bad.returncode == 2 and "--host: 'not-a-uri' is not a Pyro URI" in bad.stderr


def test_a_taken_node_name_is_refused_with_a_one_line_error(cluster, tmp_path):
    cluster("n1")
    other = tmp_path / "other"
    result = RunningNode(other, None).jtrix("host", "start", "--cluster", cluster.url, "--name", "n1")
    assert result.returncode == 2, result.stderr
    assert "node name 'n1' is taken by a live node of another home" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_paused_node_is_fenced_kills_its_netlets_and_warm_starts_without_losing_writes(cluster, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    kv = netlets.connect("kvstore", n1.home)
    written = {f"k{i}": f"v{i}" for i in range(100)}
    for k, v in written.items():
        kv.put(k, v)
    kv.close()

    node_pid = n1.info["pid"]
    os.kill(node_pid, signal.SIGSTOP)
    try:
        wait_for(lambda: {n["name"] for n in n2.client.call("host_status")["nodes"]} == {"n2"}, 20,
                 "n2 to see the paused n1 declared dead")
        assert Etcd(cluster.url).get("apps/kvstore/owner") is None  # its claim went with it
    finally:
        os.kill(node_pid, signal.SIGCONT)
    wait_for(lambda: events_of(n1, "node.fenced"), 20, "n1 to find itself fenced")
    # every netlet of before is dead: SIGKILLed by its fenced node (or, for the master, ended by
    # itself first when it could not renew its control lease while the node was paused)
    wait_for(lambda: all(process_dead(n["pid"]) for n in before["netlets"]), 10, "the fenced netlets dead")
    after = kvstore_master(n1, above_epoch=before["epoch"])
    assert {n["pid"] for n in after["netlets"]}.isdisjoint({n["pid"] for n in before["netlets"]})
    assert any(e["detail"].get("mode") == "warm" for e in events_of(n1, "app.bootstrap", "kvstore"))
    assert {n["name"] for n in n2.client.call("host_status")["nodes"]} == {"n1", "n2"}  # rejoined
    assert Etcd(cluster.url).get("apps/kvstore/owner").value == b"n1"  # and re-claimed its app
    kv = netlets.connect("kvstore", n1.home)
    assert {k: kv.get_latest(k) for k in written} == written


def test_bad_or_unreachable_cluster_urls_are_one_line_errors(tmp_path):
    from etcdutil import free_port

    runner = RunningNode(tmp_path / "h", None)
    bad = runner.jtrix("host", "start", "--cluster", "etcd-host:2379")
    assert bad.returncode == 2 and "etcd URL must look like http://HOST:PORT" in bad.stderr, bad.stderr
    down = runner.jtrix("host", "start", "--cluster", f"http://127.0.0.1:{free_port()}", "--name", "x")
    assert down.returncode == 1 and "did not answer" in down.stderr, down.stderr
    assert "Traceback" not in bad.stderr + down.stderr


def test_a_node_cut_off_from_etcd_fences_itself_runs_nothing_until_it_rejoins(tmp_path):
    """etcd stops answering (SIGSTOP: a partition as the node sees it). After one membership
    TTL without a renewal the node presumes the cluster declared it dead: it kills its netlets
    and starts none while cut off; when etcd answers again it rejoins and warm-starts the app."""
    import shutil

    from etcdutil import EtcdServer

    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (scripts/test.sh installs Debian's etcd-server as root)")
    (tmp_path / "etcd").mkdir()
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    home = tmp_path / "n1"
    node = None
    try:
        start_background(home, cluster=etcd.url + "/jtrix/cutoff", name="n1")
        node = RunningNode(home, HostingClient.for_home(home))
        launch_kvstore(node, tmp_path)
        # and an app without replication: nothing but the fence stops its restarts
        node.launch(descriptor_xml("echo", '  <netlet type="w" class="workers:Echo" replicas="1"/>'), tmp_path)
        echo = node.wait_running("echo")
        before = kvstore_master(node)
        kv = netlets.connect("kvstore", home)
        written = {f"k{i}": f"v{i}" for i in range(50)}
        for k, v in written.items():
            kv.put(k, v)
        kv.close()
        os.kill(etcd.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: events_of(node, "node.fenced"), 20, "n1 to fence itself")
            wait_for(lambda: all(process_dead(n["pid"]) for n in before["netlets"] + echo["netlets"]), 10,
                     "its netlets dead")
            # the echo slot would be refilled at once (its first failure): give it the time to
            # show, by the node's own clock — a renewal attempt every ttl/3 is logged meanwhile
            wait_for(lambda: "rejoining the cluster failed" in (home / "node.log").read_text(), 20,
                     "a failed attempt to rejoin")
        finally:
            os.kill(etcd.proc.pid, signal.SIGCONT)
        wait_for(lambda: events_of(node, "node.rejoined"), 30, "n1 to rejoin")
        after = kvstore_master(node, above_epoch=before["epoch"])
        events = node.events(0)
        fenced_at = next(e["index"] for e in events if e["kind"] == "node.fenced")
        rejoined_at = next(e["index"] for e in events if e["kind"] == "node.rejoined")
        started_while_out = [e for e in events if e["kind"] == "netlet.started" and fenced_at < e["index"] < rejoined_at]
        assert started_while_out == [], started_while_out
        assert "could not renew" in events_of(node, "node.fenced")[0]["detail"]["why"]
        assert {n["pid"] for n in after["netlets"]}.isdisjoint({n["pid"] for n in before["netlets"]})
        back = node.wait_running("echo")  # back too, and the fence's kill is no failure of its netlet
        assert [(n["restarts"], n["failures"]) for n in back["netlets"]] == [(1, 0)]
        kv = netlets.connect("kvstore", home)
        assert {k: kv.get_latest(k) for k in written} == written
    finally:
        if node is not None:
            cleanup_node(node)
        etcd.stop()
