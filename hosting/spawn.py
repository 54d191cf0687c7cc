"""Starting a netlet process (and other processes the node runs for an app).

Contract: the netlet runs ``<python> -m netlets.runner`` (exec, never a bare
fork) — or ``-m <module>`` for another node-started process such as an app's
bootstrap — as leader of a new session and process group, with the cwd and
environment chosen here, stdout+stderr appended to a fresh timestamped log
file of this run, and its secrets (warrant, key, app credential) written as
one JSON document on its stdin — never in argv or the environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The module a netlet process runs (``python -m``).
NETLET_MODULE = "netlets.runner"

#: Environment variables passed through from the node to netlets.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Spawned:
    pid: int
    popen: subprocess.Popen
    log_path: Path


def new_log_path(log_dir: Path, incarnation: int) -> Path:
    """A log file name that sorts by start time: ``<UTC stamp>-<incarnation>.log``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return log_dir / f"{stamp}-{incarnation}.log"


def spawn_netlet(*, cwd: Path, codebase_dir: Path, log_dir: Path, incarnation: int,
                 env_extra: dict[str, str], secrets: dict[str, Any], module: str = NETLET_MODULE) -> Spawned:
    """Start one netlet process (``python -m <module>``); returns once it exists (not once it is ready)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = new_log_path(log_dir, incarnation)
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.update(env_extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(codebase_dir)
    with open(log_path, "ab", buffering=0) as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    try:
        assert popen.stdin is not None
        popen.stdin.write(json.dumps(secrets).encode())
        popen.stdin.close()
    except BrokenPipeError:
        pass  # it died at once; the pid watcher reports the exit
    return Spawned(popen.pid, popen, log_path)
