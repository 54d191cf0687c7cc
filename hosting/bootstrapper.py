"""Running an app's custom bootstrap (descriptor ``<bootstrap class="module:Class"/>``).

When an app names a bootstrap class, bootstrapping it (cold at submit, warm
when its master is lost with no live in-sync backup) means starting one
bootstrap process that decides which slots to start, instead of the node
starting them all.

Contracts:
  * The process is started like a netlet (``hosting.spawn``: exec of
    ``python -m netlets.bootstrap_runner``, own session and process group, cwd
    ``apps/<app>``, the codebase on ``PYTHONPATH``, start document on stdin),
    with one log file per run under ``logs/<app>/bootstrap/``.
  * Its only authority is :func:`bootstrap_warrant`: node-issued,
    holder-bound to a fresh key, bound to this run and this instance of the
    app (``hosting.bindings``): it opens ``run_netlet`` and ``status`` of that
    app alone, and nothing once the run has exited (or the app was
    terminated); valid for an hour at most.
  * It is not a slot: no lease, no netlet record, not in the app's netlet
    list, never restarted. At most one runs per app; a bootstrap asked for
    while one runs is skipped (event ``bootstrap.skipped``).
  * Its exit is learned from its pidfd, on the supervisor's ``PidWatcher``
    (the one thread that learns netlets' deaths; no pid polling), and recorded
    as ``bootstrap.finished`` (exit code 0) or ``bootstrap.failed`` (any other
    exit code, a signal, or killed), with the log path.
    ``bootstrap.started`` (mode, pid) always comes first. These events are
    written through the supervisor's ``StoreRetry`` under the key
    ``(app, "bootstrap")``: in order, and never lost to a store outage.
  * A run follows the life of ``hosting.watched``: it is reserved under the
    lock (so it counts as running: no second one starts, a termination finds
    it) and spawned outside it, so the watcher thread, which takes the lock to
    handle a run's exit, never waits for a spawn (netlets' deaths are handled
    on that same thread, ``hosting.supervisor``); a run ended while it was
    being spawned is killed on arrival. No store is written under the lock.
  * :meth:`Bootstrapper.kill` (app termination) SIGKILLs its whole process
    group and waits for the pidfd to confirm (and the exit to be recorded).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import warrants
from hosting import bindings
from hosting.spawn import Spawned, spawn_app_process
from hosting.watched import arrived, end, gone

log = logging.getLogger(__name__)

BOOTSTRAP_MODULE = "netlets.bootstrap_runner"
LOG_NAME = "bootstrap"  # logs/<app>/bootstrap/, and the place of its events' store-retry key


def bootstrap_warrant(node, app: str, door: str) -> tuple[bytes, Any]:
    """The warrant of the bootstrap run ``door`` of ``app`` and its fresh holder key
    (``hosting.bindings.BOOTSTRAP``: ``run_netlet`` and ``status`` of this instance of ``app``,
    while this run lives)."""
    binding = bindings.bind(bindings.BOOTSTRAP, node.app_instance(app) or "", door)
    return bindings.issue(node.node_key, node.node_cert, node.service_id, binding)


class BootstrapNode(Protocol):
    """What the bootstrapper needs of its node (``hosting.node.Node``). Must hold:
      * ``door_of(door)`` opens the door of a run about to be spawned (its start document's
        ``node_door``), ``close_door(door)`` closes it once the run is gone.
      * ``app_instance(app)`` is the instance a bootstrap warrant binds to; ``node_key``,
        ``node_cert`` and ``service_id`` issue it; ``issue_tls`` gives the run its certificate
        (None: plain TCP); ``uri`` is where the run reaches the node.
      * ``supervisor`` confines the run as it confines the app's netlets; ``descriptor``
        raises NotFound for an unknown app.
    """

    node_key: Any
    node_cert: Any
    service_id: str
    uri: str | None
    home: Any  # hosting.home.Home
    registry: Any  # hosting.registry.Registry
    supervisor: Any  # hosting.supervisor.Supervisor
    codebases: Any  # hosting.codebases.CodebaseStore

    def descriptor(self, app: str) -> Any: ...

    def app_instance(self, app: str) -> str | None: ...

    def door_of(self, holder: str) -> dict[str, str]: ...

    def close_door(self, holder: str) -> None: ...

    def issue_tls(self, name: str) -> dict[str, str] | None: ...


@dataclass
class BootstrapRun:
    app: str
    mode: str
    door: str  # its door holder name (Node.door_of), unique to this run; its watcher key
    pid: int = 0  # 0 while it is being spawned (``hosting.watched``)
    popen: Any = None
    log_path: Path | None = None
    started_mono: float = 0.0  # when its process was spawned
    end_reason: str | None = None  # set when the node decided to end it
    done: threading.Event = field(default_factory=threading.Event)  # gone, and its end recorded


class Bootstrapper:
    """The custom bootstrap processes of every app on one node."""

    def __init__(self, node: BootstrapNode) -> None:
        self.node = node
        self.lock = threading.Lock()  # never held across a spawn or a store write (module docstring)
        self.runs: dict[str, BootstrapRun] = {}
        self.watcher = node.supervisor.watcher  # stopped with the supervisor
        self.retry = node.supervisor.retry

    def running(self, app: str) -> BootstrapRun | None:
        """The app's bootstrap run, if one runs or is being spawned."""
        with self.lock:
            return self.runs.get(app)

    def start(self, app: str, mode: str) -> int | None:
        """Start the app's bootstrap process; returns its pid (None if skipped: the app is
        terminating, or its last run still runs or is being spawned)."""
        node = self.node
        descriptor = node.descriptor(app)
        with self.lock:
            if node.supervisor.is_terminating(app):
                return None
            running = self.runs.get(app)
            if running is None:
                run = self.runs[app] = BootstrapRun(app, mode, door=f"{app}/bootstrap#{os.urandom(8).hex()}")
        if running is not None:
            what = f"pid {running.pid}" if running.pid else "being spawned"
            self._record(app, "bootstrap.skipped", mode=mode, reason=f"a bootstrap is still running ({what})")
            return None
        try:
            spawned = self._spawn(run, descriptor)
        except BaseException:
            with self.lock:  # nothing runs: the app may bootstrap again
                if self.runs.get(app) is run:
                    del self.runs[app]
                node.close_door(run.door)
            run.done.set()
            raise
        run.log_path, run.started_mono = spawned.log_path, time.monotonic()
        # Queued before it is watched, so before its end can be.
        self._record(app, "bootstrap.started", mode=mode, pid=spawned.pid, class_ref=descriptor.bootstrap_class,
                     log=str(spawned.log_path))
        with self.lock:
            arrived(self.watcher, run.door, run, spawned, on_exit=lambda key, status: self._on_exit(run, status))
        return spawned.pid

    def _spawn(self, run: BootstrapRun, descriptor) -> Spawned:
        """Fork ``run``'s process (its warrant, start document and sandbox first): the slow part,
        without the lock."""
        node, app = self.node, run.app
        warrant_xml, key = bootstrap_warrant(node, app, run.door)
        doc = {"node_uri": node.uri, "node_door": node.door_of(run.door),
               "service": node.service_id, "app": app, "mode": run.mode,
               "class_ref": descriptor.bootstrap_class,
               "slots": {t.name: list(t.slots) for t in descriptor.netlet_types},
               "warrant": warrant_xml.decode(), "key_pem": warrants.private_key_pem(key).decode(),
               "tls": node.issue_tls(f"bootstrap {app}")}
        cwd = node.home.app_dir(app)
        cwd.mkdir(parents=True, exist_ok=True)
        log_dir = node.home.log_dir(app, LOG_NAME)
        run_no = len(list(log_dir.glob("*.log"))) + 1 if log_dir.is_dir() else 1
        row = node.registry.app(app)
        sandbox = node.supervisor.confinement.prepare(app, node.codebases.dir_of(row["codebase_sha"]), cwd, [])
        return spawn_app_process(cwd=cwd, sandbox=sandbox, log_dir=log_dir, incarnation=run_no, module=BOOTSTRAP_MODULE,
                            env_extra={"JTRIX_APP": app, "JTRIX_BOOTSTRAP": run.mode}, secrets=doc)

    def kill(self, app: str, wait_s: float = 10.0) -> bool:
        """SIGKILL the app's running bootstrap (whole process group; one being spawned: on arrival);
        True once it is gone and its end recorded (or none ran)."""
        with self.lock:
            run = self.runs.get(app)
            if run is None:
                return True
            end(self.watcher, run.door, run, "terminated")
        return run.done.wait(wait_s)

    def _on_exit(self, run: BootstrapRun, status) -> None:
        """pidfd fired: the bootstrap is gone (runs on the watcher thread)."""
        with self.lock:
            if self.runs.get(run.app) is run:
                del self.runs[run.app]
            self.node.close_door(run.door)
        how = gone(run, status)
        ok = how.get("exit_code") == 0 and run.end_reason is None
        detail: dict[str, Any] = {"mode": run.mode, "pid": run.pid, **how, "log": str(run.log_path),
                                  "run_s": round(time.monotonic() - run.started_mono, 3)}
        if run.end_reason:
            detail["reason"] = run.end_reason
        self._record(run.app, "bootstrap.finished" if ok else "bootstrap.failed", **detail)
        self.retry.run((run.app, LOG_NAME), [run.done.set])  # after its end was recorded
        if not ok:
            log.warning("bootstrap of %s failed: %s (log %s)", run.app, how, run.log_path)

    def _record(self, app: str, kind: str, **detail: Any) -> None:
        """Record an event of the app's bootstrap, after every earlier one, through store outages."""
        self.retry.run((app, LOG_NAME), [lambda: self.node.registry.add_event(kind, app, None, **detail)])
