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
import shutil
import signal
import threading
from pathlib import Path

import pytest

import netlets
from hosting.client import HostingClient
from hosting.daemon import start_background
from hosting.cluster.store import ClusterStore
from hosting.cluster.etcd import Etcd
from warrants.errors import BadInput
from testkit.etcd import unique_prefix
from testkit.kvstore import KVSTORE
from testkit.node import RunningNode, cleanup_node, descriptor_xml, events_of, kill_node_with_its_netlets, master_of
from testkit.procs import process_dead
from testkit.wait import wait_for

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


def test_replicas_spread_over_the_nodes_and_an_app_name_has_one_owner(cluster, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    status = json.loads(n2.jtrix("host", "status", "--json").stdout)
    assert status["name"] == "n2" and status["cluster"] == cluster.url
    assert {n["name"]: n["healthy"] for n in status["nodes"]} == {"n1": True, "n2": True}
    human = n1.jtrix("host", "status").stdout
    assert "n1" in human and "n2" in human and "healthy" in human

    launch_kvstore(n1, tmp_path)
    app = kvstore_master(n1)
    placed = {n["slot"]: n["node"] for n in app["netlets"]}
    assert placed == {"store/0": "n1", "store/1": "n2", "store/2": "n1"}  # spread, and as even as 3 on 2 gets
    assert json.loads(Etcd(cluster.url).get("apps/kvstore/placement").value) == placed
    arbiter = Etcd(cluster.url).get("apps/kvstore/arbiter").json()
    assert arbiter["epoch"] == app["epoch"] and arbiter["holder"] == app["master"]
    # n2 fetched the codebase by hash from the cluster store and runs its slot with the app's credential
    store = ClusterStore(Etcd(cluster.url))
    spec = store.get_app("kvstore")
    assert spec["secret"] == n1.app_secret("kvstore") == n2.app_secret("kvstore")
    assert (n2.home / "codebases" / f"{spec['codebase']}.tar.gz").read_bytes() == store.get_codebase(spec["codebase"])
    kv = netlets.connect("kvstore", n2.home)  # an access point through the node that does not own it
    kv.put("k", "v")
    assert kv.get_latest("k") == "v"
    kv.close()

    with pytest.raises(BadInput, match="runs on node n1"):
        launch_kvstore(n2, tmp_path)
    # either node's view of the whole app is the same
    for node in (n1, n2):
        [seen] = json.loads(node.jtrix("status", "--json").stdout)["apps"]
        assert {n["slot"]: n["node"] for n in seen["netlets"]} == placed and seen["master"] == app["master"]
    # terminated (through n2, forwarded to the owner): every node stops its netlets, etcd forgets
    # the app, and the name is free for any node
    done = n2.jtrix("terminate", "kvstore")
    assert done.returncode == 0, done.stderr
    assert ClusterStore(Etcd(cluster.url)).get_app("kvstore") is None
    wait_for(lambda: n2.client.call("status", None, "node")["apps"] == [], 10, "n2 to drop its copy")
    launch_kvstore(n2, tmp_path)
    assert kvstore_master(n2)["epoch"] > app["epoch"]  # epochs are never reused, whoever owns the app


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
    # a node that never joined: no cluster certificate, so not even a connection
    outsider = RunningNode(tmp_path / "outsider", None)
    start_background(outsider.home)
    try:
        refused = outsider.jtrix("--host", n2.info["uri"], "status")
        assert refused.returncode == 2 and "refused the connection: TLS required" in refused.stderr, \
            refused.stderr
        # with a cluster certificate (copied from a member's home) but its own admin warrant:
        # the connection is made, the warrant is nobody's in this cluster
        shutil.copytree(n1.home / "tls", outsider.home / "tls")
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


class Writers:
    """Client threads writing unique keys through one node's access point; records what was acked."""

    def __init__(self, home: Path, count: int = 3) -> None:
        self.kv = netlets.connect("kvstore", home, timeout=60)
        self.acked: dict[str, str] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(count)]
        for t in self.threads:
            t.start()

    def _run(self, w: int) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"w{w}-{i}"
            try:
                self.kv.put(key, str(i))
                self.acked[key] = str(i)
            except Exception:  # not acknowledged: nothing to check
                pass
            i += 1

    def wait_acked(self, n: int, timeout: float = 60.0) -> None:
        wait_for(lambda: len(self.acked) >= n, timeout, f"{n} acknowledged writes")

    def finish(self) -> dict[str, str]:
        self.stop.set()
        for t in self.threads:
            t.join(90)
        return dict(self.acked)


def test_a_node_dies_with_the_master_and_the_owner_the_app_serves_on_without_losing_a_write(cluster, tmp_path):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    assert {n["slot"]: n["node"] for n in before["netlets"]} == {"store/0": "n1", "store/1": "n2", "store/2": "n3"}
    assert before["master"] == "store/0"  # on n1, which also owns the app
    writers = Writers(n2.home)
    try:
        writers.wait_acked(200)
        kill_node_with_its_netlets(n1)
        acked_at_kill = len(writers.acked)
        after = kvstore_master(n2, above_epoch=before["epoch"])
        writers.wait_acked(acked_at_kill + 200)
    finally:
        acked = writers.finish()
    assert after["master"] in ("store/1", "store/2")
    assert Etcd(cluster.url).get("apps/kvstore/owner").value in (b"n2", b"n3")  # ownership moved too
    kv = netlets.connect("kvstore", n3.home)
    lost = [k for k, v in acked.items() if kv.get_latest(k) != v]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:3]}"
    # the dead node's slot is re-created on a survivor (fresh directory) and catches up
    def refilled():
        app = n2.app("kvstore")
        where = {n["slot"]: (n["node"], n["state"], n["role"]) for n in app["netlets"]}
        return where if where.get("store/0", ("",))[0] in ("n2", "n3") and all(
            state == "running" and role in ("master", "backup") for _, state, role in where.values()) else None
    wait_for(refilled, 60, "store/0 re-created on a survivor, every replica running")
    assert any(e["kind"] == "app.placed" and e["detail"]["moved"] == ["store/0"]
               for node in (n2, n3) for e in node.events(0, "kvstore"))
    # once the re-created replica is back in the in-sync set it no longer counts as moved
    wait_for(lambda: json.loads(Etcd(cluster.url).get("apps/kvstore/moved").value) == [], 60,
             "store/0 caught up")


def test_a_paused_node_is_replaced_and_finds_itself_fenced_when_it_resumes(cluster, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    on_n1 = [n for n in before["netlets"] if n["node"] == "n1"]
    writers = Writers(n2.home)
    try:
        writers.wait_acked(100)
        node_pid = n1.info["pid"]
        os.kill(node_pid, signal.SIGSTOP)  # the daemon only: its netlets run on, cut off from it
        try:
            after = kvstore_master(n2, above_epoch=before["epoch"])  # n2 took over and elected store/1
            acked_at = len(writers.acked)
            writers.wait_acked(acked_at + 100)
        finally:
            os.kill(node_pid, signal.SIGCONT)
        wait_for(lambda: events_of(n1, "node.fenced"), 20, "n1 to find itself fenced")
        wait_for(lambda: all(process_dead(n["pid"]) for n in on_n1), 10, "n1's old netlets dead")
    finally:
        acked = writers.finish()
    assert after["master"] == "store/1"
    # n2 took the app over with its master presumed dead, not seen dead: it let the master's
    # lease run out (one TTL) before electing
    waiting = events_of(n2, "control.waiting", "kvstore")
    assert [e["slot"] for e in waiting] == ["store/0"]
    lost_at = [e for e in events_of(n2, "control.lost", "kvstore") if e["detail"]["holder"] == waiting[0]["detail"]["holder"]]
    assert lost_at and lost_at[0]["detail"]["why"] == "expired" and lost_at[0]["time"] >= waiting[0]["time"] + 0.9
    wait_for(lambda: {n["name"] for n in n2.client.call("host_status")["nodes"]} == {"n1", "n2"}, 20,
             "n1 to rejoin")
    kv = netlets.connect("kvstore", n2.home)
    lost = [k for k, v in acked.items() if kv.get_latest(k) != v]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:3]}"


def test_netlets_serve_on_the_nodes_own_address_so_other_machines_reach_them(etcd_url, tmp_path):
    """A node listening on 127.0.0.2 (any loopback address works on Linux) runs netlets whose
    endpoints are on 127.0.0.2 too; a wildcard --listen is refused in a cluster."""
    url = etcd_url + unique_prefix().rstrip("/")
    node = RunningNode(tmp_path / "n1", None)
    wildcard = node.jtrix("host", "start", "--cluster", url, "--listen", "0.0.0.0:0")
    assert wildcard.returncode == 2 and "--listen must be this node's address" in wildcard.stderr
    start_background(node.home, host="127.0.0.2", cluster=url, name="n1")
    node.client = HostingClient.for_home(node.home)
    try:
        launch_kvstore(node, tmp_path)
        app = kvstore_master(node)
        endpoints = {n["endpoint"] for n in app["netlets"]}
        assert all("@127.0.0.2:" in e for e in endpoints), endpoints
        assert "@127.0.0.2:" in node.info["uri"]
    finally:
        cleanup_node(node)


def test_bad_or_unreachable_cluster_urls_are_one_line_errors(tmp_path):
    from testkit.etcd import free_port

    runner = RunningNode(tmp_path / "h", None)
    bad = runner.jtrix("host", "start", "--cluster", "etcd-host:2379")
    assert bad.returncode == 2 and "etcd URL must look like http://HOST:PORT" in bad.stderr, bad.stderr
    down = runner.jtrix("host", "start", "--cluster", f"http://127.0.0.1:{free_port()}", "--name", "x")
    assert down.returncode == 1 and "did not answer" in down.stderr, down.stderr
    zero = runner.jtrix("host", "start", "--cluster", f"http://127.0.0.1:{free_port()}", "--membership-ttl", "0")
    assert zero.returncode == 2 and "membership ttl must be at least 1 s" in zero.stderr, zero.stderr
    assert "Traceback" not in bad.stderr + down.stderr + zero.stderr


def test_a_node_cut_off_from_etcd_fences_itself_runs_nothing_until_it_rejoins(tmp_path):
    """etcd stops answering (SIGSTOP: a partition as the node sees it). After one membership
    TTL without a renewal the node presumes the cluster declared it dead: it kills its netlets
    and starts none while cut off; when etcd answers again it rejoins and warm-starts the app."""
    import shutil

    from testkit.etcd import EtcdServer

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


def test_a_node_joining_later_takes_a_backup_the_writes_go_on_and_nothing_is_lost(cluster, tmp_path):
    """Three replicas on two nodes (one node holds two); a third node joins: the owner moves one
    backup — never the master — onto it, the moved replica catches up, and the app ends one
    replica per node, all in sync, while writes go on through the first node."""
    n1, n3 = cluster("n1"), cluster("n3")
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    nodes_of = lambda app: sorted(n["node"] for n in app["netlets"])  # noqa: E731
    assert nodes_of(before) == ["n1", "n1", "n3"]
    etcd = Etcd(cluster.url)
    writers = Writers(n1.home)
    try:
        writers.wait_acked(100)
        n2 = cluster("n2")

        def spread():
            app, arbiter, moved = n1.app("kvstore"), etcd.get("apps/kvstore/arbiter"), etcd.get("apps/kvstore/moved")
            in_sync = set(arbiter.json()["isr"]) == {"store/0", "store/1", "store/2"}
            caught_up = moved is None or moved.json() == []
            return app if nodes_of(app) == ["n1", "n2", "n3"] and in_sync and caught_up else None
        after = wait_for(spread, 60, "one replica per node, all in sync")
        writers.wait_acked(len(writers.acked) + 100)
    finally:
        acked = writers.finish()
    assert after["master"] == before["master"] and after["epoch"] == before["epoch"]  # no failover
    placed = [e for e in events_of(n1, "app.placed") if e["detail"]["why"].startswith("rebalance")]
    assert len(placed) == 1 and placed[0]["detail"]["why"] == "rebalance: node n2 joined"
    kv = netlets.connect("kvstore", n2.home)
    lost = [k for k, v in acked.items() if kv.get_latest(k) != v]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:3]}"
    assert n2.jtrix("host", "status").returncode == 0


def test_a_node_back_after_its_slot_moved_leaves_the_new_replica_published(cluster, tmp_path):
    """n2's daemon dies (its netlet lives on) and stays down past its membership lease: the owner
    re-places store/1 on another node, whose new netlet is published as the slot's replica. n2
    restarting re-adopts its old netlet and stops it (placed on another node) — it must not publish
    it meanwhile: the slot's key holds the new netlet, and the old one's exit would then delete it
    (unpublish), leaving a running replica the owner never sees again (found by the cluster chaos
    run: a later warm start waited for that slot forever)."""
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    assert {n["slot"]: n["node"] for n in before["netlets"]} == {"store/0": "n1", "store/1": "n2", "store/2": "n3"}
    old = n2.slot("kvstore", "store/1")
    etcd = Etcd(cluster.url)
    n2_pid = n2.info["pid"]
    os.kill(n2_pid, signal.SIGKILL)  # the daemon only: its netlet runs on
    wait_for(lambda: process_dead(n2_pid), 10, "n2's daemon dead")

    def republished():
        kv = etcd.get("apps/kvstore/live/store/1")
        live = kv.json() if kv else {}
        return live if live.get("node") in ("n1", "n3") else None
    new = wait_for(republished, 30, "store/1 re-placed off n2 and its new netlet published")
    assert not process_dead(old["pid"])  # the old netlet outlived its node

    start_background(n2.home, cluster=cluster.url, name="n2")
    n2.client.close()
    n2.client = HostingClient.for_home(n2.home)
    stopped = wait_for(lambda: [e for e in events_of(n2, "netlet.exited") if e["detail"]["netlet"] == old["netlet"]],
                       20, "n2 to stop its old store/1 netlet")
    assert stopped[0]["detail"]["reason"] in ("placed on another node",
                                              "superseded by a newer incarnation on another node")

    def current_published():  # (rebalancing may move the slot back to n2 meanwhile: a newer netlet)
        kv = etcd.get("apps/kvstore/live/store/1")
        live = kv.json() if kv else None
        running = n1.slot("kvstore", "store/1")
        return live if live and live["netlet"] != old["netlet"] and running["netlet"] == live["netlet"] else None
    assert wait_for(current_published, 30, "store/1's current replica published, as the owner sees it")
    assert int(wait_for(current_published, 1, "")["netlet"].rsplit("#", 1)[1]) >= int(new["netlet"].rsplit("#", 1)[1])


def test_a_master_presumed_dead_with_its_node_keeps_its_lease_until_it_runs_out(etcd_url, tmp_path):
    """The master's node (not the owner) has its daemon paused: the node is declared dead after
    its membership TTL (1 s) and the master's published key goes with it — but the master runs on
    and believes in its control lease (4 s here) until it lapses. The owner must not elect before
    the lease it granted has run out: the lease ends "expired", never revoked as "holder gone"."""
    url = etcd_url + unique_prefix().rstrip("/")
    nodes = []
    try:
        for name in ("n1", "n2", "n3"):
            start_background(tmp_path / name, cluster=url, name=name, membership_ttl=1)
            nodes.append(RunningNode(tmp_path / name, HostingClient.for_home(tmp_path / name)))
        n1, n2, n3 = nodes
        xml = (KVSTORE / "bootstrap.xml").read_text().replace('<codebase path="."/>', f'<codebase path="{KVSTORE}"/>')
        n2.launch(xml.replace('<lease ttl="1.0"', '<lease ttl="4.0"'), tmp_path)  # n2 owns it
        before = kvstore_master(n2)
        master = master_of(before)
        assert master["node"] != "n2", before  # store/0 lands on n1
        etcd = Etcd(url)
        wait_for(lambda: len(etcd.get("apps/kvstore/arbiter").json()["isr"]) == 3, 20,
                 "every replica in sync (else only the master's node could hold the newest writes)")
        victim = next(n for n in nodes if n.home.name == master["node"])
        os.kill(victim.info["pid"], signal.SIGSTOP)
        try:
            after = kvstore_master(n2, above_epoch=before["epoch"])
        finally:
            os.kill(victim.info["pid"], signal.SIGCONT)
        lost = [e for e in events_of(n2, "control.lost", "kvstore") if e["detail"]["holder"] == master["netlet"]]
        assert [e["detail"]["why"] for e in lost] == ["expired"], lost
        assert after["master"] != master["slot"]
    finally:
        for node in nodes:
            cleanup_node(node)
