"""The start queue (``hosting.start_queue``): a bounded number of starts in flight, apps without a
master first, an app's slots together, each slot queued once. Real threads; a start here is a
function that records what it was asked and returns a netlet id (the queue's contract is the
order and the bound, not what starting means)."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from hosting.start_queue import StartQueue
from testkit.wait import wait_for


class Starts:
    """What the queue started, in order; ``finish`` plays the netlet becoming ready."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, str]] = []
        self.nothing: set[tuple[str, str]] = set()  # slots whose start finds them running

    def __call__(self, app: str, slot: str, mode: str) -> str | None:
        with self.lock:
            again = (app, slot) in self.started  # like start_slot: a slot already running starts nothing
            self.started.append((app, slot))
        return None if again or (app, slot) in self.nothing else f"{app}/{slot}#1"


def test_never_more_than_the_limit_in_flight_and_each_finish_lets_the_next_one_start():
    starts = Starts()
    q = StartQueue(starts, priority=lambda app: 0, limit=2)
    try:
        for i in range(5):
            q.submit(f"a{i}", "s/0", "replace")
        wait_for(lambda: len(starts.started) == 2, 10, "two starts")
        assert q.in_flight() == 2 and len(q.queued()) == 3
        q.finished("a0/s/0#1")
        wait_for(lambda: len(starts.started) == 3, 10, "a third start once one finished")
        assert q.in_flight() == 2
        q.finished("unknown/s/0#1")  # not one of its starts: frees nothing
        for n in starts.started[1:3]:
            q.finished(f"{n[0]}/{n[1]}#1")
        wait_for(lambda: len(starts.started) == 5, 10, "every start")
        assert starts.started == [(f"a{i}", "s/0") for i in range(5)]
    finally:
        q.stop()


def test_apps_without_a_master_first_then_an_apps_slots_together():
    starts = Starts()
    has_master = {"served"}
    q = StartQueue(starts, priority=lambda app: 1 if app in has_master else 0, limit=1)
    gate = threading.Event()
    first = q._start  # hold the first start until everything is queued, so the order is the queue's

    def held(app, slot, mode):
        if not starts.started:
            gate.wait(10)
        return first(app, slot, mode)
    q._start = held
    try:
        q.submit("x", "s/0", "replace")
        wait_for(lambda: q.in_flight() == 1, 10, "the first start picked")
        for app, slot in (("served", "s/0"), ("b", "s/0"), ("c", "s/0"), ("b", "s/1"), ("served", "s/1"),
                          ("c", "s/1"), ("b", "s/0")):  # b/s/0 twice: queued once
            q.submit(app, slot, "replace")
        gate.set()
        for k in range(1, 8):  # one at a time (limit 1): each start waits for the previous one's finish
            wait_for(lambda: len(starts.started) == k, 10, f"start {k}")
            assert q.in_flight() == 1
            q.finished(f"{starts.started[-1][0]}/{starts.started[-1][1]}#1")
        assert starts.started == [("x", "s/0"), ("b", "s/0"), ("b", "s/1"), ("c", "s/0"), ("c", "s/1"),
                                  ("served", "s/0"), ("served", "s/1")]
    finally:
        q.stop()


def test_a_start_that_starts_nothing_or_finishes_before_returning_frees_its_place():
    starts = Starts()
    starts.nothing.add(("a", "s/0"))
    q = StartQueue(starts, priority=lambda app: 0, limit=1)
    early = q._start

    def ready_at_once(app, slot, mode):  # the netlet renews before start_slot returns its id
        netlet = early(app, slot, mode)
        if netlet is not None:
            q.finished(netlet)
        return netlet
    q._start = ready_at_once
    try:
        for app in ("a", "b", "c"):
            q.submit(app, "s/0", "replace")
        wait_for(lambda: len(starts.started) == 3 and q.in_flight() == 0, 10, "all three, nothing left in flight")
    finally:
        q.stop()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["s/0", "s/1"])), min_size=1, max_size=12),
       st.integers(1, 3), st.sets(st.sampled_from("abcd")))
def test_every_requested_slot_starts_within_the_bound(requests, limit, served):
    starts = Starts()
    peak = [0]
    q = StartQueue(starts, priority=lambda app: 1 if app in served else 0, limit=limit)
    inner = q._start

    def measured(app, slot, mode):
        peak[0] = max(peak[0], q.in_flight())
        return inner(app, slot, mode)
    q._start = measured
    try:
        for app, slot in requests:
            q.submit(app, slot, "replace")
        finished: set = set()
        while finished != set(requests):
            wait_for(lambda: set(starts.started) - finished, 10, "a start")
            for app, slot in set(starts.started) - finished:
                q.finished(f"{app}/{slot}#1")
                finished.add((app, slot))
        wait_for(lambda: q.in_flight() == 0 and not q.queued(), 10, "nothing left")
        assert set(starts.started) == set(requests)
        assert peak[0] <= limit
    finally:
        q.stop()


def test_the_elector_needs_a_thread_and_the_start_queue_a_place(tmp_path):
    import pytest

    from hosting.node import NodeConfig
    from warrants.errors import BadInput

    assert NodeConfig(home=tmp_path, election_threads=1).election_threads == 1
    with pytest.raises(BadInput, match="election-threads 0"):
        NodeConfig(home=tmp_path, election_threads=0)
    with pytest.raises(BadInput, match="start-limit 0"):
        NodeConfig(home=tmp_path, start_limit=0)
