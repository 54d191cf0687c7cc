"""Fail-stop: how a netlet that can no longer be trusted to run tells the node why, and ends.

Contract:
  * A replica whose storage failed (:class:`StorageFailed`: a write or fsync
    error) or whose state machine failed (:class:`SnapshotFailed`: the user's
    ``snapshot()`` raised) acknowledges nothing more: the caller has stopped
    every path into the replica before calling :func:`fail_stop`, which never
    returns.
  * The cause reaches the node as ``status["fault"]`` on one last renewal
    (best effort, bounded by ``REPORT_TIMEOUT_S``: the disk may be full, the
    node may be down) and as the exit code, which the supervisor maps to a
    policy: ``EXIT_STORAGE_FAILED`` is restarted with backoff and never given
    up on (a full disk heals); ``EXIT_CORRUPT`` is never restarted (the data
    must be rebuilt: ``jtrix reset``); ``EXIT_BROKEN`` is an ordinary failure.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NoReturn

from netlets.replication.state import SnapshotFailed
from netlets.replication.storage import CorruptStorage, StorageFailed

EXIT_CORRUPT = 65  # EX_DATAERR: the replica's storage is damaged; do not restart it
EXIT_BROKEN = 70  # EX_SOFTWARE: the netlet failed (the log says why)
EXIT_STORAGE_FAILED = 74  # EX_IOERR: a write or fsync failed; restart with backoff
REPORT_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


def fault_of(err: BaseException) -> tuple[int, dict[str, Any]]:
    """(exit code, fault record) for an error that ends the netlet."""
    if isinstance(err, CorruptStorage):
        return EXIT_CORRUPT, err.as_dict()
    if isinstance(err, StorageFailed):
        return EXIT_STORAGE_FAILED, err.as_dict()
    kind = "snapshot.error" if isinstance(err, SnapshotFailed) else "netlet.error"
    return EXIT_BROKEN, {"kind": kind, "error": f"{type(err).__name__}: {err}"}


def fail_stop(client, netlet_id: str, status: dict[str, Any], err: BaseException) -> NoReturn:
    """Report ``err`` to the node (``status`` plus ``fault``) and exit the process at once."""
    code, fault = fault_of(err)
    log.error("fail-stop (exit %d): %s", code, fault["error"], exc_info=err)
    try:
        client.call("renew", netlet_id, {**status, "fault": fault}, None, timeout=REPORT_TIMEOUT_S)
    except Exception as report_err:  # the node learns the exit code anyway
        log.warning("could not report the fault to the node: %s", report_err)
    logging.shutdown()
    os._exit(code)
