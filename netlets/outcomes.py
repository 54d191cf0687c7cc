"""Call outcomes as plain dicts: how one call's result crosses a batch.

An outcome is ``{"ok": True, "value": v}`` or
``{"ok": False, "error": {"type", "message", "retryable"}}`` (the replication
core records command outcomes in this shape too, see
``netlets.replication.state``). ``retryable`` is true only for outcomes where
re-sending the same request id is safe and may succeed elsewhere (NotMaster).

Contracts:
  * ``capture(fn)`` never raises: every exception becomes an outcome, so one
    failing call in a batch cannot hide the others' results.
  * ``unwrap(capture(fn))`` raises what a direct call would have raised, as far
    as the caller can tell: NotMaster stays NotMaster, a jtrix error keeps its
    class (marked ``"jtrix": True``, so an app exception that happens to share
    a name is not mistaken for one), and the app's own exceptions become
    ``CommandFailed("Type: msg")``.
"""

from __future__ import annotations

from typing import Any, Callable

from netlets.replication.state import error, not_master, ok
from rpc.errors import CommandFailed, NotMaster
from warrants.errors import JtrixError


def _jtrix_errors() -> dict[str, type[JtrixError]]:
    found, todo = {}, [JtrixError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def capture(fn: Callable[[], Any]) -> dict:
    """Run ``fn`` and return its outcome (see the module contracts)."""
    try:
        return ok(fn())
    except NotMaster as err:
        return not_master(str(err))
    except JtrixError as err:  # CommandFailed's message is already "Type: message"
        outcome = error(type(err).__name__, str(err))
        outcome["error"]["jtrix"] = True
        return outcome
    except Exception as err:  # the app's own code raised
        return error(type(err).__name__, str(err))


def unwrap(outcome: dict) -> Any:
    """An outcome → the caller's result, or the exception a direct call raises."""
    if outcome.get("ok"):
        return outcome.get("value")
    err = outcome.get("error") or {}
    kind, message = err.get("type", "Error"), err.get("message", "")
    if err.get("retryable"):
        raise NotMaster(f"{kind}: {message}" if kind != "NotMaster" else message)
    cls = _JTRIX_ERRORS.get(kind) if err.get("jtrix") else None
    if cls is not None:
        raise cls(message)
    raise CommandFailed(f"{kind}: {message}")


_JTRIX_ERRORS = _jtrix_errors()
