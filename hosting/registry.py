"""The node's durable registry: apps, slots, netlets, control leases, events.

One SQLite database in WAL mode (``synchronous=FULL``: a committed change
survives power loss). One connection shared by all threads behind a lock; every
public method is one transaction. This is the single-machine implementation of
the registry interface; the etcd one keeps the same method contracts.

Contracts:
  * Events are append-only; ``idx`` is strictly increasing and never reused.
  * ``next_epoch`` returns a number strictly greater than any it returned
    before, across restarts (the counter is committed before it is returned).
  * A netlet row is never deleted while its process may be alive: rows leave
    only with their app, after the app's processes are gone.
  * With a sealer (the node always gives one) no app secret is ever stored in
    clear: ``apps.secret`` holds it sealed under the home's ``secrets.key``
    (``hosting.secretbox``); clear ones of an older registry are sealed on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hosting.secretbox import SecretBox

from warrants import names

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    descriptor BLOB NOT NULL,
    source TEXT NOT NULL,
    codebase_sha TEXT NOT NULL,
    state TEXT NOT NULL,
    secret BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS codebases (sha TEXT PRIMARY KEY, size INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    app TEXT NOT NULL,
    slot TEXT NOT NULL,
    type TEXT NOT NULL,
    resources TEXT NOT NULL,
    state TEXT NOT NULL,
    incarnation INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    last_exit TEXT,
    PRIMARY KEY (app, slot)
);
CREATE TABLE IF NOT EXISTS netlets (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    slot TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    pid INTEGER,
    create_time REAL,
    started REAL NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    exit TEXT,
    log_path TEXT
);
CREATE TABLE IF NOT EXISTS control (
    app TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS ids (id INTEGER PRIMARY KEY, owner TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (
    idx INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    app TEXT,
    slot TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Event:
    """One entry of the append-only event log."""

    idx: int
    ts: float
    app: str | None
    slot: str | None
    kind: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.idx, "time": self.ts, "app": self.app, "slot": self.slot,
                "kind": self.kind, "detail": self.detail}


class Registry:
    """SQLite-backed registry (see module docstring for the contracts)."""

    def __init__(self, path: Path, sealer: "SecretBox | None" = None) -> None:
        #: seals app secrets at rest (None: stored as given — unit tests of other parts)
        self._sealer = sealer
        self._lock = threading.RLock()
        self._writing = threading.local()  # .depth: this thread's nesting of _tx blocks
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        if sealer is not None:
            self._db.execute("PRAGMA secure_delete=ON")  # a replaced secret leaves no copy in a free page
        self._db.executescript(SCHEMA)
        if sealer is not None:
            self._seal_plain_secrets()
        self._event_cond = threading.Condition(self._lock)
        #: reads outside a transaction go through their own connection: in WAL mode a reader never
        #: waits for a writer, so a status or an election's facts are not held up behind writes
        #: queued on the lock while the database is locked (each waiting its busy timeout)
        self._reader = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        self._reader.execute("PRAGMA busy_timeout=5000")
        self._reader_lock = threading.Lock()
        #: called as ``listener(kind, app, detail)`` after each event is committed
        self.event_listeners: list = []

    def close(self) -> None:
        with self._lock, self._reader_lock:
            self._db.close()
            self._reader.close()

    def _tx(self) -> "_Transaction":
        return _Transaction(self)

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """A query's rows: inside this thread's transaction, what it sees (its own writes
        included); outside one, the last committed state, read without waiting for writers."""
        if getattr(self._writing, "depth", 0):
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        with self._reader_lock:
            return self._reader.execute(sql, args).fetchall()

    # -- meta -------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key=?", key)
        return rows[0]["value"] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))

    # -- events -----------------------------------------------------------
    def add_event(self, kind: str, app: str | None = None, slot: str | None = None, **detail: Any) -> int:
        """Append an event; returns its index. Wakes ``wait_events`` callers."""
        with self._tx() as db:
            cur = db.execute("INSERT INTO events(ts, app, slot, kind, detail) VALUES(?,?,?,?,?)",
                             (time.time(), app, slot, kind, json.dumps(detail, default=str)))
            idx = cur.lastrowid
        with self._event_cond:
            self._event_cond.notify_all()
        for listener in self.event_listeners:
            listener(kind, app, detail)
        return int(idx)

    def events(self, since: int = 0, app: str | None = None, limit: int = 1000) -> list[Event]:
        """Events with index > ``since`` (optionally of one app), oldest first."""
        if app is None:
            rows = self._rows("SELECT * FROM events WHERE idx>? ORDER BY idx LIMIT ?", since, limit)
        else:
            rows = self._rows("SELECT * FROM events WHERE idx>? AND app=? ORDER BY idx LIMIT ?", since, app, limit)
        return [Event(r["idx"], r["ts"], r["app"], r["slot"], r["kind"], json.loads(r["detail"])) for r in rows]

    def newest_event_index(self) -> int:
        rows = self._rows("SELECT MAX(idx) AS idx FROM events")
        return int(rows[0]["idx"] or 0) if rows else 0

    def wait_events(self, since: int, timeout: float, app: str | None = None) -> list[Event]:
        """Like :meth:`events` but waits up to ``timeout`` seconds for at least one."""
        return self.wait_until(lambda: self.events(since, app), timeout)

    def wait_until(self, predicate, timeout: float):
        """Evaluate ``predicate()`` now and after each recorded event until it is truthy
        or ``timeout`` seconds pass; returns its last value.

        ``predicate`` runs under the registry lock: it may read the registry, and
        must not take any other lock (lock order).
        """
        deadline = time.monotonic() + timeout
        with self._event_cond:
            while True:
                value = predicate()
                left = deadline - time.monotonic()
                if value or left <= 0:
                    return value
                self._event_cond.wait(left)

    # -- codebases --------------------------------------------------------
    def has_codebase(self, sha: str) -> bool:
        return bool(self._rows("SELECT 1 FROM codebases WHERE sha=?", sha))

    def add_codebase(self, sha: str, size: int) -> None:
        names.check_codebase(sha)
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO codebases(sha, size, added) VALUES(?,?,?)", (sha, size, time.time()))

    def remove_codebases(self, shas: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM codebases WHERE sha=?", [(sha,) for sha in shas])

    # -- apps -------------------------------------------------------------
    def add_app(self, name: str, descriptor: bytes, source: str, codebase_sha: str, secret: bytes,
                slots: list[tuple[str, str, dict]]) -> None:
        """Register an app with its slots ``(slot, type, resources)`` in one transaction
        (every name checked against its grammar, ``warrants.names``; the secret sealed)."""
        names.check_app(name)
        names.check_codebase(codebase_sha)
        for slot, type_, _ in slots:
            names.check_slot(slot)
            names.check_type(type_)
        if self._sealer is not None:
            secret = self._sealer.seal(name, secret)
        with self._tx() as db:
            db.execute("INSERT INTO apps(name, descriptor, source, codebase_sha, state, secret, created)"
                       " VALUES(?,?,?,?,?,?,?)", (name, descriptor, source, codebase_sha, "running", secret, time.time()))
            for slot, type_, resources in slots:
                db.execute("INSERT INTO slots(app, slot, type, resources, state) VALUES(?,?,?,?,?)",
                           (name, slot, type_, json.dumps(resources), "pending"))

    def app_secret(self, name: str) -> bytes | None:
        """The app's secret in clear (None if no such app)."""
        row = self.app(name)
        if row is None:
            return None
        return self._sealer.open(name, row["secret"]) if self._sealer is not None else row["secret"]

    def _seal_plain_secrets(self) -> None:
        """Seal secrets a registry of an earlier version stored in clear (idempotent)."""
        with self._tx() as db:
            for row in db.execute("SELECT name, secret FROM apps").fetchall():
                if not self._sealer.is_sealed(row["secret"]):
                    db.execute("UPDATE apps SET secret=? WHERE name=?",
                               (self._sealer.seal(row["name"], row["secret"]), row["name"]))
        with self._lock:  # the old pages (clear secrets) leave the WAL too
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def app(self, name: str) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM apps WHERE name=?", name)
        return rows[0] if rows else None

    def apps(self) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM apps ORDER BY name")

    def set_app_state(self, name: str, state: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE apps SET state=? WHERE name=?", (state, name))

    def remove_app(self, name: str) -> None:
        """Forget an app, its slots and netlets (its events and epoch high-water mark stay)."""
        with self._tx() as db:
            for table in ("slots", "netlets"):
                db.execute(f"DELETE FROM {table} WHERE app=?", (name,))
            db.execute("DELETE FROM apps WHERE name=?", (name,))
            db.execute("UPDATE control SET state='{}' WHERE app=?", (name,))

    # -- uids/gids of confined apps and codebases (hosting.confine) ---------
    def allocate_id(self, owner: str, id_range: range, usable=lambda i: True) -> int:
        """``owner``'s id, allocating the lowest free one of ``id_range`` for which ``usable`` holds
        if it has none. Invariant: one owner per id, one id per owner (the table's keys)."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM ids WHERE owner=?", (owner,)).fetchone()
            if row is not None:
                return int(row["id"])
            taken = {r["id"] for r in db.execute("SELECT id FROM ids WHERE id>=? AND id<?",
                                                  (id_range.start, id_range.stop))}
            free = next((i for i in id_range if i not in taken and usable(i)), None)
            if free is None:
                raise RuntimeError(f"every id of {id_range.start}-{id_range.stop - 1} is in use")
            db.execute("INSERT INTO ids(id, owner) VALUES(?, ?)", (free, owner))
            return free

    def id_of(self, owner: str) -> int | None:
        rows = self._rows("SELECT id FROM ids WHERE owner=?", owner)
        return int(rows[0]["id"]) if rows else None

    def release_id(self, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM ids WHERE owner=?", (owner,))

    # -- slots ------------------------------------------------------------
    def slots(self, app: str) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM slots WHERE app=? ORDER BY type, slot", app)

    def slot(self, app: str, slot: str) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM slots WHERE app=? AND slot=?", app, slot)
        return rows[0] if rows else None

    def update_slot(self, app: str, slot: str, **fields: Any) -> None:
        if "resources" in fields:
            fields["resources"] = json.dumps(fields["resources"])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE slots SET {cols} WHERE app=? AND slot=?", (*fields.values(), app, slot))

    # -- netlets ----------------------------------------------------------
    def add_netlet(self, netlet_id: str, app: str, slot: str, incarnation: int, pid: int,
                   create_time: float, log_path: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO netlets(id, app, slot, incarnation, pid, create_time, started, state, log_path)"
                       " VALUES(?,?,?,?,?,?,?,?,?)",
                       (netlet_id, app, slot, incarnation, pid, create_time, time.time(), "starting", log_path))

    def netlet(self, netlet_id: str) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM netlets WHERE id=?", netlet_id)
        return rows[0] if rows else None

    def netlets(self, app: str | None = None, live_only: bool = False) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM netlets", []
        clauses = []
        if app is not None:
            clauses.append("app=?")
            args.append(app)
        if live_only:
            clauses.append("state IN ('starting', 'running', 'stopping')")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return self._rows(sql + " ORDER BY app, slot, incarnation", *args)

    def update_netlet(self, netlet_id: str, **fields: Any) -> None:
        if "status" in fields:
            fields["status"] = json.dumps(fields["status"])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE netlets SET {cols} WHERE id=?", (*fields.values(), netlet_id))

    # -- arbiter state (epochs, holder, in-sync set) --------------------
    def load_arbiter_state(self, app: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT epoch, state FROM control WHERE app=?", app)
        if not rows:
            return None
        state = json.loads(rows[0]["state"]) or {}
        state["epoch"] = rows[0]["epoch"]
        return state

    def save_arbiter_state(self, app: str, state: dict[str, Any]) -> None:
        """Persist an app's arbiter state; refuses to move its epoch backwards."""
        with self._tx() as db:
            row = db.execute("SELECT epoch FROM control WHERE app=?", (app,)).fetchone()
            if row is not None and row["epoch"] > state["epoch"]:
                raise ValueError(f"epoch of {app} would go back from {row['epoch']} to {state['epoch']}")
            db.execute("INSERT INTO control(app, epoch, state) VALUES(?,?,?) ON CONFLICT(app) DO UPDATE"
                       " SET epoch=excluded.epoch, state=excluded.state",
                       (app, state["epoch"], json.dumps(state, sort_keys=True)))


class RegistryEpochStore:
    """The arbiter's ``EpochStore`` on the registry (same transaction guarantees)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def load(self, app: str) -> dict | None:
        return self.registry.load_arbiter_state(app)

    def save(self, app: str, state: dict, owner_only: bool = False) -> None:
        self.registry.save_arbiter_state(app, state)  # one node: it owns every app


class _Transaction:
    """``with registry._tx() as db:`` — one IMMEDIATE transaction under the registry lock."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __enter__(self) -> sqlite3.Connection:
        self._registry._lock.acquire()
        try:
            self._registry._db.execute("BEGIN IMMEDIATE")  # "database is locked" after busy_timeout
        except BaseException:
            self._registry._lock.release()  # __exit__ does not run when __enter__ raises
            raise
        writing = self._registry._writing
        writing.depth = getattr(writing, "depth", 0) + 1
        return self._registry._db

    def __exit__(self, exc_type, exc, tb) -> None:
        self._registry._writing.depth -= 1
        try:
            self._registry._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._registry._lock.release()

