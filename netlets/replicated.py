"""Hosting a replicated netlet: the runner side of ``netlets.replication``.

Contracts (see docs/replication.md, "Runner checklist"):
  * Every call into the ``Replica`` happens under one lock, and its effects are
    drained right after and acted on outside the lock.
  * Replication to each backup goes through one thread and one connection per
    backup, in order, never oneway; a reply is fed back with ``on_reply``, a
    failed or timed-out RPC with ``on_send_failed``.
  * Group commit: callers submit under the lock; one flusher thread syncs and
    ships everything submitted since its last round at once.
  * A ``@command`` is answered only with ``apply``'s outcome once the ack policy
    is met; a ``@master_query`` only if, *after* it was evaluated, this replica
    is still the master with a committed barrier and a control lease valid on
    its own monotonic clock (``sent_at + TTL·(1-ε)``).
  * Learning of a higher epoch (a backup's ``stale``, a refused renewal) fences
    the master: it answers nothing more as master and the process exits with
    ``EXIT_FENCED``; the node restarts the slot as a backup on the same resources.
  * Fail-stop (``netlets.faults``): a storage error (``StorageFailed``) or a
    failing user ``snapshot()`` inside any call, and any exception that reaches
    the flusher or ticker loop, closes the replica (nothing more is answered or
    acknowledged) and ends the process with the cause reported; no worker
    thread ever dies while the heartbeat keeps the leases alive.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from rpc import wire

from hosting.election import grants
from hosting.timing import Timing
from rpc.credential import replica_handshake
from netlets.faults import fail_stop
from netlets.host import NetletHost
from netlets.netlet import COMMAND, MASTER_QUERY
from netlets.outcomes import capture, unwrap
from netlets.replication import messages as M
from netlets.replication.effects import ArbiterRequest, Complete, MasterFenced, RoleChanged, Send
from netlets.replication.replica import Replica, ReplicationConfig
from netlets.replication.state import SnapshotFailed, not_master
from netlets.replication.storage import REPLICA_DIR, StorageFailed, fsync_directory, open_storage
from rpc.errors import CommandFailed, NotMaster

log = logging.getLogger(__name__)

EXIT_FENCED = 76
COMMAND_TIMEOUT_S = 30.0
SNAPSHOT_RPC_TIMEOUT_S = 30.0
FAIL_STOP_LOCK_S = 1.0


class _Waiter:
    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: dict | None = None


class _PeerSender:
    """One backup's in-order replication channel (a thread and a connection).

    A message of an older generation than the newest one offered is dropped
    unsent: the core has reset that peer's channel since (a failed send, a
    retransmit timeout, a mismatch), ignores replies to it, and has already
    offered what replaces it. So a backlog cannot build up behind a peer that
    fails slowly (a stopped process whose kernel still accepts connections
    costs one RPC timeout per generation, not one per queued message).
    """

    def __init__(self, host: "ReplicatedHost", slot: str, address: tuple[str, str]) -> None:
        self.host, self.slot, self.address = host, slot, address  # address: (netlet id, endpoint)
        self.queue: queue.Queue = queue.Queue()
        self.proxy = None
        self._newest = 0
        self._newest_lock = threading.Lock()
        self.thread = threading.Thread(target=lambda: host._worker(self._run), name=f"replicate-{slot}",
                                       daemon=True)
        self.thread.start()

    def offer(self, msg: dict, generation: int) -> None:
        with self._newest_lock:
            self._newest = max(self._newest, generation)
        self.queue.put((generation, msg))

    def retarget(self, address: tuple[str, str]) -> None:
        """The slot's backup is now ``address`` (a new process, or the same one elsewhere)."""
        if address != self.address:
            self.address = address
            self.queue.put((None, None))  # tells the thread to reconnect before the next message

    def _connect(self):
        netlet, endpoint = self.address
        p = wire.proxy(endpoint, timeout=self.host.rpc_timeout, tls=self.host.doc.tls)
        # The replica credential, the node's promote grant and our proof of its master key, for
        # this backup process alone: that we are the master the arbiter named for our epoch
        # (``hosting.election.grants``); its next process (a restart) takes none of it.
        app = self.host.doc.app
        handshake = replica_handshake(self.host.doc.app_secret, app, netlet,
                                      grant=grants.public(self.host.master_grant))
        handshake["master_proof"] = grants.master_proof(self.host.master_grant["master_key"], app, netlet,
                                                        handshake["ts"], handshake["nonce"])
        p._pyroHandshake = handshake
        return p

    def _run(self) -> None:
        while True:
            generation, msg = self.queue.get()
            if msg is None:
                if self.proxy is not None:
                    self.proxy._pyroRelease()
                self.proxy = None
                continue
            if generation < self._newest:
                continue  # superseded (see the class docstring)
            try:
                if self.proxy is None:
                    self.proxy = self._connect()
                # A snapshot carries the whole state and dedup table: sending and
                # restoring it may take longer than an RPC timeout that is sized
                # for batches; timing it out would only send it again, forever.
                self.proxy._pyroTimeout = (max(SNAPSHOT_RPC_TIMEOUT_S, self.host.rpc_timeout)
                                           if msg.get("t") == M.SNAPSHOT else self.host.rpc_timeout)
                reply = self.proxy.replication_handle(msg)
            except Exception as err:
                log.debug("replication to %s failed: %s", self.slot, err)
                if self.proxy is not None:
                    self.proxy._pyroRelease()
                self.proxy = None
                self.host.with_replica(lambda r, now: r.on_send_failed(self.slot, now))
                continue
            self.host.with_replica(lambda r, now: r.on_reply(self.slot, reply, now))


class ReplicatedHost(NetletHost):
    """A master-eligible netlet: its state is replicated master → backups."""

    def __init__(self, netlet: Any, doc) -> None:
        super().__init__(netlet, doc)
        raw = doc.raw
        self.ttl = doc.lease_ttl
        self.timing = Timing(lease_ttl=self.ttl)
        self.rpc_timeout = self.timing.replica_rpc_s
        config = ReplicationConfig(ack=raw.get("ack", "all"), retransmit_timeout=self.timing.retransmit_s,
                                   replication_timeout=self.timing.replication_timeout)
        directory = Path.cwd() / REPLICA_DIR
        mode = raw.get("durability", "fsync")
        if mode != "memory":
            self._storage_lock = lock_directory(directory, wait_s=self.timing.storage_lock_wait_s)
        storage = open_storage(mode, None if mode == "memory" else directory, owner=(doc.app, doc.slot))
        self.lock = threading.RLock()
        self.replica = Replica(doc.slot, netlet, storage, config, incarnation=doc.netlet_id,
                               min_epoch=int(raw.get("min_epoch", 0)))
        self.waiters: dict[int, _Waiter] = {}
        self.senders: dict[str, _PeerSender] = {}
        #: slot → (netlet id, endpoint) of each backup, as the node's grants name them (``peer_addresses``)
        self.addresses: dict[str, tuple[str, str]] = {}
        self.master_epoch: int | None = None
        #: the node's promote grant for ``master_epoch`` (with its private ``master_key``)
        self.master_grant: dict | None = None
        self._flush = threading.Event()
        self._stopping = threading.Event()
        self._closed = False  # storage closed: set under the lock, never cleared
        self._failing = threading.Lock()  # held by the one thread that fail-stops
        self._workers = [threading.Thread(target=self._flusher, name="flusher", daemon=True),
                         threading.Thread(target=self._ticker, name="ticker", daemon=True)]

    # -- the one way into the replica ---------------------------------------
    def with_replica(self, fn) -> Any:
        """Run ``fn(replica, now)`` under the lock, then act on its effects.

        Once the storage is closed (``stop``) nothing runs: a replication RPC or
        an election's ``prepare`` arriving then gets a retryable NotMaster.
        """
        with self.lock:
            if self._closed:
                raise NotMaster(f"{self.doc.slot} is stopping")
            try:
                result = fn(self.replica, time.monotonic())
            except (StorageFailed, SnapshotFailed) as err:
                self._fail_stop(err)  # the effects of the failed call are never acted on
            effects = self.replica.take_effects()
        self._act(effects)
        return result

    def _fail_stop(self, err: BaseException):
        """Close the replica and exit, reporting ``err`` (``netlets.faults``). Never returns.

        A storage or snapshot failure arrives here under the lock (from ``with_replica``),
        so no other call runs in the replica after the failed one. A failure outside the
        lock takes it too, but only for a bounded time: a thread holding it may itself be
        blocked in a fail-stop of its own (only one thread ends the process)."""
        if not self._failing.acquire(blocking=False):
            threading.Event().wait()  # another thread is ending the process
        self.lock.acquire(timeout=FAIL_STOP_LOCK_S)  # kept until the process exits
        self._closed = True
        fail_stop(self.client, self.doc.netlet_id, self.status(), err)

    def _act(self, effects: list) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                sender = self.senders.get(effect.to)
                if sender is None:
                    address = self.addresses.get(effect.to)
                    if address is None:
                        self.with_replica(lambda r, now, to=effect.to: r.on_send_failed(to, now))
                        continue
                    sender = self.senders[effect.to] = _PeerSender(self, effect.to, address)
                sender.offer(effect.msg, effect.generation)
            elif isinstance(effect, Complete):
                waiter = self.waiters.pop(effect.token, None)
                if waiter is not None:
                    waiter.outcome = effect.outcome
                    waiter.event.set()
            elif isinstance(effect, ArbiterRequest):
                threading.Thread(target=self._ask_arbiter, args=(effect,), daemon=True).start()
            elif isinstance(effect, RoleChanged):
                self._role_changed(effect)
            elif isinstance(effect, MasterFenced):
                self._fenced(effect.epoch)

    def _ask_arbiter(self, req: ArbiterRequest) -> None:
        """One ISR request, on its own thread: the core keeps at most one outstanding and acts
        only on the answer to that one, so a late answer (after a timeout) is harmless."""
        try:
            answer = self.client.call("arbiter_request", self.doc.netlet_id, req.kind, req.epoch, req.slot,
                                      req.incarnation, req.version)
        except Exception as err:
            log.warning("arbiter %s of %s failed: %s", req.kind, req.slot, err)
            self.with_replica(lambda r, now: r.on_arbiter_failed(req, now))
            return  # the core asks again on a later tick
        if isinstance(answer, dict) and "retry" in answer:
            log.warning("arbiter %s of %s not decided: %s", req.kind, req.slot, answer["retry"])
        self.with_replica(lambda r, now: r.on_arbiter_reply(req, answer, now))

    def _role_changed(self, change: RoleChanged) -> None:
        log.info("now %s at epoch %d (master %s)", change.role, change.epoch, change.master_slot)
        try:
            if change.role == "master":
                self.master_epoch = change.epoch
                self.netlet.on_master(change.epoch)
            else:
                self.netlet.on_backup(change.master_slot)
        except Exception:
            log.exception("%s hook failed", "on_master" if change.role == "master" else "on_backup")
        if self.heartbeat is not None:
            self.heartbeat.poke()

    def _fenced(self, epoch: int) -> None:
        log.error("fenced: epoch %d is current; this master steps down (exit %d)", epoch, EXIT_FENCED)
        logging.shutdown()
        os._exit(EXIT_FENCED)

    # -- control lease (called by the heartbeat) -------------------------------
    def claim(self) -> int | None:
        return self.master_epoch

    def renewed(self, sent_at: float, claim: int | None, answer: dict) -> None:
        control = answer.get("control")
        if claim is None or control is None:
            return
        if control.get("ok"):
            valid_until = sent_at + self.timing.holder_valid_for(float(control["ttl"]))
            self.with_replica(lambda r, now: _extend_lease(r, valid_until))
        else:
            self.with_replica(lambda r, now: _lose_lease(r, int(control["epoch"])))

    # -- lifecycle ------------------------------------------------------------
    @property
    def client(self):
        return self.heartbeat.client

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        super().start()

    def stop(self) -> None:
        """Stop the flusher and ticker, then close the storage (synced) for good."""
        self._stopping.set()
        self._flush.set()  # let the flusher see _stopping
        super().stop()
        for worker in self._workers:
            if worker.is_alive() and worker is not threading.current_thread():
                worker.join(timeout=self.timing.worker_join_s)
        with self.lock:
            self._closed = True
            self.replica.storage.close(sync=True)
            waiting, self.waiters = self.waiters, {}
        for waiter in waiting.values():  # their callers retry elsewhere with the same request ids
            waiter.outcome = not_master(f"{self.doc.slot} is stopping")
            waiter.event.set()

    def _flusher(self) -> None:
        def rounds() -> None:
            while not self._stopping.is_set():
                self._flush.wait()
                self._flush.clear()
                self.with_replica(lambda r, now: r.flush(now))
        self._worker(rounds)

    def _ticker(self) -> None:
        period = self.timing.ticker_s

        def rounds() -> None:
            while not self._stopping.wait(period):
                self.with_replica(lambda r, now: (r.tick(now), r.flush(now)))
        self._worker(rounds)

    def _worker(self, loop) -> None:
        """Run a worker loop (flusher, ticker, a backup's sender); it ends only by ``stop``:
        any exception fail-stops the netlet."""
        try:
            loop()
        except NotMaster:
            if not self._stopping.is_set():  # closed by a fail-stop in another thread
                threading.Event().wait()
        except BaseException as err:
            self._fail_stop(err)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "replicated": True}

    def status(self) -> dict[str, Any]:
        r = self.replica
        return {"phase": self.phase, "role": r.role, "epoch": r.promised_epoch, "seq": r.commit_seq,
                "position": list(r.position), "endpoint": self.endpoint, "pid": os.getpid(),
                "storage": dict(r.storage_identity), "app_status": self.published()}

    # -- calls ----------------------------------------------------------------
    def invoke(self, method: str, args: list, kwargs: dict, req_id: str | None = None) -> Any:
        kind = self.exposed.get(method)
        if kind is None:
            return super().invoke(method, args, kwargs, req_id)
        if kind == COMMAND:
            return unwrap(self._commands([(method, args, kwargs, req_id)])[0])
        fn = getattr(self.netlet, method)
        with self.lock:
            if kind == MASTER_QUERY and self.replica.role != "master":
                raise NotMaster(f"{self.doc.slot} is {self.replica.role}, not the master")
            result = _call_user(fn, args, kwargs)
            if kind == MASTER_QUERY and not self.replica.can_serve_linearizable(time.monotonic()):
                raise NotMaster(f"{self.doc.slot} cannot prove it is still the master (lease)")
            return result

    def invoke_batch(self, calls: list[tuple[str, list, dict, str | None]]) -> list[dict]:
        """Commands are submitted under one lock acquisition and committed together
        (one group commit); other calls are served one by one afterwards."""
        is_command = [self.exposed.get(call[0]) == COMMAND for call in calls]
        committed = iter(self._commands([call for call, cmd in zip(calls, is_command) if cmd]))
        return [next(committed) if cmd else capture(lambda call=call: self.invoke(*call))
                for call, cmd in zip(calls, is_command)]

    def _commands(self, calls: list[tuple[str, list, dict, str | None]]) -> list[dict]:
        """Submit each command (its method's result is what gets replicated), flush once,
        and wait for every outcome. A request id the master already knows (recorded, or in
        flight in its log: ``Replica.knows_request``) is a retry: its method is not run again,
        the call is answered with the original's outcome (at once, or when its entry commits).
        Otherwise a method that raises is that call's outcome and submits nothing; no outcome
        within ``COMMAND_TIMEOUT_S`` is a retryable NotMaster."""
        outcomes: list[dict | None] = [None] * len(calls)
        waiting: list[tuple[int, int, _Waiter]] = []
        with self.lock:
            now = time.monotonic()
            for i, (method, args, kwargs, req_id) in enumerate(calls):
                if self._closed or self.replica.role != "master":
                    outcomes[i] = not_master(f"{self.doc.slot} is {self.replica.role}, not the master")
                    continue
                if self.replica.knows_request(req_id):  # a retry: the method ran for the original
                    token = self.replica.submit(req_id, None, now)
                else:
                    made = capture(lambda: getattr(self.netlet, method)(*args, **kwargs))
                    if not made["ok"]:
                        outcomes[i] = made
                        continue
                    token = self.replica.submit(req_id, made["value"], now)
                waiter = self.waiters[token] = _Waiter()
                waiting.append((i, token, waiter))
            effects = self.replica.take_effects()
        self._act(effects)
        self._flush.set()
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        for i, token, waiter in waiting:
            if waiter.event.wait(max(0.0, deadline - time.monotonic())):
                outcomes[i] = waiter.outcome
            else:
                self.waiters.pop(token, None)
                outcomes[i] = not_master(f"no outcome within {COMMAND_TIMEOUT_S:.0f}s; "
                                         "retry with the same request id")
        return outcomes

    # -- replication RPCs (from the master and the node) -------------------------
    def handle(self, msg: dict) -> dict | None:
        return self.with_replica(lambda r, now: r.handle(msg, now))

    def prepare(self, epoch: int) -> dict:
        return self.with_replica(lambda r, now: r.prepare(int(epoch)))

    def promote(self, epoch: int, isr: list[str], peers: dict[str, list], grant: dict) -> bool:
        """``grant``: the node's, for this promotion (checked by the endpoint), with the promotion's
        private master key; each backup is shown the grant without it, and a proof made with it;
        ``peers``: slot → [netlet id, endpoint] of each backup (``peer_addresses``)."""
        self.master_grant = grant  # before any Send: senders connect with it
        self.addresses.update(peer_addresses(peers))
        self.with_replica(lambda r, now: r.become_master(int(epoch), set(isr), sorted(peers), now))
        self._flush.set()
        return True

    def set_peers(self, epoch: int, peers: dict[str, list]) -> bool:
        for slot, address in peer_addresses(peers).items():
            self.addresses[slot] = address
            if slot in self.senders:
                self.senders[slot].retarget(address)
        self.with_replica(lambda r, now: r.set_peers(sorted(peers), now))
        return True


def peer_addresses(peers: dict) -> dict[str, tuple[str, str]]:
    """The ``peers`` of a node's ``promote``/``peers`` call (slot → [netlet id, endpoint], as its
    grant signs them) as slot → (netlet id, endpoint): a master dials each backup process by its
    endpoint and proves itself to that process alone, by its netlet id."""
    return {str(slot): (str(netlet), str(endpoint)) for slot, (netlet, endpoint) in peers.items()}


def _extend_lease(replica: Replica, valid_until: float) -> None:
    """The node renewed the control lease: valid until ``valid_until`` on our clock (never shortened)."""
    replica.lease_valid_until = max(replica.lease_valid_until, valid_until)


def _lose_lease(replica: Replica, current_epoch: int) -> None:
    """The node refused the renewal: no more master queries, and fence if a newer epoch exists."""
    replica.lease_valid_until = float("-inf")
    replica.fence(current_epoch)


def lock_directory(directory: Path, wait_s: float) -> int:
    """Take an exclusive ``flock`` on ``directory/LOCK`` for this process's life; returns the fd.

    Contract: at most one process at a time opens a slot's replica storage.
    Waits up to ``wait_s`` (a previous process of the slot may still be
    exiting), then raises ``RuntimeError`` naming the holder's pid.
    """
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_directory(directory.parent)  # the replica directory's entry is durable before any data
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RuntimeError(f"replica storage {directory} is held by another process (pid {holder})")
            time.sleep(0.05)  # polling a lock held by a process that is exiting; bounded by wait_s
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _call_user(fn, args: list, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except (NotMaster, CommandFailed):
        raise
    except Exception as err:
        raise CommandFailed(f"{type(err).__name__}: {err}") from None
