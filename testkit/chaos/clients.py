"""The chaos run's load: client threads, each with its own access point, recording every call.

Operations are random get_latest / put / append / cas on a few keys with
globally unique values (``[client.counter]``), plus appends to "log" keys that
nothing ever overwrites (a new one every ``LOG_KEY_PERIOD_S``). A call's
outcome is ok, fail (CommandFailed: definitely not applied) or unknown
(anything else: it may or may not have taken effect).
"""

from __future__ import annotations

import collections
import random
import threading
import time
from pathlib import Path

from testkit.chaos import APP
from testkit.chaos.history import History

LOG_KEY_PERIOD_S = 10.0


class Clients:
    def __init__(self, n: int, seed: int, keys: int, homes: list[Path], history: History, timeout: float) -> None:
        """``homes``: the nodes whose access points clients use (client c starts with node c mod n
        and moves to the next when its node does not answer)."""
        self.n, self.seed, self.homes, self.history, self.timeout = n, seed, homes, history, timeout
        self.keys = [f"k{i}" for i in range(keys)]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c,), name=f"client-{c}", daemon=True)
                        for c in range(n)]
        self.reconnects = collections.Counter()
        self.refused = collections.Counter()
        self.in_flight: dict[int, tuple] = {}  # client -> (f, key, value, invoked) of its call in progress

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self, timeout: float) -> list[str]:
        """Stop and join; returns the names of threads still stuck in a call.

        A stuck call is recorded as of unknown outcome (it may still take
        effect), so the checks see its value as written by someone.
        """
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [c for c, t in enumerate(self.threads) if t.is_alive()]
        for c in stuck:
            pending = self.in_flight.pop(c, None)  # atomic: the call's own thread records it only if
            if pending is not None:                 # it pops it first
                f, key, value, invoked = pending
                self.history.record(c, f, key, value, invoked, time.monotonic(), None, "unknown",
                                    "still in progress when the run ended")
        return [self.threads[c].name for c in stuck]

    def _connect(self, c: int):
        import netlets

        home = self.homes[(c + self.reconnects[c] + self.refused[c]) % len(self.homes)]
        try:
            return netlets.connect(APP, home, timeout=self.timeout)
        except Exception:
            self.refused[c] += 1  # try the next node next time
            raise

    def _run(self, c: int) -> None:
        from hosting.client import NodeUnreachable
        from rpc.errors import CommandFailed
        from warrants.errors import NotFound

        rng = random.Random(f"{self.seed}/client/{c}")
        kv, counter = None, 0
        seen: dict[str, str | None] = {}  # the last value this client saw per key (for cas)
        while not self.stop.is_set():
            if kv is None:
                try:
                    kv = self._connect(c)
                except Exception:
                    self.stop.wait(rng.uniform(0.05, 0.2))  # the node is down: try again shortly
                    continue
                self.reconnects[c] += 1
            counter += 1
            token = f"[{c}.{counter}]"
            r = rng.random()
            if r < 0.2:  # the current append-only log key
                key = f"log{int((time.monotonic() - self.history.t0) // LOG_KEY_PERIOD_S)}"
                f = "append" if rng.random() < 0.85 else "get"
            else:
                key = rng.choice(self.keys)
                f = rng.choices(["get", "put", "append", "cas"], [35, 20, 20, 25])[0]
            if f == "get":
                value = None
            elif f == "cas":
                pick = rng.random()
                if pick < 0.7 and key in seen:
                    expected = seen[key]
                elif pick < 0.85 or not seen:
                    expected = None
                else:
                    expected = rng.choice([v for v in seen.values()] or [None])
                value = (expected, token)
            else:
                value = token
            call = time.monotonic()
            self.in_flight[c] = (f, key, value, call)
            try:
                if f == "get":
                    out = kv.get_latest(key)
                elif f == "put":
                    out = kv.put(key, token)
                elif f == "append":
                    out = kv.append(key, token)
                else:
                    out = kv.cas(key, value[0], token)
                typ, error = "ok", None
            except CommandFailed as err:
                out, typ, error = None, "fail", f"CommandFailed: {err}"
            except Exception as err:  # outcome unknown: it may or may not have taken effect
                out, typ, error = None, "unknown", f"{type(err).__name__}: {err}"[:300]
                if isinstance(err, (NotFound, NodeUnreachable)):  # the app or node was not found: re-read its address
                    kv = None
            ret = time.monotonic()
            if self.in_flight.pop(c, None) is None:
                break  # the run ended without us: finish() recorded this call as unknown
            self.history.record(c, f, key, value, call, ret, out, typ, error)
            if typ == "ok" and not key.startswith("log"):
                if f == "get":
                    seen[key] = out
                elif f == "put":
                    seen[key] = token
                elif f == "append":
                    seen[key] = out
                elif f == "cas" and out:
                    seen[key] = token
            elif typ == "unknown":
                self.stop.wait(rng.uniform(0.02, 0.1))  # pacing, so a long outage is not a flood of failures
