"""Master-side rules: order, replicate, commit, apply, release callers.

Commit rule (ack policy ``all``): an entry is committed when the master's own
write is synced and every *counted* backup acked holding it, where counted =
the arbiter's in-sync set (ISR) at the grant, plus every backup whose
``expand`` we requested (counted from the request on — conservative), minus
backups whose ``shrink`` the arbiter confirmed. So no committed entry can be
missing from an ISR member, and the master never drops a member on its own.
Policy ``async``: committed once the master's own write is synced (can lose
acknowledged writes when the master fails).

Per backup (``_Peer``): ``next_seq`` (next entry to send), ``match_seq``
(highest seq acked as held, only grows within an incarnation), in-flight
batches (at most ``window``; the runner delivers them in order), and
``behind_since`` (when it last had nothing outstanding or made progress).
A mismatch resets ``next_seq`` to the hint (replies to batches sent before the
reset are ignored); silence beyond ``retransmit_timeout`` resends from
``match_seq + 1``; when the needed entries were compacted away the backup gets
the latest snapshot. A backup lagging more than ``replication_timeout`` is
proposed for ``shrink``; a backup holding everything up to the commit index
that is not counted is proposed for ``expand``.

Fencing: a reply or arbiter answer carrying a higher epoch, or a refused
shrink/expand, fences the master: pending callers get the retryable NotMaster
outcome, nothing is committed any more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as M
from .effects import ArbiterRequest, Complete, Fenced, Send
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


class MasterRole:
    def __init__(self, r: Replica, epoch: int, isr: set[str], peers: list[str], now: float):
        self.r = r
        self.epoch = epoch
        self.fenced = False
        self.isr = set(isr) | {r.slot}
        self.counted = self.isr - {r.slot}
        self.pending_expand: set[str] = set()
        self.pending_shrink: set[str] = set()
        #: (kind, slot) → when an arbiter request whose answer never came may be asked again
        self.retry_at: dict[tuple[str, str], float] = {}
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
        self._append(M.entry(self.barrier_seq, epoch, M.NOOP, None, None))
        self.peers: dict[str, _Peer] = {}
        self.set_peers(peers, now)
        self.flush(now)  # sync and ship the barrier at once

    # --- client side ---------------------------------------------------------
    def _append(self, e: list) -> None:
        self.r.log.append(e)
        self.r.storage.append_entries([e])

    def submit(self, req_id: str | None, command: Any, now: float) -> int:
        r = self.r
        token = r.next_token()
        if self.fenced:
            r.effects.append(Complete(token, not_master("fenced")))
        elif req_id is not None and req_id in r.sm.dedup:
            r.effects.append(Complete(token, r.sm.dedup.get(req_id)))
        elif req_id is not None and req_id in self.pending_req:
            self.waiters.setdefault(self.pending_req[req_id], []).append(token)
        else:
            seq = r.log.last_seq + 1
            self._append(M.entry(seq, self.epoch, M.CMD, req_id, command))
            if req_id is not None:
                self.pending_req[req_id] = seq
            self.waiters.setdefault(seq, []).append(token)
            for p in self.peers.values():
                if p.behind_since is None:
                    p.behind_since = now
        return token

    def flush(self, now: float) -> None:
        if self.fenced:
            return
        self.r.storage.sync()
        self.durable_seq = self.r.log.last_seq
        self._maybe_commit()
        self._ship(now)

    # --- replication ---------------------------------------------------------
    def _ship(self, now: float) -> None:
        if self.fenced:
            return
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
        except M.ProtocolError:
            return
        if self.fenced:
            return
        p = self.peers.get(reply["from"])
        if p is None or reply["from"] != peer:
            return
        if reply["epoch"] > self.epoch:
            self.fence(reply["epoch"])
            return
        inc = reply["inc"]
        if inc != p.inc:
            if inc in p.old_incs:
                return  # a late reply from a previous incarnation
            restarted = p.inc is not None
            if restarted:  # forget what the old process held
                p.old_incs.add(p.inc)
                p.match_seq = 0
                p.reset(p.match_seq + 1, self.next_bid)
                p.behind_since = now
            p.inc = inc
            if restarted and p.slot in self.counted and p.slot not in self.pending_shrink:
                # The arbiter took the slot out of the ISR when the new process started. Counted
                # on until it confirms (conservative), then expanded again as this incarnation:
                # a replacement that catches up before it lags would otherwise stay counted
                # here and out of the arbiter's ISR for good.
                self._request("shrink", p.slot)
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
            self._maybe_expand(p)
            self._maybe_commit()
        elif t == M.MISMATCH and bid >= p.reset_bid:
            p.reset(reply["hint_seq"] + 1, self.next_bid)
        self._ship(now)

    def on_send_failed(self, peer: str, now: float) -> None:
        p = self.peers.get(peer)
        if p is not None and not self.fenced:
            p.reset(p.match_seq + 1, self.next_bid)
            self._ship(now)

    def tick(self, now: float) -> None:
        if self.fenced:
            return
        cfg = self.r.config
        for p in self.peers.values():
            if p.inflight and min(p.inflight.values()) + cfg.retransmit_timeout <= now:
                p.reset(p.match_seq + 1, self.next_bid)
            if (p.slot in self.counted and p.slot not in self.pending_shrink
                    and p.behind_since is not None
                    and now - p.behind_since > cfg.replication_timeout and self._may_ask("shrink", p.slot, now)):
                self._request("shrink", p.slot)
        # Counted members whose request failed: a departed one is shrunk, an unconfirmed one expanded.
        for slot in sorted(self.counted - set(self.peers) - self.pending_shrink):
            if self._may_ask("shrink", slot, now):
                self._request("shrink", slot)
        for slot in sorted((self.counted & set(self.peers)) - self.isr - self.pending_expand - self.pending_shrink):
            if self._may_ask("expand", slot, now):
                self._request("expand", slot)
        self.flush(now)

    # --- commit ----------------------------------------------------------------
    def _maybe_commit(self) -> None:
        if self.fenced:
            return
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
    def _request(self, kind: str, slot: str) -> None:
        (self.pending_shrink if kind == "shrink" else self.pending_expand).add(slot)
        p = self.peers.get(slot)
        self.r.effects.append(ArbiterRequest(kind, self.epoch, slot, p.inc if p else None))

    def _maybe_expand(self, p: _Peer) -> None:
        if (p.slot not in self.counted and p.slot not in self.pending_shrink
                and p.match_seq >= self.r.commit_seq):
            self.counted.add(p.slot)  # counted from the request on
            self._request("expand", p.slot)

    def _may_ask(self, kind: str, slot: str, now: float) -> bool:
        return self.retry_at.get((kind, slot), 0.0) <= now

    def on_arbiter_failed(self, kind: str, slot: str, now: float) -> None:
        """A request's answer never came (the node or owner unreachable): it may or may not have
        taken effect. Both requests are idempotent on the arbiter, so ``tick`` asks again after
        ``replication_timeout`` while it still matters — the slot stays counted meanwhile
        (conservative: commits wait for it, as for any counted member)."""
        (self.pending_shrink if kind == "shrink" else self.pending_expand).discard(slot)
        self.retry_at[kind, slot] = now + self.r.config.replication_timeout

    def on_arbiter_reply(self, kind: str, slot: str, ok: bool, epoch: int, now: float) -> None:
        if self.fenced:
            return
        if epoch > self.epoch:
            self.fence(epoch)
            return
        if kind == "shrink":
            self.pending_shrink.discard(slot)
            if ok:
                self.counted.discard(slot)
                self.isr.discard(slot)
                self._maybe_commit()
                p = self.peers.get(slot)
                if p is not None and p.inc is not None:
                    self._maybe_expand(p)  # already caught up (a restarted one may be): no need to wait
                self._ship(now)
        elif kind == "expand":
            self.pending_expand.discard(slot)
            if ok:
                self.isr.add(slot)
            elif slot not in self.isr:
                # refused (e.g. restarted since): not in the arbiter's ISR, so it
                # is safe to stop counting it; it may be proposed again later.
                self.counted.discard(slot)
                self._maybe_commit()

    def set_peers(self, peers: list[str], now: float) -> None:
        """The current set of other replica slots (joins and departures)."""
        wanted = set(peers) - {self.r.slot}
        for slot in list(self.peers):
            if slot not in wanted:
                del self.peers[slot]
        for slot in sorted(self.counted - wanted - self.pending_shrink):
            self._request("shrink", slot)  # an in-sync member we cannot reach
        for slot in sorted(wanted - set(self.peers)):
            p = _Peer(slot, self.r.log.last_seq)  # send the barrier first
            p.behind_since = now
            self.peers[slot] = p
        self._ship(now)

    # --- fencing ---------------------------------------------------------------
    def fence(self, epoch: int) -> None:
        if self.fenced:
            return
        self.fenced = True
        r = self.r
        r.role = "fenced"
        if epoch > r.promised_epoch:
            r.promised_epoch = epoch
            r.storage.set_promise(epoch)
        for tokens in self.waiters.values():
            for token in tokens:
                r.effects.append(Complete(token, not_master(f"fenced by epoch {epoch}")))
        self.waiters.clear()
        r.effects.append(Fenced(epoch))
