"""The cluster's event log in etcd: every node ships its own events there; any node reads them all.

Contracts:
  * A node's own SQLite log (``Registry.add_event``) stays the source: shipping
    runs on its own thread and never blocks or fails the node; while etcd is
    unreachable events wait in SQLite and are shipped when it answers again.
  * Each node's events appear under ``events/<node>/<index>`` exactly once and
    in the node's order: each is created only if its key does not exist (so a
    retry after a lost answer writes nothing twice), one at a time, and
    shipping resumes after the greatest index already in etcd.
  * A reader's cursor is etcd's revision: each event is its own write, so its
    revision is unique; ``read(since=R)`` returns the events accepted after
    revision R, in the order etcd accepted them (each node's in its own
    order), each with ``index`` = its revision.
  * Events outlive their node (no lease): what a dead node recorded before it
    died stays readable. Each node keeps its newest ``KEEP`` events in etcd.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from hosting.cluster import keys
from hosting.cluster.etcd import Etcd, EtcdUnavailable, WatchEvent

log = logging.getLogger(__name__)

BATCH = 100  # events read from the registry at a time
KEEP = 5000
RETRY_S = 1.0


class EventShipper:
    """Copies this node's registry events to etcd (module contracts)."""

    def __init__(self, etcd: Etcd, node: str, registry) -> None:
        self.etcd, self.node, self.registry = etcd, node, registry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-shipper", daemon=True)
        self._shipped_cond = threading.Condition()
        #: the greatest index known to be in etcd
        self.shipped = 0

    def start(self) -> None:
        self._thread.start()

    def close(self, flush_s: float = 1.0) -> None:
        """Stop shipping, after giving what is recorded up to now ``flush_s`` to reach etcd
        (nothing to do if it never started)."""
        if self._thread.ident is None:
            return
        newest = self.registry.newest_event_index()
        with self._shipped_cond:
            self._shipped_cond.wait_for(lambda: self.shipped >= newest, timeout=flush_s)
        self._stop.set()
        self._thread.join(timeout=5)

    def _set_shipped(self, index: int) -> None:
        with self._shipped_cond:
            self.shipped = index
            self._shipped_cond.notify_all()

    def _last_shipped(self) -> int:
        last = self.etcd.last_under(keys.events_of(self.node))
        return keys.parse(last.key).number if last is not None else 0

    def _run(self) -> None:
        since: int | None = None
        while not self._stop.is_set():
            try:
                if since is None:
                    since = self._last_shipped()
                    self._set_shipped(since)
                batch = self.registry.wait_events(since, RETRY_S)[:BATCH]
                if not batch:
                    continue
                for event in batch:
                    value = json.dumps({"node": self.node, **event.as_dict()})
                    if self.etcd.create(keys.event(self.node, event.idx), value) is None:
                        since = None  # written already (an answer was lost): resume from etcd
                        break
                    since = event.idx
                    if since % BATCH == 0 and since > KEEP:
                        self.etcd.delete_range(keys.event(self.node, 0), keys.event(self.node, since - KEEP + 1))
                    self._set_shipped(since)  # (after its trim: what ``shipped`` covers is done)
            except EtcdUnavailable as err:
                log.debug("event shipping paused: %s", err)
                self._stop.wait(RETRY_S)
            except Exception:  # noqa: BLE001 -- shipping must never take the node down
                log.exception("event shipping failed; retrying")
                self._stop.wait(RETRY_S)


class ClusterEvents:
    """Reads the cluster's event log; waits for new events through one etcd watch, opened on
    the first waiting read."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._cond = threading.Condition()
        self._newest = 0  # the newest revision the watch has seen
        self._watch = None

    def _on_event(self, event: WatchEvent) -> None:
        with self._cond:
            self._newest = max(self._newest, event.revision)
            self._cond.notify_all()

    def _ensure_watch(self, revision: int) -> None:
        with self._cond:
            if self._watch is None:
                self._newest = revision
                self._watch = self.etcd.watch_prefix(keys.EVENTS, revision + 1, self._on_event)

    def read(self, since: int = 0, app: str | None = None, limit: int = 1000,
             wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Events accepted after revision ``since`` (of ``app`` only, if given), oldest first; with
        ``wait_s``, waits up to that long for at least one."""
        deadline = time.monotonic() + wait_s
        scanned, found = since, []
        while True:
            kvs, revision = self.etcd.changed_since(keys.EVENTS, scanned, limit)
            for kv in kvs:
                event = json.loads(kv.value)
                scanned = kv.mod_revision
                if app is None or event.get("app") == app:
                    found.append({**event, "node_index": event["index"], "index": kv.mod_revision})
                    if len(found) == limit:
                        return found
            if len(kvs) == limit:
                continue  # more to scan
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            scanned = max(scanned, revision)  # nothing of interest up to the revision read at
            self._ensure_watch(revision)
            with self._cond:
                self._cond.wait_for(lambda: self._newest > scanned, timeout=left)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
