"""The grammar of every name that becomes part of a path: apps, netlet types, slots, codebase
ids, log files — checked here, in one place, by the API, the registry, the supervisor and the CLI.

Contracts:
  * A name accepted by a ``check_*`` function contains no ``/`` (slots: exactly one, between
    a type and an index), no ``..``, no NUL, nothing but the characters its grammar lists;
    anything else is :class:`~warrants.errors.BadInput` naming the grammar.
  * :func:`under` returns a path that, after resolving every symbolic link, is ``root`` or
    inside it — or raises. Checking the grammar is the first line; ``under`` is the second
    (a link planted inside the tree cannot lead a reader out of it).
  * The grammars match the descriptor schema (``AppNameType``, ``NameType``, ``Sha256Type``,
    ``ReplicasType`` ≤ 64) and the log file names ``hosting.spawn`` writes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from warrants.errors import BadInput

APP_RE = re.compile(r"[a-z][a-z0-9_\-]{0,62}")
TYPE_RE = APP_RE  # a netlet type name (descriptor NameType)
SLOT_RE = re.compile(r"([a-z][a-z0-9_\-]{0,62})/(0|[1-9][0-9]?)")
#: ``<app>/<slot>#<incarnation>`` (``hosting.supervisor.netlet_id_of``)
NETLET_ID_RE = re.compile(r"([a-z][a-z0-9_\-]{0,62})/([a-z][a-z0-9_\-]{0,62}/(?:0|[1-9][0-9]?))#([0-9]{1,12})")
CODEBASE_RE = re.compile(r"[0-9a-f]{64}")
#: ``<UTC stamp>-<incarnation>.log`` (``hosting.spawn.new_log_path``)
LOG_FILE_RE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9]{1,12}\.log")
#: the pseudo-slot whose logs are a custom bootstrap's (``logs/<app>/bootstrap/``)
BOOTSTRAP_SLOT = "bootstrap"


def _check(value, pattern: re.Pattern, what: str, grammar: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 80 else f"({type(value).__name__})"
        raise BadInput(f"bad {what} {shown}: expected {grammar}")
    return value


def check_app(name) -> str:
    return _check(name, APP_RE, "app name", "[a-z][a-z0-9_-]{0,62}")


def check_type(name) -> str:
    return _check(name, TYPE_RE, "netlet type", "[a-z][a-z0-9_-]{0,62}")


def check_slot(name, allow_bootstrap: bool = False) -> str:
    """``TYPE/INDEX`` (index 0..99 without leading zeros); ``bootstrap`` too if allowed."""
    if allow_bootstrap and name == BOOTSTRAP_SLOT:
        return name
    return _check(name, SLOT_RE, "slot", "TYPE/INDEX, e.g. store/0")


def netlet_app(netlet_id) -> str:
    """The app a netlet id names; BadInput unless it is ``<app>/<slot>#<incarnation>``."""
    return NETLET_ID_RE.fullmatch(_check(netlet_id, NETLET_ID_RE, "netlet id", "APP/TYPE/INDEX#N")).group(1)


def check_codebase(sha) -> str:
    return _check(sha, CODEBASE_RE, "codebase id", "64 lowercase hex digits (its sha256)")


def check_log_file(name) -> str:
    return _check(name, LOG_FILE_RE, "log file name", "<stamp>-<incarnation>.log")


def under(root: Path, *parts: str) -> Path:
    """``root/parts...``, refused unless it resolves (links followed) to ``root`` or below it."""
    real_root = Path(os.path.realpath(root))
    path = Path(root).joinpath(*parts)
    real = Path(os.path.realpath(path))
    if real != real_root and not real.is_relative_to(real_root):
        raise BadInput(f"path {'/'.join(parts)!r} leads outside {root}")
    return path
