"""Durable storage of one replica: log segments, snapshot, promised epoch.

The only I/O the replication core does; it is a separate object so that tests
can run it on real temporary directories and the core stays testable.
:class:`Storage` is the interface the core relies on (its contracts);
:class:`FileStorage` and :class:`MemoryStorage` implement it.

Modes (the descriptor's ``durability``):

* ``fsync`` — group commit: :meth:`sync` writes every buffered record and calls
  ``fsync`` once; the core counts entries as held/acked only after it returns.
* ``write`` — :meth:`sync` writes (survives a process crash, not a power loss).
* ``memory`` — :class:`MemoryStorage`: nothing on disk; a restart starts empty.

On-disk layout in the slot's resource directory::

    snapshot.bin        one framed record {seq, epoch, state, dedup}, replaced
                        atomically (temp file, fsync, rename, fsync directory)
    log-00000001.seg    a header, then one group of framed records per sync
    log-00000002.seg    (``segment``), one file per compaction generation

A framed record is ``>II`` (payload length, CRC32 of the payload) then the
msgpack payload; each sync's records are one group sealed by a marker checking
the whole group (``netlets.replication.segment``). A record is one of ``["e", entry]`` (the log holds ``entry``
at its seq and nothing after it), ``["t", seq]`` (drop entries after seq),
``["p", epoch]`` (promised epoch), ``["c", seq]`` (commit index, written
lazily: a recovered commit index may lag, never lead), ``["o", netlet id]``
(a process opened this storage: buffered at recovery, so durable with the
process's first sync -- before it can promise, ack or be trusted -- at no
extra fsync; a compaction carries the last ``OPENERS_KEPT`` over).

    IDENTITY            one framed record {app, slot, generation, proven,
                        snapshot, segment}, replaced atomically (temp file,
                        fsync, rename, fsync directory) whenever one of them
                        changes: ``snapshot`` is the seq snapshot.bin must
                        hold at least (0: none), ``segment`` the segment that
                        must exist (the first one since the last compaction),
                        ``proven`` see below

Faults (what must hold):

* **Torn tail vs corruption.** Only the last group of the last segment (the
  last sync's write, never acknowledged if torn: its sync never returned) may be
  cut on recovery, as a whole, whichever of its pages a crash or power loss
  landed: damage with no verifying group after it, and only with a torn
  write's signature (file short, marker damaged, or a whole zero sector:
  ``netlets.replication.segment``); otherwise it is corruption (review F4). Damage followed by a
  verifying group (``netlets.replication.segment``), a bad record anywhere
  else, a damaged non-last segment, an unreadable ``snapshot.bin`` or an
  ``IDENTITY`` of another app/slot raises :class:`CorruptStorage` (file,
  offset): nothing is truncated, the replica refuses to start. So do log
  segments missing beside an ``IDENTITY`` (none at all, or a gap).
* **Fail-stop on I/O errors.** A failed ``write``/``fsync`` (EIO, ENOSPC, a
  vanished directory) raises :class:`StorageFailed` and the storage stays
  failed: every later :meth:`sync` raises too, so nothing buffered since the
  last successful sync is ever reported durable (after a failed ``fsync`` the
  kernel may have dropped the dirty pages; retrying it could "succeed"). The
  buffer is cleared only after a successful sync.
* **Recovered means durable.** In mode ``fsync`` recovery fsyncs every segment
  it read before returning, so entries written by a process that crashed
  between ``write`` and ``fsync`` are durable before they are reported held.
* **Nothing lost looks smaller.** Losing one file never recovers as a valid but
  smaller replica: a missing or older ``snapshot.bin`` than ``IDENTITY`` names,
  a missing segment ``IDENTITY`` names (deleted, renamed) or a gap between
  segments is :class:`CorruptStorage`; a lost ``IDENTITY`` beside data makes
  the storage *unproven* (below) under a new generation. (Not detectable: a
  last segment cut exactly at a group boundary, which is what a torn tail
  looks like; the other replicas cover it.)
* **Proven storage.** Storage created empty (a new or wiped directory, or data
  without ``IDENTITY``) is *unproven*, durably (``IDENTITY.proven`` false, so
  it stays unproven across restarts), until it provably holds everything
  acknowledged: :meth:`mark_proven` is called by the replica when it becomes
  master (the arbiter elected it as holding every acknowledged write) or when,
  as a backup, its durable commit index reached the commit index a master told
  it (every write acknowledged before that master sent it is in this storage;
  later ones are on the in-sync set, which counts this replica from then on or
  not at all). Unproven storage proves nothing about earlier acknowledgements:
  a warm start leaves it out (``hosting.election.warm_proof``).
"""

from __future__ import annotations

import errno as _errno
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from .segment import frame, header, new_segment_id, read_frames, scan, seal  # noqa: F401 (frame: re-exported)

MODES = ("fsync", "write", "memory")
REPLICA_DIR = "replica"  # a slot's replica storage: <slot directory>/replica
SNAPSHOT_FILE = "snapshot.bin"
IDENTITY_FILE = "IDENTITY"
OPENERS_KEPT = 64  # how many opening processes IDENTITY remembers (an older one proves nothing)


class StorageFailed(OSError):
    """The disk's fault: a write or fsync failed (``errno``); the storage is failed for good."""

    def __init__(self, op: str, err: OSError) -> None:
        name = _errno.errorcode.get(err.errno, str(err.errno)) if err.errno else "?"
        super().__init__(err.errno, f"storage {op} failed: {name}: {err.strerror or err}")
        self.op = op
        self.file = getattr(err, "filename", None)

    def __str__(self) -> str:
        return self.strerror

    def as_dict(self) -> dict:
        return {"kind": "storage.error", "op": self.op, "errno": self.errno,
                "errno_name": _errno.errorcode.get(self.errno or 0, str(self.errno)),
                "file": str(self.file) if self.file else None, "error": str(self)}


class CorruptStorage(Exception):
    """The disk's content is damaged (not a torn tail): ``file`` at ``offset``; nothing was cut."""

    def __init__(self, file: str | os.PathLike, offset: int, reason: str) -> None:
        self.file, self.offset, self.reason = str(file), int(offset), reason
        super().__init__(f"corrupt replica storage: {self.file} at offset {self.offset}: {reason}")

    def as_dict(self) -> dict:
        return {"kind": "storage.corrupt", "file": self.file, "offset": self.offset,
                "reason": self.reason, "error": str(self)}


@dataclass
class Recovered:
    """What :meth:`Storage.recover` found."""

    snapshot: dict | None = None  # {"seq", "epoch", "state", "dedup"}
    entries: list = field(default_factory=list)  # contiguous after snapshot seq
    promised_epoch: int = 0
    commit_seq: int = 0
    generation: str | None = None  # the storage's identity (None: no identity, memory)
    unproven: bool = False  # created empty and not yet proven (module docstring): proves no earlier ack
    openers: list = field(default_factory=list)  # netlet ids that opened it, oldest first, this one last


class Storage(ABC):
    """The durable state of one replica: what the replication core requires of any storage.

    Contracts (every implementation; see the module docstring for the file layout):

    * :meth:`recover` is called once, before anything else; it returns what
      the storage holds (the entries contiguous after the snapshot, the
      recovered commit index never above the last entry) or raises
      :class:`CorruptStorage` / :class:`StorageFailed`: then the replica must
      not run.
    * :meth:`append_entries`, :meth:`truncate_after`, :meth:`set_promise` and
      :meth:`set_commit` only buffer; they take effect in call order, and none
      is durable before the next :meth:`sync` returns.
    * :meth:`sync` returns only once every record buffered before it is
      durable (per the mode); otherwise it raises :class:`StorageFailed`, now
      and at every later call (fail-stop: nothing buffered since the last
      successful sync is ever reported durable).
    * In mode ``fsync``, a crash or power loss during a :meth:`sync` (whatever
      part of its write reached the disk, lost sectors reading as zeros) recovers either
      everything synced before it or that plus all of this sync's records -- never refused
      as corrupt for it; damage to what an earlier sync made durable, the last one's records
      included, is :class:`CorruptStorage`. Limits (``netlets.replication.segment``): lost
      pages that read as stale non-zero bytes (ext4 ``data=writeback``) are refused, not cut;
      a flip inside the last group's marker frame, or in a last group holding a whole zero
      sector of the app's data, is cut as a torn write.
    * :meth:`save_snapshot` and :meth:`mark_proven` are durable when they
      return; a crash during :meth:`save_snapshot` recovers either the old
      base and log or the new ones, never an old divergent tail on the new base.
    """

    #: the durability mode: ``fsync``, ``write`` or ``memory`` (nothing survives the process)
    mode: str

    @abstractmethod
    def recover(self, opener: str | None = None) -> Recovered:
        """What this storage holds; ``opener`` (the netlet id of this process) is recorded."""

    @abstractmethod
    def identity(self) -> dict:
        """What an election learns of this storage: ``generation`` (None: not durable, nothing
        survives the process), ``unproven``, ``openers`` (see the module docstring)."""

    @abstractmethod
    def mark_proven(self) -> None:
        """This storage holds every acknowledged write (the module docstring says when the
        replica may call this); durable before it returns. Idempotent."""

    @abstractmethod
    def append_entries(self, entries: list) -> None:
        """Buffer ``entries`` (contiguous, following the log's last entry)."""

    @abstractmethod
    def truncate_after(self, seq: int) -> None:
        """Buffer dropping every entry after ``seq``."""

    @abstractmethod
    def set_promise(self, epoch: int) -> None:
        """Buffer the promised epoch (recovery keeps the highest)."""

    @abstractmethod
    def set_commit(self, seq: int) -> None:
        """Buffer the commit index (recovery keeps the highest; it may lag, never lead)."""

    @abstractmethod
    def sync(self) -> None:
        """Make everything buffered durable, or raise :class:`StorageFailed` for good."""

    @abstractmethod
    def save_snapshot(self, snap: dict, tail: list, promised: int, commit: int,
                      discard_old_tail: bool = False) -> None:
        """Make ``snap`` the durable base and ``tail`` (entries after it) the log;
        ``discard_old_tail``: the old log does not match ``snap`` and must never
        reappear after it."""

    @abstractmethod
    def close(self, sync: bool = True) -> None:
        """Release the storage; ``sync=False`` drops unsynced records (what a crash does)."""


class MemoryStorage(Storage):
    """Durability ``memory``: keeps nothing; every call is a no-op."""

    mode = "memory"

    def recover(self, opener: str | None = None) -> Recovered:
        return Recovered()

    def identity(self) -> dict:
        return {"generation": None, "unproven": False, "openers": []}

    def mark_proven(self) -> None:
        pass

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


class FileStorage(Storage):
    """Durability ``fsync`` or ``write`` in directory ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike, mode: str = "fsync",
                 owner: tuple[str, str] | None = None) -> None:
        """``owner``: (app, slot) this storage belongs to; recorded in ``IDENTITY`` at
        creation and checked at every recovery (None: not checked, e.g. in unit tests)."""
        if mode not in ("fsync", "write"):
            raise ValueError(f"FileStorage mode must be fsync or write, not {mode!r}")
        self.mode = mode
        self.path = Path(path)
        self.owner = owner
        self._buf = bytearray()
        self._file = None
        self._gen = 0
        self._segment_id: str | None = None  # the open segment's (segment.header)
        self.failed: StorageFailed | None = None  # sticky (see the module docstring)
        self.fsyncs = 0  # counter, for tests and metrics
        self._ident: dict = {}  # the IDENTITY record as last read or written (after recover)
        self._openers: list[str] = []  # the last OPENERS_KEPT ``o`` records, oldest first

    # --- I/O primitives: every OSError makes the storage failed ----------
    def _io(self, op: str, fn, *args):
        if self.failed is not None:
            raise self.failed
        try:
            return fn(*args)
        except StorageFailed:
            raise
        except OSError as err:
            self.failed = StorageFailed(op, err)
            raise self.failed from err

    def _fsync(self, fd: int) -> None:
        """Every fsync of a file this storage wrote (the one place a test double hooks)."""
        os.fsync(fd)

    # --- recovery --------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        segs = []
        for p in self.path.glob("log-*.seg"):
            try:
                segs.append((int(p.stem[4:]), p))
            except ValueError:
                continue
        return sorted(segs)

    def recover(self, opener: str | None = None) -> Recovered:
        """Check identity, read snapshot and segments, cut a torn tail, open for appending;
        ``opener`` (the netlet id of this process) is recorded as an ``o`` record.

        Raises :class:`CorruptStorage` (nothing changed on disk) or
        :class:`StorageFailed`."""
        return self._io("recover", self._recover, opener)

    def _recover(self, opener: str | None) -> Recovered:
        self._make_directory()
        rec = Recovered()
        segs = self._segments()
        snap_path = self.path / SNAPSHOT_FILE
        ident = self._read_identity()
        if ident is not None and not segs:  # recover() always leaves a segment: the log was deleted
            raise CorruptStorage(self.path, 0, "no log segment beside an existing IDENTITY")
        gens = [gen for gen, _ in segs]
        if gens and gens != list(range(gens[0], gens[0] + len(gens))):
            missing = sorted(set(range(gens[0], gens[-1] + 1)) - set(gens))
            raise CorruptStorage(self.path, 0, f"log segment(s) {missing} missing")
        if ident is not None and int(ident.get("segment", gens[0])) not in gens:
            raise CorruptStorage(self.path / f"log-{int(ident['segment']):08d}.seg", 0,
                                 "log segment named by IDENTITY is missing")
        if snap_path.exists():
            data = snap_path.read_bytes()
            records, valid = read_frames(data)
            if len(records) != 1 or valid != len(data) or not isinstance(records[0], dict):
                raise CorruptStorage(snap_path, valid, "snapshot is not one valid record")
            rec.snapshot = records[0]
        base = rec.snapshot["seq"] if rec.snapshot else 0
        if ident is not None and base < int(ident.get("snapshot", 0)):
            raise CorruptStorage(snap_path, 0, f"snapshot of seq {ident['snapshot']} named by IDENTITY is "
                                 + ("missing" if rec.snapshot is None else f"older (seq {base})"))
        entries: list = []
        openers: list = []
        promised = rec.snapshot.get("promised", 0) if rec.snapshot else 0
        commit = base
        last = None
        for i, (gen, p) in enumerate(segs):
            data = p.read_bytes()
            last = scan(data)  # the segment format's rule: durable records, torn tail, corruption
            if last.damage is not None or (last.end < len(data) and i != len(segs) - 1):
                raise CorruptStorage(p, last.end if last.damage is None else last.damage,
                                     "bad record before the end of the log")
            if last.end < len(data):
                with open(p, "r+b") as f:  # a torn last write: cut it off
                    f.truncate(last.end)
                    f.flush()
                    self._fsync(f.fileno())
            elif self.mode == "fsync":
                with open(p, "rb") as f:  # written by a process that may have died before its fsync
                    self._fsync(f.fileno())
            for pos, r in enumerate(last.records):
                if not (isinstance(r, list) and len(r) == 2 and r[0] in ("e", "t", "p", "c", "o")):
                    raise CorruptStorage(p, -1, f"record {pos} is not a log record")
                kind, val = r[0], r[1]
                if kind == "e":
                    s = val[0]
                    if s <= base:
                        continue
                    if s > base + len(entries) + 1:
                        raise CorruptStorage(p, -1, f"record {pos}: entry {s} leaves a gap after "
                                             f"{base + len(entries)}")
                    del entries[s - base - 1:]
                    entries.append(list(val))
                elif kind == "t":
                    if val >= base:
                        del entries[val - base:]
                elif kind == "p":
                    promised = max(promised, val)
                elif kind == "c":
                    commit = max(commit, val)
                elif kind == "o":
                    openers.append(str(val))
        rec.entries = entries
        rec.promised_epoch = promised
        rec.commit_seq = min(commit, base + len(entries))
        self._gen = segs[-1][0] if segs else 1
        if last is not None and last.format != 2 and last.end > 0:
            self._gen += 1  # a segment of the old format is never continued in the new one
        self._open(self._gen, last.segment_id if last is not None and last.end > 0 else None)
        # ^ before a new IDENTITY: one never stands without a segment
        if ident is None:  # created empty, or its IDENTITY was lost: nothing proves what it held
            app, slot = self.owner or (None, None)
            ident = {"app": app, "slot": slot, "generation": uuid.uuid4().hex, "proven": False,
                     "snapshot": base, "segment": segs[0][0] if segs else self._gen}
            self._write_identity(ident)
        else:
            self._ident = ident
        if opener is not None:
            openers.append(opener)
            self._buf += frame(["o", opener])
        self._openers = list(dict.fromkeys(openers))[-OPENERS_KEPT:]  # a compaction's copies repeat them
        rec.generation = str(ident.get("generation"))
        rec.unproven = not self._ident.get("proven")
        rec.openers = list(self._openers)
        return rec

    def _make_directory(self) -> bool:
        """Create the directory (and fsync its parent) if missing; True if created."""
        if self.path.is_dir():
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        fsync_directory(self.path.parent)
        return True

    def _read_identity(self) -> dict | None:
        """The ``IDENTITY`` record (None: there is none); one naming another owner is corrupt.
        A record from before ``proven`` existed reads as unproven."""
        ident = self.path / IDENTITY_FILE
        if not ident.exists():
            return None
        data = ident.read_bytes()
        records, valid = read_frames(data)
        if len(records) != 1 or valid != len(data) or not isinstance(records[0], dict):
            raise CorruptStorage(ident, valid, "identity is not one valid record")
        found = records[0]
        if self.owner is not None and (found.get("app"), found.get("slot")) != tuple(self.owner):
            raise CorruptStorage(ident, 0, f"belongs to {found.get('app')}/{found.get('slot')}, "
                                 f"not {self.owner[0]}/{self.owner[1]}")
        return found

    def _write_identity(self, ident: dict) -> None:
        """Replace ``IDENTITY`` atomically and durably (a crash leaves the old one or this one)."""
        tmp = self.path / (IDENTITY_FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(frame(ident))
            f.flush()
            self._fsync(f.fileno())
        os.replace(tmp, self.path / IDENTITY_FILE)
        fsync_directory(self.path)
        self._ident = ident

    def identity(self) -> dict:
        return {"generation": self._ident.get("generation"), "unproven": not self._ident.get("proven"),
                "openers": list(self._openers)}

    def mark_proven(self) -> None:
        if self._ident and not self._ident.get("proven"):
            self._io("identity", self._write_identity, dict(self._ident, proven=True))

    def _open(self, gen: int, segment_id: str | None = None) -> None:
        """Open segment ``gen`` for appending: an existing one of id ``segment_id``, else a new
        (or empty) one, created with its header durable (fsynced, and its directory entry) before
        anything is appended: a group is written only after the header it is sealed with."""
        path = self.path / f"log-{gen:08d}.seg"
        if segment_id is None:
            segment_id = new_segment_id()
            with open(path, "wb") as f:  # the old file (if any) stays open: its fd is not reused
                f.write(header(segment_id))
                f.flush()
                self._fsync(f.fileno())
            fsync_directory(self.path)
        if self._file is not None:
            self._file.close()
        self._file = open(path, "ab")
        self._segment_id = segment_id

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
        """Write buffered records (one write); ``fsync`` once in mode fsync.

        Returns only once they are durable (per the mode); raises
        :class:`StorageFailed` otherwise, now and at every later call."""
        if self._file is None:
            raise RuntimeError("FileStorage.recover() must be called first")
        if self.failed is not None:
            raise self.failed
        if not self._buf:
            return
        self._io("write", self._write_buffer, self.mode == "fsync")

    def _group(self) -> bytes:
        """The bytes the next write appends: the buffered records sealed as one group."""
        return seal(bytes(self._buf), self._segment_id, self._file.tell())

    def _write_buffer(self, fsync: bool) -> None:
        self._file.write(self._group())
        self._file.flush()
        if fsync:
            self._fsync(self._file.fileno())
            self.fsyncs += 1
        if os.fstat(self._file.fileno()).st_nlink == 0:  # the directory was wiped under us
            raise FileNotFoundError(_errno.ENOENT, "segment file was deleted", str(self._file.name))
        self._buf.clear()

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
        self._io("snapshot", self._save_snapshot, snap, tail, promised, commit)

    def _save_snapshot(self, snap: dict, tail: list, promised: int, commit: int) -> None:
        tmp = self.path / (SNAPSHOT_FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(frame(dict(snap, promised=promised)))
            f.flush()
            self._fsync(f.fileno())
        os.replace(tmp, self.path / SNAPSHOT_FILE)
        fsync_directory(self.path)
        old = self._segments()
        self._gen += 1
        self._open(self._gen)
        self.set_promise(promised)
        self.set_commit(commit)
        for opener in self._openers:
            self._buf += frame(["o", opener])
        self.append_entries(tail)
        self._write_buffer(fsync=True)
        # from here on the old segments may go: recovery requires this snapshot and segment
        self._write_identity(dict(self._ident, snapshot=snap["seq"], segment=self._gen))
        for gen, p in old:
            if gen < self._gen:
                p.unlink(missing_ok=True)

    def close(self, sync: bool = True) -> None:
        """Close; ``sync=False`` drops unsynced records (what a crash does)."""
        if self._file is not None:
            try:
                if sync and self.failed is None:
                    self.sync()
            finally:
                self._buf.clear()
                file, self._file = self._file, None
                try:
                    file.close()
                except OSError:
                    if self.failed is None:  # a failed storage's leftovers are dropped, like a crash
                        raise


def fsync_directory(path: Path) -> None:
    """Make the directory's entries (a created, renamed or new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_storage(mode: str, path: str | os.PathLike | None,
                 owner: tuple[str, str] | None = None) -> Storage:
    """The storage for a durability mode (``path`` required unless ``memory``)."""
    if mode == "memory":
        return MemoryStorage()
    if mode not in MODES:
        raise ValueError(f"unknown durability mode {mode!r}")
    if path is None:
        raise ValueError(f"durability {mode!r} needs a directory")
    return FileStorage(path, mode, owner)
