"""Durable storage: recovery, torn tails, compaction, snapshot install; dedup; log."""

from __future__ import annotations

import pytest

from netlets.replication import FileStorage, MemoryStorage, Replica, ReplicationConfig
from netlets.replication.dedup import DedupTable
from netlets.replication.log import Log
from netlets.replication.messages import CMD, NOOP, entry
from netlets.replication.storage import open_storage, read_frames
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
    s.append_entries([E(1, 1), E(2, 1)])
    s.sync()
    s.close()
    seg = next(tmp_path.glob("log-*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data + data[:7])  # a torn partial record
    rec = FileStorage(tmp_path).recover()
    assert [e[0] for e in rec.entries] == [1, 2]
    assert seg.read_bytes() == data  # the tail was cut off
    # a corrupt (bad CRC) last record is dropped too
    seg.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    rec = FileStorage(tmp_path).recover()
    assert [e[0] for e in rec.entries] == [1]
    records, valid = read_frames(seg.read_bytes())
    assert valid == len(seg.read_bytes()) and len(records) == 1


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
