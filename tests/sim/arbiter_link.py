"""The simulated node's side of ISR requests: a store that fails, and the node's answer.

ISR requests and answers travel as packets on the simulated network (``Cluster.net``), so
they are delivered late, out of order, duplicated or lost like any other, and a master may
have several in flight (the runner gave up on one, the core asked again). What the node does
with one that arrives is :func:`answer`, the counterpart of ``hosting.node.Node.arbiter_request``.
"""

from __future__ import annotations

import sqlite3

from hosting.election.arbiter import Arbiter, AppState, MemoryEpochStore, OwnershipLost, StoreConflict, StoreUnavailable
from netlets.replication import ArbiterRequest

ARBITER = "arbiter"  # the node's address on the simulated network

#: how a failing save fails: "lost" (nothing written) or "ambiguous" (written, then the error,
#: as an etcd transaction that committed but whose answer timed out)
SAVE_FAILURES = ("lost", "ambiguous")


class FlakyStore(MemoryEpochStore):
    """A :class:`MemoryEpochStore` whose next saves fail as listed in ``failures``."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []

    def save(self, app: str, state: dict, owner_only: bool = False) -> None:
        mode = self.failures.pop(0) if self.failures else None
        if mode == "ambiguous":
            super().save(app, state, owner_only)
        if mode is not None:
            raise sqlite3.OperationalError(f"database is locked ({mode})")
        super().save(app, state, owner_only)

    def stored(self, app: str) -> AppState:
        d = self.load(app)
        return AppState.from_dict(d) if d else AppState()


def answer(arbiter: Arbiter, app: str, sender_inc: str, req: ArbiterRequest) -> dict:
    """What the node answers the process ``sender_inc`` for ``req`` (see the module docstring)."""
    if arbiter.state(app).holder_netlet() != sender_inc:
        return {"retry": "not the control lease holder", "epoch": arbiter.state(app).epoch}
    if req.kind == "sync":
        return arbiter.isr_view(app)
    try:
        return arbiter.change_isr(app, req.kind, req.epoch, req.slot, req.version, req.incarnation)
    except (StoreUnavailable, StoreConflict, OwnershipLost) as err:
        return {"retry": str(err)}
