"""One replica of a replicated netlet: the sans-IO core a runner drives.

A :class:`Replica` owns the in-memory log, the state machine (the user's
Netlet plus the dedup table), the promised epoch, the commit index and the
durable :mod:`storage`. It starts as a backup (recovering from storage); the
arbiter's election makes one replica master (:meth:`become_master`), whose
logic lives in :class:`~.master.MasterRole`. A master that learns of a higher
epoch becomes ``fenced``: it commits nothing more; it may keep answering
appends from the new master as a backup, but the runner normally exits it.

Threading: not thread-safe; the runner serialises every call with one lock and
drains :meth:`take_effects` after each call. Time: every call that needs it
takes ``now`` (the runner's ``time.monotonic()``); the core never reads a clock.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from . import backup as _backup
from . import messages as M
from .effects import Complete, RoleChanged
from .log import Log
from .state import StateMachine, not_master
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
        self.role = "backup"
        self.master = None  # MasterRole while master
        self.master_slot: str | None = None
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

    def adopt_epoch(self, epoch: int) -> None:
        """Promise ``epoch`` if higher (buffered; the caller syncs before replying)."""
        if epoch > self.promised_epoch:
            self.promised_epoch = epoch
            self.storage.set_promise(epoch)
            if self.role == "master" and self.master.epoch < epoch:
                self.master.fence(epoch)

    def follow(self, master_slot: str, epoch: int) -> None:
        if self.role == "master":
            return
        if self.role != "backup" or self.master_slot != master_slot:
            self.role = "backup"
            self.master_slot = master_slot
            self.master = None
            self.effects.append(RoleChanged("backup", epoch, master_slot))

    def set_commit(self, seq: int) -> None:
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

    # --- backup / election ---------------------------------------------------
    def handle(self, msg: dict, now: float | None = None) -> dict | None:
        """A message from a master (``append``/``snapshot``); returns the reply.

        Malformed messages raise :class:`~.messages.ProtocolError`.
        """
        msg = M.validate(msg, (M.APPEND, M.SNAPSHOT))
        if msg["t"] == M.APPEND:
            return _backup.handle_append(self, msg)
        return _backup.handle_snapshot(self, msg)

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
        if epoch < self.promised_epoch or (self.role == "master" and self.master.epoch >= epoch):
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
        from .master import MasterRole

        if epoch < self.promised_epoch or self.role == "master":
            raise ValueError(f"cannot become master of epoch {epoch} "
                             f"(promised {self.promised_epoch}, role {self.role})")
        self.adopt_epoch(epoch)
        self.storage.mark_proven()
        self.role = "master"
        self.master_slot = self.slot
        self.master = MasterRole(self, epoch, set(isr), list(peers), now)
        self.effects.append(RoleChanged("master", epoch, self.slot))

    # --- master API (delegates; a non-master answers NotMaster) --------------
    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        """Queue a command; returns a token completed later by a ``Complete`` effect."""
        if self.role != "master":
            token = self.next_token()
            self.effects.append(Complete(token, not_master(f"{self.slot} is {self.role}")))
            return token
        return self.master.submit(req_id, command, now)

    def flush(self, now: float) -> None:
        """Group commit: sync appended entries, advance the commit, ship batches."""
        if self.role == "master":
            self.master.flush(now)

    def tick(self, now: float) -> None:
        """Timers: retransmission, lagging backups (shrink), heartbeats."""
        if self.role == "master":
            self.master.tick(now)

    def on_reply(self, peer: str, reply: dict, now: float) -> None:
        if self.role == "master":
            self.master.on_reply(peer, reply, now)

    def on_send_failed(self, peer: str, now: float) -> None:
        if self.role == "master":
            self.master.on_send_failed(peer, now)

    def on_arbiter_reply(self, req, answer: dict, now: float) -> None:
        """The node's answer to the ``ArbiterRequest`` ``req`` (stale or duplicate ones are ignored)."""
        if self.role == "master":
            self.master.on_arbiter_reply(req, answer, now)

    def on_arbiter_failed(self, req, now: float) -> None:
        """The runner got no answer to the ``ArbiterRequest`` ``req`` (it will be asked again)."""
        if self.role == "master":
            self.master.on_arbiter_failed(req, now)

    def set_peers(self, peers: list[str], now: float) -> None:
        if self.role == "master":
            self.master.set_peers(peers, now)

    def fence(self, epoch: int) -> None:
        """The runner learned of a higher epoch (e.g. a refused lease renewal)."""
        if self.role == "master" and epoch > self.master.epoch:
            self.adopt_epoch(epoch)
            self.storage.sync()

    def can_serve_linearizable(self, now: float) -> bool:
        """True only while master, barrier committed, and the lease is valid at ``now``.

        The runner calls it AFTER evaluating a ``@master_query`` and before replying.
        """
        return (self.role == "master" and self.commit_seq >= self.master.barrier_seq
                and now < self.lease_valid_until)
