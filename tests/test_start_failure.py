"""A slot start that fails for another reason than the store is retried like a crash (safety review S3).

Found by the outside safety review: ``_start_queued`` caught only store errors;
a spawn's ``OSError`` (EMFILE here; ENOSPC creating the log file, fork's EAGAIN
alike) was only logged, no restart timer remained, and the app never elected
again (a warm start waits for every slot). A real node whose open-file limit is
cut to what it holds while every replica is SIGKILLed.
"""

from __future__ import annotations

import os
import resource
import signal
import time

from testkit.kvstore import launch_kvstore, wait_master
from testkit.node import events_of

FAULT_S = 2.0  # how long the node cannot open a file: the fault under test, not a synchronisation


def test_slots_whose_start_failed_are_restarted_and_the_app_elects_again(node, tmp_path):
    launch_kvstore(node, tmp_path)
    before = node.app("kvstore")
    node_pid = node.info["pid"]
    limit = resource.prlimit(node_pid, resource.RLIMIT_NOFILE)
    open_fds = len(os.listdir(f"/proc/{node_pid}/fd"))
    resource.prlimit(node_pid, resource.RLIMIT_NOFILE, (open_fds, limit[1]))
    try:
        for n in before["netlets"]:
            os.kill(n["pid"], signal.SIGKILL)
        time.sleep(FAULT_S)
    finally:
        resource.prlimit(node_pid, resource.RLIMIT_NOFILE, limit)
    wait_master(node, above_epoch=before["epoch"], timeout=45)
    failed = events_of(node, "slot.start_failed", "kvstore")
    assert failed and "Errno 24" in failed[0]["detail"]["error"], failed
    node.wait_running("kvstore", timeout=30)
