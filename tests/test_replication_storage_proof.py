"""Storage that proves what it holds (issue 13 finding 7 follow-ups F1, F2 of the attack review).

F1: storage created empty stays *unproven* across restarts until it provably holds everything
acknowledged (``netlets.replication.storage``, "Proven storage"). F2: losing one file never
recovers as a valid, smaller replica: it is ``CorruptStorage`` or unproven ("Nothing lost looks
smaller"). Real ``FileStorage`` on temporary directories; crashes are injected by making one
step of a compaction raise, which leaves the disk as a crash there would.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netlets.replication import FileStorage, Replica
from netlets.replication import messages as M
from netlets.replication.storage import OPENERS_KEPT, CorruptStorage
from tests.sim import ListNetlet

OWNER = ("app", "s/0")


def _entries(first: int, last: int, epoch: int = 1) -> list:
    return [M.entry(i, epoch, M.CMD, f"r{i}", {"k": i}) for i in range(first, last + 1)]


def _open(d, opener: str | None = None):
    s = FileStorage(d, "fsync", OWNER)
    return s, s.recover(opener)


def _written(d, n: int = 5, proven: bool = True) -> str:
    """A directory holding entries 1..n, proven; returns its generation."""
    s, rec = _open(d, "n#1")
    s.append_entries(_entries(1, n))
    s.sync()
    if proven:
        s.mark_proven()
    s.close()
    return rec.generation


def _compacted(d, seq: int = 10, tail: int = 0) -> FileStorage:
    """Entries 1..seq+tail, compacted at ``seq`` (what maybe_compact does); left open."""
    s, _ = _open(d, "n#1")
    s.mark_proven()
    s.append_entries(_entries(1, seq + tail))
    s.sync()
    s.save_snapshot({"seq": seq, "epoch": 1, "state": {"n": seq}, "dedup": []},
                    _entries(seq + 1, seq + tail), 1, seq)
    return s


# --- F1: unproven is sticky --------------------------------------------------------
def test_wiped_storage_stays_unproven_across_restarts(tmp_path):
    """The attack: a wiped directory was 'fresh' only in the first process that opened it; after
    one restart of the slot (a warm start restarts every slot) it claimed fresh=False."""
    d = tmp_path / "replica"
    gen0 = _written(d)
    assert not _open(d)[1].unproven
    shutil.rmtree(d)  # lost while the slot was stopped
    s1, r1 = _open(d, "n#2")
    assert r1.unproven and r1.entries == [] and r1.generation != gen0
    s1.close()
    s2, r2 = _open(d, "n#3")  # the slot restarts once
    assert r2.unproven and r2.generation == r1.generation and r2.openers == ["n#2", "n#3"]
    s2.append_entries(_entries(1, 2))  # some entries arrive: still not proof of what was acknowledged
    s2.sync()
    s2.close()
    assert _open(d)[1].unproven


def test_openers_are_bounded_and_survive_restarts(tmp_path):
    d = tmp_path / "replica"
    for i in range(OPENERS_KEPT + 3):
        s, rec = _open(d, f"n#{i}")
        s.close()
    assert rec.openers == [f"n#{i}" for i in range(3, OPENERS_KEPT + 3)]


def _backup(d, incarnation="s/1#1"):
    return Replica("s/1", ListNetlet(), FileStorage(d, "fsync", ("app", "s/1")), incarnation=incarnation)


def test_backup_is_proven_only_through_a_commit_index_of_the_masters_epoch(tmp_path):
    """The rule (``netlets.replication.backup``): durably holding the master's log through its
    commit index proves the storage only if the entry there is of the master's epoch (at or after
    its barrier, which follows every write acknowledged before its election)."""
    b = _backup(tmp_path / "b")
    assert b.storage_identity["unproven"]
    # a new master of epoch 2 whose recovered commit index lags (entries 1..5 of epoch 1 were acked)
    b.handle(M.append(2, "s/0", 1, 0, 0, _entries(1, 3), 3))
    assert b.storage_identity["unproven"]  # commit 3 is an epoch-1 entry: 4, 5 may be acknowledged
    b.handle(M.append(2, "s/0", 2, 3, 1, _entries(4, 5) + _entries(6, 6, epoch=2), 5))
    assert b.storage_identity["unproven"]
    b.handle(M.append(2, "s/0", 3, 6, 2, [], 6))  # the barrier (6, epoch 2) committed, held durably
    assert not b.storage_identity["unproven"]
    b.storage.close()
    again = _backup(tmp_path / "b", "s/1#2")
    assert not again.storage_identity["unproven"]  # durable
    assert again.storage_identity["openers"] == ["s/1#1", "s/1#2"]


def test_a_commit_index_beyond_what_the_backup_holds_does_not_prove(tmp_path):
    b = _backup(tmp_path / "b")
    b.handle(M.append(1, "s/0", 1, 0, 0, _entries(1, 2), 4))  # commit 4, only 1..2 in this message
    assert b.storage_identity["unproven"]


def test_becoming_master_proves_storage(tmp_path):
    r = Replica("s/0", ListNetlet(), FileStorage(tmp_path / "m", "fsync", OWNER), incarnation="s/0#1")
    assert r.storage_identity["unproven"]
    r.become_master(1, {"s/0"}, [], 0.0)
    assert not r.storage_identity["unproven"]
    r.storage.close()
    assert not _open(tmp_path / "m")[1].unproven


# --- F2: one file lost --------------------------------------------------------------
def test_missing_snapshot_after_a_full_compaction_is_corrupt(tmp_path):
    """The attack: snapshot.bin lost beside a segment holding only promise/commit records
    recovered as an empty replica with the same generation."""
    d = tmp_path / "replica"
    _compacted(d, 10, tail=0).close()
    (d / "snapshot.bin").unlink()
    with pytest.raises(CorruptStorage) as err:
        _open(d)
    assert err.value.file.endswith("snapshot.bin") and "missing" in err.value.reason


def test_an_older_snapshot_file_is_corrupt(tmp_path):
    d = tmp_path / "replica"
    s = _compacted(d, 4, tail=0)
    old = (d / "snapshot.bin").read_bytes()
    s.append_entries(_entries(5, 8))
    s.sync()
    s.save_snapshot({"seq": 8, "epoch": 1, "state": {"n": 8}, "dedup": []}, [], 1, 8)
    s.close()
    (d / "snapshot.bin").write_bytes(old)  # an older copy put back
    with pytest.raises(CorruptStorage, match="older"):
        _open(d)


@pytest.mark.parametrize("fault", ["delete", "rename-up", "rename-down"])
def test_the_segment_named_by_identity_lost_or_renamed_is_corrupt(tmp_path, fault):
    d = tmp_path / "replica"
    s = _compacted(d, 4, tail=3)  # segment 2 holds entries 5..7; segment 1 is gone
    s.close()
    seg = d / "log-00000002.seg"
    assert seg.exists() and not (d / "log-00000001.seg").exists()
    if fault == "delete":
        (d / "log-00000003.seg").write_bytes(b"")  # a later (empty) segment stays: not "no segment"
        seg.unlink()
    else:
        seg.rename(d / ("log-00000003.seg" if fault == "rename-up" else "log-00000001.seg"))
    with pytest.raises(CorruptStorage, match="named by IDENTITY"):
        _open(d)


def test_lost_identity_beside_data_is_unproven_under_a_new_generation(tmp_path):
    d = tmp_path / "replica"
    gen = _written(d)
    (d / "IDENTITY").unlink()
    rec = _open(d)[1]
    assert rec.unproven and rec.generation != gen and len(rec.entries) == 5


@pytest.mark.parametrize("crash_at", ["identity", "delete"])
def test_a_crash_anywhere_in_a_compaction_recovers_the_same_log(tmp_path, monkeypatch, crash_at):
    """The order of the compaction keeps every crash point recoverable: snapshot.bin, the new
    segment, then IDENTITY naming both, then the old segments go."""
    d = tmp_path / "replica"
    s, _ = _open(d, "n#1")
    s.mark_proven()
    s.append_entries(_entries(1, 7))
    s.sync()

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    if crash_at == "identity":  # after the snapshot and the new segment, before IDENTITY names them
        monkeypatch.setattr(s, "_write_identity", crash)
    else:  # IDENTITY written, the old segment not deleted yet
        import pathlib
        monkeypatch.setattr(pathlib.Path, "unlink", crash)
    with pytest.raises(Crash):
        s._save_snapshot({"seq": 4, "epoch": 1, "state": {"n": 4}, "dedup": []}, _entries(5, 7), 1, 4)
    monkeypatch.undo()
    rec = _open(d)[1]
    assert rec.snapshot["seq"] == 4 and [e[0] for e in rec.entries] == [5, 6, 7] and not rec.unproven


def test_a_crash_before_the_first_segment_leaves_no_identity(tmp_path, monkeypatch):
    """A new directory gets its segment before its IDENTITY: a crash between the two must not leave
    an IDENTITY without a segment (which recovery refuses as a deleted log). Seen failing before:
    IDENTITY was written first, and a crash in opening the segment made the slot corrupt."""
    d = tmp_path / "replica"
    s = FileStorage(d, "fsync", OWNER)

    def crash_before_the_segment(gen, segment_id=None):
        raise OSError(5, "crash")

    monkeypatch.setattr(s, "_open", crash_before_the_segment)
    with pytest.raises(OSError):
        s.recover()
    monkeypatch.undo()
    rec = FileStorage(d, "fsync", OWNER).recover()  # not CorruptStorage
    assert rec.unproven and rec.entries == []


# --- the class, by property: any workload, any one file lost ------------------------------------------
def _content(rec) -> tuple:
    return ((rec.snapshot or {}).get("seq", 0), [e[0] for e in rec.entries])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 4)),
                              st.tuples(st.just("compact"), st.integers(0, 3)),
                              st.tuples(st.just("restart"), st.just(0))), min_size=1, max_size=12),
       what=st.sampled_from(["snapshot.bin", "IDENTITY", "first", "last"]),
       how=st.sampled_from(["delete", "up", "down"]))
def test_losing_any_one_file_never_recovers_a_smaller_proven_replica(tmp_path_factory, ops, what, how):
    """Whatever was written and compacted, losing one file (or renaming a segment) recovers as
    ``CorruptStorage``, as unproven storage, or with exactly the content it had."""
    d = tmp_path_factory.mktemp("lose") / "replica"
    s, _ = _open(d, "n#1")
    s.mark_proven()
    last = 0
    for op, k in ops:
        if op == "append":
            s.append_entries(_entries(last + 1, last + k))
            last += k
            s.sync()
        elif op == "compact" and last:
            seq = max(1, last - k)
            s.save_snapshot({"seq": seq, "epoch": 1, "state": {"n": seq}, "dedup": []},
                            _entries(seq + 1, last), 1, seq)
        elif op == "restart":
            s.close()
            s, _ = _open(d)
    s.close()
    held = _content(_open(d)[1])
    segs = sorted(d.glob("log-*.seg"))
    p = {"first": segs[:1], "last": segs[-1:]}.get(what, [d / what])
    assume(p and p[0].exists())
    p = p[0]
    if how != "delete" and p.suffix == ".seg":
        target = d / f"log-{int(p.stem[4:]) + (1 if how == 'up' else -1):08d}.seg"
        assume(not target.exists())
        p.rename(target)
    else:
        p.unlink()
    try:
        rec = _open(d)[1]
    except CorruptStorage:
        return
    assert rec.unproven or _content(rec) == held, f"lost {p.name}: {_content(rec)} recovered, held {held}"


def test_an_opener_is_durable_with_the_first_sync_and_survives_compaction(tmp_path):
    """Openers cost no fsync of their own: the record rides on the process's first sync (a promise
    syncs before it answers, so a process is recorded before it can be granted or counted)."""
    d = tmp_path / "replica"
    s, _ = _open(d, "n#1")
    s.close(sync=False)  # crashed before any sync: never promised, never trusted, not recorded
    r = Replica("s/0", ListNetlet(), FileStorage(d, "fsync", OWNER), incarnation="n#2")
    r.prepare(1)
    r.storage.close(sync=False)
    assert _open(d)[1].openers == ["n#2"]
    s = _compacted(d, 3, tail=1)  # opened by n#1 again, then compacted: segment 1 is gone
    s.close()
    assert _open(d)[1].openers == ["n#2", "n#1"]
