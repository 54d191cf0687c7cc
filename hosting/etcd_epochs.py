"""The arbiter's :class:`~hosting.arbiter.EpochStore` on etcd: cluster-wide fencing epochs.

Each app's arbiter state (epoch, holder, in-sync set, incarnations) is one key,
``apps/<app>/arbiter``. Contracts, on top of the EpochStore ones:
  * ``save`` is a compare-and-swap on the revision this store last read or
    wrote for the app: the epoch counter and the holder move in the same etcd
    transaction, so two nodes can never hand out the same epoch, and of two
    ``choose`` calls for one election only one can win.
  * A save against a revision someone else has moved past raises
    :class:`~hosting.arbiter.StoreConflict` and changes nothing; the arbiter
    then forgets its cached state (the next call reloads it).
  * Changes made by other nodes reach subscribers (the arbiter's ``forget``)
    through a watch, so cached reads are stale for at most the watch delay;
    decisions never rest on them unchecked (they are compare-and-swapped).
"""

from __future__ import annotations

import json
import threading

from hosting.arbiter import StoreConflict
from hosting.etcd import Etcd, WatchEvent

SUFFIX = "/arbiter"


class EtcdEpochStore:
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._revisions: dict[str, int] = {}  # app -> mod_revision last read or written (0: absent)
        self._lock = threading.Lock()
        self._subscribers: list = []
        _, revision = etcd.get_prefix("apps/")
        self._watch = etcd.watch_prefix("apps/", revision + 1, self._changed)

    def subscribe(self, on_foreign_change) -> None:
        """Call ``on_foreign_change(app)`` when another node changes an app's state."""
        self._subscribers.append(on_foreign_change)

    def close(self) -> None:
        self._watch.cancel()

    def _changed(self, event: WatchEvent) -> None:
        if not event.key.endswith(SUFFIX):
            return
        app = event.key[len("apps/"):-len(SUFFIX)]
        with self._lock:
            if event.revision <= self._revisions.get(app, 0):
                return  # our own write (or older)
        for callback in self._subscribers:
            callback(app)

    @staticmethod
    def key(app: str) -> str:
        return f"apps/{app}{SUFFIX}"

    def load(self, app: str) -> dict | None:
        kv = self.etcd.get(self.key(app))
        with self._lock:
            self._revisions[app] = kv.mod_revision if kv else 0
        return kv.json() if kv else None

    def save(self, app: str, state: dict) -> None:
        with self._lock:
            expected = self._revisions.get(app)
        if expected is None:
            raise StoreConflict(f"{app}: arbiter state saved without being loaded first")
        revision = self.etcd.swap(self.key(app), json.dumps(state, sort_keys=True), expected)
        with self._lock:
            if revision is None:
                self._revisions.pop(app, None)
                raise StoreConflict(f"{app}: arbiter state was changed by another node")
            self._revisions[app] = revision
