"""Master-side rules: order, replicate, commit, apply, release callers.

Commit rule (ack policy ``all``): an entry is committed when the master's own
write is synced and every *counted* backup acked holding it, where counted =
the arbiter's in-sync set (ISR) as of its last answer (at the grant: the ISR
the master was granted with), plus every backup whose ``expand`` was sent
since that answer (counted from the request on — conservative). So no
committed entry can be missing from an ISR member, and the master never drops
a member on its own.

In-sync set changes (see ``hosting.election.arbiter``, "versioned ISR"): at most one
request outstanding at a time, each naming the ISR version it was computed
from (a new master first asks ``sync`` to learn it). Only the answer to the
outstanding request is acted on (matched by equality; late answers to
requests given up on are ignored); any such answer carries a version higher
than every version this master ever named, so no earlier request can still
take effect, and the master adopts its set as the ISR. One request at a
time, rather than several, because with versions the second of two requests
computed from the same version is refused anyway, and a single outstanding
request keeps "which answer is current" trivial. What to ask is recomputed
from the state every time (``_wanted``), so a request that got no answer is
asked again (after ``replication_timeout``) as long as it still matters.
Shrink: a counted backup that departed, lags beyond ``replication_timeout``,
or answers from another process than the one the arbiter recorded (or the
expand named). Expand: an uncounted backup that holds everything up to the
commit index, or one counted since an expand that got no answer.
A request the arbiter *refused* at the master's own version (an expand naming
a process other than the one recorded for the slot: say the old process still
answers after the node started a new one) changed nothing and would be refused
again, so the same change -- kind, slot and process -- is not asked again
before a backoff, doubling per refusal from ``replication_timeout / 8`` up to
``8 * replication_timeout`` (``_Refusals``); other wanted changes are asked
meanwhile. The refusal is not adopted (its version is not above the master's):
whatever the master counted stays counted, as after no answer. Without it a
master and its arbiter looped hot (issue 13 follow-up F4).
Policy ``async``: committed once the master's own write is synced (can lose
acknowledged writes when the master fails).

Per backup (``_Peer``): ``next_seq`` (next entry to send), ``match_seq``
(highest seq acked as held, only grows within an incarnation), in-flight
batches (at most ``window``; the runner delivers them in order), and
``behind_since`` (when it last had nothing outstanding or made progress).
A mismatch resets ``next_seq`` to the hint (replies to batches sent before the
reset are ignored); silence beyond ``retransmit_timeout`` resends from
``match_seq + 1``; when the needed entries were compacted away the backup gets
the latest snapshot.

Fencing: a reply or arbiter answer carrying a higher epoch is adopted
(``Replica.adopt_epoch``), which makes the replica step down: this role is
dropped (it commits nothing more, and the replica drives it no more) and its
pending callers get the retryable NotMaster outcome (:meth:`MasterRole.release`).
While this role is live its epoch is the replica's promised epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as M
from .effects import ArbiterRequest, Complete, Send
from .role import Role
from .state import not_master

if TYPE_CHECKING:
    from .replica import Replica


class _Peer:
    __slots__ = ("slot", "inc", "old_incs", "next_seq", "match_seq", "inflight",
                 "reset_bid", "snapshot_inflight", "behind_since", "sent_commit")

    def __init__(self, slot: str, next_seq: int) -> None:
        self.slot = slot
        self.inc: str | None = None
        self.old_incs: set[str] = set()
        self.reset(next_seq, 0)
        self.match_seq = 0
        self.behind_since: float | None = None

    def reset(self, next_seq: int, reset_bid: int) -> None:
        self.next_seq = next_seq
        self.inflight: dict[int, float] = {}
        self.reset_bid = reset_bid
        self.snapshot_inflight = False
        self.sent_commit = -1


class _Refusals:
    """Per slot, the last change the arbiter refused (kind, process), how often in a row, and
    when it may be asked again. Bounded: one entry per slot."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap
        self._by_slot: dict[str, tuple[str, str | None, int, float]] = {}

    def refused(self, kind: str, slot: str, inc: str | None, now: float) -> None:
        last = self._by_slot.get(slot)
        count = last[2] + 1 if last is not None and last[:2] == (kind, inc) else 1
        self._by_slot[slot] = (kind, inc, count, now + min(self.cap, self.base * 2 ** (count - 1)))

    def granted(self, slot: str) -> None:
        self._by_slot.pop(slot, None)

    def waiting(self, kind: str, slot: str, inc: str | None, now: float) -> bool:
        """Whether this exact change was refused and its backoff has not run out."""
        last = self._by_slot.get(slot)
        return last is not None and last[:2] == (kind, inc) and now < last[3]


class MasterRole(Role):
    name = "master"

    def __init__(self, r: Replica, epoch: int, isr: set[str], peers: list[str], now: float):
        """Master of ``epoch`` (the replica's promised epoch) with the arbiter's ``isr`` at the
        grant; appends the barrier and ships it."""
        self.r = r
        self.epoch = epoch
        #: the arbiter's ISR as of its last answer (the grant's until then) and its version
        #: (None: not learned yet), with the process the arbiter recorded for each member
        self.isr = set(isr) | {r.slot}
        self.isr_version: int | None = None
        self.isr_inc: dict[str, str | None] = {}
        #: slot -> incarnation of every expand sent since the last answer (it may take effect)
        self.maybe_added: dict[str, str] = {}
        self.outstanding: ArbiterRequest | None = None
        self.ask_after = float("-inf")  # after a request got no answer: not before this
        timeout = r.config.replication_timeout
        self.refusals = _Refusals(timeout / 8, timeout * 8)
        self.arbiter_seq = 0
        self.next_bid = 1
        self.waiters: dict[int, list[int]] = {}
        self.pending_req: dict[str, int] = {}
        log = r.log
        for s in range(max(r.commit_seq, log.base_seq) + 1, log.last_seq + 1):
            req = log.get(s)[3]
            if req is not None:
                self.pending_req[req] = s
        self.durable_seq = log.last_seq  # recovered or acked as a backup: synced
        self.barrier_seq = log.last_seq + 1
        r.append([M.entry(self.barrier_seq, epoch, M.NOOP, None, None)])
        self.peers: dict[str, _Peer] = {}
        self.set_peers(peers, now)
        self.flush(now)  # sync and ship the barrier at once

    # --- client side ---------------------------------------------------------
    def owns_epoch(self, epoch: int) -> bool:
        return epoch <= self.epoch

    def can_serve_linearizable(self, now: float) -> bool:
        """Barrier committed (every earlier acknowledged write applied) and the lease valid."""
        return self.r.commit_seq >= self.barrier_seq and now < self.r.lease_valid_until

    def knows(self, req_id: str | None) -> bool:
        """Whether ``req_id`` is recorded (applied: its outcome is in the dedup table) or in
        flight (in the log and not yet applied, appended in this term or held from an earlier
        one). A submit of a known id appends nothing and ignores its command: it is answered
        with the recorded outcome, or joins the entry in flight and gets that entry's outcome.
        (An id evicted from the dedup table is not known any more: ``dedup`` module.)"""
        return req_id is not None and (req_id in self.r.sm.dedup or req_id in self.pending_req)

    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        """Queue ``command`` under ``req_id``, or, if the id is known (:meth:`knows`), join it."""
        r = self.r
        token = r.next_token()
        if req_id is not None and req_id in r.sm.dedup:
            r.effects.append(Complete(token, r.sm.dedup.get(req_id)))
        elif req_id is not None and req_id in self.pending_req:
            self.waiters.setdefault(self.pending_req[req_id], []).append(token)
        else:
            seq = r.log.last_seq + 1
            r.append([M.entry(seq, self.epoch, M.CMD, req_id, command)])
            if req_id is not None:
                self.pending_req[req_id] = seq
            self.waiters.setdefault(seq, []).append(token)
            for p in self.peers.values():
                if p.behind_since is None:
                    p.behind_since = now
        return token

    def flush(self, now: float) -> None:
        self.r.storage.sync()
        self.durable_seq = self.r.log.last_seq
        self._maybe_commit()
        self._ship(now)

    # --- replication ---------------------------------------------------------
    def _ship(self, now: float) -> None:
        r, log = self.r, self.r.log
        for p in self.peers.values():
            while len(p.inflight) < self.r.config.window and not p.snapshot_inflight:
                bid = self.next_bid
                if p.next_seq <= log.base_seq:
                    snap = r.snap
                    msg = M.snapshot(self.epoch, r.slot, bid, snap["seq"], snap["epoch"],
                                     snap["state"], snap["dedup"])
                    p.snapshot_inflight = True
                    p.next_seq = snap["seq"] + 1
                elif p.next_seq <= self.durable_seq or (p.sent_commit < r.commit_seq
                                                          and not p.inflight):
                    entries = log.slice(p.next_seq, min(r.config.batch_max,
                                                        self.durable_seq - p.next_seq + 1))
                    prev = p.next_seq - 1
                    msg = M.append(self.epoch, r.slot, bid, prev, log.epoch_at(prev),
                                   entries, r.commit_seq)
                    p.next_seq += len(entries)
                    p.sent_commit = r.commit_seq
                else:
                    break
                self.next_bid += 1
                p.inflight[bid] = now
                r.effects.append(Send(p.slot, msg, p.reset_bid))

    def on_reply(self, peer: str, reply: dict, now: float) -> None:
        try:
            reply = M.validate(reply, (M.ACK, M.MISMATCH, M.STALE))
        except M.MalformedMessage:
            return
        p = self.peers.get(reply["from"])
        if p is None or reply["from"] != peer:
            return
        if reply["epoch"] > self.epoch:
            self.r.adopt_epoch(reply["epoch"])  # steps down
            return
        inc = reply["inc"]
        if inc != p.inc:
            if inc in p.old_incs:
                return  # a late reply from a previous incarnation
            if p.inc is not None:  # restarted: forget what the old process held
                p.old_incs.add(p.inc)
                if self._counted_inc(p.slot) is None and p.slot in self.counted:
                    self.isr_inc[p.slot] = p.inc  # the process we counted (see _wanted)
                p.match_seq = 0
                p.reset(p.match_seq + 1, self.next_bid)
                p.behind_since = now
            p.inc = inc
        bid = reply["bid"]
        p.inflight.pop(bid, None)
        t = reply["t"]
        if t == M.ACK:
            if bid >= p.reset_bid:
                p.snapshot_inflight = False
            match = min(reply["match_seq"], self.r.log.last_seq)
            if match > p.match_seq:
                p.match_seq = match
                p.behind_since = now
            if p.next_seq <= match:
                p.next_seq = match + 1
            if p.match_seq >= self.r.log.last_seq:
                p.behind_since = None
            self._maybe_commit()
        elif t == M.MISMATCH and bid >= p.reset_bid:
            p.reset(reply["hint_seq"] + 1, self.next_bid)
        self._ask(now)
        self._ship(now)

    def on_send_failed(self, peer: str, now: float) -> None:
        p = self.peers.get(peer)
        if p is not None:
            p.reset(p.match_seq + 1, self.next_bid)
            self._ship(now)

    def tick(self, now: float) -> None:
        cfg = self.r.config
        for p in self.peers.values():
            if p.inflight and min(p.inflight.values()) + cfg.retransmit_timeout <= now:
                p.reset(p.match_seq + 1, self.next_bid)
        self._ask(now)
        self.flush(now)

    # --- commit ----------------------------------------------------------------
    def _maybe_commit(self) -> None:
        r = self.r
        c = self.durable_seq
        if r.config.ack == "all":
            for slot in self.counted:
                p = self.peers.get(slot)
                c = min(c, p.match_seq if p is not None else 0)
        if c <= r.commit_seq:
            return
        r.set_commit(c)
        for seq, e, outcome in r.apply_committed():
            req = e[3]
            if req is not None and self.pending_req.get(req) == seq:
                del self.pending_req[req]
            for token in self.waiters.pop(seq, ()):
                r.effects.append(Complete(token, outcome))
        r.maybe_compact()

    # --- in-sync set -----------------------------------------------------------
    @property
    def counted(self) -> set[str]:
        """Backups whose acks every commit needs: a superset of the arbiter's stored ISR."""
        return (self.isr | set(self.maybe_added)) - {self.r.slot}

    def _counted_inc(self, slot: str) -> str | None:
        """The process of ``slot`` that is counted: the one its pending expand named, else the one
        the arbiter recorded for the member (None: not known)."""
        return self.maybe_added.get(slot) or self.isr_inc.get(slot)

    def _wanted(self, now: float) -> tuple[str, str | None] | None:
        """The ISR change to ask for next, from the current state (see the module docstring),
        skipping a change refused before whose backoff has not run out."""
        if self.isr_version is None:
            return "sync", None
        for kind, slot in self._changes(now):
            p = self.peers.get(slot)
            if not self.refusals.waiting(kind, slot, p.inc if p is not None else None, now):
                return kind, slot
        return None

    def _changes(self, now: float):
        """Every ISR change the state calls for, shrinks first."""
        timeout = self.r.config.replication_timeout
        for slot in sorted(self.counted):
            p = self.peers.get(slot)
            if (p is None or (p.inc is not None and self._counted_inc(slot) not in (None, p.inc))
                    or (p.behind_since is not None and now - p.behind_since > timeout)):
                yield "shrink", slot
        for slot in sorted(set(self.peers) - self.isr):  # counted but unconfirmed: asked again
            p = self.peers[slot]
            if p.inc is not None and (slot in self.maybe_added or p.match_seq >= self.r.commit_seq):
                yield "expand", slot

    def _ask(self, now: float) -> None:
        """Send the wanted ISR change, unless one is outstanding or a failed one must wait."""
        if self.outstanding is not None or now < self.ask_after:
            return
        wanted = self._wanted(now)
        if wanted is None:
            return
        kind, slot = wanted
        inc = self.peers[slot].inc if kind != "sync" and slot in self.peers else None
        self.arbiter_seq += 1
        req = ArbiterRequest(kind, self.epoch, slot, inc, self.isr_version, self.arbiter_seq)
        if kind == "expand":
            self.maybe_added[slot] = inc  # counted from the request on
        self.outstanding = req
        self.r.effects.append(req)

    def on_arbiter_failed(self, req: ArbiterRequest, now: float) -> None:
        """No answer came to ``req`` (the node or owner unreachable, or not decided): it may or
        may not take effect, so an expand stays counted (conservative: commits wait for it, as
        for any counted member). Whatever is still wanted is asked again after
        ``replication_timeout``."""
        if req != self.outstanding:
            return
        self.outstanding = None
        self.ask_after = now + self.r.config.replication_timeout

    def on_arbiter_reply(self, req: ArbiterRequest, answer: dict, now: float) -> None:
        """The arbiter's answer to ``req`` (``hosting.election.arbiter.AppState.isr_answer``, or
        ``{"retry": ...}``); ignored unless ``req`` is the outstanding request."""
        if req != self.outstanding:
            return
        try:
            answer = M.validate_isr_answer(answer)
        except M.MalformedMessage:
            answer = {"retry": "malformed answer"}
        epoch = answer.get("epoch", self.epoch)
        if epoch > self.epoch:
            self.r.adopt_epoch(epoch)  # steps down
            return
        same_version = "retry" not in answer and answer["version"] == self.isr_version
        if same_version and epoch == self.epoch and not answer["ok"] and req.kind != "sync":
            # Refused at our version: it changed nothing and would be refused again.
            self.outstanding = None
            self.ask_after = float("-inf")  # the arbiter answers again
            self.refusals.refused(req.kind, req.slot, req.incarnation, now)
            self._ask(now)
            return
        if "retry" in answer or epoch < self.epoch or (
                self.isr_version is not None and answer["version"] <= self.isr_version):
            self.on_arbiter_failed(req, now)  # not decided: as if no answer came
            return
        self.outstanding = None
        self.ask_after = float("-inf")  # the arbiter answers again
        if answer["ok"] and req.kind != "sync":
            self.refusals.granted(req.slot)
        self.isr_version = answer["version"]
        self.isr_inc = dict(answer["isr"])
        self.isr = set(self.isr_inc) | {self.r.slot}
        self.maybe_added.clear()  # no earlier request can take effect any more
        self._maybe_commit()
        self._ask(now)
        self._ship(now)

    def set_peers(self, peers: list[str], now: float) -> None:
        """The current set of other replica slots (joins and departures)."""
        wanted = set(peers) - {self.r.slot}
        for slot in list(self.peers):
            if slot not in wanted:
                del self.peers[slot]
        for slot in sorted(wanted - set(self.peers)):
            p = _Peer(slot, self.r.log.last_seq)  # send the barrier first
            p.behind_since = now
            self.peers[slot] = p
        self._ask(now)  # a counted member we cannot reach any more is shrunk
        self._ship(now)

    # --- stepping down ---------------------------------------------------------
    def release(self, epoch: int) -> None:
        """The replica stepped down because of ``epoch``: every caller still waiting gets the
        retryable NotMaster outcome (a later master may or may not commit its entry; a retry
        with the same request id is applied at most once either way)."""
        for tokens in self.waiters.values():
            for token in tokens:
                self.r.effects.append(Complete(token, not_master(f"fenced by epoch {epoch}")))
        self.waiters.clear()
