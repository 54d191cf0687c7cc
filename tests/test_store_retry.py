"""hosting.store_retry on a real SQLite registry made to fail ("database is locked")."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from hosting.registry import Registry
from hosting.store_retry import StoreRetry
from testkit.wait import wait_for


class Locked:
    """Another connection holding the registry's write lock (what a concurrent writer does)."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)

    def __enter__(self) -> Locked:
        self.db.execute("BEGIN EXCLUSIVE")
        return self

    def release(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def __exit__(self, *exc) -> None:
        self.release()
        self.db.close()


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path / "registry.sqlite")
    r._db.execute("PRAGMA busy_timeout=20")  # fail fast instead of waiting 5 s
    yield r
    r.close()


@pytest.fixture
def retry():
    downs, ups = [], []
    r = StoreRetry(on_down=lambda key, err: downs.append((key, str(err))),
                   on_recovered=lambda key, attempts, seconds, err: ups.append((key, attempts)),
                   initial_s=0.005, cap_s=0.05, visible_after_s=0.05)
    r.downs, r.ups = downs, ups
    yield r
    r.close()


def kinds(registry) -> list[str]:
    return [e.kind for e in registry.events()]


def test_work_continues_after_the_store_recovers_in_order_each_write_once(registry, retry, tmp_path):
    """Steps that fail for the store's fault are retried off the caller's thread; a step that
    returned is never run again; later work for the same key waits behind the failing work."""
    with Locked(tmp_path / "registry.sqlite") as lock:
        retry.run("k", [lambda: registry.add_event("one"), lambda: registry.add_event("two")])
        assert retry.pending("k")  # handed to a thread of its own: the caller was not held
        retry.run("k", [lambda: registry.add_event("three")])  # queued behind, not run now
        retry.run("other", [lambda: None])  # another key is not held up by this one
        assert not retry.pending("other")
        wait_for(lambda: retry.down("k"), 5, "the outage visible")
        assert retry.downs and retry.downs[0][0] == "k" and "locked" in retry.downs[0][1]
        lock.release()
        wait_for(lambda: not retry.pending("k"), 5, "the queue drained")
    assert kinds(registry) == ["one", "two", "three"]
    assert retry.down("k") is None
    assert [key for key, _ in retry.ups] == ["k"] and retry.ups[0][1] >= 2


def test_a_partly_done_step_list_resumes_at_the_failed_step(registry, retry, tmp_path):
    lock = Locked(tmp_path / "registry.sqlite")
    ran = []

    def first():
        ran.append("first")
        registry.add_event("first")
        lock.__enter__()  # the store fails right after this step's write

    try:
        retry.run("k", [first, lambda: registry.add_event("second")])
        assert retry.pending("k")
        lock.release()
        wait_for(lambda: not retry.pending("k"), 5, "the queue drained")
    finally:
        lock.__exit__()
    assert ran == ["first"] and kinds(registry) == ["first", "second"]


def test_an_error_that_is_not_the_stores_is_logged_and_the_rest_still_runs(registry, retry, caplog):
    def broken():
        raise KeyError("a bug")

    retry.run("k", [broken, lambda: registry.add_event("after")])
    assert not retry.pending("k") and kinds(registry) == ["after"]
    assert "not the store's fault" in caplog.text


def test_work_submitted_while_a_step_runs_runs_after_it_off_the_callers_thread(registry, retry):
    """A step that submits more work for its own key (the supervisor's start, recording the
    netlet it spawned; an exit's restart decision starting the replacement) does not deadlock:
    the new steps run after it, in order, and not on the caller's thread (the pid watcher
    must not spawn the replacement)."""
    order = []

    def outer():
        order.append(("outer", threading.get_ident()))
        retry.run("k", [lambda: order.append(("inner", threading.get_ident()))])
        order.append(("outer done", threading.get_ident()))

    retry.run("k", [outer, lambda: order.append(("second", threading.get_ident()))])
    wait_for(lambda: not retry.pending("k"), 5, "the queue drained")
    me = threading.get_ident()
    assert [what for what, _ in order] == ["outer", "outer done", "second", "inner"]
    assert [t == me for _, t in order] == [True, True, True, False]
