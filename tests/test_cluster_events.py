"""The cluster's event log in etcd (hosting/cluster/events.py): real etcd, real SQLite registries,
and a two-node cluster read through the CLI."""

from __future__ import annotations

import json
import threading

import pytest

from hosting.cluster import events as cluster_events

from hosting.cluster import keys as etcd_keys
from hosting.cluster.events import ClusterEvents, EventShipper
from hosting.cluster.etcd import Etcd
from hosting.registry import Registry
from testkit.node import kill_node_with_its_netlets
from testkit.wait import wait_for
from test_cluster import cluster  # noqa: F401  (the fixture: nodes joined on a private etcd)


@pytest.fixture
def registries(tmp_path):
    opened: list[Registry] = []

    def make(name: str) -> Registry:
        registry = Registry(tmp_path / f"{name}.sqlite")
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        registry.close()


@pytest.fixture
def shippers():
    started: list[EventShipper] = []

    def start(etcd: Etcd, node: str, registry: Registry) -> EventShipper:
        shipper = EventShipper(etcd, node, registry)
        shipper.start()
        started.append(shipper)
        return shipper

    yield start
    for shipper in started:
        shipper.close(flush_s=0)


def shipped(shipper: EventShipper, index: int) -> None:
    wait_for(lambda: shipper.shipped >= index, 20, f"{shipper.node} to ship up to {index}")


def read_all(reader: ClusterEvents, app=None, limit=1000) -> list[dict]:
    out, since = [], 0
    while True:
        page = reader.read(since, app, limit=limit)
        out += page
        if len(page) < limit:
            return out
        since = page[-1]["index"]


def test_every_nodes_events_are_read_once_each_in_order_with_unique_indexes(etcd, registries, shippers):
    a, b = registries("a"), registries("b")
    ship_a, ship_b = shippers(etcd, "a", a), shippers(etcd, "b", b)
    for i in range(120):
        a.add_event("step", "app1" if i % 2 else "app2", None, i=i)
        if i % 3 == 0:
            b.add_event("other", "app1", "s/0", i=i)
    shipped(ship_a, 120)
    shipped(ship_b, 40)
    reader = ClusterEvents(etcd)
    events = read_all(reader, limit=7)  # paging by cursor
    assert [e["index"] for e in events] == sorted({e["index"] for e in events})  # unique, increasing
    assert [(e["detail"]["i"]) for e in events if e["node"] == "a"] == list(range(120))  # each node's order
    assert [(e["detail"]["i"]) for e in events if e["node"] == "b"] == list(range(0, 120, 3))
    assert {e["node_index"] for e in events if e["node"] == "a"} == set(range(1, 121))
    app1 = read_all(reader, "app1", limit=5)
    assert len(app1) == 60 + 40 and all(e["app"] == "app1" for e in app1)
    assert reader.read(events[-1]["index"]) == []


def test_shipping_resumes_without_duplicates_after_a_restart_and_a_lost_answer(etcd, registries, shippers):
    registry = registries("a")
    for i in range(10):
        registry.add_event("before", None, None, i=i)
    first = shippers(etcd, "a", registry)
    shipped(first, 10)
    first.close(flush_s=0)
    # as if the next event's write had succeeded but its answer was lost
    registry.add_event("lost-answer", None, None)
    etcd.create(etcd_keys.event("a", 11), json.dumps({"node": "a", "index": 11, "time": 0, "app": None,
                                                         "slot": None, "kind": "lost-answer", "detail": {}}))
    for i in range(5):
        registry.add_event("after", None, None, i=i)
    second = shippers(etcd, "a", registry)
    shipped(second, 16)
    events = read_all(ClusterEvents(etcd))
    assert [e["node_index"] for e in events] == list(range(1, 17))


def test_a_waiting_read_returns_when_an_event_arrives(etcd, registries, shippers):
    registry = registries("a")
    shipper = shippers(etcd, "a", registry)
    reader = ClusterEvents(etcd)
    try:
        registry.add_event("first", None, None)
        shipped(shipper, 1)
        since = reader.read()[-1]["index"]
        result: list = []
        waiting = threading.Thread(target=lambda: result.append(reader.read(since, wait_s=30)))
        waiting.start()
        registry.add_event("second", None, None)
        waiting.join(timeout=30)
        assert not waiting.is_alive() and [e["kind"] for e in result[0]] == ["second"]
        assert reader.read(result[0][-1]["index"], wait_s=0.2) == []  # nothing newer: waits, then empty
    finally:
        reader.close()


def test_each_node_keeps_its_newest_events_only(etcd, registries, shippers, monkeypatch):
    monkeypatch.setattr(cluster_events, "KEEP", 30)
    monkeypatch.setattr(cluster_events, "BATCH", 10)
    registry = registries("a")
    shipper = shippers(etcd, "a", registry)
    for i in range(100):
        registry.add_event("e", None, None, i=i)
    shipped(shipper, 100)
    kept = [e["node_index"] for e in read_all(ClusterEvents(etcd))]
    assert kept == list(range(71, 101))


def test_etcd_down_leaves_events_in_sqlite_and_the_node_unaffected(registries, shippers, etcd):
    from testkit.etcd import free_port

    registry = registries("a")
    dead = Etcd(f"http://127.0.0.1:{free_port()}", etcd.prefix, timeout=0.5)
    shipper = shippers(dead, "a", registry)
    for i in range(20):
        registry.add_event("e", None, None, i=i)
    assert len(registry.events()) == 20 and shipper.shipped == 0
    shipper.close(flush_s=0)
    later = shippers(etcd, "a", registry)  # etcd back: the backlog goes out
    shipped(later, 20)


@pytest.mark.timeout(180)
def test_jtrix_events_shows_every_nodes_events_even_of_a_dead_node(cluster, tmp_path):  # noqa: F811
    n1, n2 = cluster("n1"), cluster("n2")
    n1.client.call("status")  # both answer

    def started_nodes() -> set[str]:
        out = n2.jtrix("events", "--json")
        assert out.returncode == 0, out.stderr
        return {e["node"] for e in map(json.loads, out.stdout.splitlines()) if e["kind"] == "node.started"}

    wait_for(lambda: started_nodes() == {"n1", "n2"}, 20, "both nodes' node.started in the cluster log")
    kill_node_with_its_netlets(n1)
    assert "n1" in started_nodes()  # what a dead node recorded stays readable
    own = [json.loads(line) for line in n2.jtrix("events", "--node", "--json").stdout.splitlines()]
    assert own and all("node" not in e for e in own)  # --node: n2's own SQLite log
    human = n2.jtrix("events").stdout
    assert "n1" in human and "node.started" in human
