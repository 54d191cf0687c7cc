"""Which master of each app has completed its promotion in this run of the node.

An access point that lost its master asks for the next one (``Node.app_access``); it must
learn of it the moment that master can serve, not when some unrelated event happens.

Contracts:
  * ``record(app, epoch)`` is called once the master at ``epoch`` is promoted (the elector's
    ``won``) or re-adopted as already promoted (``Node.recover_control``), before the event
    that announces it; it wakes every ``wait_beyond`` of ``app`` at once.
  * ``wait_beyond`` returns as soon as a promotion above ``after_epoch`` is recorded, or after
    ``timeout`` seconds, whichever comes first; it depends on nothing but ``record``.
  * Nothing counts as promoted before this run recorded it (a node restart forgets).
"""

from __future__ import annotations

import threading


class Promotions:
    """Thread-safe; one condition variable of its own."""

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}
        self._changed = threading.Condition()

    def record(self, app: str, epoch: int) -> None:
        with self._changed:
            self._epochs[app] = epoch
            self._changed.notify_all()

    def recorded_at_least(self, app: str, epoch: int) -> bool:
        """Whether a promotion of ``app`` at ``epoch`` or later was recorded in this run."""
        with self._changed:
            return self._epochs.get(app, 0) >= epoch

    def completed(self, app: str, epoch: int) -> bool:
        """Whether the master at ``epoch`` counts as promoted: none other was recorded for ``app``
        since this run began, or the last one recorded is at ``epoch``."""
        with self._changed:
            return self._epochs.get(app, epoch) == epoch

    def wait_beyond(self, app: str, after_epoch: int, timeout: float) -> bool:
        """True once a promotion of ``app`` above ``after_epoch`` is recorded (at most ``timeout``
        seconds from now); False if none was by then."""
        with self._changed:
            return self._changed.wait_for(lambda: self._epochs.get(app, 0) > after_epoch, timeout)
