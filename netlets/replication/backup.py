"""Backup-side rules: accept the current master's appends and snapshots.

Functions over a :class:`~.replica.Replica`; each returns the reply dict.

Rules (see docs/replication.md):

* Any message whose epoch is below the promised epoch gets ``stale`` with the
  promised epoch: this is how a stale master learns it is fenced. A higher
  epoch is adopted (promised, persisted before the reply).
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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import messages as M

if TYPE_CHECKING:
    from .replica import Replica


def _refuse(r: Replica, msg: dict) -> dict | None:
    """``stale`` if msg's epoch is below our promise (or it claims our own epoch)."""
    e = msg["epoch"]
    own_master = r.role == "master" and r.master is not None and r.master.epoch >= e
    if e < r.promised_epoch or own_master:
        return M.stale(r.promised_epoch, r.slot, r.incarnation, msg["bid"])
    return None


def _follow(r: Replica, msg: dict) -> None:
    r.adopt_epoch(msg["epoch"])
    r.follow(msg["from"], msg["epoch"])


def handle_append(r: Replica, msg: dict) -> dict:
    refusal = _refuse(r, msg)
    if refusal:
        return refusal
    _follow(r, msg)
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
            log.truncate_after(prev - 1)
            storage.truncate_after(prev - 1)
        storage.sync()
        return M.mismatch(r.promised_epoch, r.slot, r.incarnation, bid, r.commit_seq)
    new = []
    for e in entries:
        s = e[0]
        if log.has(s):
            if log.epoch_at(s) == e[1]:
                continue
            if s <= r.commit_seq:  # cannot happen: committed entries never differ
                raise AssertionError(f"master tried to overwrite committed entry {s}")
            log.truncate_after(s - 1)
            storage.truncate_after(s - 1)
        log.append(e)
        new.append(e)
    storage.append_entries(new)
    r.set_commit(min(msg["commit_seq"], end))
    storage.sync()
    if end >= msg["commit_seq"] and log.epoch_at(msg["commit_seq"]) == epoch:
        storage.mark_proven()
    r.apply_committed()
    r.maybe_compact()
    return M.ack(r.promised_epoch, r.slot, r.incarnation, bid, end, r.commit_seq)


def handle_snapshot(r: Replica, msg: dict) -> dict:
    refusal = _refuse(r, msg)
    if refusal:
        return refusal
    _follow(r, msg)
    seq, snap_epoch = msg["seq"], msg["snap_epoch"]
    snap = {"seq": seq, "epoch": snap_epoch, "state": msg["state"], "dedup": msg["dedup"]}
    if seq > r.commit_seq:
        keep_tail = r.log.epoch_at(seq) == snap_epoch  # we hold it: keep what follows
        r.sm.restore(snap)
        if keep_tail:
            r.log.compact(seq, snap_epoch)
        else:
            r.log.reset(seq, snap_epoch)
        r.commit_seq = seq
        r.snap = snap
        r.storage.save_snapshot(snap, list(r.log.entries), r.promised_epoch, seq,
                                discard_old_tail=not keep_tail)
        r.apply_committed()
    else:
        r.storage.sync()
    return M.ack(r.promised_epoch, r.slot, r.incarnation, msg["bid"], seq, r.commit_seq)
