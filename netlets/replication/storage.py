"""Durable storage of one replica: log segments, snapshot, promised epoch.

The only I/O the replication core does; it is a separate object so that tests
can run it on real temporary directories and the core stays testable.

Modes (the descriptor's ``durability``):

* ``fsync`` — group commit: :meth:`sync` writes every buffered record and calls
  ``fsync`` once; the core counts entries as held/acked only after it returns.
* ``write`` — :meth:`sync` writes (survives a process crash, not a power loss).
* ``memory`` — :class:`MemoryStorage`: nothing on disk; a restart starts empty.

On-disk layout in the slot's resource directory::

    snapshot.bin        one framed record {seq, epoch, state, dedup}, replaced
                        atomically (temp file, fsync, rename, fsync directory)
    log-00000001.seg    append-only framed records, one file per compaction
    log-00000002.seg    generation

A framed record is ``>II`` (payload length, CRC32 of the payload) then the
msgpack payload. A record is one of ``["e", entry]`` (the log holds ``entry``
at its seq and nothing after it), ``["t", seq]`` (drop entries after seq),
``["p", epoch]`` (promised epoch), ``["c", seq]`` (commit index, written
lazily: a recovered commit index may lag, never lead). A torn or corrupt tail
(short record, bad CRC, bad msgpack) is truncated away on recovery.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

MODES = ("fsync", "write", "memory")
_HDR = struct.Struct(">II")
SNAPSHOT_FILE = "snapshot.bin"


@dataclass
class Recovered:
    """What :meth:`Storage.recover` found."""

    snapshot: dict | None = None  # {"seq", "epoch", "state", "dedup"}
    entries: list = field(default_factory=list)  # contiguous after snapshot seq
    promised_epoch: int = 0
    commit_seq: int = 0


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(obj: Any) -> bytes:
    payload = _pack(obj)
    return _HDR.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes) -> tuple[list, int]:
    """Decode framed records; returns (records, length of the valid prefix)."""
    out, pos = [], 0
    while pos + _HDR.size <= len(data):
        n, crc = _HDR.unpack_from(data, pos)
        end = pos + _HDR.size + n
        if end > len(data):
            break
        payload = data[pos + _HDR.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            out.append(_unpack(payload))
        except Exception:
            break
        pos = end
    return out, pos


class MemoryStorage:
    """Durability ``memory``: keeps nothing; every call is a no-op."""

    mode = "memory"

    def recover(self) -> Recovered:
        return Recovered()

    def append_entries(self, entries: list) -> None:
        pass

    def truncate_after(self, seq: int) -> None:
        pass

    def set_promise(self, epoch: int) -> None:
        pass

    def set_commit(self, seq: int) -> None:
        pass

    def sync(self) -> None:
        pass

    def save_snapshot(self, snap: dict, tail: list, promised: int, commit: int,
                      discard_old_tail: bool = False) -> None:
        pass

    def close(self, sync: bool = True) -> None:
        pass


class FileStorage(MemoryStorage):
    """Durability ``fsync`` or ``write`` in directory ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike, mode: str = "fsync") -> None:
        if mode not in ("fsync", "write"):
            raise ValueError(f"FileStorage mode must be fsync or write, not {mode!r}")
        self.mode = mode
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._buf = bytearray()
        self._file = None
        self._gen = 0
        self.fsyncs = 0  # counter, for tests and metrics

    # --- recovery --------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        segs = []
        for p in self.path.glob("log-*.seg"):
            try:
                segs.append((int(p.stem[4:]), p))
            except ValueError:
                continue
        return sorted(segs)

    def recover(self) -> Recovered:
        """Read snapshot and segments; truncate a torn tail; open for appending."""
        rec = Recovered()
        snap_path = self.path / SNAPSHOT_FILE
        if snap_path.exists():
            records, _ = read_frames(snap_path.read_bytes())
            if records:
                rec.snapshot = records[0]
        base = rec.snapshot["seq"] if rec.snapshot else 0
        entries: list = []
        promised = rec.snapshot.get("promised", 0) if rec.snapshot else 0
        commit = base
        segs = self._segments()
        for gen, p in segs:
            data = p.read_bytes()
            records, valid = read_frames(data)
            if valid < len(data):  # torn tail: cut it off
                with open(p, "r+b") as f:
                    f.truncate(valid)
                    f.flush()
                    os.fsync(f.fileno())
            for r in records:
                kind, val = r[0], r[1]
                if kind == "e":
                    s = val[0]
                    if s <= base:
                        continue
                    if s > base + len(entries) + 1:
                        continue  # cannot happen with our writers; ignore
                    del entries[s - base - 1:]
                    entries.append(list(val))
                elif kind == "t":
                    if val >= base:
                        del entries[val - base:]
                elif kind == "p":
                    promised = max(promised, val)
                elif kind == "c":
                    commit = max(commit, val)
        rec.entries = entries
        rec.promised_epoch = promised
        rec.commit_seq = min(commit, base + len(entries))
        self._gen = segs[-1][0] if segs else 0
        if not segs:
            self._gen = 1
        self._open(self._gen)
        return rec

    def _open(self, gen: int) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.path / f"log-{gen:08d}.seg", "ab")

    # --- buffered records -------------------------------------------------
    def append_entries(self, entries: list) -> None:
        for e in entries:
            self._buf += frame(["e", e])

    def truncate_after(self, seq: int) -> None:
        self._buf += frame(["t", seq])

    def set_promise(self, epoch: int) -> None:
        self._buf += frame(["p", epoch])

    def set_commit(self, seq: int) -> None:
        self._buf += frame(["c", seq])

    def sync(self) -> None:
        """Write buffered records (one write); ``fsync`` once in mode fsync."""
        if self._file is None:
            raise RuntimeError("FileStorage.recover() must be called first")
        if not self._buf:
            return
        self._file.write(self._buf)
        self._file.flush()
        self._buf.clear()
        if self.mode == "fsync":
            os.fsync(self._file.fileno())
            self.fsyncs += 1

    # --- snapshots and compaction ----------------------------------------
    def save_snapshot(self, snap: dict, tail: list, promised: int, commit: int,
                      discard_old_tail: bool = False) -> None:
        """Make ``snap`` the durable base and ``tail`` (entries after it) the log.

        Order: with ``discard_old_tail`` (installing a master's snapshot over a
        log that does not match it) first a ``t`` record cutting the old log at
        the snapshot seq, so that a crash between the steps never grafts an old
        divergent tail onto the new base; then the snapshot file (atomic), a new
        segment holding promise, commit and tail, then the old segments are
        deleted. Without it (compaction) a crash at any step recovers the same
        log, because the old segments hold the same tail.
        """
        if discard_old_tail:
            self.truncate_after(snap["seq"])
        self.sync()
        tmp = self.path / (SNAPSHOT_FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(frame(dict(snap, promised=promised)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / SNAPSHOT_FILE)
        self._fsync_dir()
        old = self._segments()
        self._gen += 1
        self._open(self._gen)
        self.set_promise(promised)
        self.set_commit(commit)
        self.append_entries(tail)
        self._file.write(self._buf)
        self._file.flush()
        self._buf.clear()
        os.fsync(self._file.fileno())
        self._fsync_dir()
        for gen, p in old:
            if gen < self._gen:
                p.unlink(missing_ok=True)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, sync: bool = True) -> None:
        """Close; ``sync=False`` drops unsynced records (what a crash does)."""
        if self._file is not None:
            try:
                if sync:
                    self.sync()
            finally:
                self._buf.clear()
                self._file.close()
                self._file = None


def open_storage(mode: str, path: str | os.PathLike | None) -> MemoryStorage:
    """The storage for a durability mode (``path`` required unless ``memory``)."""
    if mode == "memory":
        return MemoryStorage()
    if mode not in MODES:
        raise ValueError(f"unknown durability mode {mode!r}")
    if path is None:
        raise ValueError(f"durability {mode!r} needs a directory")
    return FileStorage(path, mode)
