"""A torn *group* write (safety review S4): one ``sync()`` writes several records at once; a
power loss while its pages are written back can persist a later page and lose an earlier one
(out-of-order writeback: ext4 ``data=writeback``, XFS). Nothing in that write was acknowledged
(it was never fsynced), so recovery must cut it -- yet a damaged *synced* group is still
corruption (``netlets.replication.segment``). Real ``FileStorage`` on temporary directories; the
power loss is applied to the files the real writer produced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netlets.replication import FileStorage
from netlets.replication import messages as M
from netlets.replication.storage import CorruptStorage



def _entries(first: int, last: int, size: int = 100, epoch: int = 1) -> list:
    return [M.entry(i, epoch, M.CMD, f"r{i}", "x" * size) for i in range(first, last + 1)]


def test_a_group_write_torn_by_out_of_order_writeback_is_cut_not_corrupt(tmp_path):
    """The attack (``torn_group_write.py``): entries 1..10 synced (acknowledged); then one sync of
    three 1.5 KiB entries and a commit record is in flight at a power loss: its first page never
    reached the disk, a later one did. Recovery raised CorruptStorage at the end of the durable
    prefix; the replica was refused for good although nothing acknowledged was damaged."""
    d = tmp_path / "r"
    s = FileStorage(d, "fsync")
    s.recover("p1")
    s.append_entries(_entries(1, 10))
    s.set_commit(10)
    s.sync()
    seg = sorted(d.glob("log-*.seg"))[-1]
    durable = seg.stat().st_size
    s.append_entries(_entries(11, 13, size=1500))
    s.set_commit(13)
    s.sync()  # the in-flight group: written by the real writer; the power loss comes next
    s.close(sync=False)
    end = seg.stat().st_size
    assert end // PAGE > durable // PAGE  # the group spans pages: the first one is lost, a later one landed
    lose_pages(seg, durable, [durable // PAGE])
    rec = FileStorage(d, "fsync").recover("p2")
    assert [e[0] for e in rec.entries] == list(range(1, 11)) and rec.commit_seq == 10
    assert seg.stat().st_size == durable  # the torn group was cut
    again = FileStorage(d, "fsync")  # and the log goes on
    again.recover("p3")
    again.append_entries(_entries(11, 12))
    again.sync()
    again.close()
    assert [e[0] for e in FileStorage(d).recover().entries] == list(range(1, 13))


# --- the class, by property: any synced groups, then one in-flight group torn by pages ------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from netlets.replication.segment import SECTOR, frame, scan  # noqa: E402
from testkit.disk import PAGE, lose_pages

FILLS = ("zeros", "stale-here", "stale-other")


def _write(d: Path, groups: list[list[int]], inflight: list[int]) -> tuple[Path, int, list]:
    """Entries written one group per sync (sizes given per entry), then ``inflight`` written and not
    fsynced; returns the segment, the size it had after the last synced group, the synced entries."""
    s = FileStorage(d, "fsync")
    s.recover()
    seq, synced = 0, []
    for group in groups:
        batch = [M.entry(seq + 1 + j, 1, M.CMD, f"r{seq + 1 + j}", "x" * size) for j, size in enumerate(group)]
        s.append_entries(batch)
        s.sync()
        seq += len(batch)
        synced += batch
    seg = sorted(d.glob("log-*.seg"))[-1]
    durable = seg.stat().st_size
    s.append_entries([M.entry(seq + 1 + j, 1, M.CMD, f"r{seq + 1 + j}", "y" * size) for j, size in enumerate(inflight)])
    s.set_commit(seq)
    s.sync()
    s.close(sync=False)
    return seg, durable, synced


def _leading_only(written: bytes, torn: bytes, durable: int) -> bool:
    """The documented limit (``netlets.replication.segment``): the write lost only the at most
    8 bytes of its group sharing a sector with the synced bytes before it."""
    diff = [i for i in range(durable, len(written)) if written[i] != torn[i]]
    return bool(diff) and diff[-1] < min(-(-durable // SECTOR) * SECTOR, durable + 9)


@settings(max_examples=200, deadline=None)
@given(groups=st.lists(st.lists(st.sampled_from([5, 300, 1500]), min_size=1, max_size=4), max_size=5),
       inflight=st.lists(st.sampled_from([5, 300, 1500, 5000]), min_size=1, max_size=4),
       page=st.sampled_from([512, 4096]), lost=st.lists(st.booleans(), min_size=1, max_size=12),
       fill=st.sampled_from(FILLS))
def test_a_torn_group_recovers_exactly_the_synced_groups(tmp_path_factory, groups, inflight, page, lost, fill):
    """Whatever pages of the in-flight group landed, recovery never returns anything but the
    synced groups -- plus the in-flight one only if every byte of it landed -- with the file cut
    where the recovered records end. Lost pages read as zeros (ext4 ``data=ordered``, XFS): it
    always recovers so (but for the documented 8-byte limit). Lost pages read as stale blocks
    (this segment's own earlier bytes, or another segment's at the same offsets: ext4
    ``data=writeback``): it recovers so or refuses as CorruptStorage, nothing cut (review F4)."""
    d = tmp_path_factory.mktemp("torn")
    seg, durable, synced = _write(d / "r", groups, inflight)
    written = seg.read_bytes()
    if fill == "stale-other":  # a deleted segment that held the same workload (another segment id)
        other, _, _ = _write(d / "other", groups, inflight)
        stale = other.read_bytes()
    else:
        stale = written[:durable] * (len(written) // max(durable, 1) + 1)
    for k in range(durable // page, (len(written) + page - 1) // page):
        if lost[k % len(lost)]:
            lose_pages(seg, durable, [k], page, None if fill == "zeros" else stale[k * page:(k + 1) * page])
    torn = seg.read_bytes()
    whole = torn == written
    try:
        rec = FileStorage(d / "r", "fsync").recover()
    except CorruptStorage:
        assert fill != "zeros" or _leading_only(written, torn, durable), "a torn zero-fill was refused"
        assert seg.read_bytes() == torn  # nothing cut
        return
    got = [e[0] for e in rec.entries]
    assert got == [e[0] for e in synced] + ([len(synced) + 1 + j for j in range(len(inflight))] if whole else [])
    assert rec.entries[:len(synced)] == [list(e) for e in synced]
    assert seg.stat().st_size == (len(written) if whole else durable)


def test_segments_of_the_old_format_recover_by_the_old_rule_and_are_not_continued(tmp_path):
    """A segment written before groups existed (no header, no markers): a torn last record is cut,
    a bad record followed by valid ones is corruption; new writes go to a new (format-2) segment."""
    d = tmp_path / "r"
    d.mkdir()
    records = [frame(["o", "old#1"])] + [frame(["e", e]) for e in _entries(1, 4)] + [frame(["c", 3])]
    old = d / "log-00000001.seg"
    old.write_bytes(b"".join(records) + records[1][:9])  # a torn last record
    s = FileStorage(d, "fsync")
    rec = s.recover("new#1")
    assert [e[0] for e in rec.entries] == [1, 2, 3, 4] and rec.commit_seq == 3 and rec.openers == ["old#1", "new#1"]
    assert old.read_bytes() == b"".join(records) and scan(old.read_bytes()).format == 1
    s.append_entries(_entries(5, 6))
    s.sync()
    s.close()
    new = d / "log-00000002.seg"
    assert scan(new.read_bytes()).format == 2 and old.read_bytes() == b"".join(records)
    assert [e[0] for e in FileStorage(d).recover().entries] == [1, 2, 3, 4, 5, 6]
    damaged = bytearray(b"".join(records))
    damaged[len(records[0]) + 10] ^= 1  # inside entry 1; valid records follow
    old.write_bytes(bytes(damaged))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(d).recover()
    assert err.value.file == str(old) and err.value.offset == len(records[0])


def test_damage_before_the_last_group_is_corruption_with_its_offset(tmp_path):
    """Groups do not widen what is cut: a byte flipped in a group that another group follows is
    refused (file, offset of the bad record), and nothing is truncated."""
    d = tmp_path / "r"
    s = FileStorage(d, "fsync")
    s.recover()
    for i in range(1, 4):
        s.append_entries(_entries(i, i))
        s.sync()
    s.close()
    seg = sorted(d.glob("log-*.seg"))[-1]
    data = seg.read_bytes()
    first_record = len(frame(["f", [2, "0" * 32]]))  # the header
    damaged = bytearray(data)
    damaged[first_record + 20] ^= 0x04
    seg.write_bytes(bytes(damaged))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(d).recover()
    assert err.value.file == str(seg) and err.value.offset == first_record
    assert seg.read_bytes() == bytes(damaged)


def _synced_groups(d: Path, groups: int, per_group: int) -> Path:
    """``groups`` syncs of ``per_group`` entries each, every sync returned (so a master alone in
    its in-sync set acknowledged them); the storage proven. Returns the segment."""
    s = FileStorage(d, "fsync")
    s.recover("p1")
    s.mark_proven()
    for g in range(groups):
        s.append_entries(_entries(g * per_group + 1, (g + 1) * per_group, size=1))
        s.set_commit(g * per_group)
        s.sync()
    s.close(sync=False)
    return sorted(d.glob("log-*.seg"))[-1]


@pytest.mark.parametrize("where", ["first record", "middle", "last record"])
def test_a_bit_flipped_in_the_last_synced_group_is_corruption_not_a_torn_tail(tmp_path, where):
    """F4 (``synced_group_bitflip.py``): three syncs of 50 entries returned; one bit flipped inside
    the last group (its marker intact, no zero sector: no torn write's signature) recovered
    "100 of 150 synced entries, unproven=False" -- the last group cut silently, so a master alone
    in its in-sync set resumed without acknowledged writes. It must be refused (file, offset of
    the bad record), nothing truncated."""
    d = tmp_path / "r"
    seg = _synced_groups(d, 3, 50)
    data = seg.read_bytes()
    group = scan(data).tail_zone  # where the last group starts
    marker = len(data) - len(frame(["g", [len(data), 2 ** 32 - 1]]))  # no later than its marker
    pos = {"first record": group + 9, "middle": (group + marker) // 2, "last record": marker - 2}[where]
    damaged = bytearray(data)
    damaged[pos] ^= 0x01
    seg.write_bytes(bytes(damaged))
    with pytest.raises(CorruptStorage) as err:
        FileStorage(d, "fsync").recover("p2")
    assert err.value.file == str(seg) and group <= err.value.offset <= pos
    assert seg.read_bytes() == bytes(damaged)


def test_a_torn_last_group_with_its_marker_landed_and_a_zero_sector_is_cut(tmp_path):
    """The other side of F4 (``torn_sealed_group.py``): the in-flight group's marker landed but
    2 KiB of it read as zeros (lost pages): that is a torn write, cut, never corruption."""
    d = tmp_path / "r"
    seg = _synced_groups(d, 1, 10)
    durable = seg.stat().st_size
    s = FileStorage(d, "fsync")
    s.recover("p2")
    s.append_entries(_entries(11, 13, size=1500))
    s.sync()
    s.close(sync=False)
    for hole in ((durable, durable + 2048), (durable + 2048, durable + 4096)):
        torn = bytearray(seg.read_bytes())
        torn[hole[0]:hole[1]] = bytes(hole[1] - hole[0])
        seg.write_bytes(bytes(torn))
        assert [e[0] for e in FileStorage(d, "fsync").recover("p3").entries] == list(range(1, 11))
        assert seg.stat().st_size == durable
        s = FileStorage(d, "fsync")  # write the group again for the next hole
        s.recover("p4")
        s.append_entries(_entries(11, 13, size=1500))
        s.sync()
        s.close(sync=False)
