"""End to end: the kvstore example under real failures (SIGKILL, SIGSTOP, all replicas at once).

Each test checks the contract a user relies on: nothing acknowledged is lost,
nothing is applied twice, and a paused master that comes back is fenced.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import netlets
from rpc import wire
from rpc.credential import client_handshake
from testkit.kvstore import launch_kvstore, wait_master
from testkit.node import events_of, master_of
from testkit.procs import process_dead
from testkit.wait import wait_for
from rpc.errors import NotMaster


class Writers:
    """Client threads writing unique keys; records exactly what was acknowledged."""

    def __init__(self, count: int = 4) -> None:
        self.acked: dict[str, str] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(count)]
        self.kv = netlets.connect("kvstore", timeout=30)

    def _run(self, w: int) -> None:
        i = 0
        while not self.stop.is_set():
            key, value = f"w{w}-{i}", f"v{i}"
            try:
                self.kv.put(key, value)
                self.acked[key] = value
            except Exception as err:  # an error is not an ack: only acked writes must survive
                self.failures.append(repr(err))
            i += 1

    def __enter__(self) -> "Writers":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_acked(self, n: int, timeout: float = 20.0) -> None:
        wait_for(lambda: len(self.acked) >= n, timeout, f"{n} acknowledged writes")


def test_sigkill_master_under_load_loses_nothing_acknowledged(node, tmp_path):
    launch_kvstore(node, tmp_path)
    before = node.app("kvstore")
    old = master_of(before)
    with Writers() as writers:
        writers.wait_acked(200)
        os.kill(old["pid"], signal.SIGKILL)
        after = wait_master(node, above_epoch=before["epoch"])
        acked_at_failover = len(writers.acked)
        writers.wait_acked(acked_at_failover + 200)
    assert after["epoch"] > before["epoch"]
    # Another process is master: a backup, or -- when the dead master's slot was refilled before the
    # election ended (under load) -- its replacement, which recovered the old master's storage (every
    # write the old master acknowledged was synced there first) and so may win by position.
    assert master_of(after)["pid"] != old["pid"]
    kv = netlets.connect("kvstore")
    lost = [k for k, v in writers.acked.items() if kv.get_latest(k) != v]
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    if after["master"] == old["slot"]:  # the replacement won: the slot is refilled already
        assert master_of(after)["restarts"] == 1
        return
    # the dead master's slot is refilled (same slot, a new process) and rejoins as a backup
    refilled = wait_for(lambda: (n := next(x for x in node.app("kvstore")["netlets"] if x["slot"] == old["slot"]))
                        ["pid"] not in (None, old["pid"]) and n["role"] == "backup" and n, 20, "the slot refilled")
    assert refilled["restarts"] == 1
    # (it joins either the new master, or — refilled before the election ended — the election's peers)
    wait_for(lambda: events_of(node, "isr.expand", "kvstore")[-1]["slot"] == old["slot"], 20,
             "the refilled backup back in the in-sync set")


def test_paused_master_is_fenced_when_it_resumes(node, tmp_path):
    ttl = 0.6
    launch_kvstore(node, tmp_path, ttl=ttl)
    kv = netlets.connect("kvstore")
    kv.put("k", "before")
    # The node answers the hang with SIGTERM (+SIGCONT so it is delivered), then SIGKILL after the
    # grace period: the resumed old master is either still shutting down (and must refuse) or gone.
    before = node.app("kvstore")
    old = master_of(before)
    secret = node.app_secret("kvstore")
    stale = wire.proxy(old["endpoint"], timeout=5)
    stale._pyroHandshake = client_handshake(secret, "kvstore", old["netlet"])
    stale.ping()  # connect now, while it still runs
    os.kill(old["pid"], signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        after = wait_master(node, above_epoch=before["epoch"], timeout=10)
        failover_s = time.monotonic() - paused_at
        kv.put("k", "after")  # acknowledged by the new master
    finally:
        try:  # the node resumes it itself to deliver SIGTERM, and may have killed it by now
            os.kill(old["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert after["master"] != old["slot"]
    assert failover_s < 2 * ttl + 1.0, f"failover took {failover_s:.2f}s"
    # The old master resumes: whatever it is asked, it acknowledges nothing.
    outcomes = []
    for attempt in range(3):
        try:
            outcomes.append(("acked", stale.invoke("put", ["k", f"stale-{attempt}"], {}, f"stale-req-{attempt}")))
        except NotMaster as err:
            outcomes.append(("refused", str(err)))
        except Exception as err:  # it may already be gone: also not an acknowledgement
            outcomes.append(("gone", type(err).__name__))
            break
    assert all(kind != "acked" for kind, _ in outcomes), outcomes
    with pytest.raises(NotMaster):
        try:
            stale._pyroRelease()
            stale._pyroHandshake = client_handshake(secret, "kvstore", old["netlet"])
            stale.invoke("get_latest", ["k"], {})
        except NotMaster:
            raise
        except Exception:  # gone: not serving linearizable reads either
            raise NotMaster("gone")
    assert kv.get_latest("k") == "after"
    wait_for(lambda: process_dead(old["pid"]), 10, "the fenced old master to exit or be killed")


def test_sigkill_every_replica_warm_starts_with_all_acknowledged_data(node, tmp_path):
    launch_kvstore(node, tmp_path)
    kv = netlets.connect("kvstore")
    written = {f"k{i}": f"v{i}" for i in range(50)}
    for k, v in written.items():
        kv.put(k, v)
    before = node.app("kvstore")
    for n in before["netlets"]:
        os.kill(n["pid"], signal.SIGKILL)
    after = wait_master(node, above_epoch=before["epoch"], timeout=30)
    assert {n["pid"] for n in after["netlets"]}.isdisjoint({n["pid"] for n in before["netlets"]})
    assert any(e["detail"].get("mode") == "warm" for e in events_of(node, "app.bootstrap", "kvstore"))
    kv = netlets.connect("kvstore")
    assert {k: kv.get_latest(k) for k in written} == written


def test_retries_across_failover_never_apply_a_command_twice(node, tmp_path):
    launch_kvstore(node, tmp_path)
    before = node.app("kvstore")
    results, stop = [], threading.Event()
    kv = netlets.connect("kvstore", timeout=30)

    def appender(w: int) -> None:
        i = 0
        while not stop.is_set():
            token = f"<{w}.{i}>"
            try:
                kv.append("log", token)
                results.append(token)
            except Exception:
                pass  # not acknowledged: may or may not be in the log, but at most once
            i += 1

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) > 100, 20, "appends")
    os.kill(master_of(before)["pid"], signal.SIGKILL)
    wait_master(node, above_epoch=before["epoch"])
    n = len(results)
    wait_for(lambda: len(results) > n + 100, 20, "appends after the failover")
    stop.set()
    for t in threads:
        t.join(60)
    final = netlets.connect("kvstore").get_latest("log")
    tokens = final.replace("><", ">\n<").split("\n")
    assert len(tokens) == len(set(tokens)), "a command was applied twice"
    assert set(results) <= set(tokens), "an acknowledged append is missing"


def test_node_sigkill_leaves_the_app_writable_and_restart_keeps_master_and_epoch(node, tmp_path):
    from hosting.client import HostingClient
    from hosting.daemon import start_background

    launch_kvstore(node, tmp_path)
    kv = netlets.connect("kvstore")
    kv.put("before", "1")
    wait_for(lambda: all(n["role"] in ("master", "backup") and n["state"] == "running"
                         for n in node.app("kvstore")["netlets"]), 20, "all replicas in sync")
    before = node.app("kvstore")
    node_pid = node.info["pid"]
    os.kill(node_pid, signal.SIGKILL)
    wait_for(lambda: process_dead(node_pid), 5, "the node to die")
    # no node: the master still orders and replicates writes (its backups ack them)
    kv.put("during", "2")
    assert kv.append("during", "+") == 2  # the new length of "2+"
    start_background(node.home)
    node.client = HostingClient.for_home(node.home)
    after = wait_master(node)
    assert after["master"] == before["master"] and after["epoch"] == before["epoch"]
    assert {n["pid"] for n in after["netlets"]} == {n["pid"] for n in before["netlets"]}
    assert events_of(node, "control.readopted", "kvstore")
    # The re-adopted master counts as promoted: an access point that saw it fail waits for a
    # newer one (until its deadline) instead of being answered at once in a busy loop.
    asked = time.monotonic()
    answer = node.client.call("app_access", "kvstore", after["epoch"], 0.3)
    assert time.monotonic() - asked >= 0.3 and answer["epoch"] == after["epoch"] and answer["ready"]
    kv = netlets.connect("kvstore")
    assert kv.get_latest("before") == "1" and kv.get_latest("during") == "2+"


def test_hung_backup_is_shrunk_out_writes_continue_and_it_rejoins(node, tmp_path):
    ttl = 0.6
    launch_kvstore(node, tmp_path, ttl=ttl)
    wait_for(lambda: len(node.client.call("control_state", "kvstore")["isr"]) == 3, 20, "a full in-sync set")
    app = node.app("kvstore")
    backup = next(n for n in app["netlets"] if n["role"] == "backup")
    with Writers(count=2) as writers:
        writers.wait_acked(100)
        os.kill(backup["pid"], signal.SIGSTOP)
        stopped_at = len(writers.acked)
        # the master asks the arbiter to drop the silent backup, then acknowledges without it
        wait_for(lambda: backup["slot"] not in node.client.call("control_state", "kvstore")["isr"], 10,
                 "the hung backup shrunk out of the in-sync set")
        writers.wait_acked(stopped_at + 100, timeout=10)
        # the node kills the hung process (lease expiry) and refills the slot; it catches up and rejoins
        wait_for(lambda: process_dead(backup["pid"]), 10, "the hung backup killed")
        wait_for(lambda: backup["slot"] in node.client.call("control_state", "kvstore")["isr"], 20,
                 "the refilled backup back in the in-sync set")
    assert node.app("kvstore")["epoch"] == app["epoch"], "a backup's hang must not cost a failover"
    kv = netlets.connect("kvstore")
    lost = [k for k, v in writers.acked.items() if kv.get_latest(k) != v]
    assert lost == []
    assert any(e["slot"] == backup["slot"] for e in events_of(node, "isr.shrink", "kvstore"))


def test_access_points_are_told_of_the_new_master_when_it_is_promoted(node, tmp_path):
    """app_access(after_epoch, wait_s) returns once a newer master can serve, not at the deadline."""
    launch_kvstore(node, tmp_path)
    # both backups in sync first, so the failover is to one of them (not a warm start that
    # the restarted old master could win as the lowest slot name)
    wait_for(lambda: len(node.client.call("control_state", "kvstore")["isr"]) == 3, 20, "a full in-sync set")
    first = node.app("kvstore")
    assert node.client.call("app_access", "kvstore")["ready"] is True
    answer: dict = {}
    waiter = threading.Thread(target=lambda: answer.update(
        node.client.call("app_access", "kvstore", first["epoch"], 5.0, timeout=10)))
    waiter.start()
    os.kill(master_of(first)["pid"], signal.SIGKILL)
    waiter.join(4.5)
    assert not waiter.is_alive(), "woken only by its 5 s deadline, not by the promotion"
    assert answer["epoch"] > first["epoch"] and answer["ready"], answer
    assert answer["master"] != first["master"]
    # No newer master coming: the wait ends at the deadline with the current one.
    quiet = node.client.call("app_access", "kvstore", answer["epoch"], 0.2)
    assert quiet["epoch"] == answer["epoch"] and quiet["master"] == answer["master"]


def test_stopped_master_exits_within_grace_and_its_slot_rejoins_the_isr(node, tmp_path):
    """A SIGSTOPped master with many client connections: once its lease lapses the node
    sends SIGTERM+SIGCONT; it must exit by itself within the grace period (not be
    SIGKILLed), and the new master must bring its replacement back in sync promptly
    (no backlog of replication messages queued behind the stopped process)."""
    launch_kvstore(node, tmp_path, ttl=0.6)
    clients = [Writers(count=1) for _ in range(16)]  # 16 access points: many connections to the master
    for w in clients:
        w.__enter__()
    try:
        clients[0].wait_acked(100)
        first = node.app("kvstore")
        old = master_of(first)
        os.kill(old["pid"], signal.SIGSTOP)
        wait_master(node, above_epoch=first["epoch"])
        exited = wait_for(lambda: [e for e in events_of(node, "netlet.exited", "kvstore")
                                   if e["detail"].get("netlet") == old["netlet"]], 20, "the stopped master's exit")
        assert "signal" not in exited[0]["detail"], exited[0]  # it exited by itself, within the grace
        wait_for(lambda: len(node.client.call("control_state", "kvstore")["isr"]) == 3, 15,
                 "the replaced slot back in the in-sync set")
    finally:
        for w in clients:
            w.__exit__(None, None, None)
