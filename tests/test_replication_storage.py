"""Durable storage: recovery, torn tails, compaction, snapshot install; dedup; log."""

from __future__ import annotations

import pytest

from netlets.replication import FileStorage, MemoryStorage, Replica, ReplicationConfig
from netlets.replication.dedup import DedupTable
from netlets.replication.log import Log
from netlets.replication.messages import CMD, NOOP, entry
from netlets.replication.storage import Storage, open_storage
from tests.sim import ListNetlet


def E(seq, epoch, req=None, cmd=None, kind=CMD):
    return entry(seq, epoch, kind, req, cmd if cmd is not None else f"c{seq}")


def test_recover_entries_promise_commit(tmp_path):
    s = FileStorage(tmp_path, "fsync")
    assert s.recover().entries == []
    s.append_entries([E(1, 1), E(2, 1), E(3, 1)])
    s.set_promise(4)
    s.set_commit(2)
    s.sync()
    assert s.fsyncs == 1  # group commit: one fsync for the batch
    s.close()
    rec = FileStorage(tmp_path, "fsync").recover()
    assert [e[0] for e in rec.entries] == [1, 2, 3]
    assert rec.promised_epoch == 4 and rec.commit_seq == 2


def test_unsynced_records_are_lost_on_crash(tmp_path):
    s = FileStorage(tmp_path, "write")
    s.recover()
    s.append_entries([E(1, 1)])
    s.sync()
    s.append_entries([E(2, 1)])
    s.close(sync=False)
    assert [e[0] for e in FileStorage(tmp_path).recover().entries] == [1]


def test_torn_tail_is_truncated(tmp_path):
    s = FileStorage(tmp_path, "fsync")
    s.recover()
    s.append_entries([E(1, 1)])
    s.sync()
    after_first = next(tmp_path.glob("log-*.seg")).stat().st_size
    s.append_entries([E(2, 1), E(3, 1)])
    s.sync()  # one group (one sync): entries 2 and 3
    s.close()
    seg = next(tmp_path.glob("log-*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data + data[:7])  # a torn partial record
    rec = FileStorage(tmp_path).recover()
    assert [e[0] for e in rec.entries] == [1, 2, 3]
    assert seg.read_bytes() == data  # the tail was cut off
    # a corrupt (bad CRC) last record drops its whole group (one sync's write) too
    seg.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    rec = FileStorage(tmp_path).recover()
    assert [e[0] for e in rec.entries] == [1]
    assert seg.read_bytes() == data[:after_first]


def test_truncate_record_and_overwrite(tmp_path):
    s = FileStorage(tmp_path, "write")
    s.recover()
    s.append_entries([E(1, 1), E(2, 1), E(3, 1)])
    s.truncate_after(1)
    s.append_entries([E(2, 2)])
    s.sync()
    s.append_entries([E(3, 2), E(2, 3)])  # an entry at seq 2 drops everything after it
    s.sync()
    s.close()
    rec = FileStorage(tmp_path).recover()
    assert [(e[0], e[1]) for e in rec.entries] == [(1, 1), (2, 3)]


def test_compaction_keeps_tail_and_drops_segments(tmp_path):
    s = FileStorage(tmp_path, "fsync")
    s.recover()
    s.append_entries([E(i, 1) for i in range(1, 6)])
    s.sync()
    snap = {"seq": 3, "epoch": 1, "state": ["c1", "c2", "c3"], "dedup": [["r", {"ok": True}]]}
    s.save_snapshot(snap, [E(4, 1), E(5, 1)], promised=2, commit=3)
    s.append_entries([E(6, 2)])
    s.sync()
    s.close()
    assert len(list(tmp_path.glob("log-*.seg"))) == 1
    rec = FileStorage(tmp_path).recover()
    assert rec.snapshot["seq"] == 3 and rec.snapshot["state"] == ["c1", "c2", "c3"]
    assert [e[0] for e in rec.entries] == [4, 5, 6]
    assert rec.promised_epoch == 2 and rec.commit_seq == 3


def test_install_discards_old_divergent_tail(tmp_path):
    s = FileStorage(tmp_path, "write")
    s.recover()
    s.append_entries([E(1, 1), E(2, 1), E(3, 1)])
    s.sync()
    snap = {"seq": 2, "epoch": 2, "state": [], "dedup": []}
    s.save_snapshot(snap, [], promised=2, commit=2, discard_old_tail=True)
    s.close()
    rec = FileStorage(tmp_path).recover()
    assert rec.entries == [] and rec.snapshot["epoch"] == 2


def test_replica_recovers_state_and_uncommitted_tail(tmp_path):
    cfg = ReplicationConfig(snapshot_every=3)
    r = Replica("a/0", ListNetlet(), FileStorage(tmp_path, "fsync"), cfg)
    r.become_master(1, {"a/0"}, [], 0.0)
    for i in range(7):
        r.submit(f"q{i}", f"q{i}", 0.0)
    r.flush(0.0)
    assert r.commit_seq == 8 and r.sm.netlet.items == [f"q{i}" for i in range(7)]
    assert r.log.base_seq >= 3  # compacted
    r.storage.close(sync=False)
    r2 = Replica("a/0", ListNetlet(), FileStorage(tmp_path, "fsync"), cfg)
    assert r2.sm.netlet.items == [f"q{i}" for i in range(7)]
    assert "q3" in r2.sm.dedup and r2.position == (1, 8) and r2.promised_epoch == 1


def test_every_storage_implements_the_interface_on_its_own(tmp_path):
    """FileStorage is no MemoryStorage with overrides: a method it lacked would be a silent no-op."""
    assert isinstance(open_storage("memory", None), Storage)
    assert isinstance(open_storage("fsync", tmp_path), Storage)
    assert not issubclass(FileStorage, MemoryStorage)


def test_open_storage_modes(tmp_path):
    assert isinstance(open_storage("memory", None), MemoryStorage)
    assert open_storage("write", tmp_path).mode == "write"
    with pytest.raises(ValueError):
        open_storage("paper", tmp_path)
    with pytest.raises(ValueError):
        open_storage("fsync", None)


def test_dedup_bounded_fifo_and_wire():
    d = DedupTable(3)
    for i in range(5):
        d.record(f"r{i}", i)
    assert "r0" not in d and "r1" not in d and d.get("r4") == 4
    d2 = DedupTable(3)
    d2.load_wire(d.to_wire())
    assert d2.to_wire() == d.to_wire() == [["r2", 2], ["r3", 3], ["r4", 4]]
    with pytest.raises(ValueError):
        DedupTable(0)


def test_log_positions_and_compaction():
    log = Log()
    assert log.position == (0, 0) and log.epoch_at(0) == 0
    log.append(E(1, 1))
    log.append(E(2, 2, kind=NOOP))
    assert log.position == (2, 2) and log.epoch_at(1) == 1 and log.epoch_at(3) is None
    with pytest.raises(ValueError):
        log.append(E(4, 2))  # gap
    with pytest.raises(ValueError):
        log.append(E(3, 1))  # epoch going down
    log.compact(1, 1)
    assert log.base_seq == 1 and log.epoch_at(1) == 1 and not log.has(1) and log.has(2)
    with pytest.raises(ValueError):
        log.truncate_after(0)


# --- disk faults (issue 13, findings 4 and 7) ------------------------------------------
import errno  # noqa: E402
import os  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from netlets.replication.segment import scan  # noqa: E402
from netlets.replication.storage import CorruptStorage, StorageFailed  # noqa: E402


def _written(tmp_path, n=5, mode="fsync"):
    """Entries 1..n, one sync each (one group each: damage before the last group is detectable)."""
    s = FileStorage(tmp_path, mode)
    s.recover()
    for i in range(1, n + 1):
        s.append_entries([E(i, 1)])
        s.sync()
    s.close()
    seg = next(tmp_path.glob("log-*.seg"))
    return seg, seg.read_bytes()


def _record_offsets(data):
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        n = int.from_bytes(data[pos:pos + 4], "big")
        pos += 8 + n
    return offsets


def test_fsync_error_is_sticky_and_never_reports_unsynced_entries(tmp_path, monkeypatch):
    """Finding 4: sync() cleared its buffer before fsync, so after an EIO the next sync()
    found nothing to do and returned -- a backup then acked entries never made durable."""
    s = FileStorage(tmp_path, "fsync")
    s.recover()
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_fsync(fd):  # the fault double: the next fsync fails with EIO
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    s.append_entries([E(1, 1)])
    with pytest.raises(OSError) as first:
        s.sync()
    assert first.value.errno == errno.EIO
    with pytest.raises(OSError):  # the same entries must not become "durable" by a retry
        s.sync()
    s.append_entries([E(2, 1)])
    with pytest.raises(StorageFailed) as later:  # failed for good: fail-stop
        s.sync()
    assert later.value.as_dict()["errno_name"] == "EIO"
    s.close()  # closing a failed storage does not try to sync


def test_enospc_on_write_fails_stop(tmp_path, monkeypatch):
    s = FileStorage(tmp_path, "write")
    s.recover()

    class FullDisk:
        def __init__(self, f):
            self.f, self.name = f, f.name

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    s._file = FullDisk(s._file)
    s.append_entries([E(1, 1)])
    with pytest.raises(StorageFailed) as err:
        s.sync()
    assert err.value.errno == errno.ENOSPC and err.value.op == "write"
    with pytest.raises(StorageFailed):
        s.save_snapshot({"seq": 0, "epoch": 0, "state": None, "dedup": []}, [], 0, 0)


def test_wiped_directory_under_a_running_replica_fails_stop(tmp_path):
    d = tmp_path / "replica"
    s = FileStorage(d, "fsync")
    s.recover()
    s.append_entries([E(1, 1)])
    s.sync()
    for p in d.iterdir():
        p.unlink()
    s.append_entries([E(2, 1)])
    with pytest.raises(StorageFailed) as err:  # writes to an unlinked file would "succeed"
        s.sync()
    assert err.value.errno == errno.ENOENT


def test_bad_crc_mid_log_is_corruption_not_a_torn_tail(tmp_path):
    """Finding 7: a bad CRC anywhere was treated as a torn tail: everything after it was cut."""
    seg, data = _written(tmp_path)
    offsets = _record_offsets(data)
    flipped = bytearray(data)
    flipped[offsets[1] + 10] ^= 0x01  # inside the second of five records
    seg.write_bytes(bytes(flipped))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(tmp_path).recover()
    assert err.value.file == str(seg) and err.value.offset == offsets[1]
    assert seg.read_bytes() == bytes(flipped)  # nothing was cut


def test_flipped_length_mid_log_is_corruption(tmp_path):
    seg, data = _written(tmp_path)
    offsets = _record_offsets(data)
    flipped = bytearray(data)
    flipped[offsets[2] + 1] ^= 0x40  # the length now runs past the end of the file
    seg.write_bytes(bytes(flipped))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(tmp_path).recover()
    assert err.value.offset == offsets[2]


def test_damage_in_a_non_last_segment_is_corruption(tmp_path):
    s = FileStorage(tmp_path, "fsync")
    s.recover()
    s.append_entries([E(1, 1), E(2, 1)])
    s.sync()
    s.close()
    (tmp_path / "log-00000002.seg").write_bytes(b"")  # a later (empty) segment exists
    seg = tmp_path / "log-00000001.seg"
    data = seg.read_bytes()
    seg.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # its last record, but not the log's
    with pytest.raises(CorruptStorage) as err:
        FileStorage(tmp_path).recover()
    assert err.value.file == str(seg)


def test_corrupt_snapshot_is_refused_not_recovered_as_empty(tmp_path):
    """Finding 7: an unreadable snapshot.bin recovered as an empty state."""
    s = FileStorage(tmp_path, "fsync")
    s.recover()
    s.append_entries([E(1, 1), E(2, 1)])
    s.save_snapshot({"seq": 2, "epoch": 1, "state": [1, 2], "dedup": []}, [], 1, 2)
    s.close()
    snap = tmp_path / "snapshot.bin"
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x10
    snap.write_bytes(bytes(data))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(tmp_path).recover()
    assert err.value.file == str(snap)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 6), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7),
       cut=st.booleans())
def test_recovery_is_a_prefix_or_refuses(tmp_path_factory, n, where, bit, cut):
    """Any single flipped bit, or a tail cut anywhere: recovery returns a prefix of what was
    written (only when the damage is in the last group) or raises CorruptStorage -- never
    other entries, never a silently shortened log when the damage is before the last group."""
    d = tmp_path_factory.mktemp("flip")
    seg, data = _written(d, n)
    last = scan(data).tail_zone  # where the last group (the last sync's write) starts
    pos = int(where * len(data))
    if cut:
        seg.write_bytes(data[:pos])
        rec = FileStorage(d).recover()  # a torn tail is never corruption
        assert [e[0] for e in rec.entries] == list(range(1, len(rec.entries) + 1))
        assert len(rec.entries) >= (n - 1 if pos >= last else 0)
        return
    flipped = bytearray(data)
    flipped[pos] ^= 1 << bit
    seg.write_bytes(bytes(flipped))
    try:
        rec = FileStorage(d).recover()
    except CorruptStorage:
        return
    assert pos >= last, f"damage at {pos} before the last group ({last}) was cut silently"
    assert [e[0] for e in rec.entries] == list(range(1, n))


def test_identity_unproven_and_swapped_directories(tmp_path):
    """Storage identity: a new or wiped directory is unproven; another slot's is corrupt."""
    d = tmp_path / "r"
    first = FileStorage(d, "fsync", owner=("app", "s/0"))
    rec = first.recover("app/s/0#1")
    assert rec.unproven and rec.generation and rec.openers == ["app/s/0#1"]
    first.close()  # the opener is recorded with the process's first sync
    s = FileStorage(d, "fsync", owner=("app", "s/0"))
    again = s.recover("app/s/0#2")
    assert again.unproven and again.generation == rec.generation  # still unproven: nothing proved it
    assert again.openers == ["app/s/0#1", "app/s/0#2"]
    s.mark_proven()
    s.append_entries([E(1, 1)])
    s.close()
    assert not FileStorage(d, "fsync", owner=("app", "s/0")).recover().unproven  # proven is durable
    with pytest.raises(CorruptStorage) as err:
        FileStorage(d, "fsync", owner=("app", "s/1")).recover()
    assert err.value.file.endswith("IDENTITY")
    (d / "IDENTITY").unlink()  # data without an identity (lost, or from before identities): unproven
    lost = FileStorage(d, owner=("app", "s/0")).recover()
    assert lost.unproven and lost.generation != rec.generation and [e[0] for e in lost.entries] == [1]
    r = Replica("s/0", ListNetlet(), FileStorage(tmp_path / "wiped", owner=("app", "s/0")), incarnation="n#1")
    assert r.prepare(1)["storage"] == {"generation": r.storage_identity["generation"], "unproven": True,
                                       "openers": ["n#1"]}


def test_recovery_fsyncs_what_it_read_and_new_segments_fsync_the_directory(tmp_path, monkeypatch):
    """Finding 7: entries written by a process that died before its fsync were reported
    held (and acked) after a restart without ever being made durable; a new segment's or
    directory's entry was never fsynced."""
    s = FileStorage(tmp_path / "r", "write")
    s.recover()
    s.append_entries([E(1, 1)])
    s.sync()  # written, not fsynced (mode write, or a crash before the fsync)
    s.close(sync=False)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    rec = FileStorage(tmp_path / "r", "fsync").recover()
    assert [e[0] for e in rec.entries] == [1]
    assert str(tmp_path / "r" / "log-00000001.seg") in synced
    synced.clear()
    FileStorage(tmp_path / "new" / "r", "fsync").recover()
    assert str(tmp_path / "new") in synced  # the replica directory's entry
    assert str(tmp_path / "new" / "r") in synced  # the new segment's (and IDENTITY's) entry


def test_deleted_log_segments_beside_an_identity_are_corruption(tmp_path):
    s = FileStorage(tmp_path, "fsync", owner=("app", "s/0"))
    s.recover()
    s.append_entries([E(1, 1), E(2, 1)])
    s.sync()
    s.close()
    (tmp_path / "log-00000001.seg").unlink()  # the data went, the identity stayed: not "empty"
    with pytest.raises(CorruptStorage, match="no log segment"):
        FileStorage(tmp_path, "fsync", owner=("app", "s/0")).recover()
    for gen in (1, 3):
        (tmp_path / f"log-{gen:08d}.seg").write_bytes(b"")
    with pytest.raises(CorruptStorage, match=r"\[2\] missing"):
        FileStorage(tmp_path, "fsync", owner=("app", "s/0")).recover()
