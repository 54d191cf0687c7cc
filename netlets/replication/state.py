"""The replicated state machine: a user's Netlet plus the dedup table.

Applies committed entries strictly in seq order. An entry whose request id is
already recorded is not applied again: its recorded outcome is returned (this
keeps "at most once" even if a request id somehow reached the log twice). Both
rules are deterministic, so every replica computes the same state and table.

Outcomes are plain dicts (msgpack-able, recorded in the dedup table):
``{"ok": True, "value": v}`` or ``{"ok": False, "error": {"type", "message"}}``
where the error is the exception ``apply`` raised (the caller's result, not a
replication failure).
"""

from __future__ import annotations

from typing import Any

from .dedup import DedupTable
from .messages import CMD, e_cmd, e_epoch, e_kind, e_req, e_seq


def ok(value: Any) -> dict:
    return {"ok": True, "value": value}


def error(type_name: str, message: str, retryable: bool = False) -> dict:
    return {"ok": False, "error": {"type": type_name, "message": message,
                                   "retryable": retryable}}


def not_master(message: str = "not the master") -> dict:
    """The retryable outcome of a call that reached a replica that cannot commit."""
    return error("NotMaster", message, retryable=True)



class SnapshotFailed(RuntimeError):
    """The app's fault: its ``snapshot()`` raised, so its state can be neither compacted nor sent."""

class StateMachine:
    """Wraps ``netlet`` (anything with apply/snapshot/restore)."""

    def __init__(self, netlet: Any, dedup_size: int = 100_000) -> None:
        self.netlet = netlet
        self.dedup = DedupTable(dedup_size)
        self.applied_seq = 0
        self.applied_epoch = 0

    def apply(self, entry: list) -> dict | None:
        """Apply the next committed entry; returns its outcome (None for a no-op)."""
        seq = e_seq(entry)
        if seq != self.applied_seq + 1:
            raise ValueError(f"apply out of order: {seq} after {self.applied_seq}")
        self.applied_seq, self.applied_epoch = seq, e_epoch(entry)
        if e_kind(entry) != CMD:
            return None
        req_id = e_req(entry)
        if req_id is not None and req_id in self.dedup:
            return self.dedup.get(req_id)
        try:
            outcome = ok(self.netlet.apply(e_cmd(entry)))
        except Exception as exc:  # the caller's result, recorded like a value
            outcome = error(type(exc).__name__, str(exc))
        if req_id is not None:
            self.dedup.record(req_id, outcome)
        return outcome

    def snapshot(self) -> dict:
        """``{"seq", "epoch", "state", "dedup"}`` at the applied point."""
        try:
            state = self.netlet.snapshot()
        except Exception as err:
            raise SnapshotFailed(f"snapshot() raised {type(err).__name__}: {err}") from err
        return {"seq": self.applied_seq, "epoch": self.applied_epoch,
                "state": state, "dedup": self.dedup.to_wire()}

    def restore(self, snap: dict) -> None:
        """Replace everything with a snapshot (from :meth:`snapshot`)."""
        self.netlet.restore(snap["state"])
        self.dedup.load_wire(snap["dedup"])
        self.applied_seq, self.applied_epoch = snap["seq"], snap["epoch"]
