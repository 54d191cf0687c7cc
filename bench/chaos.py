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
* linearizability of the whole history (testkit/linearizability.py, kv model with
  cas and append results), key by key.

Exit 0 only if nothing is lost or duplicated (and no phantom), no epoch had two
masters and none went down, the history is linearizable ("ok", not "unknown"),
and every fault healed. The history (JSON lines, the format of
testkit/linearizability.py's load_history, plus a "type" and an "error" field),
the node's events and a JSON summary are written under bench/results/; the
temporary home (netlet logs, registry) is kept when the run fails.

The parts are in testkit.chaos (history, clients, nemesis, checks) over
testkit.fleet (one node is a fleet of one); this script sets up, runs,
checks and reports.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.chaos import APP, REPLICAS, checks
from testkit.chaos.clients import Clients
from testkit.chaos.history import History
from testkit.chaos.nemesis import FAULTS, HEAL_DEADLINE_S, MACHINE_FAULTS, Nemesis, healthy_app
from testkit.fleet import Fleet
from testkit.kvstore import kvstore_xml
from testkit.linearizability import OK
from testkit.node import ROOT
from testkit.wait import poll

RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    args.history = Path(args.history) if args.history else RESULTS / f"chaos-{stamp}-seed{args.seed}.jsonl"
    args.json = Path(args.json) if args.json else args.history.with_suffix(".json")
    args.events = args.history.with_name(args.history.stem + "-events.json")
    return args


@dataclass
class Run:
    """What the run recorded, for the checks."""
    ops: list
    faults: list[dict]
    final: dict[str, str | None]
    final_ok: bool
    healed_at_end: bool
    stuck: list[str]
    events: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------- setup

def workdir(args) -> Path:
    if not args.workdir:
        return Path(tempfile.mkdtemp(prefix="jtrix-chaos-"))
    tmp = Path(args.workdir).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    if any(tmp.iterdir()):
        raise SystemExit(f"--workdir {tmp} is not empty")
    return tmp


def setup(args, tmp: Path) -> Fleet:
    """The fleet (one node, or ``--cluster`` nodes on a private etcd) running a healthy kvstore."""
    fleet = Fleet(tmp, max(1, args.cluster))
    try:
        os.environ["JTRIX_HOME"] = str(fleet.home)
        fleet.launch(kvstore_xml(replicas=REPLICAS, ttl=1.0, durability="fsync", ack="all"), tmp)
        if not poll(lambda: healthy_app(fleet), HEAL_DEADLINE_S):
            raise SystemExit("kvstore never became healthy after launch")
    except BaseException:
        fleet.close()
        raise
    return fleet


# ------------------------------------------------------------------------ run

class Load:
    """The clients and the nemesis of one run, stopped by ``stop()`` whatever state they are in."""

    def __init__(self, args, fleet: Fleet) -> None:
        self.t0 = time.monotonic()
        self.history = History(args.history, self.t0)
        self.clients = Clients(args.clients, args.seed, args.keys, fleet.homes, self.history, args.client_timeout)
        self.nemesis = Nemesis(fleet, args.seed, args.fault_interval, args.schedule, self.t0, args.kinds,
                               log=lambda s: print(s, flush=True))

    def stop(self) -> None:
        self.nemesis.stop.set()
        self.nemesis.abort.set()
        self.clients.stop.set()
        if self.nemesis.thread.is_alive():
            self.nemesis.thread.join(60)  # a fault in progress: a paused master to resume, a node being restarted
        if not self.history.out.closed:
            self.history.close()


def run(args, fleet: Fleet, load: Load) -> Run:
    """Load and faults for ``--duration`` s, then health, the clients stopped, and the final reads."""
    print(f"chaos: seed {args.seed}, {args.duration:.0f} s, {args.clients} clients, home {fleet.home}, "
          f"history {args.history}", flush=True)
    load.clients.start()
    load.nemesis.start()
    threading.Event().wait(args.duration)  # the run's length: load and faults go on meanwhile
    load.nemesis.finish()
    healed = poll(lambda: healthy_app(fleet), HEAL_DEADLINE_S)
    if not healed:
        print("the app did not become healthy after the last fault", flush=True)
    stuck = load.clients.finish(args.client_timeout + 15)
    final, final_ok = final_reads(fleet, load.history)
    events = fleet.events(0, APP)
    args.events.write_text(json.dumps(events, indent=1))
    load.history.close()
    return Run(list(load.history.ops), load.nemesis.faults, final, final_ok, bool(healed), stuck, events)


def final_reads(fleet: Fleet, history: History) -> tuple[dict[str, str | None], bool]:
    """Every key read with get_latest through the last node's access point, recorded like any other
    operation; and whether every read answered."""
    import netlets

    keys = sorted({op.input[1] for op, _ in history.ops})
    final: dict[str, str | None] = {}
    try:
        kv = netlets.connect(APP, fleet.nodes[-1].home, timeout=60)
    except Exception as err:
        print(f"final reads: cannot connect: {err}", flush=True)
        return final, False
    final_ok = True
    for key in keys:
        call = time.monotonic()
        try:
            value = kv.get_latest(key)
            history.record("final", "get", key, None, call, time.monotonic(), value, "ok")
            final[key] = value
        except Exception as err:
            history.record("final", "get", key, None, call, time.monotonic(), None, "unknown",
                           f"{type(err).__name__}: {err}"[:300])
            final_ok = False
    return final, final_ok


# ---------------------------------------------------------------------- check

def check(args, fleet: Fleet, r: Run) -> dict:
    print(f"run over: {len(r.ops)} operations, {len(r.faults)} faults; checking...", flush=True)
    masters = checks.masters(r.events, fleet.homes)
    writes = checks.write_checks(r.ops, r.final) if r.final_ok else {
        "lost": [], "duplicates": [], "phantoms": [], "appends_checked": 0, "unverifiable": 0}
    lin = checks.linearizability(r.ops, args.check_timeout)
    summary = summarize(args, r.ops, r.faults, writes, masters, lin, r.final_ok, r.healed_at_end, r.stuck)
    summary["home"] = str(fleet.home)
    return summary


# --------------------------------------------------------------------- report

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


def report(args, summary: dict, home: Path) -> None:
    paths = {"history": args.history, "events": args.events, "summary": args.json}
    if not summary["ok"] or args.keep:
        paths["home (kept)"] = home
    args.json.write_text(json.dumps(summary, indent=1, default=str))
    print_summary(summary, paths)


# ----------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = workdir(args)
    os.environ["JTRIX_HOME"] = str(tmp / "home")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (cmd &)
    fleet = load = None
    passed, interrupted = False, False
    try:
        fleet = setup(args, tmp)
        load = Load(args, fleet)
        summary = check(args, fleet, run(args, fleet, load))
        passed = summary["ok"]
        report(args, summary, fleet.home)
        return 0 if passed else 1
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must not be interrupted halfway
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if load is not None:
            load.stop()
        if fleet is not None:
            fleet.close()
        if passed and not args.keep and not interrupted:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
