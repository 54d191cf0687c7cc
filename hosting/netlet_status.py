"""What a netlet may say about itself: the status it reports with every renewal.

A netlet's status comes from the netlet's own code, so it is untrusted input held
by the node for as long as the netlet lives (in memory and in the registry row).
Contract of :func:`accepted`:

* only the keys in :data:`FIELDS` are kept, each only with a value of its type;
  anything else is dropped (a netlet cannot grow the node's memory or registry by
  inventing keys: each report replaces the known keys, never adds new ones);
* ``app_status`` (what :meth:`netlets.Netlet.publish` published) is kept only
  while its msgpack encoding is at most :data:`APP_STATUS_MAX_BYTES`; beyond it is
  replaced by a one-key note saying so (the renewal itself still counts: a
  verbose netlet keeps its lease);
* ``storage`` and ``fault`` are small records (at most :data:`RECORD_MAX_BYTES`
  encoded each), else dropped.

So a netlet's whole status is bounded (a few tens of KB), whatever it sends.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: the key -> the types its value may have
FIELDS: dict[str, tuple[type, ...]] = {
    "phase": (str,),
    "role": (str,),
    "epoch": (int,),
    "seq": (int,),
    "position": (list, tuple),
    "endpoint": (str,),
    "pid": (int,),
    "storage": (dict,),
    "fault": (dict, str),
    "app_status": (dict,),
}
APP_STATUS_MAX_BYTES = 16 * 1024
RECORD_MAX_BYTES = 4 * 1024
_SHORT_MAX_CHARS = 512  # a phase, role or endpoint string
_RECORDS = ("storage", "fault", "position")


def _encoded_size(value: Any) -> int | None:
    """The msgpack size of ``value``, or None when it cannot be encoded."""
    try:
        return len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return None


def accepted(status: dict[str, Any]) -> dict[str, Any]:
    """The part of a reported ``status`` the node keeps (see the module contract)."""
    out: dict[str, Any] = {}
    for key, types in FIELDS.items():
        if key not in status:
            continue
        value = status[key]
        if not isinstance(value, types) or isinstance(value, bool):
            continue
        if isinstance(value, str) and len(value) > _SHORT_MAX_CHARS:
            continue
        if key in _RECORDS:
            size = _encoded_size(value)
            if size is None or size > RECORD_MAX_BYTES:
                continue
        elif key == "app_status":
            size = _encoded_size(value)
            if size is None or size > APP_STATUS_MAX_BYTES:
                value = {"dropped": f"app_status over {APP_STATUS_MAX_BYTES} bytes encoded"}
        out[key] = value
    return out
