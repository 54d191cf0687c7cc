"""A canonical hash of wire values: what a signature over "these arguments" signs.

Contract: ``digest(v)`` on the sending side equals ``digest(w)`` on the
receiving side whenever ``w`` is what msgpack (as Pyro5 uses it) delivers for
``v``; two values that arrive differently hash differently. So tuples hash as
the lists they arrive as, a set as the list of its elements in the order it is
sent, ``bytearray`` as ``bytes``, and dicts independently of insertion order.
Types that do not cross the wire unchanged (datetimes, objects …) are refused
rather than guessed at.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from warrants.errors import BadInput


def _normal(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        items = [(canonical(k), _normal(v)) for k, v in value.items()]
        return {"\0dict": sorted(items, key=lambda kv: kv[0])}
    raise BadInput(f"cannot sign an argument of type {type(value).__name__}")


def canonical(value: Any) -> bytes:
    """The canonical encoding of ``value`` (msgpack of its normal form)."""
    return msgpack.packb(_normal(value), use_bin_type=True)


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``canonical(value)``."""
    return hashlib.sha256(canonical(value)).hexdigest()


def call_digest(args: tuple | list, kwargs: dict | None) -> str:
    """The digest of one call's positional and keyword arguments, as the callee receives them."""
    return digest([list(args), dict(kwargs or {})])
