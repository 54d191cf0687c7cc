"""The interface of a replica's role: what a :class:`~.replica.Replica` delegates to it.

A replica holds exactly one live role at a time: a :class:`~.backup.BackupRole`
(following a master, or none yet, or ``fenced``: a former master that has not
heard from the new one) or a :class:`~.master.MasterRole`. The replica swaps it
on every transition (``Replica.follow``, ``become_master``, ``step_down``) and
drives only the live one, so a role object never has to ask whether it is
still current. Master-side events reaching a backup (late replies, timers,
arbiter answers to a former master) are ignored by it; commands are answered
with the retryable NotMaster outcome.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .effects import ArbiterRequest


class Role(ABC):
    #: ``"master"``, ``"backup"`` or ``"fenced"`` (what status and NotMaster report)
    name: str

    @abstractmethod
    def owns_epoch(self, epoch: int) -> bool:
        """True if a message of ``epoch`` can only be this replica's own (it is master of it or
        of a later one): such a message is refused, and so is a prepare for ``epoch``."""

    @abstractmethod
    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        """Queue a command; returns a token that a ``Complete`` effect releases, now or later."""

    @abstractmethod
    def flush(self, now: float) -> None:
        """Group commit: sync appended entries, advance the commit, ship batches."""

    @abstractmethod
    def tick(self, now: float) -> None:
        """Timers: retransmission, lagging backups (shrink), heartbeats."""

    @abstractmethod
    def on_reply(self, peer: str, reply: dict, now: float) -> None:
        """A backup's reply to a ``Send`` to ``peer``."""

    @abstractmethod
    def on_send_failed(self, peer: str, now: float) -> None:
        """A ``Send`` to ``peer`` got no reply."""

    @abstractmethod
    def on_arbiter_reply(self, req: ArbiterRequest, answer: dict, now: float) -> None:
        """The node's answer to ``req``."""

    @abstractmethod
    def on_arbiter_failed(self, req: ArbiterRequest, now: float) -> None:
        """No answer came to ``req``."""

    @abstractmethod
    def set_peers(self, peers: list[str], now: float) -> None:
        """The current set of other replica slots (joins and departures)."""

    @abstractmethod
    def can_serve_linearizable(self, now: float) -> bool:
        """True only if a read evaluated before ``now`` reflects every acknowledged write."""
