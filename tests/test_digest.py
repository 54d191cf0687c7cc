"""rpc.digest: the hash a holder proof and a grant sign must match what the callee receives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from Pyro5.serializers import MsgpackSerializer

from rpc.digest import call_digest, digest
from warrants.errors import BadInput

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2), inner, max_size=4), max_leaves=12)
_SER = MsgpackSerializer()


def arrived(value):
    """What the callee gets for ``value``: Pyro5's msgpack there and back."""
    return _SER.loads(_SER.dumps(value))


def strict(value):
    """A structure equal for two values only if they arrive identically (1, 1.0 and True differ)."""
    if isinstance(value, dict):
        return ("dict", frozenset((strict(k), strict(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(strict(v) for v in value))
    return (type(value).__name__, value.hex() if isinstance(value, float) else value)  # -0.0 is not 0.0


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_sender_and_the_receiver_hash_alike(value):
    assert digest(value) == digest(arrived(value))


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_values_that_arrive_differently_hash_differently(a, b):
    if strict(arrived(a)) != strict(arrived(b)):
        assert digest(a) != digest(b)
    else:
        assert digest(a) == digest(b)


def test_near_collisions_hash_apart():
    pairs = [(0.0, -0.0), (1, 1.0), (1, True), (0, None), ("a", b"a"), ([], {}), ([["a", 1]], {"a": 1}),
             ({"a": {"b": 1}}, {"a": [["b", 1]]}), ([1, [2]], [[1], 2])]
    for a, b in pairs:
        assert digest(a) != digest(b), (a, b)


def test_positional_and_keyword_arguments_are_not_interchangeable():
    assert call_digest(("a", "b"), {}) != call_digest(("a",), {"x": "b"})
    assert call_digest(("a",), {"x": 1, "y": 2}) == call_digest(["a"], {"y": 2, "x": 1})


def test_a_type_the_wire_would_change_is_refused():
    import datetime as dt
    with pytest.raises(BadInput, match="datetime"):
        digest([dt.datetime.now()])
