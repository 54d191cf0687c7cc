"""End to end: a netlet dies while the node's store fails; its slot must come back once the
store recovers (issue 13 follow-up F3: the exit's store error escaped the pid watcher's
callback and the restart was never scheduled).

The store is the node's real registry (SQLite, which is also the arbiter's store on one
node), made to fail the way it does in production: another connection holds the write
lock, so the node's writes end in "database is locked" after its busy timeout.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3

from testkit.kvstore import launch_kvstore
from testkit.node import descriptor_xml, events_of
from testkit.wait import wait_for
from test_store_retry import Locked


def stored_isr(node) -> list[str]:
    db = sqlite3.connect(str(node.home / "registry.sqlite"))
    try:
        (state,) = db.execute("SELECT state FROM control WHERE app='kvstore'").fetchone()
    finally:
        db.close()
    return sorted(json.loads(state).get("isr", []))


def test_a_backup_killed_while_the_registry_is_locked_is_restarted_once_it_is_unlocked(node, tmp_path):
    launch_kvstore(node, tmp_path, ttl=3.0)
    wait_for(lambda: len(stored_isr(node)) == 3, 30, "every replica in the in-sync set")
    a = node.app("kvstore")
    backup = next(n for n in a["netlets"] if n["slot"] != a["master"])
    slot, old_pid = backup["slot"], backup["pid"]
    with Locked(node.home / "registry.sqlite"):
        os.kill(old_pid, signal.SIGKILL)
        view = wait_for(lambda: (v := node.slot("kvstore", slot))["store_error"] and v, 60,
                        "the store outage in the slot's status")
        assert "locked" in view["store_error"] and view["pid"] is None
    back = wait_for(lambda: (v := node.slot("kvstore", slot))["pid"] not in (None, old_pid)
                    and v["state"] == "running" and v, 60, "a replacement in the slot")
    assert back["store_error"] is None
    wait_for(lambda: slot in stored_isr(node), 60, "the replacement back in the in-sync set")
    exited = [e for e in events_of(node, "netlet.exited", "kvstore") if e["slot"] == slot]
    assert len(exited) == 1 and exited[0]["detail"]["signal"] == "SIGKILL"  # recorded once, not per retry
    assert [e["slot"] for e in events_of(node, "store.recovered", "kvstore")].count(slot) == 1
    assert node.slot("kvstore", slot)["restarts"] == 1


ECHO = """  <netlet type="w" class="workers:Echo" replicas="1">
    <resource kind="directory" name="data"/>
  </netlet>"""


def test_a_restart_due_while_the_registry_is_locked_starts_once_it_is_unlocked(node, tmp_path):
    """The start itself fails for the store's fault (it records the new incarnation before it
    spawns): it is retried, not dropped."""
    node.launch(descriptor_xml("echo", ECHO, restart='backoff-base="4" backoff-cap="4" healthy-after="60"'),
                tmp_path)
    first = node.wait_running("echo")["netlets"][0]["pid"]
    os.kill(first, signal.SIGKILL)  # the first failure is restarted at once
    second = wait_for(lambda: (v := node.slot("echo", "w/0"))["pid"] not in (None, first) and v["pid"], 30,
                      "the first replacement")
    os.kill(second, signal.SIGKILL)  # the second waits 2 to 4 s
    wait_for(lambda: node.slot("echo", "w/0")["state"] == "backoff", 30, "the slot backing off")
    with Locked(node.home / "registry.sqlite"):
        view = wait_for(lambda: (v := node.slot("echo", "w/0"))["store_error"] and v, 60,
                        "the failed start in the slot's status")
        assert "locked" in view["store_error"] and view["pid"] is None
    back = wait_for(lambda: (v := node.slot("echo", "w/0"))["pid"] not in (None, first, second)
                    and v["state"] == "running" and v, 60, "the second replacement")
    assert back["store_error"] is None and back["restarts"] == 2
    # store.unavailable could not be written (the registry was the store that failed): the
    # recovery event says what happened
    (recovered,) = events_of(node, "store.recovered", "echo")
    assert recovered["slot"] == "w/0" and "locked" in recovered["detail"]["error"]
