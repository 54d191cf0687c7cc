"""The kvstore's history under failures is linearizable (checked, not assumed).

Clients run random put / append / get_latest on a few keys while the test
SIGKILLs the master and later SIGSTOPs (then SIGCONTs) the next one. Every call
is recorded with its invoke and return times; a call that failed or timed out
has an unknown outcome (it may or may not have taken effect). The history is
then checked with the linearizability checker validated in
test_linearizability_checker.py; its kv model also checks the new value each
``append`` returns. ``get`` (any replica, possibly stale) is not
recorded: only the operations that promise linearizability are checked.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time

import netlets
from testkit.kvstore import launch_kvstore, wait_master
from testkit.linearizability import Operation, check, kv_model, save_history
from testkit.node import master_of
from testkit.wait import wait_for

KEYS = ["a", "b", "c"]


class Recorder:
    def __init__(self, clients: int) -> None:
        self.ops: list[Operation] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(clients)]

    def _client(self, c: int) -> None:
        rng = random.Random(c)
        kv = netlets.connect("kvstore", timeout=20)
        i = 0
        while not self.stop.is_set():
            key, i = rng.choice(KEYS), i + 1
            f = rng.choice(["put", "append", "get", "get"])
            value = f"[{c}.{i}]"
            call = time.monotonic() - self.t0
            try:
                if f == "put":
                    kv.put(key, value)
                    out = None
                elif f == "append":
                    out = kv.append(key, value)
                else:
                    out = kv.get_latest(key) or ""
                ret = time.monotonic() - self.t0
            except Exception:
                out, ret = None, math.inf  # unknown outcome
            with self.lock:
                self.ops.append(Operation(c, call, ret, (f, key, None if f == "get" else value), out))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self) -> int:
        with self.lock:
            return len(self.ops)


def test_history_across_sigkill_and_sigstop_of_masters_is_linearizable(node, tmp_path):
    launch_kvstore(node, tmp_path, ttl=0.6)
    with Recorder(clients=4) as rec:
        wait_for(lambda: rec.count() > 150, 20, "some operations")
        first = node.app("kvstore")
        os.kill(master_of(first)["pid"], signal.SIGKILL)
        second = wait_master(node, above_epoch=first["epoch"])
        n = rec.count()
        wait_for(lambda: rec.count() > n + 150, 20, "operations after the first failover")
        wait_for(lambda: all(x["role"] in ("master", "backup") for x in node.app("kvstore")["netlets"]), 20,
                 "the refilled slot to rejoin")
        paused = master_of(node.app("kvstore"))["pid"]
        os.kill(paused, signal.SIGSTOP)
        try:
            wait_master(node, above_epoch=second["epoch"], timeout=10)
        finally:
            try:
                os.kill(paused, signal.SIGCONT)
            except ProcessLookupError:
                pass
        n = rec.count()
        wait_for(lambda: rec.count() > n + 150, 20, "operations after the second failover")
    ops = rec.ops
    unknown = sum(1 for o in ops if o.ret == math.inf)
    assert len(ops) > 450
    verdict = check(kv_model(), ops, timeout=120)
    if verdict != "ok":
        save_history(tmp_path / "history.jsonl", ops)  # the evidence, for load_history
    assert verdict == "ok", f"history of {len(ops)} operations ({unknown} with unknown outcome) is {verdict}; " \
        f"saved to {tmp_path / 'history.jsonl'}"
