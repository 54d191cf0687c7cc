"""A node's live picture of the cluster's apps, kept current by etcd watches.

Keys (``hosting.cluster.keys``):
  * ``apps/<app>/owner``      — the node running the app's elections (a claim under its lease);
  * ``apps/<app>/placement``  — ``{slot: node}``, written by the owner;
  * ``apps/<app>/live/<slot>`` — ``{netlet, node, endpoint}`` of a ready netlet, written by
    the node it runs on, under that node's lease (so it vanishes with the node);
  * ``nodes/<name>``          — members (``hosting.cluster.membership``).
Other keys under those prefixes, and keys outside the schema, are not the view's: skipped.

Contracts:
  * The view is loaded, then follows every change in revision order (one watch
    per prefix); handlers run one at a time, in that order, on one thread of
    the view's own, so they may block briefly but must not wait on the view.
  * Reads (``owner``, ``placement``, ``live``, ``members``) are lock-free
    snapshots: possibly a watch delay behind etcd, never torn.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from hosting.cluster import keys
from hosting.cluster.etcd import Etcd, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveNetlet:
    """A ready netlet somewhere in the cluster, as its node published it."""

    netlet_id: str
    node: str
    endpoint: str


@dataclass
class ViewHandlers:
    """What the node does when the cluster changes (each called on the view's thread)."""

    owner: Callable[[str, str | None], None] = lambda app, owner: None
    placement: Callable[[str, dict | None], None] = lambda app, placement: None
    live: Callable[[str, str, LiveNetlet | None, LiveNetlet | None], None] = lambda app, slot, old, new: None
    member: Callable[[str, bool], None] = lambda name, joined: None


class ClusterView:
    def __init__(self, etcd: Etcd, handlers: ViewHandlers) -> None:
        self.etcd, self.handlers = etcd, handlers
        self.owners: dict[str, str] = {}
        self.placements: dict[str, dict[str, str]] = {}
        self.lives: dict[str, dict[str, LiveNetlet]] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue = queue.Queue()
        self._loaded = threading.Event()
        self._changed = threading.Condition()  # notified after each change is applied
        self._thread = threading.Thread(target=self._dispatch, daemon=True, name="cluster-view")
        self._watches = []

    def start(self, timeout: float = 30.0) -> None:
        """Load the current state and return once its handlers have run; then follow changes."""
        self._thread.start()
        for prefix in (keys.NODES, keys.APPS):
            kvs, revision = self.etcd.get_prefix(prefix)
            for kv in kvs:
                self._queue.put(WatchEvent("put", kv.key, kv.value, kv.mod_revision))
            self._watches.append(self.etcd.watch_prefix(prefix, revision + 1, self._queue.put))
        self._queue.put(self._loaded.set)
        self._loaded.wait(timeout)

    def close(self) -> None:
        for watch in self._watches:
            watch.cancel()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- reads ----------------------------------------------------------------
    def owner(self, app: str) -> str | None:
        return self.owners.get(app)

    def placement(self, app: str) -> dict[str, str] | None:
        return self.placements.get(app)

    def live(self, app: str) -> dict[str, LiveNetlet]:
        return dict(self.lives.get(app, {}))

    def member_uri(self, name: str) -> str | None:
        return (self.members.get(name) or {}).get("uri")

    def wait_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Evaluate ``predicate()`` now and after each change the view applies, until it is
        truthy or ``timeout`` seconds pass; returns its last value."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- following ----------------------------------------------------------
    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if callable(event):
                event()
                continue
            try:
                self._apply(event)
            except Exception:  # noqa: BLE001 -- one bad key or handler must not stop the view
                log.exception("cluster view: handling %s %s failed", event.kind, event.key)
            with self._changed:
                self._changed.notify_all()

    def _apply(self, event: WatchEvent) -> None:
        key = keys.match(event.key)
        if key is None:
            return
        value = json.loads(event.value) if event.kind == "put" and event.value[:1] in (b"{", b"[") else None
        if key.kind == "node":
            joined = event.kind == "put"
            if joined:
                self.members = {**self.members, key.name: value or {}}
            else:
                self.members = {k: v for k, v in self.members.items() if k != key.name}
            self.handlers.member(key.name, joined)
        elif key.kind == "owner":
            owner = event.value.decode() if event.kind == "put" else None
            if owner is None:
                self.owners = {k: v for k, v in self.owners.items() if k != key.name}
            else:
                self.owners = {**self.owners, key.name: owner}
            self.handlers.owner(key.name, owner)
        elif key.kind == "placement":
            if value is None:
                self.placements = {k: v for k, v in self.placements.items() if k != key.name}
            else:
                self.placements = {**self.placements, key.name: dict(value)}
            self.handlers.placement(key.name, value)
        elif key.kind == "live":
            app, slot = key.name, key.slot
            old = self.lives.get(app, {}).get(slot)
            new = LiveNetlet(value["netlet"], value["node"], value["endpoint"]) if value else None
            slots = {k: v for k, v in self.lives.get(app, {}).items() if k != slot}
            if new is not None:
                slots[slot] = new
            self.lives = {**self.lives, app: slots}
            if old != new:
                self.handlers.live(app, slot, old, new)
