"""One replica of a replicated netlet: the sans-IO core a runner drives.

A :class:`Replica` owns the in-memory log, the state machine (the user's
Netlet plus the dedup table), the promised epoch, the commit index, the
durable :class:`~.storage.Storage`, and one live role
(:class:`~.backup.BackupRole` or :class:`~.master.MasterRole`, see
:mod:`.role`) to which it delegates what depends on the role.

Transitions are all here. Roles read the log and the state machine, sync
the storage (and mark it proven) and emit effects; every other change goes
through a :class:`Replica` method:

* start → backup, recovering from storage;
* backup → master: the arbiter's grant (:meth:`Replica.become_master`);
* master → ``fenced`` (:meth:`Replica.step_down`): it learned of a higher
  epoch (:meth:`Replica.adopt_epoch`); it commits nothing more and its
  callers get NotMaster. It may go on answering appends from the new master
  as a backup, but the runner normally exits it;
* any non-master → backup of the sender of an accepted append or snapshot
  (:meth:`Replica.follow`).

Invariants:

* While master, the role's epoch is the promised epoch (a higher promise
  steps it down at once), so a message of that epoch is refused as our own.
* The promised epoch and the commit index never decrease; the commit index
  never exceeds the log's last seq, and no committed entry is truncated.
* The in-memory log and the storage change together (:meth:`Replica.append`,
  :meth:`Replica.truncate_after`, :meth:`Replica.install_snapshot`,
  :meth:`Replica.maybe_compact`); what is held durably is what a ``sync``
  returned for.

Threading: not thread-safe; the runner serialises every call with one lock and
drains :meth:`take_effects` after each call. Time: every call that needs it
takes ``now`` (the runner's ``time.monotonic()``); the core never reads a clock.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from . import messages as M
from .backup import BackupRole
from .effects import MasterFenced, RoleChanged
from .log import Log
from .master import MasterRole
from .role import Role
from .state import StateMachine
from .storage import MemoryStorage, Storage

ACK_POLICIES = ("all", "async")


@dataclass
class ReplicationConfig:
    """Tunables; ``ack`` and ``dedup_size`` must be equal on all replicas."""

    ack: str = "all"  # "all": every in-sync replica holds it; "async": master only
    batch_max: int = 256  # entries per append message
    window: int = 4  # append messages in flight per backup (pipelining)
    retransmit_timeout: float = 0.5  # resend from the last ack after this silence
    replication_timeout: float = 1.0  # ask the arbiter to shrink a backup lagging this long
    snapshot_every: int = 10_000  # compact after this many applied entries
    dedup_size: int = 100_000

    def __post_init__(self) -> None:
        if self.ack not in ACK_POLICIES:
            raise ValueError(f"ack policy must be one of {ACK_POLICIES}, not {self.ack!r}")
        if self.batch_max < 1 or self.window < 1 or self.snapshot_every < 1:
            raise ValueError("batch_max, window and snapshot_every must be >= 1")


class Replica:
    """The replication core of one netlet process (see module docstring)."""

    def __init__(self, slot: str, netlet: Any, storage: Storage | None = None,
                 config: ReplicationConfig | None = None, *, incarnation: str | None = None,
                 min_epoch: int = 0) -> None:
        """Recover from ``storage``; start as a backup.

        ``min_epoch``: the arbiter's current epoch when this process is spawned;
        with durability ``memory`` (nothing recovered) it keeps a restarted
        backup from accepting a master it had already fenced.
        """
        self.slot = slot
        self.config = config or ReplicationConfig()
        self.storage = storage if storage is not None else MemoryStorage()
        self.incarnation = incarnation or uuid.uuid4().hex
        self.sm = StateMachine(netlet, self.config.dedup_size)
        self.effects: list = []
        self._tokens = itertools.count(1)
        self._role: Role = BackupRole(self, None)
        self.lease_valid_until = float("-inf")  # set by the runner while master
        rec = self.storage.recover(self.incarnation)  # CorruptStorage / StorageFailed: must not run
        self.snap: dict | None = rec.snapshot
        if rec.snapshot:
            self.sm.restore(rec.snapshot)
            self.log = Log(rec.snapshot["seq"], rec.snapshot["epoch"], rec.entries)
        else:
            self.log = Log(0, 0, rec.entries)
        self.commit_seq = max(rec.commit_seq, self.log.base_seq)
        self.promised_epoch = max(rec.promised_epoch, min_epoch)
        self.apply_committed()

    # --- state -------------------------------------------------------------
    @property
    def role(self) -> str:
        """``"backup"``, ``"master"`` or ``"fenced"`` (module docstring)."""
        return self._role.name

    @property
    def master(self) -> MasterRole | None:
        """The master role while this replica is master, else None."""
        return self._role if isinstance(self._role, MasterRole) else None

    @property
    def storage_identity(self) -> dict:
        """What an election learns of this replica's storage (see :meth:`prepare`)."""
        return self.storage.identity()

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch of last entry, last seq)``; compare as tuples."""
        return self.log.position

    @property
    def applied_seq(self) -> int:
        return self.sm.applied_seq

    def next_token(self) -> int:
        return next(self._tokens)

    def take_effects(self) -> list:
        out, self.effects = self.effects, []
        return out

    # --- the log, the state machine and their storage --------------------------
    def append(self, entries: list) -> None:
        """Append ``entries`` to the log and buffer them in storage (durable at the next sync)."""
        for e in entries:
            self.log.append(e)
        self.storage.append_entries(entries)

    def truncate_after(self, seq: int) -> None:
        """Drop every entry after ``seq`` from the log and (buffered) from storage.

        Raises AssertionError if that would drop a committed entry: committed
        entries never differ between replicas, so no master can ask for it.
        """
        if seq < self.commit_seq:
            raise AssertionError(f"master tried to overwrite committed entry {seq + 1}")
        self.log.truncate_after(seq)
        self.storage.truncate_after(seq)

    def set_commit(self, seq: int) -> None:
        """Raise the commit index to ``seq`` (at most the last seq held; never lowered)."""
        seq = min(seq, self.log.last_seq)
        if seq > self.commit_seq:
            self.commit_seq = seq
            self.storage.set_commit(seq)

    def apply_committed(self) -> list:
        """Apply entries up to the commit index; returns [(seq, entry, outcome)]."""
        out = []
        while self.sm.applied_seq < self.commit_seq:
            e = self.log.get(self.sm.applied_seq + 1)
            out.append((e[0], e, self.sm.apply(e)))
        return out

    def maybe_compact(self) -> None:
        """Snapshot + drop the log prefix every ``snapshot_every`` applied entries."""
        if self.sm.applied_seq - self.log.base_seq < self.config.snapshot_every:
            return
        snap = self.sm.snapshot()  # SnapshotFailed: the runner fail-stops
        self.storage.save_snapshot(snap, self.log.slice(snap["seq"] + 1, len(self.log.entries)),
                                   self.promised_epoch, self.commit_seq)
        self.log.compact(snap["seq"], snap["epoch"])
        self.snap = snap

    def install_snapshot(self, snap: dict) -> None:
        """Replace state and log with a master's snapshot of committed state (``{"seq", "epoch",
        "state", "dedup"}``) above our commit index, durably; what we hold after it is kept
        if we hold the snapshot's last entry (then it matches the master's log), else dropped."""
        seq, epoch = snap["seq"], snap["epoch"]
        if seq <= self.commit_seq:
            raise ValueError(f"snapshot at {seq} is not above the commit index {self.commit_seq}")
        keep_tail = self.log.epoch_at(seq) == epoch
        self.sm.restore(snap)
        if keep_tail:
            self.log.compact(seq, epoch)
        else:
            self.log.reset(seq, epoch)
        self.commit_seq = seq
        self.snap = snap
        self.storage.save_snapshot(snap, list(self.log.entries), self.promised_epoch, seq,
                                   discard_old_tail=not keep_tail)
        self.apply_committed()

    # --- epochs and roles --------------------------------------------------------
    def adopt_epoch(self, epoch: int) -> None:
        """Promise ``epoch`` if higher (buffered; the caller syncs before replying); a master
        steps down."""
        if epoch > self.promised_epoch:
            self.promised_epoch = epoch
            self.storage.set_promise(epoch)
            if self.master is not None:
                self.step_down(epoch)

    def step_down(self, epoch: int) -> None:
        """Master → ``fenced``: ``epoch`` (above ours, already promised) exists. The master role
        is dropped and releases its callers; the runner gets a ``MasterFenced`` effect."""
        master = self.master
        if master is None or not master.epoch < epoch == self.promised_epoch:
            raise ValueError(f"cannot step down for epoch {epoch} "
                             f"(promised {self.promised_epoch}, role {self.role})")
        self._role = BackupRole(self, None, fenced=True)
        master.release(epoch)
        self.effects.append(MasterFenced(epoch))

    def follow(self, master_slot: str, epoch: int) -> BackupRole:
        """Become (or stay) a backup of ``master_slot``, whose message of ``epoch`` (promised)
        was accepted; returns the backup role. Never called while master: a master's own epoch
        is refused, a higher one steps it down first."""
        role = self._role
        if isinstance(role, BackupRole) and role.name == "backup" and role.master_slot == master_slot:
            return role
        if isinstance(role, MasterRole):
            raise ValueError(f"master of epoch {role.epoch} cannot follow {master_slot}")
        self._role = role = BackupRole(self, master_slot)
        self.effects.append(RoleChanged("backup", epoch, master_slot))
        return role

    def _refuses(self, epoch: int) -> bool:
        """A message or prepare of ``epoch`` is refused: below our promise, or our own epoch."""
        return epoch < self.promised_epoch or self._role.owns_epoch(epoch)

    # --- backup / election ---------------------------------------------------
    def handle(self, msg: dict, now: float | None = None) -> dict | None:
        """A message from a master (``append``/``snapshot``); returns the reply.

        Malformed messages raise :class:`~.messages.MalformedMessage`.
        """
        msg = M.validate(msg, (M.APPEND, M.SNAPSHOT))
        if self._refuses(msg["epoch"]):  # how a stale master learns it is fenced
            return M.stale(self.promised_epoch, self.slot, self.incarnation, msg["bid"])
        self.adopt_epoch(msg["epoch"])
        return self.follow(msg["from"], msg["epoch"]).handle(msg)

    def prepare(self, epoch: int) -> dict:
        """Election step 1 (called by the arbiter's node): promise ``epoch``.

        After a successful promise this replica refuses every message of a lower
        epoch, so its position can no longer grow under the old master. Returns
        a ``promise`` message with the position and ``storage``: the storage's
        generation id, the processes that opened it and whether it is
        ``unproven`` (created empty and not caught up since: it cannot prove it
        holds anything acknowledged before; ``storage`` module docstring).
        Refused (``ok`` False) when a higher epoch was already promised or we are
        master of this epoch.
        """
        if self._refuses(epoch):
            return dict(M.promise(False, self.promised_epoch, self.slot, list(self.position)),
                        storage=dict(self.storage_identity))
        self.adopt_epoch(epoch)
        self.storage.sync()
        return dict(M.promise(True, self.promised_epoch, self.slot, list(self.position)),
                    storage=dict(self.storage_identity))

    def become_master(self, epoch: int, isr: set[str] | list[str], peers: list[str],
                      now: float) -> None:
        """Election step 2: the arbiter granted ``epoch`` to this replica.

        ``isr`` is the arbiter's in-sync set at the grant (it contains this
        slot); ``peers`` every other replica slot to replicate to. Appends the
        no-op barrier. Raises ValueError if a higher epoch was promised. The
        storage is proven from now on: the arbiter elected it as holding every
        acknowledged write.
        """
        if epoch < self.promised_epoch or self.master is not None:
            raise ValueError(f"cannot become master of epoch {epoch} "
                             f"(promised {self.promised_epoch}, role {self.role})")
        self.adopt_epoch(epoch)
        self.storage.mark_proven()
        self._role = MasterRole(self, epoch, set(isr), list(peers), now)
        self.effects.append(RoleChanged("master", epoch, self.slot))

    def fence(self, epoch: int) -> None:
        """The runner learned of a higher epoch (e.g. a refused lease renewal): a master steps
        down, durably promising it; otherwise nothing changes."""
        if self.master is not None and epoch > self.master.epoch:
            self.adopt_epoch(epoch)
            self.storage.sync()

    # --- what depends on the role (a non-master answers NotMaster, ignores the rest) --
    def knows_request(self, req_id: str | None) -> bool:
        """True while master if ``req_id`` is recorded or in flight (``MasterRole.knows``): a
        retry then needs no new command, so the runner does not run the ``@command`` method
        again (against a state that may already include the original) and submits
        ``None``, which is answered with the original's outcome."""
        master = self.master
        return master is not None and master.knows(req_id)

    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        """Queue a command; returns a token completed later by a ``Complete`` effect."""
        return self._role.submit(req_id, command, now)

    def flush(self, now: float) -> None:
        """Group commit: sync appended entries, advance the commit, ship batches."""
        self._role.flush(now)

    def tick(self, now: float) -> None:
        """Timers: retransmission, lagging backups (shrink), heartbeats."""
        self._role.tick(now)

    def on_reply(self, peer: str, reply: dict, now: float) -> None:
        self._role.on_reply(peer, reply, now)

    def on_send_failed(self, peer: str, now: float) -> None:
        self._role.on_send_failed(peer, now)

    def on_arbiter_reply(self, req, answer: dict, now: float) -> None:
        """The node's answer to the ``ArbiterRequest`` ``req`` (stale or duplicate ones are ignored)."""
        self._role.on_arbiter_reply(req, answer, now)

    def on_arbiter_failed(self, req, now: float) -> None:
        """The runner got no answer to the ``ArbiterRequest`` ``req`` (it will be asked again)."""
        self._role.on_arbiter_failed(req, now)

    def set_peers(self, peers: list[str], now: float) -> None:
        self._role.set_peers(peers, now)

    def can_serve_linearizable(self, now: float) -> bool:
        """True only while master, barrier committed, and the lease is valid at ``now``.

        The runner calls it AFTER evaluating a ``@master_query`` and before replying.
        """
        return self._role.can_serve_linearizable(now)
