"""The arbiter's :class:`~hosting.election.arbiter.EpochStore` on etcd: cluster-wide fencing epochs.

Each app's arbiter state (epoch, holder, in-sync set, incarnations) is one key,
``apps/<app>/arbiter``. Contracts, on top of the EpochStore ones:
  * ``save`` is a compare-and-swap on the revision this store last read or
    wrote for the app: the epoch counter and the holder move in the same etcd
    transaction, so two nodes can never hand out the same epoch, and of two
    ``choose`` calls for one election only one can win.
  * Owner-only changes (elections, the in-sync set) carry a second condition
    in the same transaction: the app's owner key is still held under this
    node's lease. A node that lost ownership (paused past its lease, say) gets
    :class:`~hosting.election.arbiter.OwnershipLost` and changes nothing, however stale
    its view.
  * A save against a revision someone else has moved past raises
    :class:`~hosting.election.arbiter.StoreConflict` and changes nothing; the arbiter
    then forgets its cached state (the next call reloads it).
  * Changes made by other nodes reach subscribers (the arbiter's ``forget``)
    through a watch, so cached reads are stale for at most the watch delay;
    decisions never rest on them unchecked (they are compare-and-swapped).
"""

from __future__ import annotations

import json
import threading
from typing import Callable

from hosting.election.arbiter import OwnershipLost, StoreConflict
from hosting.cluster import keys
from hosting.cluster.etcd import Etcd, WatchEvent

class EtcdEpochStore:
    def __init__(self, etcd: Etcd, owner_lease: Callable[[], int] | None = None) -> None:
        """``owner_lease``: this node's membership lease; changes only an app's owner may make
        (``owner_only``) are saved only while ``apps/<app>/owner`` is held under it."""
        self.etcd = etcd
        self.owner_lease = owner_lease
        self._revisions: dict[str, int] = {}  # app -> mod_revision last read or written (0: absent)
        self._lock = threading.Lock()
        self._subscribers: list = []
        _, revision = etcd.get_prefix(keys.APPS)
        self._watch = etcd.watch_prefix(keys.APPS, revision + 1, self._changed)

    def subscribe(self, on_foreign_change) -> None:
        """Call ``on_foreign_change(app)`` when another node changes an app's state."""
        self._subscribers.append(on_foreign_change)

    def close(self) -> None:
        self._watch.cancel()

    def _changed(self, event: WatchEvent) -> None:
        key = keys.match(event.key)
        if key is None or key.kind != "arbiter":
            return
        app = key.name
        with self._lock:
            if event.revision <= self._revisions.get(app, 0):
                return  # our own write (or older)
        for callback in self._subscribers:
            callback(app)

    @staticmethod
    def key(app: str) -> str:
        return keys.arbiter(app)

    def load(self, app: str) -> dict | None:
        kv = self.etcd.get(self.key(app))
        with self._lock:
            self._revisions[app] = kv.mod_revision if kv else 0
        return kv.json() if kv else None

    def save(self, app: str, state: dict, owner_only: bool = False) -> None:
        with self._lock:
            expected = self._revisions.get(app)
        if expected is None:
            raise StoreConflict(f"{app}: arbiter state saved without being loaded first")
        held = (keys.owner(app), self.owner_lease()) if owner_only and self.owner_lease else None
        revision = self.etcd.swap(self.key(app), json.dumps(state, sort_keys=True), expected, held=held)
        if revision is None:
            with self._lock:
                self._revisions.pop(app, None)
            owner = self.etcd.get(held[0]) if held else None
            if held and (owner is None or owner.lease != held[1]):
                raise OwnershipLost(f"{app}: this node no longer owns it")
            raise StoreConflict(f"{app}: arbiter state was changed by another node")
        with self._lock:
            self._revisions[app] = revision
