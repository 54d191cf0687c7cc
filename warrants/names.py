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
  * The typed ids (:class:`SlotId`, :class:`NetletId`, :class:`BootstrapRun`) are the only place
    an id is taken apart or put together: ``T.parse(str(x)) == x`` for every ``x`` that can be
    constructed (construction checks the grammar), ``str(T.parse(s)) == s`` for every ``s``
    ``parse`` accepts, and anything else is BadInput.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from warrants.errors import BadInput

APP_RE = re.compile(r"[a-z][a-z0-9_\-]{0,62}")
TYPE_RE = APP_RE  # a netlet type name (descriptor NameType)
SLOT_RE = re.compile(r"([a-z][a-z0-9_\-]{0,62})/(0|[1-9][0-9]?)")
#: ``<app>/<slot>#<incarnation>`` (:class:`NetletId`; the incarnation without leading zeros)
NETLET_ID_RE = re.compile(r"([a-z][a-z0-9_\-]{0,62})/([a-z][a-z0-9_\-]{0,62}/(?:0|[1-9][0-9]?))#(0|[1-9][0-9]{0,11})")
#: ``<app>/bootstrap#<run>``: a custom bootstrap run's process name (:class:`BootstrapRun`)
BOOTSTRAP_RUN_RE = re.compile(r"([a-z][a-z0-9_\-]{0,62})/bootstrap#([0-9a-f]{16})")
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
    return NetletId.parse(netlet_id).app


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"bad {what} ({type(value).__name__}): expected an integer")
    return value


@dataclass(frozen=True, order=True)
class SlotId:
    """A slot of an app: the ``index``-th replica of netlet type ``type``; ``str()`` is the
    ``TYPE/INDEX`` every table, key and message carries. Checked at construction."""

    type: str
    index: int

    def __post_init__(self) -> None:
        check_type(self.type)
        check_slot(f"{self.type}/{_int(self.index, 'slot index')}")

    @classmethod
    def parse(cls, text) -> SlotId:
        """``TYPE/INDEX`` (``check_slot``'s grammar) → SlotId; BadInput otherwise."""
        m = SLOT_RE.fullmatch(check_slot(text))
        return cls(m.group(1), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.type}/{self.index}"


@dataclass(frozen=True, order=True)
class NetletId:
    """One process of a slot: ``APP/TYPE/INDEX#INCARNATION``, never reused within an app
    instance (the incarnation counts the slot's starts). Checked at construction."""

    app: str
    type: str
    index: int
    incarnation: int

    def __post_init__(self) -> None:
        check_app(self.app)
        SlotId(self.type, self.index)
        _int(self.incarnation, "incarnation")
        _check(str(self), NETLET_ID_RE, "netlet id", "APP/TYPE/INDEX#N")

    @classmethod
    def of(cls, app: str, slot: str, incarnation: int) -> NetletId:
        """The ``incarnation``-th process of ``slot`` (``TYPE/INDEX``) of ``app``."""
        s = SlotId.parse(slot)
        return cls(app, s.type, s.index, incarnation)

    @classmethod
    def parse(cls, text) -> NetletId:
        """``APP/TYPE/INDEX#N`` → NetletId; BadInput otherwise."""
        m = NETLET_ID_RE.fullmatch(_check(text, NETLET_ID_RE, "netlet id", "APP/TYPE/INDEX#N"))
        return cls.of(m.group(1), m.group(2), int(m.group(3)))

    @property
    def slot(self) -> str:
        """``TYPE/INDEX``, as slots are keyed everywhere."""
        return f"{self.type}/{self.index}"

    @property
    def place(self) -> str:
        """``APP/TYPE/INDEX``: what one process at a time occupies (``hosting.node``'s doors)."""
        return f"{self.app}/{self.slot}"

    def __str__(self) -> str:
        return f"{self.place}#{self.incarnation}"


@dataclass(frozen=True, order=True)
class BootstrapRun:
    """One run of an app's custom bootstrap: ``APP/bootstrap#RUN`` (``RUN``: 16 hex digits,
    random). Checked at construction."""

    app: str
    run: str

    def __post_init__(self) -> None:
        check_app(self.app)
        if not isinstance(self.run, str):
            raise BadInput(f"bad bootstrap run ({type(self.run).__name__}): expected 16 hex digits")
        _check(str(self), BOOTSTRAP_RUN_RE, "bootstrap run", "APP/bootstrap#RUN")

    @classmethod
    def parse(cls, text) -> BootstrapRun:
        m = BOOTSTRAP_RUN_RE.fullmatch(_check(text, BOOTSTRAP_RUN_RE, "bootstrap run", "APP/bootstrap#RUN"))
        return cls(m.group(1), m.group(2))

    @property
    def place(self) -> str:
        """``APP/bootstrap``: one run at a time."""
        return f"{self.app}/{BOOTSTRAP_SLOT}"

    def __str__(self) -> str:
        return f"{self.place}#{self.run}"


def process_of(name) -> NetletId | BootstrapRun:
    """The process a node-started process's name names (a netlet or a bootstrap run); BadInput
    for anything else."""
    if isinstance(name, str) and BOOTSTRAP_RUN_RE.fullmatch(name):
        return BootstrapRun.parse(name)
    try:
        return NetletId.parse(name)
    except BadInput:
        raise BadInput(f"bad process name {str(name)[:80]!r}: expected APP/TYPE/INDEX#N or APP/bootstrap#RUN") from None


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
