"""A deliberately broken kvstore, for testing that the linearizability checker catches it.

Identical to examples/kvstore's ``Store`` except that ``get_latest`` is a plain
``@query``: any replica answers it, including a backup that has not yet
learned the commit point of the caller's last write (a backup applies entries
only once the *next* replication message tells it they are committed). So a
client that writes and then reads may see its write missing: a stale read,
which a linearizable ``get_latest`` must never return.
"""

from __future__ import annotations

from netlets import Netlet, command, query


class Store(Netlet):
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, cmd: dict):
        op, key = cmd["op"], cmd.get("key")
        if op == "put":
            self.data[key] = cmd["value"]
            return None
        if op == "append":
            self.data[key] = self.data.get(key, "") + cmd["suffix"]
            return len(self.data[key])
        raise ValueError(f"unknown operation {op!r}")

    def snapshot(self):
        return dict(self.data)

    def restore(self, snapshot) -> None:
        self.data = dict(snapshot or {})

    @command
    def put(self, key: str, value: str):
        return {"op": "put", "key": str(key), "value": str(value)}

    @command
    def append(self, key: str, suffix: str):
        return {"op": "append", "key": str(key), "suffix": str(suffix)}

    @query  # THE BUG: should be @master_query
    def get_latest(self, key: str):
        return self.data.get(key)
