"""The ``Netlet`` base class users subclass, and the exposure decorators.

A replicated netlet is a deterministic state machine (``apply``, ``snapshot``,
``restore``) plus methods exposed to clients with one of three decorators that
say where they run:

* :func:`command` — runs on the master with the caller's arguments. It
  validates them (an exception it raises goes back to the caller and nothing is
  replicated) and RETURNS the command value (msgpack-able) to replicate. The
  framework appends it to the log, commits it per the ack policy, applies it
  with ``apply(command)`` on every replica, and returns ``apply``'s result (or
  its exception) to the caller. A retried call with the same request id gets
  the recorded result; it is never applied twice.
* :func:`query` — may run on any replica. Sees committed state only (possibly
  stale, never uncommitted). Must not modify state.
* :func:`master_query` — runs only on the master and is answered only while the
  master's lease is provably valid on its own monotonic clock (linearizable).
  Must not modify state.

A netlet without any ``@command`` is a plain supervised worker: it needs no
``apply``/``snapshot``/``restore``.

Definition-time rules (violations raise ``TypeError`` when the class is
defined): exposed names are public (no leading ``_``); they do not shadow a
framework name (anything defined on :class:`Netlet`); a class exposing any
``@command`` overrides ``apply``, ``snapshot`` and ``restore``; a name is
exposed at most once (one decorator).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

COMMAND = "command"
QUERY = "query"
MASTER_QUERY = "master_query"
KINDS = (COMMAND, QUERY, MASTER_QUERY)
_ATTR = "__jtrix_expose__"


def _mark(kind: str) -> Callable:
    def decorator(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"@{kind} applies to methods, not {type(fn).__name__}")
        if getattr(fn, _ATTR, None) not in (None, kind):
            raise TypeError(f"{fn.__name__}: exposed twice (@{getattr(fn, _ATTR)} and @{kind})")
        setattr(fn, _ATTR, kind)
        return fn

    decorator.__name__ = kind
    return decorator


command = _mark(COMMAND)
command.__doc__ = "Expose a master-only command; the method returns the command to replicate."
query = _mark(QUERY)
query.__doc__ = "Expose a read-only query that any replica may answer (possibly stale)."
master_query = _mark(MASTER_QUERY)
master_query.__doc__ = "Expose a read-only query answered only by the leased master (linearizable)."


class Netlet:
    """Base class of every netlet. See the module docstring for the rules.

    Set by the runner before :meth:`on_started` (do not assign them yourself):
    ``app`` (app name), ``slot`` (e.g. ``"store/0"``), ``config`` (dict of the
    descriptor's params, str → str), ``resources`` (name → ``pathlib.Path`` for
    directories, ``int`` for ports), ``log`` (a ``logging.Logger``).
    """

    app: str
    slot: str
    config: dict[str, str]
    resources: dict[str, Path | int]
    log: logging.Logger

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        exposed = exposed_methods(cls)
        framework = set(_FRAMEWORK_NAMES)
        for name, kind in exposed.items():
            if name.startswith("_"):
                raise TypeError(f"{cls.__qualname__}.{name}: exposed names must be public "
                                f"(no leading underscore)")
            if name in framework:
                raise TypeError(f"{cls.__qualname__}.{name}: @{kind} must not shadow the "
                                f"framework name {name!r}")
        if COMMAND in exposed.values():
            missing = [m for m in ("apply", "snapshot", "restore")
                       if getattr(cls, m) is getattr(Netlet, m)]
            if missing:
                raise TypeError(f"{cls.__qualname__} has @command methods but does not "
                                f"override {', '.join(missing)}")
        for name in framework:
            val = cls.__dict__.get(name)
            if val is not None and getattr(val, _ATTR, None):
                raise TypeError(f"{cls.__qualname__}.{name}: framework methods cannot be exposed")

    # --- state machine ------------------------------------------------------
    def apply(self, command: Any) -> Any:
        """Apply one committed command; return the caller's result.

        Called in log order on every replica, with exactly the value a
        ``@command`` method returned. Must be deterministic (same state + same
        command → same new state and result on every replica: no clocks,
        randomness, I/O or dict-order surprises). An exception raised here is
        recorded as the caller's result; the state must then be unchanged or
        changed deterministically. The result must be msgpack-able.
        """
        raise NotImplementedError(f"{type(self).__name__} has no replicated state")

    def snapshot(self) -> Any:
        """Return the whole replicated state as bytes or a msgpack-able value.

        Must be quick (it runs on the replication path, every ``snapshot_every``
        entries) and must not include anything ``restore`` does not need.
        """
        raise NotImplementedError(f"{type(self).__name__} has no replicated state")

    def restore(self, snapshot: Any) -> None:
        """Replace ALL replicated state with ``snapshot`` (from :meth:`snapshot`).

        Previous state is discarded, not merged.
        """
        raise NotImplementedError(f"{type(self).__name__} has no replicated state")

    # --- hooks (no-ops by default) -----------------------------------------
    def on_started(self, inherited: dict[str, bool]) -> None:
        """Called once after start; ``inherited[name]`` is True for a directory
        resource that already held data (a replacement bound to its slot's
        resources), False when it was created fresh. Replicated state is
        already restored from storage when this runs."""

    def on_master(self, epoch: int) -> None:
        """Called when this replica became master with fencing token ``epoch``.

        Commands may arrive from now on; do not block."""

    def on_backup(self, master_slot: str) -> None:
        """Called when this replica follows (a new) master ``master_slot``."""

    def on_stopping(self) -> None:
        """Called once before the process exits normally (SIGTERM / terminate)."""

    # --- status -------------------------------------------------------------
    def publish(self, **values: Any) -> None:
        """Publish key/values in this netlet's status on the hosting node.

        Values must be msgpack-able; they are merged into what was published
        before, sent with the next lease renewal (within TTL/3) and shown under
        ``app_status`` by ``jtrix status --json``. Not replicated, not durable:
        for operators and launchers, not for application state.
        """
        published = self.__dict__.setdefault("_jtrix_published", {})
        published.update(values)


_FRAMEWORK_NAMES = frozenset(
    n for n in dir(Netlet) if not (n.startswith("__") and n.endswith("__"))
) | {"app", "slot", "config", "resources", "log"}


def exposed_methods(cls: type) -> dict[str, str]:
    """``{name: kind}`` of every exposed method of ``cls`` (kind in :data:`KINDS`)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name, val in vars(klass).items():
            fn = val.__func__ if isinstance(val, (staticmethod, classmethod)) else val
            kind = getattr(fn, _ATTR, None)
            if kind in KINDS:
                out[name] = kind
            elif name in out:
                del out[name]  # overridden by an undecorated attribute
    return out


def is_replicated(cls: type) -> bool:
    """True if ``cls`` exposes any ``@command`` (needs the replication core)."""
    return COMMAND in exposed_methods(cls).values()
