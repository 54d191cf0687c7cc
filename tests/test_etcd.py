"""hosting.cluster.etcd against a real etcd: CAS transactions, leases, and the resuming watch."""

from __future__ import annotations

import threading
import time

import pytest

from hosting.cluster.etcd import Etcd, EtcdUnavailable


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def test_create_only_once_and_swap_only_from_the_revision_read(etcd):
    assert etcd.create("a", b"1") is not None
    assert etcd.create("a", b"2") is None
    kv = etcd.get("a")
    assert kv.value == b"1" and kv.key == "a"
    assert etcd.swap("a", b"3", kv.mod_revision) is not None
    assert etcd.swap("a", b"4", kv.mod_revision) is None  # stale revision
    assert etcd.get("a").value == b"3"
    assert etcd.swap("b", b"x", 0) is not None  # 0 means "absent"
    assert not etcd.delete_if("b", 1)
    assert etcd.delete_if("b", etcd.get("b").mod_revision)
    assert etcd.get("b") is None


def test_concurrent_swaps_lose_no_update(etcd):
    etcd.put("counter", b"0")
    done = []

    def bump(n):
        for _ in range(n):
            while True:
                kv = etcd.get("counter")
                if etcd.swap("counter", str(int(kv.value) + 1), kv.mod_revision) is not None:
                    done.append(1)
                    break

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(etcd.get("counter").value) == len(done) == 100


def test_prefix_reads_only_this_prefix(etcd, etcd_url):
    other = Etcd(etcd_url, etcd.prefix + "x/")
    etcd.put("nodes/a", b"1")
    etcd.put("nodes/b", b"2")
    etcd.put("nodesX", b"3")
    other.put("nodes/c", b"4")
    kvs, revision = etcd.get_prefix("nodes/")
    assert [kv.key for kv in kvs] == ["nodes/a", "nodes/b"]
    assert revision >= max(kv.mod_revision for kv in kvs)


def test_lease_keeps_keys_while_renewed_and_deletes_them_when_it_lapses(etcd):
    lease, ttl = etcd.grant(1)
    assert ttl >= 1  # etcd raises it to its minimum (2 s with default timings)
    etcd.put("leased", b"v", lease=lease)
    assert etcd.get("leased").lease == lease
    deadline = time.monotonic() + ttl + 1.5
    while time.monotonic() < deadline:  # renewed for longer than its ttl: still there
        assert etcd.keepalive(lease) == ttl
        time.sleep(0.3)
    assert etcd.get("leased") is not None
    wait_for(lambda: etcd.get("leased") is None, timeout=5)
    assert etcd.keepalive(lease) == -1  # an expired lease is not resurrected


def test_revoke_deletes_at_once_and_twice_is_harmless(etcd):
    lease, _ = etcd.grant(30)
    etcd.put("k", b"v", lease=lease)
    etcd.revoke(lease)
    assert etcd.get("k") is None
    etcd.revoke(lease)


def test_watch_delivers_every_change_once_in_order_across_a_dropped_stream(etcd):
    seen = []
    start = etcd.put("w/start", b"0") + 1
    watch = etcd.watch_prefix("w/", start, seen.append)
    try:
        for i in range(5):
            etcd.put(f"w/{i}", str(i))
        wait_for(lambda: len(seen) == 5)
        watch.drop_stream()  # the stream drops (etcd restart, proxy timeout...)
        for i in range(5, 10):
            etcd.put(f"w/{i}", str(i))
        etcd.delete("w/0")
        wait_for(lambda: len(seen) == 11)
        assert watch.connects == 2
    finally:
        watch.cancel()
    assert [e.key for e in seen[:10]] == [f"w/{i}" for i in range(10)]
    assert seen[10].kind == "delete" and seen[10].key == "w/0"
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions))


def test_unreachable_etcd_is_an_etcd_unavailable_error():
    from testkit.etcd import free_port

    dead = Etcd(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(EtcdUnavailable, match="did not answer"):
        dead.get("x")


def test_bad_url_and_prefix_are_refused_at_construction():
    with pytest.raises(ValueError, match="HOST:PORT"):
        Etcd("127.0.0.1:2379")
    with pytest.raises(ValueError, match="prefix"):
        Etcd("http://127.0.0.1:2379", "jtrix")
    assert Etcd("http://127.0.0.1:2379").prefix == "/jtrix/default/"
    e = Etcd("http://127.0.0.1:2379/jtrix/prod")
    assert (e.url, e.prefix) == ("http://127.0.0.1:2379", "/jtrix/prod/")
