"""The chaos run's verdicts, from what it recorded (pure functions: no process is touched).

* :func:`write_checks`: an acknowledged append's token must be in its key's
  final value exactly once unless a put / cas that may be linearized after it
  could have overwritten it (never, on log keys); a token twice anywhere is a
  duplicate application; a token in a final value that no write to that key
  carried is a phantom.
* :func:`masters`: epoch -> the netlets that acted as master at it, from the
  node's events (control.granted / control.readopted) and the netlets' own logs
  ("now master at epoch N"); more than one netlet for an epoch is a violation,
  and so is an epoch that goes down.
* :func:`linearizability`: the whole history, key by key (kv model with cas and
  append results).
"""

from __future__ import annotations

import collections
import math
import re
import time
from pathlib import Path

from testkit.chaos import APP
from testkit.linearizability import ILLEGAL, OK, UNKNOWN_RESULT, Operation, check, kv_model

TOKEN = re.compile(r"\[\d+\.\d+\]")
MASTER_LINE = re.compile(r"now (master|backup) at epoch (\d+)")
START_LINE = re.compile(r"netlet (\S+) starting \(pid (\d+)")


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


def masters(events: list[dict], homes: list[Path]) -> dict:
    """Who acted as master at each epoch, by the events and by the logs of the netlets under ``homes``
    (see the module docstring); the violations under "double_master_epochs" and "epoch_regressions"."""
    ev_masters, ev_regressions = masters_from_events(events)
    log_masters, log_regressions, log_files = collections.defaultdict(set), [], 0
    for home in homes:
        by_epoch, regressions, files = masters_from_logs(home)
        for epoch, who in by_epoch.items():
            log_masters[epoch] |= who
        log_regressions += regressions
        log_files += files
    union: dict[int, set[str]] = collections.defaultdict(set)
    for src in (ev_masters, log_masters):
        for epoch, who in src.items():
            union[epoch] |= who
    return {
        "epochs": len(union),
        "double_master_epochs": {str(e): sorted(w) for e, w in sorted(union.items()) if len(w) > 1},
        "epoch_regressions": ev_regressions + log_regressions,
        "log_files": log_files,
        "only_in_events": sorted(e for e in ev_masters if e not in log_masters),
        "only_in_logs": sorted(e for e in log_masters if e not in ev_masters),
        "by_epoch": {str(e): sorted(w) for e, w in sorted(union.items())},
    }


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
