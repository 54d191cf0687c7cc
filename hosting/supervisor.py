"""Keeping netlets alive: start, detect death, replace in the same slot.

Safety model (what must hold, whatever the interleaving):
  * A slot has at most one live netlet (incarnation) at a time: a replacement
    starts only after the previous process is gone (its pidfd fired).
  * Death is learned from the pidfd at once; a hang is learned from lease
    expiry, answered by SIGTERM to the process group, then SIGKILL after the
    app's grace period. Either way the netlet's leases are revoked before any
    replacement or election is started.
  * ``terminate`` is final: once an app is terminating no slot of it is ever
    started again; the app leaves the registry only after its last process is
    gone. A user's ``kill`` is answered like a crash (the slot is refilled).
  * A netlet is signalled only through its pidfd (never a reused pid).
  * Every netlet starts confined as ``hosting.confine`` prepared it; an app's
    uid is released only once the app's last netlet is gone.
  * Fail-stop exits (``netlets.faults``) name their cause in an event: a
    storage failure (exit 74, ``storage.error`` with errno) is restarted with
    backoff and never given up on, whatever ``give-up-after`` says (a full
    disk heals without an operator); a corrupt storage (exit 65,
    ``storage.corrupt`` with file and offset) is never restarted: the slot
    stays ``corrupt`` until ``reset_slot`` rebuilds it.
  * ``reset_slot`` wipes a slot's replica directory only while no process
    runs in the slot (after its pidfd fired), then starts it again.
  * A start that fails before its process runs, for any reason, is followed by
    the same restart decision as a crash (``_start_failed``), never dropped.
  * A netlet's exit is always followed by a restart decision (restart now, after
    a backoff, give up, or the slot's terminal state), whatever the stores do:
    every store-dependent step of an exit, a start and a first renewal (registry
    writes, the policy hooks, which save the arbiter's state) runs through
    ``hosting.store_retry`` keyed by slot, so a store error ("database is
    locked", an etcd timeout) is retried with backoff, in order, never dropped;
    a lasting outage shows as the slot's ``store_error`` and a
    ``store.unavailable`` event (``store.recovered`` once it is over). No
    replacement starts while the previous netlet's exit is being recorded. What
    needs no store (revoking leases, signalling) is never held up by one.
  * A slot being spawned counts as live (a placeholder in ``live`` from before
    the fork until the process is recorded): no second start, no reset, no
    termination can miss it; whatever ended it meanwhile kills it on arrival
    (``hosting.watched``).
  * Many deaths at once (``PidWatcher`` reports every exit of one wakeup
    together) never wait for a spawn: ``start_slot`` holds the lock only to
    reserve and to record; their slots are refilled through the start queue
    (``hosting.start_queue``: a bounded number starting at once, apps without a
    master first), never on the watcher thread. The same watcher reports the
    exits of the apps' bootstrap runs (``hosting.bootstrapper``), whose owner
    likewise never holds its lock across a spawn.

Policy hooks (``SupervisorHooks``): the election policy learns when a netlet
is spawned, becomes ready (first renewal) and is gone (after its leases were
revoked).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from hosting import lease_ids
from hosting.backoff import Decision, next_restart
from hosting.confine import Confinement
from hosting.home import Home
from hosting.lessor import Lessor
from hosting.pidwatch import PidWatcher, ProcessGone
from hosting.registry import Registry
from hosting.resources import bind_resources, wipe
from hosting.spawn import spawn_app_process
from hosting.start_queue import StartQueue
from hosting.store_retry import STORE_ERRORS, StoreRetry
from hosting.timers import Timer, Timers
from hosting.timing import UNTIL_SERVING_S, Timing
from hosting.watched import arrived, end, gone
from netlets.faults import EXIT_CORRUPT, EXIT_STORAGE_FAILED
from netlets.replication.storage import REPLICA_DIR, fsync_directory
from warrants.descriptor_model import Descriptor
from warrants.names import NetletId

log = logging.getLogger(__name__)


def netlet_id_of(app: str, slot: str, incarnation: int) -> str:
    return str(NetletId.of(app, slot, incarnation))


lease_id_of = lease_ids.netlet  # a netlet's liveness lease (``hosting.lease_ids``)


class SupervisorHooks:
    """What the supervisor tells the policy above it (no-ops by default)."""

    def netlet_spawned(self, app: str, slot: str, netlet_id: str) -> None: ...

    def netlet_ready(self, app: str, slot: str, netlet_id: str) -> None: ...

    def netlet_gone(self, app: str, slot: str, netlet_id: str, reason: str) -> None: ...

    def may_start(self, app: str, slot: str) -> bool:
        """False when this node must not run ``slot`` now (fenced, or it is placed elsewhere)."""
        return True

    def start_priority(self, app: str) -> int:
        """Order of the start queue: lower starts first (say, 0 for an app without a master)."""
        return 0

    def next_incarnation(self, app: str, slot: str, local_next: int) -> int:
        """The incarnation number of the slot's next netlet (never used before for the slot,
        on any node); ``local_next`` is one above the last this node used."""
        return local_next


@dataclass
class LiveNetlet:
    """A netlet process this node watches (its own child or an adopted one)."""

    netlet_id: str
    app: str
    slot: str
    incarnation: int
    pid: int
    started_mono: float
    popen: Any = None  # subprocess.Popen for our children (kept so nothing else reaps them)
    end_reason: str | None = None  # set when we decided to end it (lease expired, killed by user…)
    kill_timer: Timer | None = None
    ready: bool = False
    blameless: bool = False  # ended for the node's own reasons: its death is no failure of the netlet


@dataclass
class SlotRuntime:
    restart_timer: Timer | None = None
    next_attempt_wall: float | None = None
    reset_pending: bool = False  # wipe the replica directory once the slot's process is gone
    exit_pending: bool = False  # a netlet's exit is being recorded: no replacement starts until decided


@dataclass
class AppRuntime:
    descriptor: Descriptor
    codebase_dir: Any
    terminating: bool = False
    gone: threading.Event = field(default_factory=threading.Event)
    slots: dict[str, SlotRuntime] = field(default_factory=dict)


class Supervisor:
    """Process lifecycle of every slot of every app on this node."""

    def __init__(self, *, home: Home, registry: Registry, timers: Timers, lessor: Lessor,
                 make_secrets: Callable[[str, str, str, int, dict], dict], confinement: Confinement,
                 start_timeout: float = 15.0, hooks: SupervisorHooks | None = None,
                 start_limit: int | None = None, serving: bool = True) -> None:
        self.home = home
        self.confinement = confinement
        self.registry = registry
        self.timers = timers
        self.lessor = lessor
        self.make_secrets = make_secrets
        self.start_timeout = start_timeout
        self.hooks = hooks or SupervisorHooks()
        self.watcher = PidWatcher(on_exits=self._on_exits)
        #: replacements and restarts: a bounded number starting at once, apps without a master first
        self.starts = StartQueue(self._start_queued, self.hooks.start_priority, start_limit)
        self.lock = threading.RLock()
        self.live: dict[str, LiveNetlet] = {}
        self.apps: dict[str, AppRuntime] = {}
        #: store-dependent work per (app, slot), retried through store outages (module docstring)
        self.retry = StoreRetry(on_down=self._store_down, on_recovered=self._store_recovered)
        #: False while the node recovers: an adopted netlet cannot renew before the node serves
        #: (nor find it, after a clean stop, before node.json is written), so its lease waits
        self._serving = serving
        self._adopted_before_serving: dict[str, float] = {}

    # -- queries ----------------------------------------------------------
    def live_in_slot(self, app: str, slot: str) -> LiveNetlet | None:
        """The live netlet in ``slot``, if any. Lock-free, like ``descriptor``: it reads a
        snapshot of ``live`` (``list(dict.values())`` is atomic), so an election or an
        access point does not wait for a replacement being spawned."""
        for n in list(self.live.values()):
            if n.app == app and n.slot == slot:
                return n
        return None

    def descriptor(self, app: str) -> Descriptor | None:
        """The registered app's descriptor (None if the app is not registered here).

        Lock-free (every lease renewal asks): one dict lookup of an immutable
        value is atomic, and renewals must not wait for the lock (held while
        many deaths are recorded, or a spawn is reserved and recorded).
        """
        rt = self.apps.get(app)
        return rt.descriptor if rt is not None else None

    def is_terminating(self, app: str) -> bool:
        """Lock-free like ``descriptor`` (elections ask it; ``terminating`` only ever turns True)."""
        rt = self.apps.get(app)
        return rt is not None and rt.terminating

    def store_error(self, app: str, slot: str) -> str | None:
        """The store error the slot's bookkeeping has been waiting out (None: none for long)."""
        return self.retry.down((app, slot))

    def next_attempt(self, app: str, slot: str) -> float | None:
        with self.lock:
            rt = self.apps.get(app)
            s = rt.slots.get(slot) if rt else None
            return s.next_attempt_wall if s else None

    # -- starting ---------------------------------------------------------
    def register_app(self, descriptor: Descriptor, codebase_dir) -> AppRuntime:
        with self.lock:
            rt = AppRuntime(descriptor, codebase_dir)
            for ntype in descriptor.netlet_types:
                for slot in ntype.slots:
                    rt.slots[slot] = SlotRuntime()
            self.apps[descriptor.name] = rt
            return rt

    def start_slot(self, app: str, slot: str, mode: str = "cold") -> str | None:
        """Start a netlet in ``slot`` unless one is live there; returns its id.

        The lock is held only to reserve the slot (a placeholder in ``live``, so
        every "is the slot free" check sees it) and to record the process: key
        generation, signing, confinement and the fork run outside it, so death
        handling and elections never wait for a spawn. A placeholder someone
        decided to end meanwhile (``end_reason``) is killed as soon as it runs.
        """
        with self.lock:
            rt = self.apps.get(app)
            if rt is None or rt.terminating or self.live_in_slot(app, slot) is not None:
                return None
            if rt.slots[slot].exit_pending:
                return None  # the exit's restart decision starts it (or decides it must not run)
            if not self.hooks.may_start(app, slot):
                log.info("not starting %s/%s: this node may not run netlets now", app, slot)
                return None
            srt = rt.slots[slot]
            Timers.cancel(srt.restart_timer)
            srt.restart_timer, srt.next_attempt_wall = None, None
            row = self.registry.slot(app, slot)
            if row["state"] == "corrupt":
                log.info("not starting %s/%s: its storage is corrupt (reset it)", app, slot)
                return None
            ntype = rt.descriptor.netlet_type(row["type"])
            incarnation = self.hooks.next_incarnation(app, slot, row["incarnation"] + 1)
            recorded, told = bind_resources(ntype, self.home.slot_dir(app, slot),
                                            json.loads(row["resources"]), incarnation)
            netlet_id = netlet_id_of(app, slot, incarnation)
            # Committed before the spawn: if the node dies right after it, its successor never
            # reuses this incarnation (the orphan is disowned at its first renewal).
            self.registry.update_slot(app, slot, incarnation=incarnation, resources=recorded)
            live = LiveNetlet(netlet_id, app, slot, incarnation, 0, time.monotonic())  # pid 0: spawning
            self.live[netlet_id] = live
            timing = Timing(lease_ttl=rt.descriptor.lease_ttl)
            self._grant_lease(netlet_id, timing.start_lease_s(self.start_timeout))
        try:
            self.hooks.netlet_spawned(app, slot, netlet_id)
            secrets = self.make_secrets(app, slot, netlet_id, incarnation, told)
            secrets["mode"] = mode
            slot_dir = self.home.slot_dir(app, slot)
            sandbox = self.confinement.prepare(app, Path(rt.codebase_dir), slot_dir,
                                               [Path(r["path"]) for r in told.values() if r["kind"] == "directory"])
            spawned = spawn_app_process(cwd=slot_dir, sandbox=sandbox,
                                         log_dir=self.home.log_dir(app, slot), incarnation=incarnation,
                                         env_extra={"JTRIX_APP": app, "JTRIX_SLOT": slot}, secrets=secrets)
        except BaseException:
            with self.lock:  # nothing runs: the slot is free again
                self.live.pop(netlet_id, None)
                self.lessor.revoke(lease_id_of(netlet_id))
                self._slot_vacated(rt, app, slot)
            raise
        try:
            create_time = psutil.Process(spawned.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        with self.lock:
            # Watched (here) and leased (reserved above) before anything is written: a store failure
            # from here on delays the records (retried, in order, before its exit's), never the
            # process's supervision. Stopped, killed or its app terminated while it was spawning:
            # killed now (``hosting.watched``).
            arrived(self.watcher, netlet_id, live, spawned)
            inherited = sorted(k for k, v in told.items() if v["inherited"])
            self.retry.run((app, slot), [
                lambda: self.registry.update_slot(app, slot, state="running", next_attempt=None),
                lambda: self.registry.add_netlet(netlet_id, app, slot, incarnation, spawned.pid, create_time,
                                                 str(spawned.log_path)),
                # its first renewal may have come while the row could not be written yet
                lambda: live.ready and self.registry.update_netlet(netlet_id, state="running"),
                lambda: self.registry.add_event("netlet.started", app, slot, netlet=netlet_id, pid=spawned.pid,
                                                mode=mode, inherited=inherited,
                                                spawn_s=round(time.monotonic() - live.started_mono, 3)),
            ])
            return netlet_id

    def request_start(self, app: str, slot: str, mode: str) -> None:
        """Start ``slot`` when the start queue's turn comes (``hosting.start_queue``)."""
        self.starts.submit(app, slot, mode)

    def _start_queued(self, app: str, slot: str, mode: str) -> str | None:
        """The start queue's turn for ``slot``. A start that fails for a store's fault is handed
        to the slot's store-retried work (``hosting.store_retry``) and made once the store is back,
        unless no longer wanted by then (``start_slot`` declines); the queue's place is free."""
        try:
            return self.start_slot(app, slot, mode)
        except STORE_ERRORS as err:
            log.warning("starting %s/%s waits for the store: %s", app, slot, err)
            self.retry.run((app, slot), [lambda: self.start_slot(app, slot, mode)])
            return None
        except Exception as err:
            log.exception("starting %s/%s failed", app, slot)
            self._start_failed(app, slot, mode, err)
            return None

    def _start_failed(self, app: str, slot: str, mode: str, err: BaseException) -> None:
        """A start that failed for any other reason than the store's (the spawn's ``OSError``:
        EMFILE, ENOSPC creating the log file, fork's EAGAIN/ENOMEM; binding resources; preparing
        the confinement) is answered like a crash of a process that ran for no time: a
        ``slot.start_failed`` event naming the cause, then the slot's restart decision with its
        backoff and give-up policy (``_schedule_restart``). Never dropped: these steps are the
        slot's store-retried work, like an exit's."""
        cause = f"{type(err).__name__}: {err}"
        record = {"reason": "start failed", "error": cause}
        stand_in = LiveNetlet("", app, slot, 0, 0, time.monotonic())  # the process that never ran
        memo: dict[str, Any] = {}
        self.retry.run((app, slot), [
            lambda: self.registry.add_event("slot.start_failed", app, slot, error=cause, mode=mode),
            lambda: self._decide_after_start_failure(stand_in, record, memo),
        ])

    def _decide_after_start_failure(self, n: LiveNetlet, record: dict, memo: dict) -> None:
        with self.lock:
            rt = self.apps.get(n.app)
            if rt is None or rt.terminating or rt.slots[n.slot].reset_pending or rt.slots[n.slot].exit_pending:
                return  # the termination, reset or exit in progress decides the slot's fate
            if self.live_in_slot(n.app, n.slot) is not None:
                return  # started meanwhile (a manual run, a bootstrap)
            self._schedule_restart(rt, n, 0.0, record, memo)

    def adopt(self, row, descriptor_ttl: float) -> bool:
        """Re-attach to a netlet started by an earlier run of this node (not our child).

        The process must still be the one recorded: same pid *and* same start
        time (so a reused pid is never adopted). Returns False if it is gone.
        """
        try:
            proc = psutil.Process(row["pid"])
            if abs(proc.create_time() - row["create_time"]) > 0.01:
                return False
            fd_key = row["id"]
            live = LiveNetlet(row["id"], row["app"], row["slot"], row["incarnation"], row["pid"],
                              time.monotonic() - (time.time() - row["started"]), ready=row["state"] == "running")
            with self.lock:
                self.live[fd_key] = live
                self.watcher.watch(fd_key, row["pid"], is_child=False)
                # Re-check after the pidfd exists: the pidfd pins this exact process.
                if abs(psutil.Process(row["pid"]).create_time() - row["create_time"]) > 0.01:
                    self.live.pop(fd_key, None)
                    return False
                ttl = Timing(lease_ttl=descriptor_ttl).adopted_lease_s
                if self._serving:
                    self._grant_lease(row["id"], ttl)
                else:  # its ttl runs from start_serving: renewing is impossible until then
                    self._adopted_before_serving[row["id"]] = ttl
                    self._grant_lease(row["id"], UNTIL_SERVING_S)
            self.registry.add_event("netlet.adopted", row["app"], row["slot"], netlet=row["id"], pid=row["pid"])
            return True
        except (psutil.NoSuchProcess, ProcessGone):
            with self.lock:
                self.live.pop(row["id"], None)
            return False

    def start_serving(self) -> None:
        """The node answers renewals from now (and can be found): the leases of netlets adopted
        during recovery run their adoption ttl from now, not from their adoption (a slow
        recovery used to eat the adopted netlet's whole first lease, so a healthy netlet was
        declared hung and replaced: seen under load in test_confinement's adoption test)."""
        with self.lock:
            self._serving = True
            pending, self._adopted_before_serving = self._adopted_before_serving, {}
            for netlet_id, ttl in pending.items():
                if netlet_id in self.live:
                    self._grant_lease(netlet_id, ttl)

    def mark_ready(self, netlet_id: str) -> bool:
        """First renewal: the netlet is up. Returns True the first time.

        Every later renewal returns at the lock-free check (see ``descriptor``)."""
        known = self.live.get(netlet_id)
        if known is not None and known.ready:
            return False
        with self.lock:
            n = self.live.get(netlet_id)
            if n is None or n.ready:
                return False
            n.ready = True
        self.retry.run((n.app, n.slot), [
            lambda: self.registry.update_netlet(netlet_id, state="running"),
            lambda: self.registry.add_event("netlet.ready", n.app, n.slot, netlet=netlet_id),
            lambda: self.starts.finished(netlet_id),  # after its event: no later start is recorded before it
            lambda: self.hooks.netlet_ready(n.app, n.slot, netlet_id),
        ])
        return True

    # -- ending -----------------------------------------------------------
    def stop_netlet(self, netlet_id: str, reason: str, grace: float, blameless: bool = False) -> None:
        """SIGTERM the netlet's group now, SIGKILL it after ``grace`` seconds (``blameless``: the
        node's own decision, not counted as a failure of the netlet)."""
        with self.lock:
            n = self.live.get(netlet_id)
            if n is None:
                return
            n.blameless = n.blameless or blameless
            end(self.watcher, netlet_id, n, reason, signal.SIGTERM)
            self.watcher.signal_group(netlet_id, signal.SIGCONT)  # a stopped process must see its SIGTERM
            Timers.cancel(n.kill_timer)
            n.kill_timer = self.timers.call_later(grace, lambda: self.watcher.signal_group(netlet_id, signal.SIGKILL))
            self.retry.run((n.app, n.slot), [lambda: self.registry.update_netlet(netlet_id, state="stopping")])

    def signal_netlet(self, app: str, slot: str, sig: int) -> str:
        """Deliver a user's signal to the netlet in ``slot``; returns its id. KeyError if none."""
        with self.lock:
            n = self.live_in_slot(app, slot)
            if n is None:
                raise KeyError(f"{app}/{slot}")
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                n.end_reason = n.end_reason or f"killed by user ({signal.Signals(sig).name})"
            self.watcher.signal_group(n.netlet_id, sig)
            self.registry.add_event("netlet.signalled", app, slot, netlet=n.netlet_id,
                                    signal=signal.Signals(sig).name)
            return n.netlet_id

    def kill_all(self, reason: str) -> list[str]:
        """SIGKILL every live netlet's process group now; returns their ids. Each death is
        recorded with ``reason`` and its slot refilled at once, not counted as a failure
        (the node ended them, for reasons of its own)."""
        with self.lock:
            victims = list(self.live.values())
            for n in victims:
                n.blameless = True
                end(self.watcher, n.netlet_id, n, reason)
        return [n.netlet_id for n in victims]

    def _grant_lease(self, netlet_id: str, ttl: float) -> None:
        """(Re)start the netlet's lease: its expiry means the netlet hangs (``on_lease_expired``)."""
        self.lessor.grant(lease_id_of(netlet_id), ttl, lambda: self.on_lease_expired(netlet_id))

    def on_lease_expired(self, netlet_id: str) -> None:
        with self.lock:
            n = self.live.get(netlet_id)
            if n is None:
                return
            rt = self.apps.get(n.app)
            grace = rt.descriptor.grace if rt else 2.0
            self.retry.run((n.app, n.slot), [
                lambda: self.registry.add_event("lease.expired", n.app, n.slot, netlet=netlet_id)])
        self.stop_netlet(netlet_id, "lease expired", grace)

    def _on_exits(self, batch: list[tuple[str, Any]]) -> None:
        """pidfds fired: these processes are gone (every exit one watcher wakeup found). Runs on
        the watcher thread, which never waits for a spawn (``start_slot`` holds the lock only
        briefly) nor for a store (``_on_exit``)."""
        for netlet_id, status in batch:
            self._on_exit(netlet_id, status)

    def _on_exit(self, netlet_id: str, status) -> None:
        """pidfd fired: the process is gone. Runs on the watcher thread.

        What needs no store happens here at once (the netlet leaves ``live``, its leases are
        revoked); recording the exit, telling the policy and deciding the restart are steps
        of the slot's store-retried work (module docstring), the decision always last."""
        with self.lock:
            n = self.live.pop(netlet_id, None)
            if n is None:
                return
            how = gone(n, status)
            Timers.cancel(n.kill_timer)
            self.lessor.revoke(lease_id_of(netlet_id))
            rt = self.apps.get(n.app)
            if rt is not None:
                rt.slots[n.slot].exit_pending = True
        reason = n.end_reason or ("exited" if how.get("exit_code") == 0 else "crashed")
        exit_record = {"reason": reason, **how}
        run_seconds = time.monotonic() - n.started_mono
        memo: dict[str, Any] = {}  # what a step computed, kept across its retries
        self.retry.run((n.app, n.slot), [
            lambda: self.registry.update_netlet(netlet_id, state="exited", exit=json.dumps(exit_record)),
            lambda: self.registry.add_event("netlet.exited", n.app, n.slot, netlet=netlet_id,
                                            run_s=round(run_seconds, 3), **exit_record),
            lambda: self.starts.finished(netlet_id),  # after its event: no later start is recorded before it
            lambda: memo.update(fault=self._record_fault(n, how.get("exit_code"), exit_record)),
            lambda: self.hooks.netlet_gone(n.app, n.slot, netlet_id, reason),
            lambda: self._decide_after_exit(n, run_seconds, exit_record, memo),
        ])

    def _decide_after_exit(self, n: LiveNetlet, run_seconds: float, exit_record: dict, memo: dict) -> None:
        """The restart decision after ``n``'s exit was recorded (the last step of its exit)."""
        with self.lock:
            rt = self.apps.get(n.app)
            if rt is None:
                return
            if rt.terminating:
                self.registry.update_slot(n.app, n.slot, state="exited", last_exit=json.dumps(exit_record))
                rt.slots[n.slot].exit_pending = False
                self._finish_terminate_if_done(n.app)
                return
            if rt.slots[n.slot].reset_pending:
                rt.slots[n.slot].exit_pending = False
                self._finish_reset(rt, n.app, n.slot)
                return
            if memo.get("fault") == "corrupt":
                self.registry.update_slot(n.app, n.slot, state="corrupt", last_exit=json.dumps(exit_record))
                rt.slots[n.slot].exit_pending = False
                return
            self._schedule_restart(rt, n, run_seconds, exit_record, memo, never_give_up=memo.get("fault") == "storage")

    def _slot_vacated(self, rt: AppRuntime, app: str, slot: str) -> None:
        """A start failed before its process ran (caller holds the lock): a termination or reset
        waiting for the slot goes on."""
        if rt.terminating:
            self._finish_terminate_if_done(app)
        elif rt.slots[slot].reset_pending:
            self._finish_reset(rt, app, slot)

    def _record_fault(self, n: LiveNetlet, exit_code: int | None, exit_record: dict) -> str | None:
        """A fail-stop exit: add the netlet's reported cause to ``exit_record``; for a storage
        exit record its event and return "storage" or "corrupt" (else None)."""
        if n.end_reason is not None:  # ended by us or the user: not its own verdict
            return None
        row = self.registry.netlet(n.netlet_id)
        fault = (json.loads(row["status"] or "{}") if row is not None else {}).get("fault")
        if fault:
            exit_record["fault"] = fault  # e.g. a snapshot() that raised (exit 70)
        kind = {EXIT_STORAGE_FAILED: "storage", EXIT_CORRUPT: "corrupt"}.get(exit_code)
        if kind is None:
            return None
        fault = fault or {}
        details = {k: v for k, v in fault.items() if k != "kind"}
        self.registry.add_event("storage.error" if kind == "storage" else "storage.corrupt", n.app, n.slot,
                                netlet=n.netlet_id, exit_code=exit_code, **details)
        return kind

    def _schedule_restart(self, rt: AppRuntime, n: LiveNetlet, run_seconds: float, exit_record: dict,
                          memo: dict, never_give_up: bool = False) -> None:
        """Decide and record the slot's restart (caller holds the lock). The decision is made
        once (kept in ``memo``): a retry after a failed write records the same one, so a store
        error never counts a failure twice."""
        if "decision" not in memo:
            row = self.registry.slot(n.app, n.slot)
            policy = rt.descriptor.restart
            if never_give_up:
                policy = dataclasses.replace(policy, give_up_after=0)
            memo["decision"] = (Decision(row["failures"], 0.0) if n.blameless
                                else next_restart(policy, row["failures"], run_seconds))
            memo["restarts"] = row["restarts"] + 1
        decision: Decision = memo["decision"]
        srt = rt.slots[n.slot]
        fields = dict(failures=decision.failures, last_exit=json.dumps(exit_record))
        if decision.delay is None:
            self.registry.update_slot(n.app, n.slot, state="failed", **fields)
            self.registry.add_event("slot.gave_up", n.app, n.slot, failures=decision.failures)
            srt.exit_pending = False
            return
        next_wall = memo.setdefault("next_attempt", time.time() + decision.delay)
        self.registry.update_slot(n.app, n.slot, state="backoff" if decision.delay > 0 else "restarting",
                                  restarts=memo["restarts"], next_attempt=next_wall, **fields)
        if decision.delay > 0:
            self.registry.add_event("slot.backoff", n.app, n.slot, delay_s=round(decision.delay, 3),
                                    failures=decision.failures)
        srt.exit_pending = False
        srt.next_attempt_wall = next_wall
        delay = max(0.0, next_wall - time.time())
        if delay > 0:
            srt.restart_timer = self.timers.call_later(delay, lambda: self.request_start(n.app, n.slot, "replace"))
        else:
            self.request_start(n.app, n.slot, "replace")

    # -- store outages (hosting.store_retry) ----------------------------------------
    def _store_down(self, key: tuple[str, str], err: BaseException) -> None:
        """The slot's bookkeeping has failed for a while: say so (the event is best effort: the
        registry may be the store that fails; ``store_error`` shows it in the status anyway)."""
        app, slot = key
        log.error("%s/%s: store unavailable, retrying: %s", app, slot, err)
        try:
            self.registry.add_event("store.unavailable", app, slot, error=str(err))
        except STORE_ERRORS:
            pass

    def _store_recovered(self, key: tuple[str, str], attempts: int, seconds: float, err: BaseException) -> None:
        app, slot = key
        log.warning("%s/%s: store back after %.1f s (%d failed attempts)", app, slot, seconds, attempts)
        try:
            self.registry.add_event("store.recovered", app, slot, attempts=attempts, down_s=round(seconds, 3),
                                    error=str(err))
        except STORE_ERRORS as again:
            log.warning("%s/%s: store recovery not recorded: %s", app, slot, again)

    # -- reset ------------------------------------------------------------
    def reset_slot(self, app: str, slot: str, grace: float) -> str | None:
        """Rebuild ``slot``'s replica from nothing: stop its netlet (blameless), wipe its
        replica directory once the process is gone, start the slot again (it rejoins as
        a fresh backup and catches up from the master). Returns the id of the netlet
        being stopped, None if none ran. KeyError: unknown app or slot."""
        with self.lock:
            rt = self.apps.get(app)
            if rt is None or slot not in rt.slots or rt.terminating:
                raise KeyError(f"{app}/{slot}")
            rt.slots[slot].reset_pending = True
            n = self.live_in_slot(app, slot)
            if n is None:
                self._finish_reset(rt, app, slot)
                return None
        self.stop_netlet(n.netlet_id, "reset", grace, blameless=True)
        return n.netlet_id

    def _finish_reset(self, rt: AppRuntime, app: str, slot: str) -> None:
        """No process runs in ``slot`` (caller holds the lock): wipe, record, start."""
        srt = rt.slots[slot]
        srt.reset_pending = False
        Timers.cancel(srt.restart_timer)
        srt.restart_timer, srt.next_attempt_wall = None, None
        directory = self.home.slot_dir(app, slot) / REPLICA_DIR
        if wipe(directory):  # the netlet's own: a link it left there is removed, never followed
            fsync_directory(directory.parent)
        self.registry.update_slot(app, slot, state="restarting", failures=0, next_attempt=None)
        self.registry.add_event("slot.reset", app, slot, wiped=str(directory))
        self.request_start(app, slot, "replace")

    # -- termination ------------------------------------------------------
    def terminate(self, app: str, grace: float) -> AppRuntime | None:
        """Begin terminating ``app``; returns its runtime (wait on ``.gone``)."""
        with self.lock:
            rt = self.apps.get(app)
            if rt is None:
                return None
            victims = [n.netlet_id for n in self.live.values() if n.app == app]
            # Recorded first: a store error fails the call before anything changed (the user retries).
            self.registry.set_app_state(app, "terminating")
            self.registry.add_event("app.terminating", app, netlets=len(victims))
            rt.terminating = True
            for srt in rt.slots.values():
                Timers.cancel(srt.restart_timer)
        for netlet_id in victims:
            self.stop_netlet(netlet_id, "terminated", grace)
        with self.lock:
            self._finish_terminate_if_done(app)
        return rt

    def _finish_terminate_if_done(self, app: str) -> None:
        rt = self.apps.get(app)
        if rt is None or not rt.terminating:
            return
        if any(n.app == app for n in self.live.values()) or any(s.exit_pending for s in rt.slots.values()):
            return
        # The registry first: if it fails, the app is still here for the retried exit to finish.
        self.registry.remove_app(app)
        self.registry.add_event("app.terminated", app)
        self.apps.pop(app, None)
        self.confinement.released(app)
        rt.gone.set()

    def shutdown(self) -> None:
        """Stop starting, watching and retrying (netlets keep running: they re-attach to the next node)."""
        self.starts.stop()
        self.retry.close()
        self.watcher.stop()
