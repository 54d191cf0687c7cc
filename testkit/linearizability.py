"""A small linearizability checker (Wing & Gong / Lowe search, as in porcupine).

A history is a list of `Operation`s with invocation time `call` and response
time `ret`. It is linearizable if every operation can be assigned a point
within [call, ret] such that running the operations in that order through the
sequential `Model` reproduces every recorded output.

The search (Lowe's just-in-time linearization, `_check_single`): walk the
invocation/response events in time order as a doubly linked list. At a call
entry, try linearizing that operation now: if the model accepts it, remove
("lift") its call and return entries from the list, remember the step on a
stack, and restart from the head. At a return entry, the operation it belongs
to has not been linearized before its response, so undo the last choice and
try the next call after it instead. Memoizing every (linearized set, model
state) pair reached so far prunes the search to each distinct configuration
once, which is what makes it practical (the set is an exact bitmask for up to
4096 operations per partition, a 128-bit Zobrist hash beyond: see
`_check_single`).

Unknown outcomes: an operation with `ret = math.inf` (a timeout, a crashed
client) may have taken effect at any point after its invocation, or never. Its
return entry sorts after every real event, so the search may linearize it
anywhere after its call but is never forced to: the history is accepted as
soon as every operation with a finite `ret` is linearized. The model sees
`UNKNOWN` as its output and must accept any result.

P-compositionality: linearizability is local, so a model may split a history
into independent sub-histories (`partition`, e.g. per key) checked one by one.

History files (`save_history` / `load_history`): JSON lines, one per
operation, ``{"client", "f", "key", "value", "call", "ret", "output"}`` with
``ret`` null for an unknown outcome (and ``value`` ``[expected, new]`` for a
cas). An optional ``"type"``: "ok" | "fail" | "unknown"; a "fail" is a
definite failure (the operation did not take effect) and is not checked.
Other fields are kept by writers for humans and ignored here.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

OK, ILLEGAL, UNKNOWN_RESULT = "ok", "illegal", "unknown"
EXACT_MEMO_LIMIT = 4096  # see _check_single


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # the output `step` receives for an operation with ret = inf


@dataclass(frozen=True)
class Operation:
    client: Any
    call: float
    ret: float  # math.inf: outcome unknown (may or may not have taken effect)
    input: Any
    output: Any = None


@dataclass(frozen=True)
class Model:
    init: Any  # hashable initial state
    step: Callable[[Any, Any, Any], tuple[bool, Any]]  # (state, input, output) -> (ok, new state)
    partition: Callable[[list[Operation]], list[list[Operation]] | None] = lambda ops: None


# --------------------------------------------------------------------- models

def kv_model() -> Model:
    """Map of string keys, each initially "". Inputs and outputs:

    * ("get", key, _) -> the value read (None is read as "": see below);
    * ("put", key, value) -> None;
    * ("append", key, suffix) -> the new value's length, or None when not
      recorded (porcupine's histories; kvstore's ``append`` returns it, and
      then it must equal the length of the value before plus ``suffix``);
    * ("cas", key, (expected, new)) -> True if the value was ``expected`` and
      is now ``new``, else False (the value is unchanged).

    The state is one key's value (histories are partitioned by key).

    Absent keys, mirroring examples/kvstore exactly: kvstore reads a missing
    key as None, appends to it as to "" and its ``cas`` compares
    ``data.get(key) != expected`` (so expected None means "absent"). This model
    has one initial value, "" (as porcupine's kv histories expect), and maps
    absent <-> "": a get returning None is read as "", and cas's expected None
    means "". That is exact as long as no operation stores the empty string,
    which is the only way kvstore can hold a *present* "" (distinct from
    absent); so writing "" (put/cas new/append suffix) and cas with expected ""
    are refused with ValueError rather than checked approximately. Histories of
    kvstore must use non-empty values (ours use globally unique tokens).
    """

    def step(state, inp, out):
        f, _key, value = inp
        if f == "get":
            return (out is UNKNOWN or (out if out is not None else "") == state), state
        if f == "put":
            _no_empty(value, inp)
            return True, value
        if f == "append":
            _no_empty(value, inp)
            new = state + value
            return (out is UNKNOWN or out is None or out == len(new)), new
        if f == "cas":
            expected, new = value
            if expected == "":
                raise ValueError(f"{inp!r}: cas expecting a present empty value cannot be mirrored (see kv_model)")
            _no_empty(new, inp)
            swapped = state == ("" if expected is None else expected)
            return (out is UNKNOWN or out == swapped), (new if swapped else state)
        raise ValueError(f"unknown kv op {f!r}")

    def partition(ops):
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.values())

    return Model(init="", step=step, partition=partition)


def _no_empty(value: Any, inp: Any) -> None:
    if value == "":
        raise ValueError(f"{inp!r}: kv_model cannot tell a stored empty string from an absent key (see kv_model)")


def register_model() -> Model:
    """One register, initially None: input ("read", None) -> value read,
    ("write", v) -> None, ("cas", (expected, new)) -> True if it swapped, else False."""

    def step(state, inp, out):
        f, arg = inp
        if f == "read":
            return (out is UNKNOWN or out == state), state
        if f == "write":
            return True, arg
        if f == "cas":
            expected, new = arg
            swapped = state == expected
            return (out is UNKNOWN or out == swapped), (new if swapped else state)
        raise ValueError(f"unknown register op {f!r}")

    return Model(init=None, step=step)


# ------------------------------------------------------------------- checking

def check(model: Model, ops: list[Operation], timeout: float | None = None) -> str:
    """Return "ok" if `ops` is linearizable w.r.t. `model`, "illegal" if not,
    and "unknown" only if `timeout` seconds (for the whole check) ran out first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    parts = model.partition(list(ops)) or [list(ops)]
    result = OK
    for part in parts:
        r = _check_single(model, part, deadline)
        if r == ILLEGAL:
            return ILLEGAL
        if r == UNKNOWN_RESULT:
            result = UNKNOWN_RESULT
    return result


def _check_single(model: Model, ops: list[Operation], deadline: float | None) -> str:
    n = len(ops)
    # Events sorted by time; at equal times calls come first (touching = concurrent).
    events = sorted((t, kind, i) for i, op in enumerate(ops) for t, kind in ((op.call, 0), (op.ret, 1)))
    # Doubly linked list over nodes 1..2n, node 0 is the head sentinel, -1 the end.
    m = len(events)
    nxt = list(range(1, m + 2))
    nxt[m] = -1
    prv = list(range(-1, m))
    is_call = [False] * (m + 1)
    op_of = [0] * (m + 1)
    ret_node = [0] * n
    for node, (_t, kind, i) in enumerate(events, 1):
        is_call[node] = kind == 0
        op_of[node] = i
        if kind == 1:
            ret_node[i] = node
    inputs = [op.input for op in ops]
    outputs = [UNKNOWN if op.ret == math.inf else op.output for op in ops]
    finite = [op.ret != math.inf for op in ops]
    pending = sum(finite)  # operations with a response still to linearize

    def lift(node: int) -> None:  # unlink a call entry and its return entry
        for x in (node, ret_node[op_of[node]]):
            nxt[prv[x]] = nxt[x]
            if nxt[x] != -1:
                prv[nxt[x]] = prv[x]

    def unlift(node: int) -> None:  # relink them, in reverse order
        for x in (ret_node[op_of[node]], node):
            nxt[prv[x]] = x
            if nxt[x] != -1:
                prv[nxt[x]] = x

    # The memo key's "set of linearized operations": the XOR of one token per
    # operation. Up to EXACT_MEMO_LIMIT operations the tokens are 1 << i (the
    # exact bitmask); beyond, a bitmask costs O(n) per step to build and to keep
    # (a chaos run has 10^5 operations per key), so each operation gets a random
    # 128-bit token instead (Zobrist hashing): O(1) per step, and two different
    # sets collide with probability 2^-128 per pair -- a collision could only
    # prune a configuration never explored (a false "illegal"), never accept.
    if n <= EXACT_MEMO_LIMIT:
        token = [1 << i for i in range(n)]
    else:
        rng = random.Random(n)
        token = [rng.getrandbits(128) for _ in range(n)]
    step = model.step
    state, linearized = model.init, 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    entry = nxt[0]
    steps = 0
    while pending:
        steps += 1
        if deadline is not None and steps & 0x3FF == 0 and time.monotonic() > deadline:
            return UNKNOWN_RESULT
        # Reaching the end (or only infinite returns) is impossible while pending > 0:
        # a finite return entry always lies before them.
        i = op_of[entry]
        if is_call[entry]:
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                key = (linearized ^ token[i], new_state)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    linearized, state = key
                    lift(entry)
                    pending -= finite[i]
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:  # the earliest pending response: undo the last linearization
            if not stack:
                return ILLEGAL
            entry, state = stack.pop()
            i = op_of[entry]
            linearized ^= token[i]
            unlift(entry)
            pending += finite[i]
            entry = nxt[entry]
    return OK


# --------------------------------------------------------------- history files

def op_record(op: Operation, **extra: Any) -> dict:
    """A kv operation (input ``(f, key, value)``) as one history-file record."""
    f, key, value = op.input
    rec = {"client": op.client, "f": f, "key": key, "value": list(value) if isinstance(value, tuple) else value,
           "call": op.call, "ret": None if op.ret == math.inf else op.ret,
           "output": None if op.output is UNKNOWN else op.output}
    rec.update(extra)
    return rec


def op_from_record(rec: dict) -> Operation | None:
    """The operation of a history record; None for a definite failure (it did not happen)."""
    if rec.get("type") == "fail":
        return None
    value = rec.get("value")
    if isinstance(value, list):
        value = tuple(value)
    ret = rec.get("ret")
    unknown = ret is None or rec.get("type") == "unknown"
    return Operation(rec["client"], float(rec["call"]), math.inf if unknown else float(ret),
                     (rec["f"], rec["key"], value), None if unknown else rec.get("output"))


def save_history(path: str | Path, ops: list[Operation]) -> None:
    """Write ``ops`` as a JSON-lines history file (see the module docstring)."""
    with open(path, "w") as out:
        for op in ops:
            out.write(json.dumps(op_record(op)) + "\n")


def load_history(path: str | Path) -> list[Operation]:
    """Read a JSON-lines history file; definite failures are left out. A
    truncated last line (a writer that was killed) is ignored."""
    ops = []
    lines = Path(path).read_text().splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                break
            raise
        op = op_from_record(rec)
        if op is not None:
            ops.append(op)
    return ops


# -------------------------------------------------------------------- parsers

_KV_LINE = re.compile(
    r'\{:process (\d+), :type :(\w+), :f :(\w+), :key "([^"]*)", :value (nil|"[^"]*")\}')


def parse_kv_history(path: str | Path) -> list[Operation]:
    """Jepsen-style kv history (one EDN map per line); times are event indices.
    An invoke without :ok is unknown (ret = inf); one that ends :fail never happened."""
    pending: dict[int, tuple[int, str, str, str | None]] = {}
    ops: list[Operation] = []
    lines = Path(path).read_text().splitlines()
    for t, line in enumerate(lines):
        m = _KV_LINE.search(line)
        if not m:
            continue
        proc, typ, f, key, raw = m.groups()
        proc = int(proc)
        value = None if raw == "nil" else raw[1:-1]
        if typ == "invoke":
            pending[proc] = (t, f, key, value)
        elif proc in pending:
            call, f0, key0, value0 = pending.pop(proc)
            if typ == "ok":
                ops.append(Operation(proc, call, t, (f0, key0, value0), value if f0 == "get" else None))
            elif typ == "info":
                ops.append(Operation(proc, call, math.inf, (f0, key0, value0), None))
    for proc, (call, f, key, value) in pending.items():
        ops.append(Operation(proc, call, math.inf, (f, key, value), None))
    return ops


_ETCD_LINE = re.compile(r"jepsen\.util - (\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*?)\s*$")


def _etcd_value(text: str) -> Any:
    if text == "nil":
        return None
    if text.startswith("["):
        a, b = text[1:-1].split()
        return (int(a), int(b))
    return int(text)


def parse_etcd_history(path: str | Path) -> list[Operation]:
    """Jepsen etcd register log; times are event indices. :info (or :fail ...
    :timed-out, or no response at all) is an unknown outcome; :fail :cas is a
    cas that did not swap; any other :fail never happened."""
    pending: dict[int, tuple[int, Any]] = {}
    ops: list[Operation] = []
    lines = Path(path).read_text().splitlines()
    for t, line in enumerate(lines):
        m = _ETCD_LINE.search(line)
        if not m:
            continue
        proc, typ, f, raw = int(m[1]), m[2], m[3], m[4]
        if typ == "invoke":
            arg = None if f == "read" else _etcd_value(raw)
            pending[proc] = (t, (f, arg))
            continue
        if proc not in pending:
            continue
        call, inp = pending.pop(proc)
        if typ == "info" or raw == ":timed-out":
            ops.append(Operation(proc, call, math.inf, inp, None))
        elif typ == "ok":
            out = _etcd_value(raw) if f == "read" else (True if f == "cas" else None)
            ops.append(Operation(proc, call, t, inp, out))
        elif f == "cas":  # :fail :cas -- definitely did not swap
            ops.append(Operation(proc, call, t, inp, False))
    for proc, (call, inp) in pending.items():
        ops.append(Operation(proc, call, math.inf, inp, None))
    return ops
