"""A replicated counter whose ``snapshot()`` always raises: the first compaction (after
``snapshot_every`` applied entries) fails inside the runner's flusher."""

from __future__ import annotations

from netlets import Netlet, command, query


class BrokenSnapshot(Netlet):
    def __init__(self) -> None:
        self.value = 0

    def apply(self, amount):
        self.value += amount
        return self.value

    def snapshot(self):
        raise RuntimeError("this app cannot snapshot")

    def restore(self, snapshot) -> None:
        self.value = snapshot

    @command
    def add(self, amount=1):
        return int(amount)

    @query
    def peek(self):
        return self.value
