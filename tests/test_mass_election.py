"""Many simultaneous elections on one node (issue 13, finding 5), end to end.

More apps than the old elector's 16 pool threads lose their masters at once
(with a hung backup each: every election waits out a 1 s prepare timeout, so
they overlap); every election attempt must end with a winner, and every app
take a write. And the reboot case: the node dies with every master; on restart
it requests every election in one loop — each app must be elected by exactly
one election (this one failed before: leases granted while the node was still
recovering expired before it could answer renewals, forcing a second
election per app). Timing figures at 50 apps: ``bench/mass_election.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter

import pytest

from hosting.client import HostingClient
from hosting.daemon import start_background
from testkit.manyapps import events_since, first_write, kill, launch_many, masters, newest_index, state, wait_elected
from testkit.node import RunningNode, cleanup_node
from testkit.procs import process_dead
from testkit.wait import wait_for

APPS = 20  # more than the old pool's 16 threads


@contextlib.contextmanager
def own_node(tmp_path, monkeypatch, **options):
    """A node of its own in a temp home, started with ``options`` (``start_background``'s)."""
    home = tmp_path / "home"
    monkeypatch.setenv("JTRIX_HOME", str(home))
    start_background(home, **options)
    node = RunningNode(home, HostingClient.for_home(home))
    try:
        yield node
    finally:
        cleanup_node(node)


def assert_one_election_each(events: list[dict], names: list[str]) -> None:
    """Each app was elected by exactly one election."""
    started = Counter(e["app"] for e in events if e["kind"] == "election.started")
    again = sorted(n for n in names if started[n] != 1)
    story = [(e["app"], e["kind"], e["slot"], e["detail"]) for e in events
             if e["app"] in again[:2] and e["kind"].split(".")[0] in ("election", "control", "netlet", "isr")]
    assert again == [], f"apps that needed other than one election: {again}; {story}"


def assert_no_attempt_without_winner(events: list[dict], names: list[str]) -> None:
    """Every election attempt ended with a winner: none starved (no candidate's prepare answered
    in time) and had to be retried. (A second election because a winner lost its lease later —
    a netlet not scheduled for a TTL on a loaded machine — is another matter and allowed.)"""
    started = {(e["app"], e["detail"]["epoch"]) for e in events if e["kind"] == "election.started"}
    granted = {(e["app"], e["detail"]["epoch"]) for e in events if e["kind"] == "control.granted"}
    failed = sorted(started - granted)
    again = sorted({app for app, _ in failed})
    story = [(e["app"], e["kind"], e["slot"], e["detail"]) for e in events
             if e["app"] in again[:2] and e["kind"].split(".")[0] in ("election", "control", "netlet", "isr")]
    assert failed == [], f"election attempts that ended without a winner: {failed}; {story}"
    assert {app for app, _ in started} >= set(names)


def assert_every_app_reelected(node, names, before, since, won) -> None:
    """Every app has a new master at a higher epoch that takes a write, and no election attempt
    since ``since`` ended without a winner."""
    assert set(won) == set(names)
    for name in names:
        first_write(name)
    assert_no_attempt_without_winner(events_since(node, since), names)
    after = state(node, names)
    assert all(after[n]["epoch"] > before[n]["epoch"] and after[n]["master"] != before[n]["master"] for n in names)


def kill_masters_with_a_hung_backup_each(node, names: list[str]) -> None:
    """SIGSTOP one backup of each app, SIGKILL every master at once, and check that every app is
    re-elected with every attempt won: each election waits out a prepare timeout (1 s) on its hung
    backup, so they overlap."""
    before = state(node, names)
    since = newest_index(node)
    hung = [next(n["pid"] for n in a["netlets"] if n["slot"] != a["master"]) for a in before.values()]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        kill([m["pid"] for m in masters(before).values()])
        won = wait_elected(node, before, since, timeout=60)
    finally:
        for pid in hung:  # (the node may have killed it meanwhile: its netlet lease ran out)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert_every_app_reelected(node, names, before, since, won)


@pytest.mark.timeout(600)
def test_masters_of_many_apps_with_a_hung_backup_killed_at_once_every_election_has_a_winner(node, tmp_path):
    """Each app also has a hung in-sync backup (SIGSTOP), so each election takes a prepare
    timeout (1 s) and they overlap: the old elector's pool filled with elections waiting on
    prepares queued behind them; they all timed out and were retried in waves."""
    # TTL 3 s: on a loaded machine a backup not scheduled for a second must not lose its leases
    # (that would be another reason for a second election than the one this test is about).
    names = launch_many(node, tmp_path, APPS, replicas=3, ttl=3.0)
    kill_masters_with_a_hung_backup_each(node, names)


@pytest.mark.timeout(600)
def test_more_simultaneous_elections_than_the_elector_has_threads_each_have_a_winner(tmp_path, monkeypatch):
    """The starvation bug as a property of the pool, whatever its size: a node whose elector has
    2 threads elects 3 apps at once, each with a hung backup. An elector whose election task waits
    on prepares queued on its own pool deadlocks here until its prepare timeout (nothing of the
    other elections can run), and its attempts end without a winner."""
    with own_node(tmp_path, monkeypatch, election_threads=2) as node:
        kill_masters_with_a_hung_backup_each(node, launch_many(node, tmp_path, 3, replicas=3, ttl=3.0))


@pytest.mark.timeout(600)
def test_masters_of_many_apps_killed_at_once_all_come_back(node, tmp_path):
    names = launch_many(node, tmp_path, APPS)
    before = state(node, names)
    since = newest_index(node)
    kill([m["pid"] for m in masters(before).values()])
    won = wait_elected(node, before, since, timeout=60)
    assert_every_app_reelected(node, names, before, since, won)


@pytest.mark.timeout(600)
def test_node_restart_after_every_master_died_elects_each_app_by_its_first_election(node, tmp_path):
    """The reboot case: the node and every master die together; on restart the node requests
    every app's election in one loop, so they all run at the same moment."""
    names = launch_many(node, tmp_path, APPS)
    before = state(node, names)
    since = newest_index(node)
    node_pid = node.info["pid"]
    kill([node_pid] + [m["pid"] for m in masters(before).values()])
    wait_for(lambda: process_dead(node_pid), 10, "the node to die")
    start_background(node.home)
    node.client.close()
    node.client = HostingClient.for_home(node.home)
    won = wait_elected(node, before, since, timeout=60)
    assert set(won) == set(names)
    for name in names:
        first_write(name)
    assert_one_election_each(events_since(node, since), names)


def most_starting_at_once(events: list[dict]) -> int:
    """The most netlets started (``netlet.started``) and not yet ready or gone at any point."""
    starting: set[str] = set()
    most = 0
    for e in events:
        netlet = e["detail"].get("netlet")
        if e["kind"] == "netlet.started":
            starting.add(netlet)
            most = max(most, len(starting))
        elif e["kind"] in ("netlet.ready", "netlet.exited"):
            starting.discard(netlet)
    return most


@pytest.mark.timeout(600)
def test_every_replica_of_many_apps_killed_restarts_a_bounded_number_at_once_and_every_app_is_elected(
        tmp_path, monkeypatch):
    """The node refills all their slots, but never starts more netlets at once than its start
    queue's limit (the old supervisor started every replacement at once: their imports ate every
    core while the elections ran); each app is then elected by a warm start."""
    with own_node(tmp_path, monkeypatch, start_limit=3) as node:
        names = launch_many(node, tmp_path, 10)
        before = state(node, names)
        since = newest_index(node)
        kill([n["pid"] for a in before.values() for n in a["netlets"]])
        won = wait_elected(node, before, since, timeout=300)
        assert set(won) == set(names)
        events = events_since(node, since)
    restarted = [e for e in events if e["kind"] == "netlet.started"]
    assert len(restarted) >= 2 * len(names)
    assert most_starting_at_once(events) <= 3
