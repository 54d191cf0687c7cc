"""Custom bootstraps: the code that starts an application.

A descriptor may name its own bootstrap class::

    <bootstrap class="mymodule:MyBootstrap"/>

The hosting node then runs that class, in a process of its own
(``python -m netlets.bootstrap_runner``, with the app's codebase on
``PYTHONPATH``), whenever the app is bootstrapped: at submit ("cold") and when
the app's master is lost with no live in-sync backup ("warm"). Without one the
node itself starts every slot, which is what :meth:`Bootstrap.run` does by
default.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from warrants.errors import JtrixError

#: Seconds between two status polls of :meth:`BootstrapContext.wait_running`.
POLL_INTERVAL_S = 0.05


class BootstrapFailed(JtrixError):
    """A slot the bootstrap waits for gave up (its restart policy is exhausted)."""


class Bootstrap:
    """Base class of an application's bootstrap; subclass it and override :meth:`run`.

    Contract:
      * The node creates the instance with no arguments and calls
        ``run(ctx)`` once per bootstrap, in a fresh process. ``run``
        returning means success (the process exits 0); ``run`` raising means
        failure (exit 1, the traceback goes to the bootstrap's log under
        ``logs/<app>/bootstrap/``). Either way the node records it
        (``bootstrap.finished`` / ``bootstrap.failed``) and never restarts it.
      * ``run`` decides which slots to start, in which order, and what to wait
        for between them, through ``ctx`` only (:class:`BootstrapContext`);
        a bootstrap never touches Pyro5 or warrants. Its authority is a
        node-issued warrant bound to this run and this instance of the
        app (``hosting.bindings``): ``run_netlet`` and ``status`` of this app,
        while the run is alive, for an hour at most: a bootstrap should finish
        well within that.
      * In "warm" mode some slots may still have live netlets, and the node
        keeps replacing dead ones while the bootstrap runs: start slots with
        ``ctx.start_if_missing(slot)`` (``run_netlet`` refuses a slot that
        already has a live netlet).
      * Netlets that die after the bootstrap started them are the node's
        business (it replaces them in their slot); the bootstrap does not
        supervise. Slots it never starts stay empty.
      * Terminating the app kills a running bootstrap (its whole process group).
    """

    def run(self, ctx: "BootstrapContext") -> None:
        """The default: start every slot that has no live netlet, in descriptor order; wait for none."""
        for slots in ctx.slots.values():
            for slot in slots:
                ctx.start_if_missing(slot)


class BootstrapContext:
    """What a bootstrap may see and do (built by ``netlets.bootstrap_runner``).

    Attributes: ``app`` (name), ``mode`` ("cold" | "warm"), ``slots`` (netlet
    type → its slots, in descriptor order) and ``log`` (a logger writing to the
    bootstrap's log file).
    """

    def __init__(self, app: str, mode: str, slots: dict[str, list[str]], call: Callable[..., Any],
                 log: logging.Logger | None = None) -> None:
        self.app = app
        self.mode = mode
        self.slots = {t: list(s) for t, s in slots.items()}
        self.log = log or logging.getLogger(f"bootstrap.{app}")
        self._call = call  # call(method, *args): the hosting API, authenticated by the runner

    def run_netlet(self, slot: str) -> str:
        """Start a netlet in ``slot`` now; returns its id (``app/slot#incarnation``).

        Returns once the process exists, not once it is ready (see
        :meth:`wait_running`). Raises ``NotFound`` for an unknown slot and
        ``JtrixError`` if the slot already has a live netlet or the app is
        terminating.
        """
        netlet_id = self._call("run_netlet", self.app, slot)
        self.log.info("started %s", netlet_id)
        return netlet_id

    def start_if_missing(self, slot: str) -> str | None:
        """Start a netlet in ``slot`` unless it has a live one; returns the new netlet's id, or None."""
        if self.is_live(slot):
            return None
        try:
            return self.run_netlet(slot)
        except JtrixError:
            if self.is_live(slot):  # the node replaced it meanwhile
                return None
            raise

    def status(self) -> dict[str, Any]:
        """The app's status, as ``jtrix status APP --json`` shows it (one app: name, state, master, netlets…)."""
        return self._call("status", self.app)["apps"][0]

    def netlet(self, slot: str) -> dict[str, Any]:
        """The status of one slot (its ``netlets`` entry in :meth:`status`); KeyError if unknown."""
        for view in self.status()["netlets"]:
            if view["slot"] == slot:
                return view
        raise KeyError(slot)

    def is_live(self, slot: str) -> bool:
        """True if ``slot`` has a live netlet (starting, running or stopping)."""
        return self.netlet(slot)["netlet"] is not None

    def wait_running(self, slots: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every one of ``slots`` has a netlet that is up (state and phase "running").

        Polls the node's status every ``POLL_INTERVAL_S`` until the deadline;
        returns each slot's status entry. Raises ``TimeoutError`` naming the
        slots still not running, and :class:`BootstrapFailed` at once if one of
        them gave up (state "failed").
        """
        wanted = list(slots)
        deadline = time.monotonic() + timeout
        while True:
            views = {v["slot"]: v for v in self.status()["netlets"]}
            unknown = [s for s in wanted if s not in views]
            if unknown:
                raise KeyError(f"app {self.app!r} has no slot {', '.join(unknown)}")
            failed = [s for s in wanted if views[s]["state"] == "failed"]
            if failed:
                raise BootstrapFailed(f"{', '.join(failed)} gave up (last exit: "
                                      f"{views[failed[0]].get('last_exit')})")
            pending = [s for s in wanted
                       if not (views[s]["state"] == "running" and views[s].get("phase") == "running")]
            if not pending:
                return {s: views[s] for s in wanted}
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{', '.join(pending)} not running after {timeout}s")
            time.sleep(min(POLL_INTERVAL_S, left))


__all__ = ["Bootstrap", "BootstrapContext", "BootstrapFailed", "POLL_INTERVAL_S"]
