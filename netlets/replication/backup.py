"""Backup-side rules: accept the current master's appends and snapshots.

:class:`BackupRole` is a replica's role while it follows a master (or none
yet, or after stepping down as master: ``fenced``). ``Replica.handle`` has
already refused a stale message and adopted its epoch and sender before the
role sees it; each handler returns the reply dict.

Rules (see docs/replication.md):

* (``Replica.handle``) Any message whose epoch is below the promised epoch,
  or is our own while we are its master, gets ``stale`` with the promised
  epoch: this is how a stale master learns it is fenced. A higher epoch is
  adopted (promised, persisted before the reply; a master steps down).
* ``prev`` beyond the log end (a gap) → ``mismatch`` with a hint: our last seq
  when our last entry is from this master's epoch (then it matches its log),
  else our commit index. ``prev`` present with another epoch (a conflict) →
  the conflicting entry and everything after it are dropped (they cannot be
  the master's, by log matching, and are above our commit index) and the hint
  is our commit index. Nothing consistent with the master is ever dropped, so
  what we acked stays held.
* Entries already held with the same (seq, epoch) are skipped (duplicates and
  reordered deliveries are harmless); a different epoch at a seq truncates there.
* The commit index becomes ``min(msg.commit_seq, last seq this message
  verified)``; the state machine applies only up to it (stale, never dirty).
* Entries, promise and commit are synced (group commit) before the ``ack``.
* Unproven storage becomes proven (``storage.mark_proven``) once an append
  left it durably holding the master's log through the master's commit index
  and the entry there is of the master's own epoch: that index is at or after
  the master's barrier, which follows every write acknowledged before its
  election, and it covers every write acknowledged in its epoch when it sent.
  (An older commit index is not enough: a new master's recovered one may lag.)
* A snapshot above our commit index replaces our state (``Replica.install_snapshot``);
  one at or below it changes nothing but is acked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as M
from .effects import ArbiterRequest, Complete
from .role import Role
from .state import not_master

if TYPE_CHECKING:
    from .replica import Replica


class BackupRole(Role):
    def __init__(self, r: Replica, master_slot: str | None, *, fenced: bool = False) -> None:
        """``master_slot``: the master followed (None: none heard from yet); ``fenced``: this
        replica stepped down as master and has not heard from the new one."""
        self.r = r
        self.master_slot = master_slot
        self.name = "fenced" if fenced else "backup"

    def handle(self, msg: dict) -> dict:
        """A validated ``append`` or ``snapshot`` of the followed master's (promised) epoch."""
        if msg["t"] == M.APPEND:
            return self._append(msg)
        return self._snapshot(msg)

    def _append(self, msg: dict) -> dict:
        r = self.r
        log, storage = r.log, r.storage
        epoch, bid = msg["epoch"], msg["bid"]
        prev, prev_epoch, entries = msg["prev_seq"], msg["prev_epoch"], msg["entries"]
        end = prev + len(entries)
        if prev > log.last_seq:  # gap
            hint = log.last_seq if log.last_epoch == epoch else r.commit_seq
            storage.sync()
            return M.mismatch(r.promised_epoch, r.slot, r.incarnation, bid, hint)
        if prev < log.base_seq:  # covered by our snapshot: committed, so matching
            entries = [e for e in entries if e[0] > log.base_seq]
            prev, prev_epoch = log.base_seq, log.base_epoch
        elif log.epoch_at(prev) != prev_epoch:  # conflict
            if prev > r.commit_seq:
                r.truncate_after(prev - 1)
            storage.sync()
            return M.mismatch(r.promised_epoch, r.slot, r.incarnation, bid, r.commit_seq)
        new = []
        for e in entries:
            s = e[0]
            if log.has(s):
                if log.epoch_at(s) == e[1]:
                    continue
                r.truncate_after(s - 1)  # a committed entry never differs (raises if it did)
            new.append(e)
        r.append(new)
        r.set_commit(min(msg["commit_seq"], end))
        storage.sync()
        if end >= msg["commit_seq"] and log.epoch_at(msg["commit_seq"]) == epoch:
            storage.mark_proven()
        r.apply_committed()
        r.maybe_compact()
        return M.ack(r.promised_epoch, r.slot, r.incarnation, bid, end, r.commit_seq)

    def _snapshot(self, msg: dict) -> dict:
        r = self.r
        seq = msg["seq"]
        if seq > r.commit_seq:
            r.install_snapshot({"seq": seq, "epoch": msg["snap_epoch"], "state": msg["state"],
                                "dedup": msg["dedup"]})
        else:
            r.storage.sync()
        return M.ack(r.promised_epoch, r.slot, r.incarnation, msg["bid"], seq, r.commit_seq)

    # --- master-side events: a backup has none to act on ---------------------
    def owns_epoch(self, epoch: int) -> bool:
        return False

    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        token = self.r.next_token()
        self.r.effects.append(Complete(token, not_master(f"{self.r.slot} is {self.name}")))
        return token

    def flush(self, now: float) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def on_reply(self, peer: str, reply: dict, now: float) -> None:
        pass

    def on_send_failed(self, peer: str, now: float) -> None:
        pass

    def on_arbiter_reply(self, req: ArbiterRequest, answer: dict, now: float) -> None:
        pass

    def on_arbiter_failed(self, req: ArbiterRequest, now: float) -> None:
        pass

    def set_peers(self, peers: list[str], now: float) -> None:
        pass

    def can_serve_linearizable(self, now: float) -> bool:
        return False
