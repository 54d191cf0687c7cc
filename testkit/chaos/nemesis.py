"""The chaos run's faults: a seeded thread that injects one, waits for the app to heal, repeats.

Healed means "serving" (a master, every slot running as master or backup, the
fault's victims gone from the status) and then "in sync" (every slot back in
the in-sync set), within ``HEAL_DEADLINE_S``; a fault that does not heal in
time is recorded as such and the run goes on. The nemesis acts on a
:class:`testkit.fleet.Fleet` (a single node is a fleet of one); the machine
faults need two nodes or more.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import psutil

from testkit.chaos import APP
from testkit.fleet import Fleet
from testkit.node import kill_node_with_its_netlets, master_of
from testkit.procs import process_dead
from testkit.wait import poll

FAULTS = ["kill-master", "kill-backup", "pause-master", "kill-node", "kill-all", "delay-arbiter"]
MACHINE_FAULTS = ["kill-machine", "pause-machine"]  # two nodes or more only
HEAL_DEADLINE_S = 60.0


class Nemesis:
    """Faults of ``kinds`` on ``node`` every ~``interval`` s (drawn with ``seed``, or in turn with
    ``schedule`` "all") from ``start()`` until ``finish()``; each recorded in ``faults``."""

    def __init__(self, node: Fleet, seed: int, interval: float, schedule: str, t0: float,
                 kinds: list[str] = FAULTS, log=print) -> None:
        if len(node.nodes) < 2 and set(kinds) & set(MACHINE_FAULTS):
            raise ValueError(f"{', '.join(MACHINE_FAULTS)} need a fleet of two nodes or more")
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
        return self._machine_fault(app, kill_netlets=False)

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
        daemon_node = self.rng.choice(self.node.nodes)
        daemon = psutil.Process(daemon_node.info["pid"])
        backup_s, lead_s = round(self.rng.uniform(0.5, 3.0), 3), round(self.rng.uniform(0.0, 0.5), 3)
        daemon_s = round(self.rng.uniform(0.2, 3.0), 3)
        self.node.paused.add(str(daemon_node.home))
        backup.suspend()
        try:
            time.sleep(lead_s)  # the fault's schedule (not a synchronization): the master notices the stall
            daemon.suspend()
            try:
                time.sleep(daemon_s)  # the fault's duration
            finally:
                daemon.resume()
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


def healthy_app(node: Fleet, require_isr: bool = True) -> dict | None:
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
