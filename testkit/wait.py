"""Waiting on an observable condition, bounded by a deadline (never a bare sleep).

A predicate is polled until it returns a truthy value, which is returned;
exceptions it raises count as "not yet" (the condition may not be observable
yet: a node still starting, a process mid-exec). :func:`poll` gives up with
``None``, :func:`wait_for` with an ``AssertionError`` naming what it waited for.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
         abort: threading.Event | None = None) -> Any:
    """``predicate``'s first truthy value within ``timeout`` s, or None (also once ``abort`` is set).

    The predicate is called at least once, even with ``timeout`` 0.
    """
    return _poll(predicate, timeout, interval, abort)[0]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """``predicate``'s first truthy value within ``timeout`` s; AssertionError (naming ``what`` and the
    predicate's last exception) otherwise."""
    value, last_err = _poll(predicate, timeout, interval, None)
    if value:
        return value
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))


def _poll(predicate, timeout, interval, abort) -> tuple[Any, Exception | None]:
    deadline = time.monotonic() + timeout
    last_err = None
    while True:
        try:
            value = predicate()
            if value:
                return value, None
        except Exception as err:  # the condition may not be observable yet
            last_err = err
        if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
            return None, last_err
        time.sleep(interval)
