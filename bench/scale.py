"""N netlets on one hosting node: start-up, idle cost, lease renewals, crash detection.

For each N (``--counts``, default 100,300,500), in a fresh ``JTRIX_HOME`` with
its own node, one app of N non-replicated ``workers:Echo`` netlets (lease TTL
1.0 s, the default; split over ceil(N/64) identical netlet types, since the
descriptor schema allows at most 64 replicas per type) and:
  1. start-up: from ``submit_app`` until every slot's current netlet is ready
     (the node's ``netlet.ready`` events; its first renewal, sent after
     ``on_started``, so its phase is ``running``), confirmed by one ``status``
     call showing every netlet ``running`` with phase ``running``; churn during
     start-up (lease expiries, exits, respawns) is counted. If it does not
     converge within ``--start-timeout-base + N * --start-timeout-per-netlet``
     seconds the rest is still measured (and the crash trials skipped);
  2. idle, in consecutive ``--idle-seconds`` windows until ``--steady-after``
     seconds (default 130: past the node's 120 s replay window, whose nonces
     the node remembers) have passed: the node daemon's CPU % (cpu_times delta
     / wall; 100 % = one core), the netlets' total CPU %, the rest of the
     machine's CPU % (other benchmarks), load, live netlet processes and
     unreaped (zombie) children of the node, events in the window (should be
     none at idle); after the last window the node's RSS / USS / threads / fds
     and the netlets' total RSS / USS / PSS and per-netlet USS (psutil
     ``memory_full_info``);
  3. lease renewals handled per second in each window: delta of the node's
     Prometheus counter ``jtrix_api_call_seconds_count{method="renew"}``,
     against the expected N / (TTL/3), and the mean renew handling time
     (``_sum`` / ``_count``; p50/p99 bucket bounds in the JSON);
  4. crash detection, ``--trials`` times: SIGKILL a random ready netlet (each
     slot at most once, so every kill hits a healthy netlet that is replaced at
     once) and time, from the kill (``time.time()`` just before ``kill``), the
     node's ``netlet.exited``, the replacement's ``netlet.started`` and
     ``netlet.ready`` events; exits/expiries of other netlets meanwhile are
     counted.

``--py-spy DIR`` also takes a few ``py-spy dump`` snapshots of the node after
the idle windows (and summarises the innermost frames of its threads).

Memory guard: after each N the per-netlet PSS is used to project the next N;
if it would take the machine above ``--max-ram-fraction`` (default 0.7) of
RAM, the next N is lowered to the largest safe multiple of 50 (and the run
stops after it). While netlets start, a run is aborted if available memory
falls below 15 %. Every process started is killed in ``finally`` (also on
Ctrl-C / SIGTERM): the node and every netlet it recorded, by pid and process
group (testkit.node.cleanup_node), then anything left whose cwd or command
line is inside the temporary home.

Usage: bench/run.sh scale [--counts 100,300,500] [--trials 20] [--json PATH] [--keep-going] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from harness import pct
from testkit.node import ROOT, RunningNode, cleanup_node, descriptor_xml
from testkit.procs import kill_under

APP = "scale"
TTL = 1.0  # the descriptor default
MiB = 1024 * 1024
MAX_REPLICAS = 64  # warrants/schemas/descriptor.xsd: replicas maxInclusive 64 (and at most 64 types)


# -- small helpers -------------------------------------------------------------
def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": max(values), "min": min(values)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The node's Prometheus metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def renew_metrics(before: dict, after: dict) -> dict[str, Any]:
    """Renewal count delta and handling-time estimates from jtrix_api_call_seconds{method="renew"}."""
    def val(snap, name, **labels):
        return snap.get((name, tuple(sorted({"method": "renew", **labels}.items()))), 0.0)

    count = val(after, "jtrix_api_call_seconds_count") - val(before, "jtrix_api_call_seconds_count")
    total = val(after, "jtrix_api_call_seconds_sum") - val(before, "jtrix_api_call_seconds_sum")
    buckets = sorted(((float(dict(k[1])["le"]), after[k] - before.get(k, 0.0)) for k in after
                      if k[0] == "jtrix_api_call_seconds_bucket" and dict(k[1]).get("method") == "renew"))

    def quantile(q):  # upper bound of the bucket holding the q-quantile
        for le, cum in buckets:
            if count and cum >= q * count:
                return le
        return None

    return {"count": count, "mean_ms": (total / count * 1000) if count else None,
            "p50_le_ms": _ms(quantile(0.5)), "p99_le_ms": _ms(quantile(0.99)),
            "buckets": {("+Inf" if math.isinf(le) else f"{le:g}"): cum for le, cum in buckets}}


def _ms(v):
    return None if v is None else (v * 1000 if not math.isinf(v) else float("inf"))


class EventTail:
    """Reads the node's event log of one app incrementally (long-poll, no fixed sleeps)."""

    def __init__(self, node: RunningNode, app: str) -> None:
        self.node, self.app, self.since = node, app, 0

    def poll(self, wait_s: float = 0.0) -> list[dict]:
        out = []
        while True:
            evs = self.node.client.call("events", self.since, self.app, wait_s)
            if evs:
                self.since = evs[-1]["index"]
                out.extend(evs)
            if len(evs) < 1000:  # the node pages at 1000
                return out
            wait_s = 0.0


def netlet_children(node_pid: int) -> list[psutil.Process]:
    out = []
    try:
        for c in psutil.Process(node_pid).children():
            try:
                if c.status() != psutil.STATUS_ZOMBIE and "netlets.runner" in " ".join(c.cmdline()):
                    out.append(c)
            except psutil.Error:
                pass
    except psutil.NoSuchProcess:
        pass
    return out


def zombie_children(node_pid: int) -> int:
    """Children of the node that died and were not yet reaped (their exit not yet handled by the node)."""
    try:
        return sum(1 for c in psutil.Process(node_pid).children() if _status(c) == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return 0


def _status(p: psutil.Process) -> str | None:
    try:
        return p.status()
    except psutil.Error:
        return None


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def netlet_types(n: int) -> str:
    """N Echo netlets as ceil(N/64) identical types (the descriptor schema caps replicas at 64 per type)."""
    k = -(-n // MAX_REPLICAS)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return "\n".join(f'  <netlet type="w{i}" class="workers:Echo" replicas="{m}"/>' for i, m in enumerate(sizes))


# -- one N -----------------------------------------------------------------------
class MemoryLow(RuntimeError):
    pass


class Tracker:
    """Follows the app's event log: each slot's current netlet, its pid and readiness; churn counters."""

    def __init__(self, tail: EventTail, t0: float) -> None:
        self.tail, self.t0 = tail, t0
        self.current: dict[str, str] = {}  # slot -> netlet id
        self.pids: dict[str, int] = {}
        self.ready: dict[str, float] = {}  # slot -> ready time of its current netlet
        self.spawned_at: dict[str, float] = {}  # netlet id -> netlet.started time
        self.ready_at: dict[str, float] = {}
        self.kinds: dict[str, int] = {}
        self.exit_reasons: dict[str, int] = {}
        self.expired: list[dict] = []  # every lease expiry: when, how long after spawn / ready

    def pump(self, wait_s: float = 0.0) -> list[dict]:
        evs = self.tail.poll(wait_s)
        for e in evs:
            self.apply(e)
        return evs

    def apply(self, e: dict) -> None:
        kind, slot, d = e["kind"], e["slot"], e["detail"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        nid = d.get("netlet")
        if kind == "netlet.started":
            self.current[slot], self.pids[slot] = nid, d["pid"]
            self.ready.pop(slot, None)
            self.spawned_at[nid] = e["time"]
        elif kind == "netlet.ready" and self.current.get(slot) == nid:
            self.ready[slot] = self.ready_at[nid] = e["time"]
        elif kind == "netlet.exited":
            reason = d.get("reason", "?")
            self.exit_reasons[reason] = self.exit_reasons.get(reason, 0) + 1
            if self.current.get(slot) == nid:
                self.ready.pop(slot, None)
        elif kind == "lease.expired":
            self.expired.append({"netlet": nid, "at_s": e["time"] - self.t0,
                                 "after_spawn_s": e["time"] - self.spawned_at[nid] if nid in self.spawned_at else None,
                                 "after_ready_s": e["time"] - self.ready_at[nid] if nid in self.ready_at else None})

    def count(self, kind: str) -> int:
        return self.kinds.get(kind, 0)


def measure_window(node_proc: psutil.Process, metrics_port: int, n: int, seconds: float,
                   tracker: Tracker) -> dict[str, Any]:
    """One idle window: CPU of node / netlets / bench / everything else, renewals, churn events."""
    kids = netlet_children(node_proc.pid)
    me = psutil.Process()
    node_t0, kids_t0, me_t0, sys_t0 = node_proc.cpu_times(), cpu_seconds(kids), me.cpu_times(), psutil.cpu_times()
    m0 = scrape(metrics_port)
    ev0 = dict(tracker.kinds)
    w0 = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    m1 = scrape(metrics_port)
    wall = time.monotonic() - w0
    # netlets alive at the start or the end (replacements started in the window count from 0; a netlet that
    # both started and died inside the window is missed and lands in "others")
    kids_end = {p.pid: p for p in kids} | {p.pid: p for p in netlet_children(node_proc.pid)}
    node_t1, kids_t1, me_t1, sys_t1 = (node_proc.cpu_times(), cpu_seconds(list(kids_end.values())), me.cpu_times(),
                                       psutil.cpu_times())
    tracker.pump(0)

    def busy(t):
        return t.user + t.system + t.nice + t.irq + t.softirq + getattr(t, "steal", 0.0)

    def total(t):
        return busy(t) + t.idle + t.iowait

    node_cpu = ((node_t1.user + node_t1.system) - (node_t0.user + node_t0.system)) / wall * 100
    kids_cpu = sum(kids_t1[p] - kids_t0.get(p, 0.0) for p in kids_t1) / wall * 100
    bench_cpu = ((me_t1.user + me_t1.system) - (me_t0.user + me_t0.system)) / wall * 100
    machine_cpu = (busy(sys_t1) - busy(sys_t0)) / max(1e-9, total(sys_t1) - total(sys_t0)) * 100
    renew = renew_metrics(m0, m1)
    renew["per_s"] = renew["count"] / wall
    renew["expected_per_s"] = n / (TTL / 3)
    return {
        "window_s": wall, "node_cpu_percent": node_cpu, "netlets_cpu_percent": kids_cpu,
        "netlets_measured": len(kids), "bench_cpu_percent": bench_cpu,
        "machine_cpu_percent": machine_cpu,  # of all cores
        # everything else on the machine (other benchmarks / test suites), in % of one core
        "others_cpu_percent": machine_cpu * (os.cpu_count() or 1) - node_cpu - kids_cpu - bench_cpu,
        "load": os.getloadavg(), "renewals": renew, "zombie_children": zombie_children(node_proc.pid),
        "events": {k: v - ev0.get(k, 0) for k, v in tracker.kinds.items() if v - ev0.get(k, 0)},
    }


def memory_snapshot(node_proc: psutil.Process) -> dict[str, Any]:
    rss, uss, pss = [], [], []
    kids = netlet_children(node_proc.pid)
    for p in kids:
        try:
            mi = p.memory_full_info()
            rss.append(mi.rss)
            uss.append(mi.uss)
            pss.append(mi.pss)
        except psutil.Error:
            pass
    with node_proc.oneshot():
        node_mem = node_proc.memory_full_info()
        node_threads = node_proc.num_threads()
        node_fds = node_proc.num_fds()
    vm = psutil.virtual_memory()
    return {"node_rss": node_mem.rss, "node_uss": node_mem.uss, "node_threads": node_threads, "node_fds": node_fds,
            "netlets_measured": len(rss), "zombie_children": zombie_children(node_proc.pid),
            "netlets_rss_total": sum(rss), "netlets_uss_total": sum(uss), "netlets_pss_total": sum(pss),
            "netlet_uss": stats(uss), "netlet_rss": stats(rss), "netlet_pss": stats(pss),
            "mem_available": vm.available, "mem_total": vm.total}


def run_one(n: int, args, tmp: Path) -> dict[str, Any]:
    import warrants
    from hosting.client import HostingClient
    from hosting.daemon import start_background

    result: dict[str, Any] = {"n": n, "ttl_s": TTL, "ok": False}
    home = tmp / "home"
    os.environ["JTRIX_HOME"] = str(home)
    vm = psutil.virtual_memory()
    result["machine_before"] = {"mem_total": vm.total, "mem_available": vm.available, "load": os.getloadavg()}
    info = start_background(home, timeout=60)
    node = RunningNode(home, HostingClient.for_home(home, timeout=600))
    node_pid = info["pid"]
    node_proc = psutil.Process(node_pid)
    try:
        metrics_port = node.info["metrics_port"]
        # -- 1. start-up -----------------------------------------------------
        xml = descriptor_xml(APP, netlet_types(n), lease=f'ttl="{TTL}" grace="1.0"')
        path = tmp / "scale.xml"
        path.write_text(xml)
        data, sha = warrants.package_codebase(warrants.load_descriptor(path))
        node.client.call("upload_codebase", data, sha)
        submit_err: list[BaseException] = []
        submit_done = threading.Event()

        def submit():
            try:
                node.client.call("submit_app", path.read_bytes(), str(path), sha, False, True)
            except BaseException as err:  # reported by the main thread
                submit_err.append(err)
            finally:
                submit_done.set()

        log(f"N={n}: submitting")
        t_submit = time.time()
        m_submit = time.monotonic()
        tracker = Tracker(EventTail(node, APP), t_submit)
        threading.Thread(target=submit, name="submit", daemon=True).start()
        min_avail = psutil.virtual_memory().available
        max_load = os.getloadavg()[0]
        deadline = m_submit + args.start_timeout_base + args.start_timeout_per_netlet * n
        last_progress = 0.0
        submit_s = None
        converged = False
        while True:
            tracker.pump(2.0)
            if submit_done.is_set() and submit_s is None:
                submit_s = time.monotonic() - m_submit
                if submit_err:
                    raise submit_err[0]
            avail = psutil.virtual_memory().available
            min_avail = min(min_avail, avail)
            max_load = max(max_load, os.getloadavg()[0])
            if avail < 0.15 * psutil.virtual_memory().total:
                raise MemoryLow(f"available memory fell to {avail / 2**30:.1f} GiB while starting {n} netlets")
            now = time.monotonic()
            if now - last_progress >= 10:
                last_progress = now
                log(f"N={n}: {now - m_submit:6.1f}s  spawned {tracker.count('netlet.started')}  "
                    f"ready {len(tracker.ready)}/{n}  lease expiries {tracker.count('lease.expired')}  "
                    f"load {os.getloadavg()[0]:.1f}  avail {avail / 2**30:.1f} GiB")
            if len(tracker.ready) == n and submit_s is not None:
                converged = True
                break
            if now > deadline:
                break
        renew_startup = renew_metrics({}, scrape(metrics_port))  # cumulative since the node started
        started_ts = sorted(tracker.spawned_at.values())
        startup: dict[str, Any] = {
            "converged": converged, "ready_at_end": len(tracker.ready),
            "submit_call_s": submit_s, "first_spawn_s": started_ts[0] - t_submit if started_ts else None,
            "last_spawn_s": started_ts[-1] - t_submit if started_ts else None,
            "spawns": tracker.count("netlet.started"), "exits": tracker.count("netlet.exited"),
            "lease_expiries": tracker.count("lease.expired"), "exit_reasons": dict(tracker.exit_reasons),
            "min_mem_available": min_avail, "max_load1": max_load, "renew_handling_until_ready": renew_startup,
            "expired_never_ready": sum(1 for x in tracker.expired if x["after_ready_s"] is None),
            "expired_after_ready_s": stats([x["after_ready_s"] for x in tracker.expired
                                            if x["after_ready_s"] is not None]),
            "expired_while_starting": list(tracker.expired),
        }
        result["startup"] = startup
        if converged:
            startup["all_ready_s"] = max(tracker.ready.values()) - t_submit

            def confirmed():
                a = node.app(APP)
                ok = len(a["netlets"]) == n and all(x["state"] == "running" and x.get("phase") == "running"
                                                    for x in a["netlets"])
                return a if ok else None

            t_status = time.monotonic()
            view = confirmed()
            while view is None and time.monotonic() < deadline + 60:
                tracker.pump(1.0)  # wait for the next event (or 1 s) before asking again
                view = confirmed()
            startup["status_call_s"] = time.monotonic() - t_status
            startup["all_running_confirmed_s"] = time.time() - t_submit if view else None
            log(f"N={n}: all {n} ready after {startup['all_ready_s']:.1f}s (spawns {startup['spawns']}, "
                f"lease expiries {startup['lease_expiries']}); status confirmed: {view is not None}")
        else:
            log(f"N={n}: NOT converged: {len(tracker.ready)}/{n} ready after {time.monotonic() - m_submit:.0f}s "
                f"(spawns {startup['spawns']}, lease expiries {startup['lease_expiries']}); measuring anyway")

        # -- settle: no events for 2 s (bounded) ----------------------------------
        settle_end = time.monotonic() + 30
        while tracker.pump(2.0) and time.monotonic() < settle_end:
            pass

        # -- 2./3. idle windows, until the node has served for --steady-after s ----
        # (a node's per-call costs can grow with what it remembers, e.g. nonces within the replay window)
        series = []
        steady_from = time.monotonic() + args.steady_after
        while True:
            w = measure_window(node_proc, metrics_port, n, args.idle_seconds, tracker)
            w["since_ready_s"] = time.time() - t_submit - startup.get("all_ready_s", 0.0)
            series.append(w)
            r = w["renewals"]
            log(f"N={n}: window {len(series)}: node CPU {w['node_cpu_percent']:5.1f}%  netlets "
                f"{w['netlets_cpu_percent']:5.1f}%  others {w['others_cpu_percent']:5.0f}%  renewals "
                f"{r['per_s']:5.0f}/s (exp {r['expected_per_s']:.0f}) mean {r['mean_ms'] or 0:6.2f} ms  "
                f"live netlets {w['netlets_measured']} zombies {w['zombie_children']}  events {w['events']}  "
                f"load {w['load'][0]:.1f}")
            if time.monotonic() >= steady_from:
                break
        result["idle_series"] = series
        result["idle_first"], result["idle_last"] = series[0], series[-1]
        result["memory"] = memory_snapshot(node_proc)
        log(f"N={n}: USS/netlet {result['memory']['netlet_uss']['median'] / MiB:.1f} MiB, node RSS "
            f"{result['memory']['node_rss'] / MiB:.0f} MiB, {result['memory']['node_threads']} threads")
        if args.py_spy:
            result["py_spy"] = py_spy_dumps(node_pid, n, args)

        # -- 4. crash detection ----------------------------------------------------
        if converged:
            result["crash"] = crash_trials(n, args, node_pid, tracker)
        result["ok"] = converged
        return result
    finally:
        cleanup_node(node)


def crash_trials(n: int, args, node_pid: int, tracker: Tracker) -> dict[str, Any]:
    rng = random.Random(args.seed + n)
    candidates = sorted(tracker.current)
    rng.shuffle(candidates)
    exit_lat, spawn_lat, ready_lat, missed, unrelated = [], [], [], [], 0
    tracker.pump(0)
    for slot in candidates:
        if len(exit_lat) + len(missed) >= args.trials:
            break
        if slot not in tracker.ready:
            continue  # not ready right now (replaced meanwhile): take another one
        victim, victim_id = tracker.pids[slot], tracker.current[slot]
        try:
            proc = psutil.Process(victim)
            if proc.ppid() != node_pid or "netlets.runner" not in " ".join(proc.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        before = tracker.count("lease.expired") + tracker.count("netlet.exited")
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        got: dict[str, float] = {}
        end = time.monotonic() + 60
        while "ready" not in got and time.monotonic() < end:
            for e in tracker.pump(2.0):
                d = e["detail"]
                if e["slot"] != slot:
                    continue
                if e["kind"] == "netlet.exited" and d.get("netlet") == victim_id:
                    got["exited"] = e["time"]
                elif e["kind"] == "netlet.started" and "exited" in got:
                    got["started"] = e["time"]
                elif e["kind"] == "netlet.ready" and d.get("netlet") == tracker.current[slot] and "started" in got:
                    got["ready"] = e["time"]
        unrelated += tracker.count("lease.expired") + tracker.count("netlet.exited") - before - ("exited" in got)
        if "ready" not in got:
            missed.append({"slot": slot, "saw": sorted(got)})
            log(f"N={n}: trial on {slot}: not replaced within 60 s (saw {sorted(got)})")
            continue
        exit_lat.append((got["exited"] - t_kill) * 1000)
        spawn_lat.append((got["started"] - t_kill) * 1000)
        ready_lat.append((got["ready"] - t_kill) * 1000)
    if exit_lat:
        log(f"N={n}: crash -> exited median {statistics.median(exit_lat):.1f} ms, spawned "
            f"{statistics.median(spawn_lat):.1f} ms, ready {statistics.median(ready_lat):.0f} ms "
            f"({len(exit_lat)} trials, {len(missed)} missed, {unrelated} unrelated exits/expiries meanwhile)")
    return {"trials": len(exit_lat), "missed": missed, "exited_ms": stats(exit_lat), "spawned_ms": stats(spawn_lat),
            "ready_ms": stats(ready_lat), "unrelated_exits_or_expiries": unrelated,
            "raw": {"exited_ms": exit_lat, "spawned_ms": spawn_lat, "ready_ms": ready_lat}}


def py_spy_dumps(node_pid: int, n: int, args, count: int = 5) -> dict[str, Any]:
    """A few ``py-spy dump`` snapshots of the idle node (one sample each: cheap, unlike ``record``)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("py-spy not installed (.bench-venv/bin/pip install py-spy); no dumps")
        return {"error": "py-spy not installed"}
    out_dir = Path(args.py_spy)
    out_dir.mkdir(parents=True, exist_ok=True)
    top: dict[str, int] = {}
    files = []
    for k in range(count):
        text = subprocess.run([exe, "dump", "--pid", str(node_pid)], capture_output=True, text=True,
                              timeout=120).stdout
        path = out_dir / f"node-idle-{n}-dump{k}.txt"
        path.write_text(text)
        files.append(str(path))
        lines = text.splitlines()
        for i, line in enumerate(lines):  # innermost frame of every thread
            if line.startswith("Thread ") and i + 1 < len(lines):
                frame = lines[i + 1].strip().split(" (")[0]
                top[frame] = top.get(frame, 0) + 1
    return {"files": files, "innermost_frames": dict(sorted(top.items(), key=lambda kv: -kv[1])[:15])}


def project(prev: dict[str, Any], n: int) -> float:
    """Bytes N netlets (+ node) would use, from the previous N's mean PSS per netlet and node RSS per netlet."""
    mem = prev["memory"]
    return n * (mem["netlets_pss_total"] / max(1, mem["netlets_measured"]) + mem["node_rss"] / prev["n"])


# -- output ------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    head = ("N", "all ready s", "expired@start", "node CPU% first/max/last", "renew/s last (exp)", "renew ms last",
            "expired idle", "live (zombie) last", "node RSS", "thr", "netlets RSS", "netlets USS", "USS/netlet",
            "kill→exit ms med/p99/max", "kill→spawn ms med/p99/max", "kill→ready ms med/p99/max", "load1",
            "others CPU%")
    rows = [head]
    for r in results:
        if "idle_series" not in r:
            rows.append((str(r["n"]), "FAILED: " + r.get("error", "?")[:120]) + ("",) * (len(head) - 2))
            continue
        s, first, last, m = r["startup"], r["idle_first"], r["idle_last"], r["memory"]
        c = r.get("crash") or {}

        def lat(key):
            v = c.get(key)
            return f"{v['median']:.1f}/{v['p99']:.1f}/{v['max']:.1f}" if v else "-"

        expired_idle = sum(w["events"].get("lease.expired", 0) for w in r["idle_series"])
        rn = last["renewals"]
        rows.append((
            str(r["n"]), f"{s['all_ready_s']:.1f}" if s.get("converged") else f"NO ({s['ready_at_end']} ready)",
            str(s["lease_expiries"]),
            f"{first['node_cpu_percent']:.0f}/{max(w['node_cpu_percent'] for w in r['idle_series']):.0f}"
            f"/{last['node_cpu_percent']:.0f}",
            f"{rn['per_s']:.0f} ({rn['expected_per_s']:.0f})",
            f"{rn['mean_ms']:.2f}" if rn["mean_ms"] is not None else "-", str(expired_idle),
            f"{last['netlets_measured']} ({last.get('zombie_children', 0)})",
            f"{m['node_rss'] / MiB:.0f} MiB", str(m["node_threads"]), f"{m['netlets_rss_total'] / 2**30:.2f} GiB",
            f"{m['netlets_uss_total'] / 2**30:.2f} GiB",
            f"{m['netlet_uss']['median'] / MiB:.1f} MiB" if m["netlet_uss"] else "-",
            lat("exited_ms"), lat("spawned_ms"), lat("ready_ms"),
            f"{last['load'][0]:.1f}", f"{statistics.mean(w['others_cpu_percent'] for w in r['idle_series']):.0f}"))
    widths = [max(len(row[k]) for row in rows if k < len(row)) for k in range(len(head))]
    lines = ["  ".join(cell.rjust(widths[k]) for k, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,300,500", help="netlet counts, comma-separated")
    parser.add_argument("--trials", type=int, default=20, help="SIGKILL trials per N")
    parser.add_argument("--json", default=str(ROOT / "bench/results/scale.json"))
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of one idle measurement window")
    parser.add_argument("--steady-after", type=float, default=130.0,
                        help="keep measuring idle windows until this long after start-up (default: past the "
                             "node's 120 s replay window); 0 = one window")
    parser.add_argument("--start-timeout-base", type=float, default=120.0)
    parser.add_argument("--start-timeout-per-netlet", type=float, default=1.0)
    parser.add_argument("--max-ram-fraction", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--py-spy", metavar="DIR", help="also take py-spy dumps of the idle node into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on to the next N even if this one's start-up did not converge")
    args = parser.parse_args()
    counts = [int(x) for x in args.counts.split(",") if x.strip()]

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in the background (SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    vm = psutil.virtual_memory()
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count(), "mem_total": vm.total,
            "python": sys.version.split()[0], "counts_requested": counts, "trials": args.trials,
            "idle_seconds": args.idle_seconds, "steady_after_s": args.steady_after, "ttl_s": TTL,
            "load_at_start": os.getloadavg(),
            "max_ram_fraction": args.max_ram_fraction}
    print(f"scale: N Echo netlets on one node, TTL {TTL} s, {os.cpu_count()} cores, "
          f"{vm.total / 2**30:.1f} GiB RAM, Python {meta['python']}, load {meta['load_at_start'][0]:.2f}", flush=True)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def write_json():
        json_path.write_text(json.dumps({"meta": meta, "results": results, "notes": notes}, indent=1, default=str))

    try:
        for n in counts:
            prev = next((r for r in reversed(results) if "memory" in r), None)
            capped = False
            if prev is not None:
                vm = psutil.virtual_memory()
                others = vm.total - vm.available  # what the machine uses now, our previous run cleaned up
                budget = args.max_ram_fraction * vm.total - others
                need = project(prev, n)
                if need > budget:
                    safe = int(budget / project(prev, 1)) // 50 * 50
                    note = (f"N={n} would need ~{need / 2**30:.1f} GiB (projected from N={prev['n']}), above "
                            f"{args.max_ram_fraction:.0%} of RAM minus {others / 2**30:.1f} GiB in use; "
                            f"largest safe N ~{safe}")
                    log(note)
                    notes.append(note)
                    if safe <= prev["n"]:
                        break
                    n, capped = safe, True
            tmp = Path(tempfile.mkdtemp(prefix=f"jtrix-scale-{n}-"))
            failed = False
            try:
                r = run_one(n, args, tmp)
            except (Exception, KeyboardInterrupt) as err:
                failed = True
                r = {"n": n, "ok": False, "error": f"{type(err).__name__}: {err}", "home": str(tmp / "home")}
                log(f"N={n} failed: {r['error']} (home kept: {tmp})")
                if isinstance(err, KeyboardInterrupt):
                    results.append(r)
                    raise
            finally:
                strays = len(kill_under(tmp / "home"))
                if strays:
                    log(f"N={n}: killed {strays} stray processes left under {tmp}")
                if not args.keep and not failed:
                    shutil.rmtree(tmp, ignore_errors=True)
            r["capped_by_memory"] = capped
            results.append(r)
            write_json()
            if capped or (not r["ok"] and not args.keep_going):
                break
    except KeyboardInterrupt:
        log("interrupted; everything started was cleaned up")
    finally:
        write_json()
    print(table(results))
    for note in notes:
        print("note:", note)
    print(f"JSON: {json_path}")


if __name__ == "__main__":
    main()
