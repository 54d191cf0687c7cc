"""The sans-IO replication core of replicated netlets (see docs/replication.md).

:class:`Replica` is what a runner drives; :mod:`.messages` is the wire protocol;
:mod:`.storage` the only I/O (durable log and snapshots); :mod:`.effects` what
the core asks the runner to do.
"""

import warnings as _warnings

from .effects import ArbiterRequest, Complete, MasterFenced, RoleChanged, Send
from .messages import MalformedMessage
from .replica import ACK_POLICIES, ReplicationConfig, Replica
from .state import not_master
from .storage import FileStorage, MemoryStorage, open_storage

__all__ = [
    "ACK_POLICIES", "ArbiterRequest", "Complete", "FileStorage", "MalformedMessage", "MasterFenced",
    "MemoryStorage", "Replica", "ReplicationConfig", "RoleChanged", "Send", "not_master",
    "open_storage",
]

#: old names of this package's exports, kept for code written against them (deprecated)
_RENAMED = {"Fenced": "MasterFenced", "ProtocolError": "MalformedMessage"}


def __getattr__(name: str):
    if name in _RENAMED:
        _warnings.warn(f"netlets.replication.{name} is deprecated; use {_RENAMED[name]}",
                       DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
