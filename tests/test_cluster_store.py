"""App specs and codebases in etcd: round trips, multi-chunk codebases, hashes always checked."""

from __future__ import annotations

import hashlib
import os

import pytest

from hosting.cluster import store as cluster_store
from hosting.cluster.store import ClusterStore
from warrants.errors import BadInput, NotFound


def test_a_codebase_of_several_chunks_comes_back_whole(etcd):
    store = ClusterStore(etcd)
    data = os.urandom(int(2.5 * cluster_store.CHUNK_BYTES))
    sha = hashlib.sha256(data).hexdigest()
    assert not store.has_codebase(sha)
    store.put_codebase(sha, data)
    store.put_codebase(sha, data)  # idempotent
    assert store.has_codebase(sha) and store.get_codebase(sha) == data


def test_a_codebase_is_refused_under_a_wrong_hash_and_an_altered_one_never_returned(etcd):
    store = ClusterStore(etcd)
    with pytest.raises(BadInput, match="does not hash"):
        store.put_codebase("0" * 64, b"code")
    data = b"print('hi')"
    sha = hashlib.sha256(data).hexdigest()
    store.put_codebase(sha, data)
    etcd.put(f"codebases/{sha}/0", b"YWx0ZXJlZA==")  # someone rewrites the chunk
    with pytest.raises(BadInput, match="does not match its hash"):
        store.get_codebase(sha)
    etcd.delete(f"codebases/{sha}/0")
    with pytest.raises(NotFound, match="chunk 0 of 1 is missing"):
        store.get_codebase(sha)
    with pytest.raises(NotFound, match="not in the cluster store"):
        store.get_codebase("f" * 64)


def test_an_app_spec_round_trips_exactly(etcd):
    store = ClusterStore(etcd)
    xml = '<app name="kv">\u00e9</app>'.encode()
    store.put_app("kv", xml, "bootstrap.xml", "a" * 64, b"\x00secret")
    assert store.get_app("kv") == {"descriptor": xml, "source": "bootstrap.xml", "codebase": "a" * 64,
                                   "secret": b"\x00secret"}
    store.delete_app("kv")
    assert store.get_app("kv") is None


def test_concurrent_changes_of_the_moved_set_never_lose_one_another(etcd):
    """Two slots catching up at once, a placement marking a third: each change is a
    compare-and-swap, so none is lost (a lost removal left a slot marked for good, blocking
    rebalancing and warm starts — seen in the cluster benchmark)."""
    import threading

    store = ClusterStore(etcd)
    slots = {f"s/{i}" for i in range(12)}
    store.update_moved("app", lambda current: current | slots)
    barrier = threading.Barrier(len(slots) + 1)

    def remove(slot):
        barrier.wait()
        store.update_moved("app", lambda current: current - {slot})

    def add():
        barrier.wait()
        store.update_moved("app", lambda current: current | {"t/0"})

    threads = [threading.Thread(target=remove, args=(s,)) for s in sorted(slots)] + [threading.Thread(target=add)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.moved("app") == {"t/0"}
