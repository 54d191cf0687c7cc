"""A replicated key-value store: the jtrix example app.

Three replicas of ``Store`` (slots store/0..store/2); the master orders every
write, backups hold it before the caller gets an answer, and a new master is
elected from the most up-to-date backup when the master dies.
"""

from __future__ import annotations

from netlets import Netlet, command, master_query, query


class Store(Netlet):
    """Values are strings. Writes are ``@command`` s, replicated through :meth:`apply`."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    # -- the replicated state machine (deterministic) -------------------------
    def apply(self, cmd: dict):
        op, key = cmd["op"], cmd.get("key")
        if op == "put":
            self.data[key] = cmd["value"]
            return None
        if op == "append":
            self.data[key] = self.data.get(key, "") + cmd["suffix"]
            return len(self.data[key])
        if op == "cas":
            if self.data.get(key) != cmd["expected"]:
                return False
            self.data[key] = cmd["new"]
            return True
        if op == "delete":
            return self.data.pop(key, None) is not None
        raise ValueError(f"unknown operation {op!r}")

    def snapshot(self):
        return dict(self.data)

    def restore(self, snapshot) -> None:
        self.data = dict(snapshot or {})

    # -- commands: validate on the master, return the command to replicate ---
    @command
    def put(self, key: str, value: str):
        return {"op": "put", "key": _text(key), "value": _text(value)}

    @command
    def append(self, key: str, suffix: str):
        """Appends and returns the new length of the value (as Redis APPEND does: a
        replicated result, kept for retries, stays small however long the value grows)."""
        return {"op": "append", "key": _text(key), "suffix": _text(suffix)}

    @command
    def cas(self, key: str, expected: str | None, new: str):
        """Sets ``key`` to ``new`` if its value is ``expected`` (None: absent); returns whether it did."""
        return {"op": "cas", "key": _text(key), "expected": expected, "new": _text(new)}

    @command
    def delete(self, key: str):
        """Removes ``key``; returns whether it existed."""
        return {"op": "delete", "key": _text(key)}

    # -- reads ------------------------------------------------------------------
    @query
    def get(self, key: str):
        """The value on whichever replica answers (possibly stale, never uncommitted)."""
        return self.data.get(key)

    @master_query
    def get_latest(self, key: str):
        """The value as of now (linearizable: answered by the master under a valid lease)."""
        return self.data.get(key)

    @query
    def keys(self):
        return sorted(self.data)


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value
