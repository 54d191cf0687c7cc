"""Disk faults with real processes (issue 13, findings 4 and 7): a full disk, a flipped byte.

* A full disk under write load: every replica's write or fsync fails with
  ENOSPC, each fail-stops (exit 74, ``storage.error`` with the errno, shown in
  status) and is restarted with backoff; once space is freed, writes resume
  within 10 s without an operator, and nothing acknowledged is lost.
* A byte flipped mid-log in a stopped backup's storage: the slot refuses to
  start (exit 65, ``corrupt`` with file and offset), is never restarted or
  elected; ``jtrix reset`` rebuilds it from the master with all the data.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import pytest

import netlets
from test_replication_e2e import Writers
from testkit.kvstore import KVSTORE, wait_master
from testkit.node import events_of, master_of
from testkit.wait import wait_for


def launch(node, tmp_path, restart: str = 'backoff-base="0.1" backoff-cap="1" healthy-after="10" give-up-after="3"'):
    xml = (KVSTORE / "bootstrap.xml").read_text()
    xml = xml.replace('<codebase path="."/>', f'<codebase path="{KVSTORE}"/>')
    xml = xml.replace('<lease ttl="1.0" grace="2.0"/>', '<lease ttl="1.0" grace="1.0"/>')
    xml = xml.replace('<restart backoff-base="0.1" backoff-cap="5" healthy-after="10" give-up-after="0"/>',
                      f"<restart {restart}/>")
    node.launch(xml, tmp_path)
    return wait_master(node)


def events_since(node, kind: str, since: int) -> list[dict]:
    return [e for e in node.events(since, "kvstore") if e["kind"] == kind]


def in_sync(node, slot: str, since: int) -> bool:
    return any(e["slot"] == slot for e in events_since(node, "isr.expand", since))


def record_starts(data: bytes) -> list[int]:
    """Offsets of the framed records of a log segment (length-prefixed, see storage.py)."""
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 8 + int.from_bytes(data[pos:pos + 4], "big")
    return starts


def last_event_id(node) -> int:
    since = 0
    while events := node.events(since, "kvstore"):  # pages of at most 1000
        since = events[-1]["index"]
    return since


# --- a byte flipped mid-log -------------------------------------------------------------
def test_flipped_byte_mid_log_makes_the_slot_corrupt_until_reset(node, tmp_path):
    app = launch(node, tmp_path)
    kv = netlets.connect("kvstore", timeout=30)
    for i in range(40):
        kv.put(f"k{i}", f"v{i}")
    victim = next(n for n in app["netlets"] if n["slot"] != app["master"])
    wait_for(lambda: node.slot("kvstore", victim["slot"])["seq"] >= 40, 20, "the backup holding every write")
    os.kill(victim["pid"], signal.SIGSTOP)  # stopped: it writes nothing while its log is damaged
    replica_dir = node.home / "apps" / "kvstore" / "slots" / victim["slot"].replace("/", "-") / "replica"
    seg = sorted(replica_dir.glob("log-*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    starts = record_starts(bytes(data))
    assert len(starts) > 20
    data[starts[2] + 10] ^= 0x01  # inside the third record; dozens of valid records follow
    seg.write_bytes(bytes(data))
    os.kill(victim["pid"], signal.SIGKILL)

    corrupt = wait_for(lambda: (v := node.slot("kvstore", victim["slot"]))["state"] == "corrupt" and v, 20,
                       "the slot reported corrupt")
    assert corrupt["pid"] is None
    assert corrupt["fault"]["file"] == str(seg) and corrupt["fault"]["offset"] == starts[2], corrupt
    event = wait_for(lambda: events_of(node, "storage.corrupt", "kvstore"), 5, "a storage.corrupt event")[-1]
    assert event["slot"] == victim["slot"] and event["detail"]["file"] == str(seg)
    assert seg.read_bytes() == bytes(data)  # refused, not truncated
    shown = node.jtrix("status", "kvstore")
    assert shown.returncode == 0 and "corrupt" in shown.stdout, shown.stdout  # the table may wrap the path

    # never restarted, never elected: kill the master; the third replica takes over
    restarts = corrupt["restarts"]
    before = node.app("kvstore")
    os.kill(master_of(before)["pid"], signal.SIGKILL)
    after = wait_master(node, above_epoch=before["epoch"])
    assert after["master"] not in (victim["slot"], before["master"])
    kv.put("after-failover", "x")
    still = node.slot("kvstore", victim["slot"])
    assert still["state"] == "corrupt" and still["pid"] is None and still["restarts"] == restarts

    # reset: rebuilt from the master, back in the in-sync set, and it holds everything
    since = last_event_id(node)
    done = node.jtrix("reset", f"kvstore/{victim['slot']}")
    assert done.returncode == 0, done.stderr
    assert events_of(node, "slot.reset", "kvstore")[-1]["slot"] == victim["slot"]
    wait_for(lambda: in_sync(node, victim["slot"], since), 30, "the reset replica back in sync")
    assert not (replica_dir / "log-00000001.seg").exists() or seg.read_bytes() != bytes(data)
    # leave it the only live in-sync replica: it must be elected and serve every write
    now = node.app("kvstore")
    for n in now["netlets"]:
        if n["slot"] != victim["slot"] and n["pid"]:
            os.kill(n["pid"], signal.SIGKILL)
    final = wait_master(node, above_epoch=now["epoch"])
    assert final["master"] == victim["slot"]
    assert [kv.get_latest(f"k{i}") for i in range(40)] == [f"v{i}" for i in range(40)]
    assert kv.get_latest("after-failover") == "x"


def test_reset_refuses_the_master_and_unknown_slots(node, tmp_path):
    app = launch(node, tmp_path)
    refused = node.jtrix("reset", f"kvstore/{app['master']}")
    assert refused.returncode == 2 and "is the master" in refused.stderr and "Traceback" not in refused.stderr
    unknown = node.jtrix("reset", "kvstore/store/9")
    assert unknown.returncode == 3 and "Traceback" not in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    # it needs the kill right (a reset discards a replica's data), and only that one
    import warrants
    from hosting.client import HostingClient
    from test_hosting_auth import _delegate

    backup = next(n["slot"] for n in app["netlets"] if n["slot"] != app["master"])
    xml, key = _delegate(node, sorted(warrants.CLIENT_RIGHTS - {"kill"}))
    with pytest.raises(warrants.InsufficientRights):
        HostingClient(node.client.uri, xml, key).call("reset", "kvstore", backup)
    since = last_event_id(node)
    old = node.slot("kvstore", backup)
    xml, key = _delegate(node, ["kill"])
    assert HostingClient(node.client.uri, xml, key).call("reset", "kvstore", backup)  # the netlet stopped
    # a running backup: stopped, wiped once its process is gone, restarted with new (unproven) storage,
    # caught up -- which proves it (it holds the master's log through a commit index of its epoch)
    wait_for(lambda: in_sync(node, backup, since), 30, "the reset backup back in sync")
    wait_for(lambda: node.slot("kvstore", backup)["storage"]["unproven"] is False, 10,
             "the caught-up backup's storage proven")
    view = node.slot("kvstore", backup)
    assert view["pid"] != old["pid"] and view["storage"]["generation"] != old["storage"]["generation"]


# --- a full disk -----------------------------------------------------------------------
def _tmpfs(path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")


def _fill(directory) -> int:
    """Write a filler file until the file system is full; returns its size."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                written += f.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                return written


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_fail_stops_then_writes_resume_without_an_operator(node, tmp_path):
    slots = node.home / "apps" / "kvstore" / "slots"
    _tmpfs(slots, "8m")
    try:
        launch(node, tmp_path)
        with Writers(count=3) as writers:
            writers.wait_acked(100)
            since = last_event_id(node)
            _fill(slots)
            # every replica fails in turn (the master, then each backup it fails over to), and
            # keeps failing at each restart: more often than give-up-after allows, yet nobody gives up
            def failed_enough():
                f = events_since(node, "storage.error", since)
                per_slot = [sum(e["slot"] == s for e in f) for s in {e["slot"] for e in f}]
                return len(per_slot) == 3 and max(per_slot) >= 4 and f
            failed = wait_for(failed_enough, 40, "repeated storage errors of every replica")
            assert failed[0]["detail"]["errno"] == errno.ENOSPC and failed[0]["detail"]["errno_name"] == "ENOSPC"
            shown = wait_for(lambda: [n for n in node.app("kvstore")["netlets"]
                                      if (n.get("fault") or {}).get("errno") == errno.ENOSPC], 10,
                             "status showing the storage error")
            assert shown
            acked_while_full = len(writers.acked)
            (slots / "filler").unlink()
            freed = time.monotonic()
            wait_for(lambda: len(writers.acked) > acked_while_full + 20, 10, "writes resuming within 10 s")
            resumed_s = time.monotonic() - freed
        print(f"full disk: {len(failed)} storage.error events; writes resumed {resumed_s:.2f} s after freeing")
        assert resumed_s < 10
        # no slot gave up on the full disk, whatever give-up-after says
        assert not events_of(node, "slot.gave_up", "kvstore")
        before = node.app("kvstore")
        os.kill(master_of(before)["pid"], signal.SIGKILL)
        wait_master(node, above_epoch=before["epoch"])
        kv = netlets.connect("kvstore", timeout=30)
        lost = [k for k, v in writers.acked.items() if kv.get_latest(k) != v]
        assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    finally:
        from testkit.node import cleanup_node
        cleanup_node(node)  # every process holding files on the tmpfs is gone before unmounting
        subprocess.run(["umount", "-l", str(slots)], capture_output=True)


# --- a flusher that would die ------------------------------------------------------------
def test_snapshot_that_raises_ends_the_netlet_instead_of_killing_its_flusher(node, tmp_path):
    """Finding 4: an exception in the flusher (here the app's snapshot() at the first
    compaction) killed the thread while the heartbeat kept the master's lease alive:
    the app never committed again and status said healthy. Now the netlet fail-stops
    (exit 70) with the cause reported, and the node replaces it."""
    from concurrent.futures import wait

    from netlets.pipeline import PipelineConfig
    from testkit.node import APPS, descriptor_xml

    xml = descriptor_xml("faulty", '<netlet type="c" class="faulty:BrokenSnapshot" replicas="1" master-eligible="true"/>',
                         codebase=APPS / "faulty", replication='ack="all" durability="write"',
                         restart='backoff-base="0.1" backoff-cap="1" healthy-after="10" give-up-after="2"')
    node.launch(xml, tmp_path)
    wait_for(lambda: node.app("faulty")["master"], 20, "a master")
    first = node.slot("faulty", "c/0")
    client = netlets.connect("faulty", timeout=5, pipeline=PipelineConfig(window=4, max_batch=512))
    futures = [client.submit("add", 1) for _ in range(10_050)]  # compaction after 10 000 entries
    wait(futures, timeout=60)
    exited = wait_for(lambda: [e for e in events_of(node, "netlet.exited", "faulty")
                               if e["detail"]["netlet"] == first["netlet"]], 20, "the master to exit")[0]
    assert exited["detail"]["exit_code"] == 70, exited
    view = wait_for(lambda: (v := node.slot("faulty", "c/0"))["last_exit"] and v, 10, "its exit in status")
    assert view["last_exit"]["exit_code"] == 70
    assert view["last_exit"]["fault"]["kind"] == "snapshot.error", view["last_exit"]
    assert "cannot snapshot" in view["last_exit"]["fault"]["error"]
    assert view["restarts"] >= 1 or view["pid"] not in (None, first["pid"])  # replaced


# --- a wiped directory in a warm start -----------------------------------------------------
def test_warm_start_refuses_when_the_masters_storage_was_wiped(node, tmp_path):
    """The backups die first (they leave the in-sync set), then the master, whose replica
    directory is lost meanwhile: only the master could prove the newest acknowledged writes,
    and its new process has new (unproven) storage, so no master is elected (``election.blocked``)
    -- rather than a warm start from backups that may lack acknowledged writes."""
    import shutil

    app = launch(node, tmp_path)
    kv = netlets.connect("kvstore", timeout=30)
    for i in range(20):
        kv.put(f"k{i}", f"v{i}")
    master = master_of(app)
    backups = [n for n in app["netlets"] if n["slot"] != app["master"]]
    for n in app["netlets"]:
        os.kill(n["pid"], signal.SIGSTOP)  # the master acknowledges nothing more from here on
    shutil.rmtree(node.home / "apps" / "kvstore" / "slots" / app["master"].replace("/", "-") / "replica")
    since = last_event_id(node)
    for n in backups:
        os.kill(n["pid"], signal.SIGKILL)
    wait_for(lambda: {e["slot"] for e in events_since(node, "netlet.exited", since)} >= {n["slot"] for n in backups},
             10, "the backups' deaths seen by the node")
    os.kill(master["pid"], signal.SIGKILL)
    blocked = wait_for(lambda: events_since(node, "election.blocked", since), 30, "the warm start refused")
    assert "cannot be proven" in blocked[0]["detail"]["reason"], blocked
    # every slot came back (the master's with new, unproven storage), and still nobody was elected
    pids = {n["pid"] for n in app["netlets"]}
    wait_for(lambda: all(n["pid"] not in (None, *pids) and n["state"] == "running"
                         for n in node.app("kvstore")["netlets"]), 30, "every slot running again")
    assert node.slot("kvstore", app["master"])["storage"]["unproven"] is True
    assert not events_since(node, "election.won", since)
    assert node.app("kvstore")["master"] is None


# --- a power loss tearing every replica's in-flight group write ----------------------------------
def test_power_loss_tearing_every_replicas_group_write_recovers_without_an_operator(node, tmp_path):
    """Safety review S4: on one machine a power loss hits every replica at once. Each had one sync
    in flight (several records in one write, never fsynced, so never acknowledged) whose first page
    was lost while a later page landed. Every slot was refused as ``corrupt`` and the app stayed
    without a master until an operator reset them (and a reset slot is unproven: still blocked).
    Now the torn group is cut: every slot starts, a master is elected, every acknowledged write
    is there."""
    from netlets.replication import FileStorage
    from netlets.replication import messages as M
    from testkit.disk import PAGE, lose_pages

    app = launch(node, tmp_path)
    kv = netlets.connect("kvstore", timeout=30)
    for i in range(20):
        kv.put(f"k{i}", f"v{i}")
    for n in app["netlets"]:
        os.kill(n["pid"], signal.SIGSTOP)  # the power goes: nothing more reaches the disks
    since = last_event_id(node)
    slots = node.home / "apps" / "kvstore" / "slots"
    for n in app["netlets"]:
        replica = slots / n["slot"].replace("/", "-") / "replica"
        seg = sorted(replica.glob("log-*.seg"))[-1]
        durable = seg.stat().st_size
        inflight = FileStorage(replica, "write")  # the real writer writes the group this replica had in flight
        rec = inflight.recover()
        seq = (rec.snapshot["seq"] if rec.snapshot else 0) + len(rec.entries)
        inflight.append_entries([M.entry(seq + j, app["epoch"], M.CMD, f"lost{j}",
                                         {"op": "put", "key": f"lost{j}", "value": "y" * 1500})
                                 for j in (1, 2, 3)])
        inflight.set_commit(seq + 3)
        inflight.sync()
        inflight.close(sync=False)
        assert seg.stat().st_size // PAGE > durable // PAGE
        lose_pages(seg, durable, [durable // PAGE])  # its first page lost, a later one landed
    for n in app["netlets"]:
        os.kill(n["pid"], signal.SIGKILL)
    pids = {n["pid"] for n in app["netlets"]}

    def settled():
        a = node.app("kvstore")
        if any(n["state"] == "corrupt" for n in a["netlets"]):
            return a
        return a if all(n["pid"] not in (None, *pids) and n["state"] == "running" for n in a["netlets"]) else None
    after = wait_for(settled, 30, "every slot restarted (or refused)")
    assert [n["slot"] for n in after["netlets"] if n["state"] == "corrupt"] == [], \
        [n.get("fault") for n in after["netlets"]]
    assert not events_since(node, "storage.corrupt", since)
    wait_master(node, above_epoch=app["epoch"])
    assert [kv.get_latest(f"k{i}") for i in range(20)] == [f"v{i}" for i in range(20)]
    assert [kv.get_latest(f"lost{j}") for j in (1, 2, 3)] == [None] * 3  # never acknowledged: cut
    kv.put("after", "x")
    assert kv.get_latest("after") == "x"
