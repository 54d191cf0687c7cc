"""The linearizability checker (tests/linearizability.py) against recorded
histories with known verdicts, hand-made cases, and generated linearizable
histories."""

import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linearizability import (
    UNKNOWN,
    Operation,
    check,
    kv_model,
    parse_etcd_history,
    parse_kv_history,
    register_model,
)

INF = math.inf


def _testdata_dir() -> Path:
    env = os.environ.get("JTRIX_TESTDATA")
    if env:  # the shared testdata root, or the linearizability directory itself
        root = Path(env)
        return root / "linearizability" if (root / "linearizability").is_dir() else root
    return Path(__file__).resolve().parents[2] / "shared" / "testdata" / "linearizability"


DATA = _testdata_dir()
HAVE_DATA = (DATA / "expected.tsv").is_file()
VERDICTS = {"true": "ok", "false": "illegal"}


def _recorded_cases():
    if not HAVE_DATA:
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"linearizability testdata not found at {DATA} (set JTRIX_TESTDATA)"))]
    cases = []
    for line in (DATA / "expected.tsv").read_text().splitlines()[1:]:
        if not line.strip():
            continue
        name, verdict = line.split("\t")
        marks = () if verdict in VERDICTS else pytest.mark.skip(reason="no known verdict")
        cases.append(pytest.param(name, verdict, id=name, marks=marks))
    return cases


@pytest.mark.parametrize("name,verdict", _recorded_cases())
def test_recorded_history(name, verdict):
    path = DATA / name
    if name.startswith("kv/"):
        model, ops = kv_model(), parse_kv_history(path)
    else:
        model, ops = register_model(), parse_etcd_history(path)
    assert ops, f"parsed no operations from {name}"
    start = time.monotonic()
    assert check(model, ops, timeout=30) == VERDICTS[verdict]
    assert time.monotonic() - start < 10, f"{name} took too long"


@pytest.mark.skipif(not HAVE_DATA, reason=f"linearizability testdata not found at {DATA}")
def test_parsers_see_unknown_outcomes():
    ops = parse_etcd_history(DATA / "jepsen-etcd" / "etcd_000.log")
    assert any(op.ret == INF for op in ops)  # :info :timed-out
    assert any(op.input[0] == "cas" and op.output is False for op in ops)  # :fail :cas
    kv = parse_kv_history(DATA / "kv" / "c01-ok.txt")
    assert {op.input[0] for op in kv} == {"get", "put", "append"}


# ------------------------------------------------------------ hand-made cases

def R(call, ret, value, client=0):
    return Operation(client, call, ret, ("read", None), value)


def W(call, ret, value, client=1):
    return Operation(client, call, ret, ("write", value), None)


def CAS(call, ret, expected, new, swapped, client=2):
    return Operation(client, call, ret, ("cas", (expected, new)), swapped)


def test_empty_history_is_ok():
    assert check(register_model(), []) == "ok"
    assert check(kv_model(), []) == "ok"


def test_stale_read_after_completed_write_is_illegal():
    assert check(register_model(), [W(0, 1, 1), R(2, 3, None)]) == "illegal"
    assert check(register_model(), [W(0, 1, 1), R(2, 3, 1)]) == "ok"


def test_concurrent_ops_may_linearize_either_way():
    for seen in (None, 1):
        assert check(register_model(), [W(0, 3, 1), R(1, 2, seen)]) == "ok"
    # Two concurrent writes, then reads agreeing on either one being last.
    for last in (1, 2):
        ops = [W(0, 5, 1), W(1, 4, 2, client=2), R(6, 7, last)]
        assert check(register_model(), ops) == "ok"
    # But once a read has seen the new value, a later read cannot see the old one.
    assert check(register_model(), [W(0, 10, 1), R(1, 2, 1), R(3, 4, None, client=3)]) == "illegal"


def test_cas_outcomes():
    assert check(register_model(), [W(0, 1, 1), CAS(2, 3, 1, 2, True), R(4, 5, 2)]) == "ok"
    assert check(register_model(), [W(0, 1, 1), CAS(2, 3, 0, 2, False), R(4, 5, 1)]) == "ok"
    assert check(register_model(), [W(0, 1, 1), CAS(2, 3, 1, 2, False)]) == "illegal"


def test_unknown_outcome_write_may_or_may_not_apply():
    m = register_model()
    assert check(m, [W(0, INF, 1), R(1, 2, None), R(3, 4, None)]) == "ok"  # never applied
    assert check(m, [W(0, INF, 1), R(1, 2, None), R(3, 4, 1)]) == "ok"  # applied late
    assert check(m, [W(0, INF, 1), R(1, 2, 1), R(3, 4, 1)]) == "ok"  # applied early
    # Once applied it stays applied; and it cannot apply before its invocation.
    assert check(m, [W(0, INF, 1), R(1, 2, 1), R(3, 4, None)]) == "illegal"
    assert check(m, [R(0, 1, 1), W(2, INF, 1)]) == "illegal"
    # Its recorded output (if any) is ignored: an unknown read constrains nothing.
    assert check(m, [R(0, INF, 42), W(1, 2, 1)]) == "ok"
    assert check(m, [CAS(0, INF, None, 5, False), R(1, 2, 5)]) == "ok"


def test_kv_checks_key_by_key():
    def op(c, call, ret, f, key, value, out=None):
        return Operation(c, call, ret, (f, key, value), out)

    ok = [op(0, 0, 1, "put", "a", "x"), op(1, 0, 3, "append", "b", "y"),
          op(0, 2, 3, "append", "a", "z"), op(2, 4, 5, "get", "a", None, "xz"),
          op(2, 6, 7, "get", "b", None, "y"), op(3, 0, 1, "get", "c", None, "")]
    assert check(kv_model(), ok) == "ok"
    bad = ok + [op(3, 8, 9, "get", "a", None, "x")]
    assert check(kv_model(), bad) == "illegal"
    assert kv_model().step("", ("get", "k", None), UNKNOWN) == (True, "")


def test_timeout_gives_unknown():
    # 16 concurrent writes of distinct values, then an impossible read: proving it
    # illegal means trying every subset and order, far more than 0 s allows.
    ops = [W(0, 100, v, client=v) for v in range(16)] + [R(200, 201, 999)]
    assert check(register_model(), ops, timeout=0) == "unknown"
    assert check(register_model(), ops[:6] + ops[-1:]) == "illegal"


# ------------------------------------------- generated linearizable histories

@st.composite
def linearizable_history(draw, kind):
    """Run random ops through the sequential model at linearization points
    0, 1, 2, ...; each op's interval is its point widened by random amounts, so
    ops overlap or not. Some ops get an unknown outcome and are either applied
    (at their point) or never applied."""
    n = draw(st.integers(0, 14))
    values = st.integers(0, 3)
    state = None if kind == "register" else {}
    ops = []
    for k in range(n):
        if kind == "register":
            f = draw(st.sampled_from(["read", "write", "cas"]))
            inp = ("read", None) if f == "read" else \
                ("write", draw(values)) if f == "write" else ("cas", (draw(st.none() | values), draw(values)))
        else:
            f = draw(st.sampled_from(["get", "put", "append"]))
            inp = (f, draw(st.sampled_from("ab")), None if f == "get" else draw(st.sampled_from(["x", "y", "zz"])))
        call = k - draw(st.floats(0, 3))
        ret = k + draw(st.floats(0, 3))
        unknown = draw(st.integers(0, 9)) == 0
        if unknown and draw(st.booleans()):
            ops.append(Operation(k, call, INF, inp, None))  # never took effect
            continue
        if kind == "register":
            if f == "read":
                out = state
            elif f == "write":
                out, state = None, inp[1]
            else:
                out = state == inp[1][0]
                state = inp[1][1] if out else state
        else:
            cur = state.get(inp[1], "")
            out = cur if f == "get" else None
            state[inp[1]] = inp[2] if f == "put" else cur + inp[2] if f == "append" else cur
        ops.append(Operation(k, call, INF if unknown else ret, inp, out))
    order = draw(st.permutations(range(len(ops))))  # the checker must not rely on input order
    return [ops[i] for i in order]


@given(linearizable_history("register"))
def test_generated_register_histories_are_ok(ops):
    assert check(register_model(), ops, timeout=20) == "ok"


@given(linearizable_history("kv"))
def test_generated_kv_histories_are_ok(ops):
    assert check(kv_model(), ops, timeout=20) == "ok"


@given(linearizable_history("register"), st.data())
def test_reading_a_never_written_value_is_illegal(ops, data):
    reads = [i for i, op in enumerate(ops) if op.input[0] == "read" and op.ret != INF]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    op = ops[i]
    ops[i] = Operation(op.client, op.call, op.ret, op.input, 99)
    assert check(register_model(), ops, timeout=20) == "illegal"
