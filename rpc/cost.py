"""What deserializing a msgpack body costs in memory, known before Pyro5 deserializes it.

msgpack is compact where Python is not: an empty map is 1 byte on the wire
and ~64 bytes as a dict, a 2-byte string ~50; a body of 1-byte items expands
8-70 times. Contract of ``object_cost(body, limit)``: the estimated memory of
the objects ``body`` deserializes to (every container and every scalar that is
not a shared constant, by ``sys.getsizeof``); ``MessageRefused`` (kind
``expands``) as soon as that passes ``limit``. The estimate is made while
deserializing with hooks, so what is built before it stops is at most
``limit`` plus one container (of at most ``max_items``) and is freed at once. Only the shape msgpack can carry is
deserialized: no ext type is interpreted (ext data counts as bytes).
"""

from __future__ import annotations

import sys

import msgpack

from rpc.guard import MessageRefused

#: estimated objects may be at most this many times the body, plus ``SLACK``
EXPANSION = 16
SLACK = 64 * 1024


class _TooCostly(Exception):
    pass


def cost_limit(size: int, expansion: int = EXPANSION) -> int:
    """The most a body of ``size`` bytes may cost deserialized."""
    return expansion * size + SLACK


def object_cost(body: bytes | bytearray | memoryview, limit: int, charge=None, max_items: int | None = None) -> int:
    """See the module contract; each container's cost is taken from ``charge`` (``rpc.budget``)
    as soon as it is built, so concurrent checks are bounded by its budget too; no container may
    hold more than ``max_items`` (default: as many as the body's size allows)."""
    cost = len(body)

    def add(container, scalars) -> None:
        nonlocal cost
        more = sys.getsizeof(container) + sum(map(_scalar, scalars))
        cost += more
        if cost > limit:
            raise _TooCostly
        if charge is not None:
            charge.take(more)

    def array(items: list) -> list:
        add(items, items)
        return items

    def pairs(items: list) -> dict:
        mapping = dict(items)
        add(mapping, (x for pair in items for x in pair))
        return mapping

    try:
        items = len(body) if max_items is None else max_items
        msgpack.unpackb(body, raw=False, list_hook=array, object_pairs_hook=pairs, ext_hook=lambda code, data: data,
                        max_array_len=items, max_map_len=items)
    except _TooCostly:
        raise MessageRefused(f"a body of {len(body)} bytes that deserializes to more than {limit} bytes"
                             " of objects is refused", "expands") from None
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData, RecursionError) as err:
        raise MessageRefused(f"malformed msgpack body: {str(err)[:120] or type(err).__name__}") from None
    return cost


def _scalar(value) -> int:
    kind = type(value)
    if kind is str or kind is bytes or kind is float or (kind is int and not -5 <= value <= 256):
        return sys.getsizeof(value)
    return 0  # None, booleans, small ints: shared; containers: counted by their own hook
