"""A bound on the memory one endpoint holds for calls of peers that proved nothing.

Safety model (what must hold):
  * ``ByteBudget.held`` never exceeds ``capacity``: bytes are taken before they
    are held (a message's buffer grows only by what its charge took), and a
    take that would cross the capacity is refused (``BudgetExceeded``, a
    ``MessageRefused`` of kind ``budget_full``: the caller refuses the message,
    which is counted and reported like the gate's refusals).
  * A ``Charge`` is one message's share: everything it took is given back
    exactly once, by ``release`` (idempotent), when the message is done with —
    read, deserialized and answered, or refused.
  * Which connections are charged is the endpoint's choice
    (``wire.Daemon.budget_for``): those that have not proved they are the
    endpoint's own (the node's netlets; a netlet's replicas), whose number and
    message sizes the gate and the limits bound separately.
"""

from __future__ import annotations

import threading

from rpc.guard import MessageRefused


class BudgetExceeded(MessageRefused):
    """Taking these bytes would hold more than the endpoint's budget for unproven peers."""


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a byte budget needs a capacity of at least 1 byte")
        self.capacity = capacity
        self.held = 0
        self._lock = threading.Lock()

    def charge(self) -> "Charge":
        return Charge(self)

    def _take(self, n: int) -> None:
        with self._lock:
            if self.held + n > self.capacity:
                raise BudgetExceeded(f"this endpoint already holds {self.held} bytes for calls not yet"
                                     f" authenticated (its budget is {self.capacity}): try again shortly",
                                     "budget_full")
            self.held += n

    def _give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class Charge:
    """What one message holds of a budget (or of none: ``Charge(None)`` takes without bound)."""

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget, self.taken = budget, 0

    def take(self, n: int) -> None:
        if self.budget is not None and n > 0:
            self.budget._take(n)
        self.taken += n

    def release(self) -> None:
        if self.budget is not None and self.taken:
            self.budget._give(self.taken)
        self.taken = 0
