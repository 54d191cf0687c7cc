"""The replication wire protocol: log entries, master→backup messages and replies.

Everything here is a plain ``dict``/``list``/``str``/``int``/``bytes``/``None``/
``bool`` value, so it survives msgpack unchanged (no tuples needed, no integer
dict keys). Each message is a dict with a type tag ``"t"``. Constructors build
them; :func:`validate` checks one received from the network and raises
:class:`MalformedMessage` when it is malformed (the receiver then drops it).

Entries
-------
``[seq, epoch, kind, req_id, command]`` — ``seq`` is the 1-based global log
index (continuing across epochs), ``epoch`` the epoch of the master that created
it, ``kind`` is ``"cmd"`` (a user command, applied through ``Netlet.apply``) or
``"noop"`` (the barrier a new master appends first; never applied to the
netlet), ``req_id`` the client's request id (``str`` or ``None``), ``command``
the value returned by the ``@command`` method.

Master → backup
---------------
``append``: ``{"t", "epoch", "from", "bid", "prev_seq", "prev_epoch", "entries",
"commit_seq"}`` — ``entries`` follow ``prev_seq`` (whose entry has epoch
``prev_epoch``; ``prev_seq == 0`` means the start of the log). ``bid`` is a
per-master increasing batch id echoed by the reply. ``commit_seq`` is the
master's commit index. An ``append`` with no entries is a heartbeat that
carries the commit index.

``snapshot``: ``{"t", "epoch", "from", "bid", "seq", "snap_epoch", "state",
"dedup"}`` — the master's state machine at its commit index ``seq`` (whose
entry had epoch ``snap_epoch``); ``dedup`` is the request-id table.

Backup → master (replies)
-------------------------
``ack``: ``{"t", "epoch", "from", "inc", "bid", "match_seq", "commit_seq"}`` —
the backup durably holds the master's log up to ``match_seq``.
``mismatch``: ``{"t", "epoch", "from", "inc", "bid", "hint_seq"}`` — the
``prev`` did not match (gap or conflict); resend from ``hint_seq + 1``.
``stale``: ``{"t", "epoch", "from", "inc", "bid"}`` — refused: the backup has
promised ``epoch``, higher than the sender's. The sender is fenced.
``inc`` is the backup's incarnation id (new on every process start): a master
that sees it change forgets what that peer was known to hold.

Election (node → backup)
------------------------
``promise``: ``{"t", "ok", "epoch", "from", "position"}`` — reply to
``prepare(epoch)``; ``position`` is ``[last_epoch, last_seq]``.
"""

from __future__ import annotations

from typing import Any

CMD = "cmd"
NOOP = "noop"

APPEND = "append"
SNAPSHOT = "snapshot"
ACK = "ack"
MISMATCH = "mismatch"
STALE = "stale"
PROMISE = "promise"


class MalformedMessage(ValueError):
    """A received message is malformed; the receiver drops it."""


# --- entries -------------------------------------------------------------

def entry(seq: int, epoch: int, kind: str, req_id: str | None, command: Any) -> list:
    """A log entry ``[seq, epoch, kind, req_id, command]``."""
    return [seq, epoch, kind, req_id, command]


def e_seq(e: list) -> int:
    return e[0]


def e_epoch(e: list) -> int:
    return e[1]


def e_kind(e: list) -> str:
    return e[2]


def e_req(e: list) -> str | None:
    return e[3]


def e_cmd(e: list) -> Any:
    return e[4]


def validate_entry(e: Any) -> list:
    """Check one entry; return it as a list (msgpack may hand back a list anyway)."""
    if not isinstance(e, (list, tuple)) or len(e) != 5:
        raise MalformedMessage(f"bad entry: {e!r:.80}")
    seq, epoch, kind, req_id, _ = e
    if not _is_int(seq) or seq < 1 or not _is_int(epoch) or epoch < 0:
        raise MalformedMessage(f"bad entry position: {e!r:.80}")
    if kind not in (CMD, NOOP):
        raise MalformedMessage(f"bad entry kind: {kind!r}")
    if req_id is not None and not isinstance(req_id, str):
        raise MalformedMessage(f"bad request id: {req_id!r}")
    return list(e)


# --- master -> backup ----------------------------------------------------

def append(epoch: int, sender: str, bid: int, prev_seq: int, prev_epoch: int,
           entries: list, commit_seq: int) -> dict:
    return {"t": APPEND, "epoch": epoch, "from": sender, "bid": bid,
            "prev_seq": prev_seq, "prev_epoch": prev_epoch,
            "entries": entries, "commit_seq": commit_seq}


def snapshot(epoch: int, sender: str, bid: int, seq: int, snap_epoch: int,
             state: Any, dedup: list) -> dict:
    return {"t": SNAPSHOT, "epoch": epoch, "from": sender, "bid": bid,
            "seq": seq, "snap_epoch": snap_epoch, "state": state, "dedup": dedup}


# --- backup -> master ----------------------------------------------------

def ack(epoch: int, sender: str, inc: str, bid: int, match_seq: int, commit_seq: int) -> dict:
    return {"t": ACK, "epoch": epoch, "from": sender, "inc": inc, "bid": bid,
            "match_seq": match_seq, "commit_seq": commit_seq}


def mismatch(epoch: int, sender: str, inc: str, bid: int, hint_seq: int) -> dict:
    return {"t": MISMATCH, "epoch": epoch, "from": sender, "inc": inc, "bid": bid,
            "hint_seq": hint_seq}


def stale(epoch: int, sender: str, inc: str, bid: int) -> dict:
    return {"t": STALE, "epoch": epoch, "from": sender, "inc": inc, "bid": bid}


def promise(ok: bool, epoch: int, sender: str, position: list) -> dict:
    return {"t": PROMISE, "ok": ok, "epoch": epoch, "from": sender,
            "position": list(position)}


# --- validation ----------------------------------------------------------

_FIELDS = {
    APPEND: {"epoch": int, "from": str, "bid": int, "prev_seq": int,
             "prev_epoch": int, "entries": list, "commit_seq": int},
    SNAPSHOT: {"epoch": int, "from": str, "bid": int, "seq": int,
               "snap_epoch": int, "dedup": list},
    ACK: {"epoch": int, "from": str, "inc": str, "bid": int, "match_seq": int,
          "commit_seq": int},
    MISMATCH: {"epoch": int, "from": str, "inc": str, "bid": int, "hint_seq": int},
    STALE: {"epoch": int, "from": str, "inc": str, "bid": int},
    PROMISE: {"ok": bool, "epoch": int, "from": str, "position": list},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(msg: Any, expect: tuple[str, ...] | None = None) -> dict:
    """Check a received message's shape; return it (entries normalised to lists).

    ``expect`` restricts the accepted types. Raises :class:`MalformedMessage`.
    """
    if not isinstance(msg, dict):
        raise MalformedMessage(f"message is not a dict: {type(msg).__name__}")
    t = msg.get("t")
    if t not in _FIELDS or (expect is not None and t not in expect):
        raise MalformedMessage(f"unexpected message type {t!r}")
    for name, typ in _FIELDS[t].items():
        v = msg.get(name)
        if typ is int:
            ok = _is_int(v) and v >= 0
        elif typ is list:
            ok = isinstance(v, (list, tuple))
        else:
            ok = isinstance(v, typ)
        if not ok:
            raise MalformedMessage(f"{t}: bad field {name}={v!r:.60}")
    if t == APPEND:
        entries = [validate_entry(e) for e in msg["entries"]]
        for i, e in enumerate(entries):
            if e[0] != msg["prev_seq"] + 1 + i:
                raise MalformedMessage("append: entries are not contiguous after prev_seq")
        msg = dict(msg, entries=entries)
    elif t == PROMISE:
        pos = msg["position"]
        if len(pos) != 2 or not all(_is_int(x) for x in pos):
            raise MalformedMessage(f"promise: bad position {pos!r}")
    return msg


def position_of(pos: Any) -> tuple[int, int]:
    """A wire position ``[epoch, seq]`` as a comparable tuple."""
    return (int(pos[0]), int(pos[1]))


# --- arbiter answers (node -> master) -------------------------------------------
# ``{"ok", "epoch", "version", "isr": {slot: incarnation or None}}`` — the arbiter's decision on
# an ISR request and its state after it (``hosting.election.arbiter.AppState.isr_answer``); or
# ``{"retry": reason, "epoch"?}`` — not decided (store failure, not the lease holder): ask again.

def validate_isr_answer(answer: Any) -> dict:
    """Check an arbiter answer (see above); raises :class:`MalformedMessage` when malformed."""
    if not isinstance(answer, dict):
        raise MalformedMessage(f"arbiter answer is not a dict: {type(answer).__name__}")
    if "epoch" in answer and not _is_int(answer["epoch"]):
        raise MalformedMessage(f"arbiter answer: bad epoch {answer['epoch']!r:.40}")
    if "retry" in answer:
        return answer
    isr = answer.get("isr")
    if (not isinstance(answer.get("ok"), bool) or "epoch" not in answer or not _is_int(answer.get("version"))
            or not isinstance(isr, dict)
            or not all(isinstance(s, str) and (i is None or isinstance(i, str)) for s, i in isr.items())):
        raise MalformedMessage(f"bad arbiter answer: {answer!r:.80}")
    return answer
