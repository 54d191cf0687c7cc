"""The format of a log segment, and which of its bytes are durable, a torn tail or corruption.

A framed record is ``>II`` (payload length, CRC32 of the payload) then the msgpack payload
(:func:`frame`). A segment (format 2) is a header record ``["f", [2, segment id]]`` (a random
id, fsynced when the segment is created) followed by *groups*: the records one
``Storage.sync()`` wrote, sealed by a marker record ``["g", [length, crc]]`` in the same
``write`` (:func:`seal`): ``length`` is the group's size in bytes before the marker, ``crc`` a
CRC32 over those bytes seeded with the segment id and the group's file offset -- so a group
verifies only complete, in this segment, at this place (stale blocks of another segment that a
crash exposes never verify).

Recovery (:func:`scan`) walks the groups. ``sync()`` serializes write and fsync, so only the
last group can be torn by a crash, and a torn write can damage nothing before it:

* damage followed by a group that verifies is corruption (:attr:`Scan.damage`): it sits in a
  group that was synced before another one was written;
* damage after the last group that verifies is a torn tail -- cut from the end of the last
  verified group on, the torn group as a whole, records of it that happened to land included
  (none was acknowledged: its sync never returned) -- only when it shows the signature of a
  torn write (:func:`_torn`): the file ends inside the group (its marker is missing or
  incomplete), or its marker frame is damaged, or the group's region
  holds a lost sector: a whole all-zero ``SECTOR`` aligned to the file offset, or zeros from
  the group's start to the next sector boundary covering its first record's frame header and
  first payload byte (never zero as written). A power loss loses whole sectors/pages, which
  read back as zeros on the filesystems we support (ext4 ``data=ordered``, XFS: unwritten
  extents read as zeros), or leaves the file short. Otherwise (the marker intact and covering
  the group, the group's CRC failing, no lost sector) the last group is corruption too: its
  sync may have returned, its writes acknowledged (review F4).

Limits: a torn write whose lost pages read as stale non-zero bytes (ext4 ``data=writeback``),
or that lost only the at most ``_HDR.size`` bytes of the group sharing a sector with the group
before it, is refused as corruption rather than cut (safety first: the replica is reset, the
other in-sync replicas hold its data). Damage that a torn write could have made is still cut:
a bit flip inside the last group's marker frame, or inside a last group that holds a whole
zero sector of the app's own data.

Segments without a header are format 1 (written before groups existed) and recover by the
old rule: only bad bytes with no complete valid record after them are a torn tail
(:func:`torn_tail`).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

FORMAT = 2
_HDR = struct.Struct(">II")
#: the first bytes of every format-1 log record's payload: msgpack fixarray(2), fixstr(1), kind
_RECORD_STARTS = tuple(b"\x92\xa1" + k for k in (b"e", b"t", b"p", b"c", b"o"))
_MARKER_START = b"\x92\xa1g"
#: the unit a power loss loses (whole sectors/pages read back as zeros: see the module docstring)
SECTOR = 512


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(obj: Any) -> bytes:
    payload = _pack(obj)
    return _HDR.pack(len(payload), zlib.crc32(payload)) + payload


def _record_at(data: bytes, pos: int) -> tuple[Any, int] | None:
    """The valid framed record at ``pos`` and where it ends, or None."""
    if pos + _HDR.size > len(data):
        return None
    n, crc = _HDR.unpack_from(data, pos)
    end = pos + _HDR.size + n
    if end > len(data) or zlib.crc32(data[pos + _HDR.size:end]) != crc:
        return None
    try:
        return _unpack(data[pos + _HDR.size:end]), end
    except Exception:
        return None


def read_frames(data: bytes) -> tuple[list, int]:
    """Decode framed records; returns (records, length of the valid prefix).

    Stops at the first short, bad-CRC or undecodable record."""
    out, pos = [], 0
    while (found := _record_at(data, pos)) is not None:
        out.append(found[0])
        pos = found[1]
    return out, pos


def torn_tail(data: bytes, valid: int) -> bool:
    """Format 1: True if ``data[valid:]`` can be a torn last write: no complete valid log
    record starts anywhere after ``valid`` (so nothing durable would be cut)."""
    for start in _RECORD_STARTS:
        pos = data.find(start, valid + 1)
        while pos != -1:
            if pos - _HDR.size > valid - 1 and _record_at(data, pos - _HDR.size) is not None:
                return False
            pos = data.find(start, pos + 1)
    return True


# --- format 2: groups ----------------------------------------------------------------------
def new_segment_id() -> str:
    return uuid.uuid4().hex


def header(segment_id: str) -> bytes:
    """The first record of a format-2 segment."""
    return frame(["f", [FORMAT, segment_id]])


def _group_crc(group: bytes, segment_id: str, offset: int) -> int:
    return zlib.crc32(group, zlib.crc32(f"{segment_id}:{offset}".encode()))


def seal(group: bytes, segment_id: str, offset: int) -> bytes:
    """``group`` (framed records, not empty) followed by its marker: what one sync writes at file
    ``offset`` of the segment ``segment_id``, in one write."""
    return group + frame(["g", [len(group), _group_crc(group, segment_id, offset)]])


def _marker(record: Any) -> tuple[int, int] | None:
    """(length, crc) if ``record`` is a group marker."""
    if isinstance(record, list) and len(record) == 2 and record[0] == "g" and isinstance(record[1], list) \
            and len(record[1]) == 2 and all(isinstance(v, int) for v in record[1]):
        return record[1][0], record[1][1]
    return None


def _verifies(data: bytes, segment_id: str, marker_at: int, length: int, crc: int) -> bool:
    start = marker_at - length
    return length > 0 and start >= 0 and _group_crc(data[start:marker_at], segment_id, start) == crc


@dataclass
class Scan:
    """What a segment's bytes hold (:func:`scan`)."""

    format: int  # 2: groups; 1: written before groups existed (no header)
    records: list = field(default_factory=list)  # the log records up to ``end`` (no header, no markers)
    end: int = 0  # the durable records end here; the bytes after it are a torn tail to cut
    damage: int | None = None  # offset of damage that is no torn tail (corruption); None: none
    #: where the last verified group starts (0: none): damage at or after it reads as a torn tail,
    #: damage before it as corruption
    tail_zone: int = 0
    segment_id: str | None = None  # format 2: the header's id (a continued segment seals with it)


def scan(data: bytes) -> Scan:
    """Read one segment's bytes: its durable records, where they end, and any damage that is
    corruption rather than a torn tail (the module docstring's rules)."""
    first = _record_at(data, 0)
    head = first[0] if first else None
    if not (isinstance(head, list) and len(head) == 2 and head[0] == "f" and isinstance(head[1], list)
            and len(head[1]) == 2 and head[1][0] == FORMAT and isinstance(head[1][1], str)):
        return _scan_format1(data)
    segment_id = head[1][1]
    out = Scan(2, end=first[1], segment_id=segment_id)
    pending: list = []
    pos = out.end
    while pos < len(data):
        found = _record_at(data, pos)
        if found is None:
            break
        record, nxt = found
        if (m := _marker(record)) is not None:
            if m[0] != pos - out.end or not _verifies(data, segment_id, pos, *m):
                break  # a marker over other bytes than its group's: damage from the group's start
            out.tail_zone = out.end
            out.records += pending
            pending = []
            out.end = nxt
        else:
            pending.append(record)
        pos = nxt
    if pos < len(data) and (_verified_group_after(data, segment_id, pos) or not _torn(data, out.end)):
        out.damage = pos if _record_at(data, pos) is None else out.end
    return out


def _torn(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` (after the last group that verifies) shows the signature of a
    torn write (the module docstring). A marker frame in it that covers exactly
    ``data[start:marker]``: at the end of the file, torn only if that region holds a lost sector;
    before the end, never (that group was complete and a later write followed it, so its sync
    had returned). Another intact marker ending the file: corruption. No such marker: the file
    ends inside the group or its marker frame is damaged -- torn."""
    at = data.find(_MARKER_START, start + _HDR.size)
    while at != -1:
        found = _record_at(data, at - _HDR.size)
        if found is not None and (m := _marker(found[0])) is not None:
            if m[0] == at - _HDR.size - start:
                return found[1] == len(data) and _lost_sector(data, start, at - _HDR.size)
            if found[1] == len(data):
                return False
        at = data.find(_MARKER_START, at + 1)
    return True


def _lost_sector(data: bytes, start: int, end: int) -> bool:
    """Whether the group region ``data[start:end]`` holds what a lost write reads back as: a whole
    ``SECTOR``-aligned run of zeros, or zeros from ``start`` to the next sector boundary longer
    than a frame header (the first payload byte is never zero as written)."""
    first = -(-start // SECTOR) * SECTOR
    if _HDR.size < first - start and first <= end and not any(data[start:first]):
        return True
    return any(not any(data[k:k + SECTOR]) for k in range(first, end - SECTOR + 1, SECTOR))


def _verified_group_after(data: bytes, segment_id: str, pos: int) -> bool:
    """Whether a complete group that verifies ends after ``pos`` (then damage at ``pos`` is no
    torn tail: something was written -- and synced -- after it)."""
    at = data.find(_MARKER_START, pos + 1)
    while at != -1:
        found = _record_at(data, at - _HDR.size) if at - _HDR.size > pos else None
        if found is not None and (m := _marker(found[0])) is not None \
                and _verifies(data, segment_id, at - _HDR.size, *m):
            return True
        at = data.find(_MARKER_START, at + 1)
    return False


def _scan_format1(data: bytes) -> Scan:
    records, valid = read_frames(data)
    out = Scan(1, records=records, end=valid)
    out.tail_zone = _last_record_start(data, valid)
    if valid < len(data) and not torn_tail(data, valid):
        out.damage = valid
    return out


def _last_record_start(data: bytes, valid: int) -> int:
    pos = last = 0
    while pos < valid:
        last = pos
        pos += _HDR.size + _HDR.unpack_from(data, pos)[0]
    return last
