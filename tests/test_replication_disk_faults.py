"""The replication state machine with disk faults (issue 13, "Disk faults in the model").

Every rule of ``tests/test_replication_stateful.py`` (network faults, crashes,
pauses, elections, warm starts) plus a storage double, :class:`FaultyStorage`,
a real ``FileStorage`` in mode ``fsync`` whose next sync can fail:

* ``fsync`` with EIO (the kernel then drops the dirty pages: the file is cut
  back to its last durable size), ``write`` with ENOSPC (nothing written), a
  torn ``write`` (half the buffer, then EIO);
* a crash that tears the last write (part of the unsynced buffer reaches the
  file, then the process dies);
* a power loss during the last write, its pages written back out of order:
  some pages (512 B or 4 KiB) of the unsynced group land, others read as
  zeros (must recover) or as stale blocks (may recover, or be refused as
  corrupt: ext4 ``data=writeback``, review F4);
* a byte flipped anywhere in a stopped replica's files except the marker frame
  of the last synced group of its last segment (which a torn write could have
  produced): a flip inside that last group must be refused too (review F4);
* the directory lost, under a running replica or a stopped one;
* one file of a stopped replica lost: ``snapshot.bin``, ``IDENTITY`` or a log
  segment deleted, or a segment renamed one number up or down.

A replica whose storage fails is fail-stopped like the runner does (the
process exits: crash, the node restarts it later). Checked on top of the
shared invariants ("every acknowledged command is held by every later
master", no divergence, ...): a damaged storage is refused at start
(``CorruptStorage``), never truncated into a shorter log; an undamaged one
(torn tail included) always starts; a storage that lost a file is refused,
or starts unproven, or holds exactly what it held (never a valid, smaller
log); a corrupt slot never runs until reset; warm starts leave unproven
storage out and refuse without proof (``hosting.election.warm_proof``, as
``hosting.election.elector`` does).
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.control import _current_build_context
from hypothesis.stateful import initialize, rule

from hosting.election.warm_proof import trusted_set, unproven, warm_refusal
from netlets.replication import Replica, ReplicationConfig
from netlets.replication.segment import SECTOR, frame, read_frames, scan
from netlets.replication.storage import CorruptStorage, FileStorage, StorageFailed
from tests.sim import Cluster, ListNetlet
from tests.sim.cluster import APP, InvariantError
from tests.test_replication_stateful import PROFILE, ReplicationMachine
from testkit.disk import lose_pages

FAULTS = ("eio-fsync", "enospc-write", "torn-write")


def event(what: str) -> None:
    """Count ``what`` in hypothesis' statistics (a no-op in the plain tests below)."""
    if _current_build_context.value is not None:
        _event(what)


class FaultyStorage(FileStorage):
    """The disk double: a real FileStorage whose next sync fails as ``fault`` says."""

    def __init__(self, path: Path, owner: tuple[str, str]) -> None:
        super().__init__(path, "fsync", owner)
        self.fault: str | None = None
        self.torn_pages: tuple = ()  # the power-loss fault's (page size, lost pattern, stale)
        self.may_refuse = False  # the power loss left a torn write recovery may refuse (see below)
        self._durable = 0  # size of the open segment at its last successful fsync

    def _fsync(self, fd: int) -> None:  # the real fsync is skipped: the model's crash defines loss
        if self.fault == "eio-fsync" and self._file is not None and fd == self._file.fileno():
            self.fault = None
            self._file.flush()
            self._file.truncate(self._durable)  # the kernel dropped the pages it could not write
            raise OSError(errno.EIO, "Input/output error (injected)")

    def _write_buffer(self, fsync: bool) -> None:
        fault, self.fault = (self.fault, None) if self.fault in ("enospc-write", "torn-write", "torn-pages") \
            else (None, self.fault)
        if fault == "torn-pages":  # the process dies with the power: the storage is failed, never synced
            self._tear_pages(*self.torn_pages)
            raise OSError(errno.EIO, "power loss (injected)")
        if fault == "enospc-write":
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        if fault == "torn-write":
            self._file.write(self._buf[:len(self._buf) // 2])
            self._file.flush()
            raise OSError(errno.EIO, "Input/output error (injected)")
        super()._write_buffer(fsync)
        self._durable = self._file.tell()

    def _open(self, gen: int, segment_id: str | None = None) -> None:
        super()._open(gen, segment_id)
        self._durable = self._file.tell()

    def tear(self) -> None:
        """A crash during the last write: part of the unsynced buffer reaches the file."""
        if self._file is not None and self.failed is None and len(self._buf) > 1:
            self._file.write(self._buf[:len(self._buf) // 2])
            self._file.flush()

    def _tear_pages(self, page: int, lost: list[bool], stale: bool) -> None:
        """A power loss during this write: the group (the buffer, sealed as the writer seals it)
        was written, but of its pages (file offsets ``k*page``) those ``lost[k % len(lost)]`` never
        reached the disk: they read as zeros, or (``stale``) as an old block (here: this segment's
        own first bytes). The bytes synced before it stay."""
        start = self._file.tell()
        self._file.write(self._group())
        self._file.flush()
        seg = Path(self._file.name)
        if not seg.exists():  # the directory is gone
            return
        old = seg.read_bytes()[:page] if stale else None
        gone = [k for k in range(start // page, (self._file.tell() + page - 1) // page) if lost[k % len(lost)]]
        before = seg.read_bytes()
        lose_pages(seg, start, gone, page, old)
        after = seg.read_bytes()
        diff = [i for i in range(start, len(after)) if after[i] != before[i]]
        #: may be refused as corrupt (``netlets.replication.segment``'s limits): stale blocks, or
        #: only the at most 8 bytes of the group sharing a sector with the synced bytes lost
        self.may_refuse = bool(diff) and (stale or diff[-1] < min(-(-start // SECTOR) * SECTOR, start + 9))


class FaultyCluster(Cluster):
    """The simulated node with fail-stop on storage errors; elections (the warm-start proof included)
    are the node's own election core, as in :class:`Cluster`."""

    def __post_init__(self) -> None:
        self.corrupt: set[str] = set()  # refused at start; never started until reset
        self.damaged: set[str] = set()  # a byte was flipped: the next start must refuse
        self.may_refuse: set[str] = set()  # a torn write of stale blocks: the next start may refuse
        #: a file was lost: the next start must refuse, be unproven or hold this position
        self.lost: dict[str, tuple[int, int]] = {}
        super().__post_init__()

    # processes
    def start(self, slot: str) -> None:
        n = self.nodes[slot]
        if slot in self.corrupt:
            return  # the supervisor never restarts a corrupt slot
        try:
            self._start(slot)
        except CorruptStorage:
            if slot not in self.damaged and slot not in self.lost and slot not in self.may_refuse:
                raise InvariantError(f"{slot}: undamaged storage refused as corrupt")
            event("damaged storage refused" if slot in self.damaged else "lost file refused")
            self.damaged.discard(slot)
            self.may_refuse.discard(slot)
            self.lost.pop(slot, None)
            self.corrupt.add(slot)
            n.replica = None
            return
        except StorageFailed:
            n.replica = None
            return
        self.may_refuse.discard(slot)
        if slot in self.damaged:
            raise InvariantError(f"{slot}: a flipped byte before the last marker was accepted (truncated?)")
        if slot in self.lost:
            held, r = self.lost.pop(slot), n.replica
            if r.storage_identity["unproven"]:
                event("lost file: unproven")
            elif r.position != held:
                raise InvariantError(f"{slot}: lost a file, recovered {r.position} (held {held}) and "
                                     "claims proven storage")

    def _start(self, slot: str) -> None:
        n = self.nodes[slot]
        storage = FaultyStorage(n.directory, (APP, slot))
        inc = f"{slot}#{next(self._inc)}"
        replica = Replica(slot, ListNetlet(), storage, self.config, incarnation=inc,
                          min_epoch=self.arbiter.state(APP).epoch)
        n.replica = replica
        n.paused = False
        n.fenced_seen = False
        self.arbiter.netlet_started(APP, slot, inc)

    def fail_stop(self) -> None:
        """Every replica whose storage failed exits (the runner's fail-stop)."""
        while failed := [s for s, n in self.nodes.items()
                         if n.replica is not None and n.replica.storage.failed is not None]:
            event("fail-stop on a storage error")
            if self.nodes[failed[0]].replica.storage.may_refuse:
                self.may_refuse.add(failed[0])
            try:
                Cluster.crash(self, failed[0])
            except StorageFailed:
                continue

    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StorageFailed:
            self.fail_stop()
            return None

    def crash(self, slot):
        return self._guard(Cluster.crash, self, slot)

    def submit(self, slot, req_id, command):
        return self._guard(Cluster.submit, self, slot, req_id, command)

    def deliver(self, i, duplicate=False):
        return self._guard(Cluster.deliver, self, i, duplicate)

    def tick(self, slot):
        return self._guard(Cluster.tick, self, slot)

    def elect(self, warm=False):
        """The node's election core, warm-start proof included (``hosting.election.warm_proof``)."""
        return self._guard(Cluster.elect, self, warm)

    # faults
    def storage(self, slot: str) -> FaultyStorage | None:
        r = self.nodes[slot].replica
        return r.storage if r is not None else None

    def flip(self, slot: str, which: int, where: float, bit: int) -> None:
        """Flip one bit of a stopped replica's files, anywhere but its torn-tail zone."""
        d = self.nodes[slot].directory
        if not d.is_dir():
            return
        files = sorted(p for p in d.iterdir() if p.name != "LOCK" and p.is_file() and p.stat().st_size)
        if not files:
            return
        p = files[which % len(files)]
        data = bytearray(p.read_bytes())
        limit = len(data)
        segs = sorted(d.glob("log-*.seg"))
        if segs and p == segs[-1]:  # up to the last synced group's marker frame (damage there reads
            last = scan(bytes(data))  # as torn; inside the group it must be refused: review F4)
            records, _ = read_frames(bytes(data[last.tail_zone:last.end])) if last.tail_zone else ([], 0)
            limit = last.end - len(frame(records[-1])) if records else 0
        if limit == 0:
            return
        pos = int(where * limit)
        data[pos] ^= 1 << bit
        p.write_bytes(bytes(data))
        self.damaged.add(slot)
        self.wiped.add(slot)  # storage lost: a refused warm start is right from now on

    def lose_file(self, slot: str, what: str, how: str) -> None:
        """One file of a stopped replica is lost: ``what`` (``snapshot.bin``, ``IDENTITY``, the
        ``first`` or ``last`` log segment) deleted, or a segment renamed one number ``up`` or
        ``down``. What it held is read first, from a copy, for :meth:`start` to compare."""
        d = self.nodes[slot].directory
        if not d.is_dir() or slot in self.damaged or slot in self.lost:
            return
        segs = sorted(d.glob("log-*.seg"))
        p = {"first": segs[:1], "last": segs[-1:]}.get(what, [d / what])
        if not p or not p[0].exists():
            return
        p = p[0]
        copy = Path(tempfile.mkdtemp(prefix="jtrix-held-")) / "r"
        try:
            shutil.copytree(d, copy)
            reader = Replica(slot, ListNetlet(), FileStorage(copy, "fsync", (APP, slot)))
            held = reader.position
            reader.storage.close()
        finally:
            shutil.rmtree(copy.parent, ignore_errors=True)
        if how != "delete" and p.suffix == ".seg":
            target = d / f"log-{int(p.stem[4:]) + (1 if how == 'up' else -1):08d}.seg"
            if target.exists():
                return
            p.rename(target)
        else:
            p.unlink()
        event(f"lost {what} ({how if p.suffix == '.seg' else 'delete'})")
        self.lost[slot] = held
        self.wiped.add(slot)

    def lose_directory(self, slot: str) -> None:
        d = self.nodes[slot].directory
        shutil.rmtree(d, ignore_errors=True)
        self.wiped.add(slot)
        self.damaged.discard(slot)
        self.lost.pop(slot, None)

    def wipe(self, slot: str) -> None:
        self.crash(slot)
        self.lose_directory(slot)

    def reset(self, slot: str) -> None:
        self.lose_directory(slot)
        self.corrupt.discard(slot)
        self.start(slot)


class DiskFaultMachine(ReplicationMachine):
    c: FaultyCluster

    @initialize(n=st.integers(min_value=3, max_value=4), snapshot_every=st.sampled_from([3, 5, 1000]))
    def setup(self, n, snapshot_every):
        self.tmp = Path(tempfile.mkdtemp(prefix="jtrix-disk-"))
        cfg = ReplicationConfig(batch_max=3, window=2, retransmit_timeout=0.3,
                                replication_timeout=0.8, snapshot_every=snapshot_every)
        self.durable = True
        self.c = FaultyCluster([f"s/{i}" for i in range(n)], self.tmp, cfg)

    @rule(i=st.integers(0, 3), fault=st.sampled_from(FAULTS))
    def disk_fault(self, i, fault):
        """The next sync of this replica fails."""
        s = self.c.storage(self.slot(i))
        if s is not None:
            s.fault = fault

    @rule(i=st.integers(0, 3))
    def crash_torn(self, i):
        s = self.c.storage(self.slot(i))
        if s is not None:
            s.tear()
            self.c.crash(self.slot(i))

    @rule(i=st.integers(0, 3), page=st.sampled_from([SECTOR, 4096]),  # a sector, a page: what a power loss loses
          lost=st.lists(st.booleans(), min_size=1, max_size=8), stale=st.booleans())
    def power_loss_fault(self, i, page, lost, stale):
        """A power loss during this replica's next sync: its group's pages land out of order /
        partially, and the process is gone (the sync never returns)."""
        s = self.c.storage(self.slot(i))
        if s is not None:
            s.fault, s.torn_pages = "torn-pages", (page, lost, stale)

    @rule(i=st.integers(0, 3), which=st.integers(0, 10), where=st.floats(0, 1, exclude_max=True),
          bit=st.integers(0, 7))
    def flip_byte(self, i, which, where, bit):
        slot = self.slot(i)
        if self.c.nodes[slot].replica is None and slot not in self.c.corrupt:
            self.c.flip(slot, which, where, bit)

    @rule(i=st.integers(0, 3), what=st.sampled_from(["snapshot.bin", "IDENTITY", "first", "last"]),
          how=st.sampled_from(["delete", "up", "down"]))
    def lose_file(self, i, what, how):
        slot = self.slot(i)
        if self.c.nodes[slot].replica is None and slot not in self.c.corrupt:
            self.c.lose_file(slot, what, how)

    @rule(i=st.integers(0, 3))
    def lose_directory(self, i):
        slot = self.slot(i)
        if self.c.nodes[slot].replica is None:
            self.c.lose_directory(slot)
        else:  # under a running replica: its next sync must fail, not "succeed" into nothing
            shutil.rmtree(self.c.nodes[slot].directory, ignore_errors=True)
            self.c.wiped.add(slot)

    @rule(i=st.integers(0, 3))
    def reset(self, i):
        slot = self.slot(i)
        if slot in self.c.corrupt:
            self.c.reset(slot)


DiskFaultMachine.TestCase.settings = PROFILE
TestDiskFaults = DiskFaultMachine.TestCase


# --- named regressions (found by the machine above) ---------------------------------------
def _cluster(tmp_path) -> FaultyCluster:
    return FaultyCluster(["s/0", "s/1", "s/2"], tmp_path,
                         ReplicationConfig(batch_max=3, window=2, retransmit_timeout=0.3,
                                           replication_timeout=0.8, snapshot_every=3))


def test_warm_start_refuses_a_master_whose_directory_was_wiped_and_rewritten(tmp_path):
    """The master alone acknowledged r1 (the backups had not joined yet), its directory was
    lost, the slot restarted once (still unproven: nothing caught it up) and died again.
    Electing from the survivors, or from the rewritten directory, loses r1: the warm start
    must refuse, because no trusted slot answers with the proven storage its process had."""
    c = _cluster(tmp_path)
    try:
        c.submit("s/0", "r1", "r1")
        assert "r1" in c.acked and c.arbiter.state(APP).isr == {"s/0"}
        c.crash("s/0")
        c.lose_directory("s/0")
        c.start("s/0")
        c.crash("s/0")
        c.start("s/0")
        assert c.nodes["s/0"].replica.storage_identity["unproven"]  # a restart does not change that
        assert c.elect(warm=True) is None  # refused
        assert c.masters() == []
    finally:
        c.close()


def test_warm_start_leaves_out_a_wiped_backup(tmp_path):
    c = _cluster(tmp_path)
    try:
        c.submit("s/0", "r1", "r1")
        for _ in range(20):
            c.deliver(0)
            for s in c.slots:
                c.tick(s)
        assert c.arbiter.state(APP).isr == {"s/0", "s/1", "s/2"}
        for s in ("s/1", "s/2", "s/0"):  # the master last: nobody else is elected meanwhile
            c.crash(s)
        c.lose_directory("s/2")
        for s in c.slots:
            c.start(s)
        assert c.nodes["s/2"].replica.storage_identity["unproven"]
        winner = c.elect(warm=True)
        assert winner in ("s/0", "s/1")  # the master's storage survived: elected without s/2
        c.check_master_has_acked(winner)
    finally:
        c.close()


def test_a_refused_warm_start_stays_refused_after_the_holder_was_revoked(tmp_path):
    """Found by the machine: the first (refused) warm start had revoked the holder, so the
    next one no longer knew the trusted set and elected the rewritten directory, losing r1."""
    c = _cluster(tmp_path)
    try:
        c.submit("s/0", "r1", "r1")
        c.crash("s/0")
        c.lose_directory("s/0")
        c.start("s/0")
        c.crash("s/0")
        c.start("s/0")
        assert c.elect(warm=True) is None  # refused; the holder is revoked now
        assert c.arbiter.state(APP).holder is None
        for s in ("s/1", "s/2", "s/0"):
            c.crash(s)
            c.start(s)
        assert c.elect(warm=True) is None  # still refused
    finally:
        c.close()


def test_a_refused_warm_start_stays_refused_after_an_owner_change(tmp_path):
    """F1 of the follow-up: the trusted set lived in the electing node's core; a new owner (or the
    node restarted) after the first attempt had revoked the holder knew none, and the rewritten
    directory -- restarted since, so no longer 'fresh' -- was elected, losing r1. The arbiter's
    state records it now."""
    c = _cluster(tmp_path)
    try:
        c.submit("s/0", "r1", "r1")
        c.crash("s/0")
        c.lose_directory("s/0")
        c.start("s/0")
        assert c.elect(warm=True) is None  # refused; the holder is revoked now
        c.owner_change()  # another node's election core, knowing only the arbiter's state
        for s in c.slots:
            c.crash(s)
            c.start(s)
        assert c.elect(warm=True) is None  # still refused
        assert c.masters() == []
    finally:
        c.close()


def test_warm_proof_rules():
    """``hosting.election.warm_proof``: a trusted slot proves only with proven storage its trusted process
    opened; an unknown trusted process or an unproven storage never proves (F1 of the follow-up)."""
    def promise(gen, unproven, *openers):
        return {"storage": {"generation": gen, "unproven": unproven, "openers": list(openers)}}
    new = promise("g2", True, "a#2")
    old = promise("g1", False, "a#1", "a#2")
    other = promise("gb", False, "b#1", "b#2")
    rewritten = promise("g3", False, "a#3")  # caught up since its wipe, but not the trusted process's
    assert unproven({"a": new, "b": old}) == {"a"}
    assert warm_refusal({"a": old, "b": new}, {"a": "a#1"}) is None
    assert warm_refusal({"a": rewritten, "b": other}, {"a": "a#1"}) is not None  # a's storage was replaced
    assert warm_refusal({"a": new, "b": other}, {"a": "a#1"}) is not None
    assert warm_refusal({"a": promise("g2", True, "a#1"), "b": other}, {"a": "a#1", "b": "b#9"}) is not None
    # ... but the lone trusted slot (the holder) unproven in its granted process's own storage: that
    # grant was never used (become_master proves the storage first), so it vouches (review S1)
    assert warm_refusal({"a": promise("g2", True, "a#1"), "b": other}, {"a": "a#1"}) is None
    assert unproven({"a": promise("g2", True, "a#1"), "b": new}, {"a": "a#1"}) == {"b"}
    assert warm_refusal({"a": old, "b": other}, {"a": None}) is not None  # trusted process unknown: no proof
    assert warm_refusal({"a": old, "b": other}, {"a": None, "b": "b#1"}) is None
    assert warm_refusal({"a": old, "b": other}, None) is None  # unknown trusted set, nothing unproven
    assert warm_refusal({"a": old, "b": new}, None) is not None
    assert warm_refusal({"a": {"storage": {"generation": "g1"}}}, None) is not None  # no claim: unproven
    volatile = {"storage": {"generation": None, "unproven": False, "openers": []}}  # durability memory
    assert warm_refusal({"a": volatile, "b": volatile}, {"a": "a#1"}) is None and not unproven({"a": volatile})
    assert trusted_set({"a", "b"}, "a", "a#1", {"a": "a#2", "b": "b#1"}) == {"a": "a#1", "b": "b#1"}
    assert trusted_set({"b"}, None, None, {}) is None


def test_cluster_trusted_process_unknown_does_not_accept_a_rewritten_directory():
    """The attack: in a cluster the node knew the trusted generations only of its own netlets, and
    an unknown generation accepted any non-fresh storage -- e.g. wiped directories whose slots
    restarted once -- electing a lagging replica without the acknowledged writes."""
    promises = {"s/0": {"storage": {"generation": "new0", "unproven": True, "openers": ["s/0#2", "s/0#3"]}},
                "s/1": {"storage": {"generation": "new1", "unproven": True, "openers": ["s/1#2", "s/1#3"]}},
                "s/2": {"storage": {"generation": "g2", "unproven": False, "openers": ["s/2#1", "s/2#2"]}}}
    assert warm_refusal(promises, {"s/0": "s/0#1", "s/1": "s/1#1"}) is not None
    assert warm_refusal(promises, {"s/0": None, "s/1": None}) is not None
