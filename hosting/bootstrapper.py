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
  * Its exit is learned from its pidfd (a dedicated ``PidWatcher``, no pid
    polling) and recorded as ``bootstrap.finished`` (exit code 0) or
    ``bootstrap.failed`` (any other exit code, a signal, or killed), with the
    log path. ``bootstrap.started`` (mode, pid) always comes first.
  * :meth:`Bootstrapper.kill` (app termination) SIGKILLs its whole process
    group and waits for the pidfd to confirm.
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
from hosting.pidwatch import PidWatcher, ProcessGone, describe_status, mark_reaped
from hosting.spawn import spawn_app_process

log = logging.getLogger(__name__)

BOOTSTRAP_MODULE = "netlets.bootstrap_runner"
LOG_NAME = "bootstrap"  # logs/<app>/bootstrap/


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
    pid: int
    popen: Any
    log_path: Path
    started_mono: float
    end_reason: str | None = None  # set when the node decided to end it
    door: str = ""  # its door holder name (Node.door_of), unique to this run
    done: threading.Event = field(default_factory=threading.Event)


class Bootstrapper:
    """The custom bootstrap processes of every app on one node."""

    def __init__(self, node: BootstrapNode) -> None:
        self.node = node
        self.lock = threading.Lock()
        self.runs: dict[str, BootstrapRun] = {}
        self.watcher = PidWatcher(self._on_exit)

    def running(self, app: str) -> BootstrapRun | None:
        with self.lock:
            return self.runs.get(app)

    def start(self, app: str, mode: str) -> int | None:
        """Start the app's bootstrap process; returns its pid (None if skipped)."""
        node = self.node
        descriptor = node.descriptor(app)
        with self.lock:
            if node.supervisor.is_terminating(app):
                return None
            if app in self.runs:
                node.registry.add_event("bootstrap.skipped", app, None, mode=mode,
                                        reason=f"a bootstrap is still running (pid {self.runs[app].pid})")
                return None
            door = f"{app}/bootstrap#{os.urandom(8).hex()}"
            warrant_xml, key = bootstrap_warrant(node, app, door)
            doc = {"node_uri": node.uri, "node_door": node.door_of(door),
                   "service": node.service_id, "app": app, "mode": mode,
                   "class_ref": descriptor.bootstrap_class,
                   "slots": {t.name: list(t.slots) for t in descriptor.netlet_types},
                   "warrant": warrant_xml.decode(), "key_pem": warrants.private_key_pem(key).decode(),
                   "tls": node.issue_tls(f"bootstrap {app}")}
            cwd = node.home.app_dir(app)
            cwd.mkdir(parents=True, exist_ok=True)
            log_dir = node.home.log_dir(app, LOG_NAME)
            run_no = len(list(log_dir.glob("*.log"))) + 1 if log_dir.is_dir() else 1
            row = node.registry.app(app)
            sandbox = node.supervisor.confinement.prepare(app, node.codebases.dir_of(row["codebase_sha"]),
                                                          cwd, [])
            spawned = spawn_app_process(cwd=cwd, sandbox=sandbox,
                                         log_dir=log_dir, incarnation=run_no, module=BOOTSTRAP_MODULE,
                                         env_extra={"JTRIX_APP": app, "JTRIX_BOOTSTRAP": mode}, secrets=doc)
            run = BootstrapRun(app, mode, spawned.pid, spawned.popen, spawned.log_path, time.monotonic(),
                               door=door)
            self.runs[app] = run
            try:
                self.watcher.watch(app, spawned.pid, is_child=True)
            except ProcessGone:
                pass  # cannot happen for an unreaped child
            node.registry.add_event("bootstrap.started", app, None, mode=mode, pid=spawned.pid,
                                    class_ref=descriptor.bootstrap_class, log=str(spawned.log_path))
            return spawned.pid

    def kill(self, app: str, wait_s: float = 10.0) -> bool:
        """SIGKILL the app's running bootstrap (whole process group); True once it is gone (or none ran)."""
        with self.lock:
            run = self.runs.get(app)
            if run is None:
                return True
            run.end_reason = run.end_reason or "terminated"
        self.watcher.signal_group(app, signal.SIGKILL)
        return run.done.wait(wait_s)

    def _on_exit(self, app: str, status) -> None:
        """pidfd fired: the bootstrap is gone (runs on the watcher thread)."""
        with self.lock:
            run = self.runs.pop(app, None)
            if run is None:
                return
            self.node.close_door(run.door)
            mark_reaped(run.popen, status)
            how = describe_status(status)
            ok = how.get("exit_code") == 0 and run.end_reason is None
            detail: dict[str, Any] = {"mode": run.mode, "pid": run.pid, **how, "log": str(run.log_path),
                                      "run_s": round(time.monotonic() - run.started_mono, 3)}
            if run.end_reason:
                detail["reason"] = run.end_reason
            self.node.registry.add_event("bootstrap.finished" if ok else "bootstrap.failed", app, None, **detail)
            run.done.set()
        if not ok:
            log.warning("bootstrap of %s failed: %s (log %s)", app, how, run.log_path)

    def shutdown(self) -> None:
        """Stop watching; a running bootstrap keeps running (it is not re-adopted by the next node)."""
        self.watcher.stop()
