"""Finding 5 of issue 13: simultaneous elections must not starve each other.

More apps than the elector had threads lose their masters at once; each must
be elected by its *first* election (every candidate's ``prepare`` answered)
and take a write. The old elector ran each election on a 16-thread pool and
waited there for ``prepare`` calls queued behind it on the same pool: past 16
apps they all timed out, and apps were elected in waves of retries.
(Timing figures at 50 apps: ``bench/mass_election.py``.)
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter

import pytest

from manyapps import events_since, first_write, kill, launch_many, masters, newest_index, state, wait_elected
from nodeutil import process_dead, wait_for

APPS = 20  # more than the old pool's 16 threads


def assert_one_election_each(events: list[dict], names: list[str]) -> None:
    started = Counter(e["app"] for e in events if e["kind"] == "election.started")
    again = sorted(n for n in names if started[n] != 1)
    story = [(e["app"], e["kind"], e["slot"], e["detail"]) for e in events
             if e["app"] in again[:2] and e["kind"].split(".")[0] in ("election", "control", "netlet", "isr")]
    assert again == [], f"apps that needed other than one election: {again}; {story}"


@pytest.mark.timeout(600)
def test_masters_of_many_apps_killed_at_once_are_each_elected_by_their_first_election(node, tmp_path):
    """Each app also has a hung in-sync backup (SIGSTOP), so each election takes a prepare
    timeout (1 s) and they overlap: the old elector's pool filled with elections waiting on
    prepares queued behind them; they all timed out and were retried in waves."""
    names = launch_many(node, tmp_path, APPS, replicas=3)
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
    assert set(won) == set(names)
    for name in names:
        first_write(name)
    assert_one_election_each(events_since(node, since), names)
    after = state(node, names)
    assert all(after[n]["epoch"] > before[n]["epoch"] and after[n]["master"] != before[n]["master"] for n in names)


@pytest.mark.timeout(600)
def test_masters_of_many_apps_killed_at_once_all_come_back(node, tmp_path):
    names = launch_many(node, tmp_path, APPS)
    before = state(node, names)
    since = newest_index(node)
    kill([m["pid"] for m in masters(before).values()])
    won = wait_elected(node, before, since, timeout=60)
    assert set(won) == set(names)
    for name in names:
        first_write(name)
    assert_one_election_each(events_since(node, since), names)
    after = state(node, names)
    assert all(after[n]["epoch"] > before[n]["epoch"] and after[n]["master"] != before[n]["master"] for n in names)


@pytest.mark.timeout(600)
def test_node_restart_after_every_master_died_elects_each_app_by_its_first_election(node, tmp_path):
    """The reboot case: the node and every master die together; on restart the node requests
    every app's election in one loop, so they all run at the same moment."""
    from hosting.client import HostingClient
    from hosting.daemon import start_background

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
