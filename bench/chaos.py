"""Chaos: examples/kvstore under random faults, checked for what jtrix promises.

    bench/run.sh chaos --duration 600 --clients 8 --seed 1
    .venv/bin/python bench/chaos.py --duration 120 --schedule all

A fresh temporary ``JTRIX_HOME`` with its own hosting node runs kvstore (3
replicas, ack=all, durability fsync, lease TTL 1 s). ``--clients`` threads, each
with its own access point (``netlets.connect``: its own request ids, retries
and connections, so one client's trouble -- say, a node that is down while it
re-resolves the master -- is not every client's), run random get_latest / put /
append / cas on a few keys with globally unique values (``[client.counter]``),
plus appends to "log" keys that nothing ever overwrites (a new one every 10 s,
so values stay small). Every call is recorded with monotonic invoke and return
times as ok / fail (CommandFailed: definitely not applied) / unknown (anything
else: a timeout, a lost connection, NotMaster after the access point's retries,
an unreachable node -- it may or may not have taken effect; ret = inf).

A nemesis thread (seeded by ``--seed``) injects a fault every ~``--fault-interval``
seconds, then waits (polling, 60 s deadline) until the app is healthy again:
"serving" (a master, every slot running as master or backup, the fault's victims
gone from the status) and then "in sync" (every slot back in the in-sync set:
full redundancy, as the e2e tests expect of a refilled slot). A fault that does
not heal in time is a violation ("did not recover"); the run goes on:

    kill-master    SIGKILL the master
    kill-backup    SIGKILL a backup
    pause-master   SIGSTOP the master for 0.5-3 s, then SIGCONT (the node usually
                   kills it on lease expiry first; a dead pid is fine)
    kill-node      SIGKILL the hosting daemon, leave it down 0.5-3 s, restart it
                   on the same home (netlets keep running and re-attach)
    kill-all       SIGKILL every replica at once (warm start)
    delay-arbiter  SIGSTOP a backup for 0.5-3 s and, while it is stopped, the hosting
                   daemon for 0.2-3 s: the master's in-sync-set requests (shrink
                   the stalled backup, expand it again) and its lease renewals are
                   answered late, in whatever order the node resumes them

``--schedule all`` cycles through the kinds in that order instead of drawing them.

``--cluster N`` (N >= 2) runs the app on N hosting nodes joined on a private
etcd instead (one replica per node), clients spread over the nodes' access
points, ``kill-node`` hits a random node, and two machine faults join in:

    kill-machine   SIGKILL a node and every netlet on it, leave it down 0.5-3 s,
                   restart it (it rejoins empty; its slots were re-created elsewhere)
    pause-machine  SIGSTOP a node's daemon past its membership lease (3.5-5 s),
                   then SIGCONT (it finds itself fenced and kills its netlets)

At the end: stop the nemesis, wait for health, stop the clients, read every key
with get_latest (recorded too), then report and check:

* lost acknowledged writes: an acknowledged append's token must be in its key's
  final value exactly once unless a put / cas that may be linearized after it
  could have overwritten it (never, on log keys); a token twice anywhere is a
  duplicate application; a token in a final value that no write to that key
  carried is a phantom;
* double masters: epoch -> the netlets that acted as master at it, from the
  node's events (control.granted / control.readopted) and from the netlets'
  own logs ("now master at epoch N"); more than one netlet for an epoch is a
  violation, and so is an epoch that goes down (granted epochs in event order,
  a netlet's role changes in its log);
* linearizability of the whole history (tests/linearizability.py, kv model with
  cas and append results), key by key.

Exit 0 only if nothing is lost or duplicated (and no phantom), no epoch had two
masters and none went down, the history is linearizable ("ok", not "unknown"),
and every fault healed. The history (JSON lines, the format of
tests/linearizability.py's load_history, plus a "type" and an "error" field),
the node's events and a JSON summary are written under bench/results/; the
temporary home (netlet logs, registry) is kept when the run fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402

from linearizability import ILLEGAL, OK, UNKNOWN_RESULT, Operation, check, kv_model, op_record  # noqa: E402
from nodeutil import RunningNode, cleanup_node, kill_recorded, process_dead  # noqa: E402

APP = "kvstore"
REPLICAS = 3
FAULTS = ["kill-master", "kill-backup", "pause-master", "kill-node", "kill-all", "delay-arbiter"]
MACHINE_FAULTS = ["kill-machine", "pause-machine"]  # --cluster only
HEAL_DEADLINE_S = 60.0
LOG_KEY_PERIOD_S = 10.0
TOKEN = re.compile(r"\[\d+\.\d+\]")
MASTER_LINE = re.compile(r"now (master|backup) at epoch (\d+)")
START_LINE = re.compile(r"netlet (\S+) starting \(pid (\d+)")


def poll(predicate, timeout: float, interval: float = 0.05, abort: threading.Event | None = None) -> Any:
    """Poll ``predicate`` (exceptions count as "not yet") until truthy, ``timeout`` or ``abort``; returns it or None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
            return None
        time.sleep(interval)  # polling an observable condition, bounded by the deadline


# --------------------------------------------------------------------- history

class History:
    """Every operation, streamed to a JSON-lines file as it completes (a killed run keeps a valid prefix)."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path = path
        self.t0 = t0
        self.lock = threading.Lock()
        self.ops: list[tuple[Operation, str]] = []  # (operation, "ok" | "fail" | "unknown")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(path, "w")

    def record(self, client, f: str, key: str, value, call: float, ret: float, output, typ: str,
               error: str | None = None) -> None:
        op = Operation(client, call - self.t0, math.inf if typ == "unknown" else ret - self.t0, (f, key, value),
                       None if typ == "unknown" else output)
        extra = {"type": typ}
        if typ == "unknown":
            extra["returned"] = round(ret - self.t0, 6)  # when the caller gave up (ret stays null: unknown)
        if error:
            extra["error"] = error
        line = json.dumps(op_record(op, **extra))
        with self.lock:
            self.ops.append((op, typ))
            self.out.write(line + "\n")

    def count(self) -> int:
        with self.lock:
            return len(self.ops)

    def close(self) -> None:
        with self.lock:
            self.out.close()


# --------------------------------------------------------------------- clients

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
        from warrants.errors import CommandFailed, NotFound

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


# --------------------------------------------------------------------- nemesis

class Fleet:
    """The nodes of a ``--cluster`` run, seen by the nemesis and the checks as one node:
    status and in-sync set from the first node that answers (each merges the whole
    cluster), events of every node merged by time."""

    def __init__(self, tmp: Path, count: int, url: str) -> None:
        self.url = url
        self.nodes: list[RunningNode] = []
        self.paused: set[str] = set()  # homes whose daemon is SIGSTOPped: not asked meanwhile
        for i in range(1, count + 1):
            self.nodes.append(self.start(tmp / f"n{i}"))

    def start(self, home: Path) -> RunningNode:
        from hosting.client import HostingClient
        from hosting.daemon import start_background

        start_background(home, cluster=self.url, name=home.name)
        return RunningNode(home, HostingClient.for_home(home))

    def restart(self, node: RunningNode) -> RunningNode:
        new = self.start(node.home)
        self.nodes = [new if n.home == node.home else n for n in self.nodes]
        node.client.close()
        return new

    @property
    def home(self) -> Path:
        return self.nodes[0].home

    def _ask(self, what):
        last = None
        for node in self.nodes:
            if str(node.home) in self.paused:
                continue
            try:
                return what(node)
            except Exception as err:  # that node is down: ask the next
                last = err
        raise last or RuntimeError("no node answers")

    def app(self, app: str) -> dict:
        return self._ask(lambda node: node.app(app))

    @property
    def client(self):
        return self._ask(lambda node: (node.client.call("host_status"), node.client)[1])

    def events(self, since: int = 0, app: str | None = None) -> list[dict]:
        merged = []
        for node in self.nodes:
            if str(node.home) in self.paused:
                continue
            try:
                merged += [dict(e, node=node.home.name) for e in all_events(node)]
            except Exception:  # a node that is down: its events are read when it is back
                pass
        merged.sort(key=lambda e: e["time"])
        for index, event in enumerate(merged, 1):
            event["index"] = index
        return [e for e in merged if e["index"] > since and (app is None or e.get("app") == app)]


class Nemesis:
    def __init__(self, node: RunningNode, seed: int, interval: float, schedule: str, t0: float,
                 kinds: list[str] = FAULTS, log=print) -> None:
        self.node, self.interval, self.schedule, self.t0, self.log = node, interval, schedule, t0, log
        self.kinds = list(kinds)
        self.rng = random.Random(f"{seed}/nemesis")
        self.stop = threading.Event()  # no new faults
        self.abort = threading.Event()  # interrupted: stop waiting for health too
        self.faults: list[dict] = []
        self.thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()

    def _now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            kind = self.kinds[n % len(self.kinds)] if self.schedule == "all" else self.rng.choice(self.kinds)
            n += 1
            fault = {"kind": kind, "at": self._now()}
            try:
                before = self.node.app(APP)
                fault["epoch_before"] = before["epoch"]
                fault["events_before"] = self.node.events(0, APP)[-1]["index"] if kind == "pause-master" else 0
                fault.update(getattr(self, "_" + kind.replace("-", "_"))(before))
            except Exception as err:
                fault["error"] = f"{type(err).__name__}: {err}"
            started = time.monotonic()
            serving_at: list[float] = []

            def settled():
                app = self._settled(fault, require_isr=False)
                if app is None:
                    return None
                if not serving_at:
                    serving_at.append(time.monotonic())
                return self._settled(fault, require_isr=True)

            healthy = poll(settled, HEAL_DEADLINE_S, abort=self.abort)
            if self.abort.is_set():
                return
            fault["serving_s"] = round(serving_at[0] - started, 3) if serving_at else None
            fault["healed_s"] = round(time.monotonic() - started, 3) if healthy else None
            fault["epoch_after"] = healthy["epoch"] if healthy else None
            self.faults.append(fault)
            target = fault.get("target", "")
            if healthy:
                self.log(f"[{fault['at']:8.1f}s] {kind:<12} {target:<28} serving in {fault['serving_s']:6.2f} s, "
                         f"in sync in {fault['healed_s']:6.2f} s  (epoch {fault.get('epoch_before')} -> "
                         f"{fault['epoch_after']})")
            else:
                try:  # evidence: what the node saw when we gave up
                    fault["status_at_deadline"] = self.node.app(APP)
                    fault["control_at_deadline"] = self.node.client.call("control_state", APP)
                except Exception as err:
                    fault["status_at_deadline"] = f"unavailable: {err}"
                what = "not serving" if fault["serving_s"] is None else \
                    f"serving after {fault['serving_s']:.2f} s but the in-sync set is not full"
                self.log(f"[{fault['at']:8.1f}s] {kind:<12} {target:<28} DID NOT RECOVER within "
                         f"{HEAL_DEADLINE_S:.0f} s ({what}) {fault.get('error', '')}")

    def _settled(self, fault: dict, require_isr: bool = True) -> dict | None:
        """Healthy *after* the fault took effect: the status may still show a killed process for a
        moment, so its victims must be gone from it (and the master replaced when it was a victim)."""
        app = healthy_app(self.node, require_isr)
        if app is None:
            return None
        pids = {n["pid"] for n in app["netlets"]}
        victims = set(fault.get("victims", ()))
        replaced = not (victims & pids) and app["epoch"] > fault["epoch_before"]
        if fault["kind"] in ("kill-master", "kill-all") or fault.get("had_master"):
            return app if replaced else None
        if fault["kind"] in MACHINE_FAULTS:
            return app if not (victims & pids) else None
        if fault["kind"] == "kill-backup":
            return app if not (victims & pids) else None
        if fault["kind"] == "pause-master" and victims:
            if replaced:
                return app
            # Survived only if the node never declared its lease lost (a pause shorter than the TTL).
            lost = [e for e in self.node.events(fault["events_before"], APP)
                    if e["kind"] in ("control.lost", "lease.expired", "netlet.exited") and e.get("slot") == fault["slot"]]
            return app if not lost and master_of(app)["pid"] in victims else None
        return app

    # -- the faults: each returns details for the record -----------------------
    def _kill_master(self, app: dict) -> dict:
        m = master_of(app)
        os.kill(m["pid"], signal.SIGKILL)
        return {"target": f"{m['slot']} pid {m['pid']}", "netlet": m["netlet"], "victims": [m["pid"]]}

    def _kill_backup(self, app: dict) -> dict:
        backups = [n for n in app["netlets"] if n["slot"] != app["master"] and n["pid"]]
        b = self.rng.choice(backups)
        os.kill(b["pid"], signal.SIGKILL)
        return {"target": f"{b['slot']} pid {b['pid']}", "netlet": b["netlet"], "victims": [b["pid"]]}

    def _pause_master(self, app: dict) -> dict:
        m = master_of(app)
        proc = psutil.Process(m["pid"])
        pause = round(self.rng.uniform(0.5, 3.0), 3)
        proc.suspend()
        time.sleep(pause)  # the fault's duration (the nemesis's schedule, not a synchronization)
        try:
            proc.resume()  # psutil refuses a pid that was reused meanwhile
            resumed = "resumed"
        except psutil.NoSuchProcess:
            resumed = "already gone"
        return {"target": f"{m['slot']} pid {m['pid']}", "netlet": m["netlet"], "pause_s": pause,
                "sigcont": resumed, "victims": [m["pid"]], "slot": m["slot"]}

    def _kill_node(self, app: dict) -> dict:
        from hosting.client import HostingClient
        from hosting.daemon import is_node_process, read_node_info, start_background

        if isinstance(self.node, Fleet):
            return self._machine_fault(app, kill_netlets=False)
        home = self.node.home
        pid = (read_node_info(home) or {}).get("pid")
        if not pid or not is_node_process(pid, home):
            raise RuntimeError(f"no hosting node process for {home} (node.json pid {pid})")
        down = self._kill_daemon_for_a_while(pid)
        info = start_background(home)
        old, self.node.client = self.node.client, HostingClient.for_home(home)
        old.close()
        return {"target": f"node pid {pid} -> {info.get('pid')}", "down_s": down}

    def _kill_daemon_for_a_while(self, pid: int) -> float:
        """SIGKILL a hosting daemon (if still alive), reap it, and stay down 0.5-3 s; returns the
        time down (the fault's duration: the app runs without that node meanwhile)."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not poll(lambda: process_dead(pid), 10):
            raise RuntimeError(f"node pid {pid} still alive 10 s after SIGKILL")
        try:
            os.waitpid(pid, os.WNOHANG)  # our child (start_background): reap it
        except ChildProcessError:
            pass
        down = round(self.rng.uniform(0.5, 3.0), 3)
        time.sleep(down)
        return down

    def _kill_machine(self, app: dict) -> dict:
        return self._machine_fault(app, kill_netlets=True)

    def _pause_machine(self, app: dict) -> dict:
        fleet = self.node
        node = self.rng.choice(fleet.nodes)
        pid = node.info["pid"]
        victims = [n["pid"] for n in app["netlets"] if n["node"] == node.home.name and n["pid"]]
        pause = round(self.rng.uniform(3.5, 5.0), 3)  # past the 3 s membership lease
        fleet.paused.add(str(node.home))
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(pause)  # the fault's duration (the nemesis's schedule, not a synchronization)
        finally:
            os.kill(pid, signal.SIGCONT)
            fleet.paused.discard(str(node.home))
        return {"target": f"{node.home.name} daemon pid {pid}", "pause_s": pause, "victims": victims,
                "had_master": any(n["slot"] == app["master"] for n in app["netlets"] if n["pid"] in victims)}

    def _machine_fault(self, app: dict, kill_netlets: bool) -> dict:
        """SIGKILL one node of the fleet (with every netlet on it, when ``kill_netlets``), leave it
        down 0.5-3 s, restart it on its home."""
        from nodeutil import kill_node_with_its_netlets

        fleet = self.node
        node = self.rng.choice(fleet.nodes)
        victims = [n["pid"] for n in app["netlets"] if n["node"] == node.home.name and n["pid"]] if kill_netlets else []
        pid = node.info["pid"]
        if kill_netlets:
            kill_node_with_its_netlets(node)
        down = self._kill_daemon_for_a_while(pid)
        new = fleet.restart(node)
        return {"target": f"{node.home.name} pid {pid} -> {new.info.get('pid')}", "down_s": down,
                "victims": victims,
                "had_master": any(n["slot"] == app["master"] for n in app["netlets"] if n["pid"] in victims)}

    def _delay_arbiter(self, app: dict) -> dict:
        """Delay the arbiter's answers while they matter most: a backup stalls (the master
        asks to shrink it, later to expand it again) and the daemon holding the arbiter stops
        answering for a while in the middle of that; both are resumed, the daemon first."""
        backups = [n for n in app["netlets"] if n["slot"] != app["master"] and n["pid"]]
        backup = psutil.Process(self.rng.choice(backups)["pid"])
        daemons = self.node.nodes if isinstance(self.node, Fleet) else [self.node]
        daemon_node = self.rng.choice(daemons)
        daemon = psutil.Process(daemon_node.info["pid"])
        backup_s, lead_s = round(self.rng.uniform(0.5, 3.0), 3), round(self.rng.uniform(0.0, 0.5), 3)
        daemon_s = round(self.rng.uniform(0.2, 3.0), 3)
        if isinstance(self.node, Fleet):
            self.node.paused.add(str(daemon_node.home))
        backup.suspend()
        try:
            time.sleep(lead_s)  # the fault's schedule (not a synchronization): the master notices the stall
            daemon.suspend()
            try:
                time.sleep(daemon_s)  # the fault's duration
            finally:
                daemon.resume()
                if isinstance(self.node, Fleet):
                    self.node.paused.discard(str(daemon_node.home))
            time.sleep(max(0.0, backup_s - lead_s - daemon_s))  # the rest of the backup's stall
        finally:
            try:
                backup.resume()
            except psutil.NoSuchProcess:  # the node replaced it meanwhile (its lease ran out)
                pass
        return {"target": f"backup pid {backup.pid} {backup_s} s, daemon pid {daemon.pid} {daemon_s} s",
                "pause_s": backup_s, "daemon_pause_s": daemon_s}

    def _kill_all(self, app: dict) -> dict:
        pids = [n["pid"] for n in app["netlets"] if n["pid"]]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return {"target": "pids " + ",".join(map(str, pids)), "victims": pids}


def master_of(app: dict) -> dict:
    return next(n for n in app["netlets"] if n["slot"] == app["master"])


def healthy_app(node: RunningNode, require_isr: bool = True) -> dict | None:
    """The app's status if it has a serving master and every slot running as master or backup ("serving"),
    and (``require_isr``) every slot back in the in-sync set ("in sync": full redundancy again)."""
    app = node.app(APP)
    if not app["master"] or master_of(app)["role"] != "master":
        return None
    if not all(n["state"] == "running" and n["role"] in ("master", "backup") for n in app["netlets"]):
        return None
    if require_isr and len(node.client.call("control_state", APP)["isr"]) != len(app["netlets"]):
        return None
    return app


# -------------------------------------------------------------------- analysis

def all_events(node: RunningNode) -> list[dict]:
    events, since = [], 0
    while True:
        batch = node.events(since, APP)
        if not batch:
            return events
        events += batch
        since = batch[-1]["index"]


def masters_from_events(events: list[dict]) -> tuple[dict[int, set[str]], list[str]]:
    """epoch -> holders (control.granted, control.readopted); and every decrease of a granted epoch."""
    by_epoch: dict[int, set[str]] = collections.defaultdict(set)
    regressions, last = [], 0
    for e in events:
        d = e.get("detail") or {}
        if e["kind"] in ("control.granted", "control.readopted") and "epoch" in d:
            by_epoch[int(d["epoch"])].add(str(d.get("holder")))
        if e["kind"] == "control.granted":
            if int(d["epoch"]) <= last:
                regressions.append(f"event {e['index']}: granted epoch {d['epoch']} after {last}")
            last = max(last, int(d["epoch"]))
    return by_epoch, regressions


def masters_from_logs(home: Path) -> tuple[dict[int, set[str]], list[str], int]:
    """epoch -> netlets that logged "now master at epoch N"; epoch decreases within one netlet's log; files read."""
    by_epoch: dict[int, set[str]] = collections.defaultdict(set)
    regressions = []
    files = sorted(set((home / "logs" / APP).rglob("*.log")) | set((home / "apps" / APP).rglob("*.log")))
    for path in files:
        netlet, last = None, 0
        for line in path.read_text(errors="replace").splitlines():
            m = START_LINE.search(line)
            if m:
                netlet = f"{m[1]}"
                continue
            m = MASTER_LINE.search(line)
            if not m:
                continue
            epoch = int(m[2])
            who = netlet or f"{path.parent.name}/{path.name}"
            if m[1] == "master":
                by_epoch[epoch].add(who)
            if epoch < last:
                regressions.append(f"{path.relative_to(home)}: {who} now {m[1]} at epoch {epoch} after {last}")
            last = max(last, epoch)
    return by_epoch, regressions, len(files)


def write_checks(ops: list[tuple[Operation, str]], final: dict[str, str | None]) -> dict:
    """Lost / duplicated / phantom tokens (see the module docstring)."""
    tokens = {k: collections.Counter(TOKEN.findall(v or "")) for k, v in final.items()}
    writes_by_key: dict[str, list[tuple[Operation, str]]] = collections.defaultdict(list)
    for op, typ in ops:
        if op.input[0] in ("put", "append", "cas") and typ != "fail":
            writes_by_key[op.input[1]].append((op, typ))
    lost, duplicates, unverifiable, phantoms, appends_checked = [], [], 0, [], 0
    for key, writes in writes_by_key.items():
        counts = tokens.get(key)
        if counts is None:
            unverifiable += sum(1 for op, typ in writes if op.input[0] == "append" and typ == "ok")
            continue
        # an append is possibly overwritten iff some put / swapping (or unknown) cas returned after it was called
        last_overwrite_ret = max((op.ret for op, typ in writes
                                  if op.input[0] == "put" or (op.input[0] == "cas" and (typ == "unknown" or op.output))),
                                 default=-math.inf)
        carried = set()
        for op, typ in writes:
            token = op.input[2][1] if op.input[0] == "cas" else op.input[2]
            carried.add(token)
            if op.input[0] != "append":
                continue
            n = counts.get(token, 0)
            if n > 1:
                duplicates.append({"key": key, "token": token, "count": n, "type": typ})
            if typ == "ok":
                appends_checked += 1
                if n == 0 and not last_overwrite_ret > op.call:
                    lost.append({"key": key, "token": token, "call": op.call, "ret": op.ret})
        phantoms += [{"key": key, "token": t} for t in counts if t not in carried]
    for key, counts in tokens.items():
        if key not in writes_by_key:
            phantoms += [{"key": key, "token": t} for t in counts]
    return {"lost": lost, "duplicates": duplicates, "phantoms": phantoms, "appends_checked": appends_checked,
            "unverifiable": unverifiable}


def linearizability(ops: list[tuple[Operation, str]], timeout: float) -> dict:
    """The checker's verdict, key by key. Unknown-outcome gets are left out: they changed nothing and
    constrain nothing (exact, and it keeps the search small)."""
    checked = [op for op, typ in ops if typ != "fail" and not (op.input[0] == "get" and op.ret == math.inf)]
    by_key: dict[str, list[Operation]] = collections.defaultdict(list)
    for op in checked:
        by_key[op.input[1]].append(op)
    deadline = time.monotonic() + timeout
    per_key, verdict = {}, OK
    started = time.monotonic()
    for key in sorted(by_key):
        left = deadline - time.monotonic()
        r = check(kv_model(), by_key[key], timeout=max(0.0, left)) if left > 0 else UNKNOWN_RESULT
        per_key[key] = {"ops": len(by_key[key]), "unknown": sum(1 for o in by_key[key] if o.ret == math.inf),
                        "verdict": r}
        if r == ILLEGAL:
            verdict = ILLEGAL
        elif r == UNKNOWN_RESULT and verdict == OK:
            verdict = UNKNOWN_RESULT
    return {"verdict": verdict, "ops": len(checked), "seconds": round(time.monotonic() - started, 2),
            "per_key": per_key}


# ------------------------------------------------------------------------ main

def kvstore_descriptor() -> str:
    xml = (ROOT / "examples/kvstore/bootstrap.xml").read_text()
    xml = xml.replace('<codebase path="."/>', f'<codebase path="{ROOT / "examples/kvstore"}"/>')
    for must in ('ttl="1.0"', 'replicas="3"', 'ack="all"', 'durability="fsync"'):
        if must not in xml:
            raise SystemExit(f"examples/kvstore/bootstrap.xml no longer has {must}: update bench/chaos.py")
    return xml


def kill_strays(node: RunningNode) -> None:
    """Belt and braces after cleanup_node: any node process of this home (one that never got into node.json)."""
    from hosting.daemon import is_node_process

    victims = []
    for proc in psutil.process_iter():
        if is_node_process(proc.pid, node.home):
            victims.append(kill_recorded(proc.pid, proc.create_time()))
    psutil.wait_procs([v for v in victims if v is not None], timeout=5)


def summarize(args, ops, faults, writes, masters, lin, final_ok, healed_at_end, stuck) -> dict:
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op, typ in ops:
        label = typ
        if op.input[0] == "cas" and typ == "ok":
            label = "ok-swapped" if op.output else "ok-not-swapped"
        by_kind[op.input[0]][label] += 1
    fault_kinds: dict[str, dict] = {}
    for f in faults:
        k = fault_kinds.setdefault(f["kind"], {"injected": 0, "healed": 0, "serving_s": [], "heal_s": []})
        k["injected"] += 1
        if f.get("serving_s") is not None:
            k["serving_s"].append(f["serving_s"])
        if f.get("healed_s") is not None:
            k["healed"] += 1
            k["heal_s"].append(f["healed_s"])
    for k in fault_kinds.values():
        for name in ("serving_s", "heal_s"):
            h = k.pop(name)
            k[name.replace("_s", "_median_s")] = round(statistics.median(h), 3) if h else None
            k[name.replace("_s", "_max_s")] = max(h) if h else None
    unhealed = [f for f in faults if f.get("healed_s") is None]
    failures = []
    if writes["lost"]:
        failures.append(f"{len(writes['lost'])} acknowledged appends lost")
    if writes["duplicates"]:
        failures.append(f"{len(writes['duplicates'])} appends applied twice")
    if writes["phantoms"]:
        failures.append(f"{len(writes['phantoms'])} values nobody wrote")
    if masters["double_master_epochs"]:
        failures.append(f"{len(masters['double_master_epochs'])} epochs with two masters")
    if masters["epoch_regressions"]:
        failures.append(f"{len(masters['epoch_regressions'])} epoch decreases")
    if lin["verdict"] != OK:
        failures.append(f"linearizability: {lin['verdict']}")
    if unhealed:
        failures.append(f"{len(unhealed)} faults did not recover")
    if not final_ok:
        failures.append("final reads failed")
    if not healed_at_end:
        failures.append(f"not healthy (serving and in sync) {HEAL_DEADLINE_S:.0f} s after the nemesis stopped")
    if stuck:
        failures.append(f"clients stuck in a call at the end: {', '.join(stuck)}")
    if args.schedule == "all":
        missing = [k for k in args.kinds if k not in fault_kinds]
        if missing:
            failures.append(f"fault kinds never injected: {', '.join(missing)}")
    return {
        "seed": args.seed, "duration_s": args.duration, "clients": args.clients, "keys": args.keys,
        "fault_interval_s": args.fault_interval, "schedule": args.schedule, "fault_kinds": args.kinds,
        "operations": {"total": len(ops), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}},
        "faults": {"total": len(faults), "by_kind": fault_kinds, "unhealed": unhealed, "list": faults},
        "lost": len(writes["lost"]), "duplicates": len(writes["duplicates"]), "phantoms": len(writes["phantoms"]),
        "appends_checked": writes["appends_checked"], "writes_detail": writes,
        "double_master_epochs": len(masters["double_master_epochs"]), "masters": masters,
        "linearizable": lin["verdict"], "linearizability": lin,
        "ok": not failures, "failures": failures,
    }


def print_summary(s: dict, paths: dict) -> None:
    line = "=" * 72
    print(line)
    print(f"CHAOS SUMMARY  seed {s['seed']}  {s['duration_s']:.0f} s  {s['clients']} clients  "
          f"{s['keys']} keys  schedule {s['schedule']}")
    print(f"operations      {s['operations']['total']}")
    for kind, outcomes in s["operations"]["by_kind"].items():
        print(f"  {kind:<8} " + "  ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"faults          {s['faults']['total']}")
    for kind, f in sorted(s["faults"]["by_kind"].items()):
        print(f"  {kind:<13} injected {f['injected']:3}  healed {f['healed']:3}  serving again: median "
              f"{f['serving_median_s']} s, max {f['serving_max_s']} s; in sync: median {f['heal_median_s']} s, "
              f"max {f['heal_max_s']} s")
    m = s["masters"]
    print(f"lost acknowledged writes   {s['lost']}   (acknowledged appends checked: {s['appends_checked']})")
    print(f"duplicate appends          {s['duplicates']}")
    print(f"phantom values             {s['phantoms']}")
    print(f"epochs with two masters    {s['double_master_epochs']}   ({m['epochs']} epochs; "
          f"{m['log_files']} netlet logs; epoch decreases {len(m['epoch_regressions'])})")
    lin = s["linearizability"]
    bad = ", ".join(f"{k}={v['verdict']}" for k, v in lin["per_key"].items() if v["verdict"] != OK)
    print(f"linearizable               {s['linearizable']}   ({lin['ops']} ops, {len(lin['per_key'])} keys, "
          f"{lin['seconds']} s{'; not ok: ' + bad if bad else ''})")
    print(f"RESULT                     {'PASS' if s['ok'] else 'FAIL: ' + '; '.join(s['failures'])}")
    for name, path in paths.items():
        print(f"{name:<27}{path}")
    print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of faults and load")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keys", type=int, default=4, help="keys with the full op mix (log keys come on top)")
    p.add_argument("--fault-interval", type=float, default=4.0, help="mean seconds between a heal and the next fault")
    p.add_argument("--schedule", choices=["random", "all"], default="random",
                   help="random kinds (seeded), or all: cycle through every kind in order")
    p.add_argument("--faults", default=None, help=f"the kinds to inject (default: all of {FAULTS}, and with "
                                                  f"--cluster also {MACHINE_FAULTS})")
    p.add_argument("--history", help="JSON-lines history (default bench/results/chaos-STAMP-seedN.jsonl)")
    p.add_argument("--json", help="JSON summary (default: the history's path with .json)")
    p.add_argument("--workdir", help="an empty or new directory for the node's home (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the home even if the run passes")
    p.add_argument("--check-timeout", type=float, default=900.0, help="seconds for the linearizability check")
    p.add_argument("--client-timeout", type=float, default=30.0, help="an access point's retry budget per call")
    p.add_argument("--cluster", type=int, default=0, metavar="N",
                   help="run on N >= 2 nodes joined on a private etcd (adds the machine faults)")
    args = p.parse_args(argv)
    if args.cluster == 1 or args.cluster < 0:
        p.error("--cluster: at least 2 nodes (0: one node, no etcd)")
    allowed = FAULTS + (MACHINE_FAULTS if args.cluster else [])
    kinds = [k.strip() for k in (args.faults or ",".join(allowed)).split(",") if k.strip()]
    if not kinds or any(k not in allowed for k in kinds):
        p.error(f"--faults: choose from {', '.join(allowed)}")
    args.kinds = kinds

    stamp = time.strftime("%Y%m%d-%H%M%S")
    history_path = Path(args.history) if args.history else RESULTS / f"chaos-{stamp}-seed{args.seed}.jsonl"
    json_path = Path(args.json) if args.json else history_path.with_suffix(".json")
    events_path = history_path.with_name(history_path.stem + "-events.json")
    if args.workdir:
        tmp = Path(args.workdir).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        if any(tmp.iterdir()):
            raise SystemExit(f"--workdir {tmp} is not empty")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="jtrix-chaos-"))
    home = tmp / "home"
    os.environ["JTRIX_HOME"] = str(home)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (cmd &)

    from hosting.client import HostingClient
    from hosting.daemon import start_background

    node = clients = nemesis = history = etcd = None
    passed, interrupted = False, False
    try:
        if args.cluster:
            from etcdutil import EtcdServer, unique_prefix

            (tmp / "etcd").mkdir()
            etcd = EtcdServer(tmp / "etcd")
            etcd.start()
            node = Fleet(tmp, args.cluster, etcd.url + unique_prefix().rstrip("/"))
            home = node.home
            os.environ["JTRIX_HOME"] = str(home)
            node.nodes[0].launch(kvstore_descriptor(), tmp)
        else:
            start_background(home)
            node = RunningNode(home, HostingClient.for_home(home))
            node.launch(kvstore_descriptor(), tmp)
        if not poll(lambda: healthy_app(node), HEAL_DEADLINE_S):
            raise SystemExit("kvstore never became healthy after launch")
        t0 = time.monotonic()
        history = History(history_path, t0)
        print(f"chaos: seed {args.seed}, {args.duration:.0f} s, {args.clients} clients, home {home}, "
              f"history {history_path}", flush=True)
        homes = [n.home for n in node.nodes] if isinstance(node, Fleet) else [home]
        clients = Clients(args.clients, args.seed, args.keys, homes, history, args.client_timeout)
        nemesis = Nemesis(node, args.seed, args.fault_interval, args.schedule, t0, kinds,
                          log=lambda s: print(s, flush=True))
        clients.start()
        nemesis.start()
        threading.Event().wait(args.duration)  # the run's length: load and faults go on meanwhile
        nemesis.finish()
        healed = poll(lambda: healthy_app(node), HEAL_DEADLINE_S)
        if not healed:
            print("the app did not become healthy after the last fault", flush=True)
        stuck = clients.finish(args.client_timeout + 15)
        # final reads, recorded like any other operation
        keys = sorted({op.input[1] for op, _ in history.ops})
        final: dict[str, str | None] = {}
        final_ok = True
        import netlets
        try:
            kv = netlets.connect(APP, node.home if not isinstance(node, Fleet) else node.nodes[-1].home, timeout=60)
        except Exception as err:
            print(f"final reads: cannot connect: {err}", flush=True)
            final_ok, kv = False, None
        for key in keys if kv is not None else []:
            call = time.monotonic()
            try:
                value = kv.get_latest(key)
                history.record("final", "get", key, None, call, time.monotonic(), value, "ok")
                final[key] = value
            except Exception as err:
                history.record("final", "get", key, None, call, time.monotonic(), None, "unknown",
                               f"{type(err).__name__}: {err}"[:300])
                final_ok = False
        events = node.events(0, APP) if isinstance(node, Fleet) else all_events(node)
        events_path.write_text(json.dumps(events, indent=1))
        history.close()
        ops = list(history.ops)
        print(f"run over: {len(ops)} operations, {len(nemesis.faults)} faults; checking...", flush=True)

        ev_masters, ev_regressions = masters_from_events(events)
        log_masters, log_regressions, log_files = collections.defaultdict(set), [], 0
        for node_home in ([n.home for n in node.nodes] if isinstance(node, Fleet) else [home]):
            by_epoch, regressions, files = masters_from_logs(node_home)
            for epoch, who in by_epoch.items():
                log_masters[epoch] |= who
            log_regressions += regressions
            log_files += files
        union: dict[int, set[str]] = collections.defaultdict(set)
        for src in (ev_masters, log_masters):
            for epoch, who in src.items():
                union[epoch] |= who
        masters = {
            "epochs": len(union),
            "double_master_epochs": {str(e): sorted(w) for e, w in sorted(union.items()) if len(w) > 1},
            "epoch_regressions": ev_regressions + log_regressions,
            "log_files": log_files,
            "only_in_events": sorted(e for e in ev_masters if e not in log_masters),
            "only_in_logs": sorted(e for e in log_masters if e not in ev_masters),
            "by_epoch": {str(e): sorted(w) for e, w in sorted(union.items())},
        }
        writes = write_checks(ops, final) if final_ok else {"lost": [], "duplicates": [], "phantoms": [],
                                                              "appends_checked": 0, "unverifiable": 0}
        lin = linearizability(ops, args.check_timeout)
        summary = summarize(args, ops, nemesis.faults, writes, masters, lin, final_ok, bool(healed), stuck)
        summary["home"] = str(home)
        paths = {"history": history_path, "events": events_path, "summary": json_path}
        passed = summary["ok"]
        if not passed or args.keep:
            paths["home (kept)"] = home
        json_path.write_text(json.dumps(summary, indent=1, default=str))
        print_summary(summary, paths)
        return 0 if passed else 1
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must not be interrupted halfway
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if nemesis is not None:
            nemesis.stop.set()
            nemesis.abort.set()
        if clients is not None:
            clients.stop.set()
        if nemesis is not None and nemesis.thread.is_alive():
            nemesis.thread.join(60)  # a fault in progress: a paused master to resume, a node being restarted
        if node is None:  # the node never answered: clean up by what the home records
            node = RunningNode(home, HostingClient("PYRO:none@127.0.0.1:9", b""))
        for member in (node.nodes if isinstance(node, Fleet) else [node]):
            cleanup_node(member)
            kill_strays(member)
        if etcd is not None:
            etcd.stop()
        if history is not None and not history.out.closed:
            history.close()
        if passed and not args.keep and not interrupted:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
