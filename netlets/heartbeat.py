"""Keeping a netlet's lease alive and its status published.

Contracts:
  * Renews every ``ttl/3`` while the node answers, publishing the latest
    status with each renewal (one RPC per period).
  * When the node is unreachable (it died or restarts) or refuses the renewal
    (e.g. another node now listens at that address), keeps retrying with
    jittered exponential backoff (tenacity, capped at ``ttl``), re-reading the
    node's address from its home; once no renewal has succeeded for
    ``orphan_timeout`` seconds it calls ``on_orphaned``. A restarted node
    re-adopts the netlet on its first successful renewal.
  * A ``control`` claim (the replicated master's epoch) rides on each renewal;
    ``control.renewed(sent_at, claim, answer)`` learns, with the monotonic time the
    renewal was *sent*, whether the control lease was renewed.
  * When the node answers that this netlet has no lease (it was declared dead
    and is being replaced), calls ``on_disowned`` at once: a netlet the node
    has given up must not keep running beside its replacement.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from hosting.client import HostingClient, NodeUnreachable
from hosting.timing import Timing
from warrants.errors import BadInput, NotFound

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, client: HostingClient, netlet_id: str, ttl: float, node_json: Path,
                 status: Callable[[], dict[str, Any]], on_disowned: Callable[[str], None],
                 on_orphaned: Callable[[str], None], orphan_timeout: float = 600.0, control=None) -> None:
        self.client = client
        self.netlet_id = netlet_id
        self.ttl = ttl
        self.timing = Timing(lease_ttl=ttl)
        self.node_json = Path(node_json)
        self.status = status
        self.on_disowned = on_disowned
        self.on_orphaned = on_orphaned
        self.orphan_timeout = orphan_timeout
        self.control = control
        self.last_ok_mono = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def poke(self) -> None:
        """Renew now (e.g. to publish an important status change at once)."""
        self._wake.set()

    def _renew_once(self) -> dict[str, Any]:
        claim = self.control.claim() if self.control is not None else None
        sent_at = time.monotonic()
        try:
            answer = self.client.call("renew", self.netlet_id, self.status(), claim)
            if self.control is not None:
                self.control.renewed(sent_at, claim, answer)
            return answer
        except NodeUnreachable:
            self._reresolve()
            raise

    def _reresolve(self) -> None:
        try:
            uri = json.loads(self.node_json.read_text()).get("uri")
        except (OSError, ValueError):
            return
        if uri and uri != self.client.uri:
            log.info("hosting node moved to %s", uri)
            self.client.uri = uri
            self.client.close()

    def _run(self) -> None:
        period = self.timing.heartbeat_s
        while not self._stop.is_set():
            started = time.monotonic()
            left = self.orphan_timeout - (started - self.last_ok_mono)
            try:
                for attempt in Retrying(retry=retry_if_exception_type(NodeUnreachable)
                                        | retry_if_exception_type(BadInput),
                                        wait=wait_exponential_jitter(multiplier=period / 2, max=self.ttl,
                                                                   jitter=period / 2),
                                        stop=stop_after_delay(max(0.0, left)), reraise=False):
                    with attempt:
                        if self._stop.is_set():
                            return
                        self._renew_once()
                self.last_ok_mono = started
            except RetryError as err:
                self.on_orphaned(f"no renewal accepted for {self.orphan_timeout:.0f}s "
                                 f"(last error: {err.last_attempt.exception()})")
                return
            except NotFound as err:
                self.on_disowned(str(err))
                return
            except Exception as err:  # a node bug: report, keep trying within the orphan timeout
                log.warning("lease renewal failed: %s", err)
                if time.monotonic() - self.last_ok_mono > self.orphan_timeout:
                    self.on_orphaned(f"no renewal accepted for {self.orphan_timeout:.0f}s (last error: {err})")
                    return
            self._wake.wait(max(0.0, period - (time.monotonic() - started)))
            self._wake.clear()
