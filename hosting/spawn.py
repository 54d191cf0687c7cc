"""Starting a netlet process (and other processes the node runs for an app).

Contract: the netlet runs ``<python> -P -m netlets.runner`` (exec, never a bare
fork) — or ``-m <module>`` for another node-started process such as an app's
bootstrap — as leader of a new session and process group, with the cwd and
environment chosen here, umask 077, under the node's identity (the runner takes
the uid/gids of its :class:`~hosting.confine.Sandbox` itself, before any code of
the app runs: ``netlets.sandbox``), stdout+stderr appended to a fresh
timestamped log file of this run (opened by the node: the netlet writes it
through that descriptor only), and its secrets (warrant, key, app credential)
and sandbox written as one JSON document on its stdin — never in argv or the
environment. Nothing of the app is on the interpreter's path at start (no
``PYTHONPATH``, ``-P``: not even its cwd): the runner adds the codebase only
once it is confined (``netlets.sandbox``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hosting.confine import Sandbox

#: The module a netlet process runs (``python -m``).
NETLET_MODULE = "netlets.runner"

#: Environment variables passed through from the node to netlets (``PYTHONPATH``: the node's own
#: installation, chosen by its operator; the app's codebase is never on it at start).
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME", "VIRTUAL_ENV", "PYTHONPATH")


@dataclass(frozen=True)
class Spawned:
    pid: int
    popen: subprocess.Popen
    log_path: Path


def new_log_path(log_dir: Path, incarnation: int) -> Path:
    """A log file name that sorts by start time: ``<UTC stamp>-<incarnation>.log``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return log_dir / f"{stamp}-{incarnation}.log"


def spawn_app_process(*, cwd: Path, log_dir: Path, incarnation: int,
                       env_extra: dict[str, str], secrets: dict[str, Any], sandbox: "Sandbox",
                       module: str = NETLET_MODULE) -> Spawned:
    """Start one process the node runs for an app — a netlet (the default ``module``) or another
    such as its bootstrap (``python -m <module>``); returns once it exists (not once it is ready)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = new_log_path(log_dir, incarnation)
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.update(env_extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["TMPDIR"] = sandbox.spec["tmpdir"]
    secrets = {**secrets, "sandbox": sandbox.spec}
    with open(log_path, "ab", buffering=0) as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-P", "-m", module],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            close_fds=True,
            umask=0o077,
        )
    try:
        assert popen.stdin is not None
        popen.stdin.write(json.dumps(secrets).encode())
        popen.stdin.close()
    except BrokenPipeError:
        pass  # it died at once; the pid watcher reports the exit
    return Spawned(popen.pid, popen, log_path)
