"""The request-id table that makes retried commands apply at most once.

It is part of the replicated state: every replica updates it while applying
committed entries in seq order, so its content — and its eviction, which is
first-in-first-out by apply order with a fixed bound — is identical on every
replica. It travels inside snapshots as a list of ``[req_id, outcome]`` pairs,
oldest first.

Limit: once a request id has been evicted (``max_size`` newer ids recorded
since), a retry of it is applied again. The bound is a replication setting
that must be the same on every replica of an app.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class DedupTable:
    """``req_id -> outcome`` for the most recent ``max_size`` applied requests."""

    def __init__(self, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ValueError("dedup table size must be >= 1")
        self.max_size = max_size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._items

    def get(self, req_id: str) -> Any:
        """The recorded outcome (KeyError if not recorded)."""
        return self._items[req_id]

    def record(self, req_id: str, outcome: Any) -> None:
        """Record an applied request; evicts the oldest beyond ``max_size``."""
        if req_id in self._items:  # never happens when callers check first
            return
        self._items[req_id] = outcome
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def to_wire(self) -> list:
        """``[[req_id, outcome], ...]`` oldest first (msgpack-able)."""
        return [[k, v] for k, v in self._items.items()]

    def load_wire(self, pairs: list) -> None:
        """Replace the content with :meth:`to_wire` output."""
        self._items = OrderedDict((str(k), v) for k, v in pairs)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
