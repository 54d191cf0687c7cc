"""The sans-IO replication core of replicated netlets (see docs/replication.md).

:class:`Replica` is what a runner drives; :mod:`.messages` is the wire protocol;
:mod:`.storage` the only I/O (durable log and snapshots); :mod:`.effects` what
the core asks the runner to do.
"""

from .effects import ArbiterRequest, Complete, Fenced, RoleChanged, Send
from .messages import ProtocolError
from .replica import ACK_POLICIES, ReplicationConfig, Replica
from .state import not_master
from .storage import FileStorage, MemoryStorage, open_storage

__all__ = [
    "ACK_POLICIES", "ArbiterRequest", "Complete", "Fenced", "FileStorage", "MemoryStorage",
    "ProtocolError", "Replica", "ReplicationConfig", "RoleChanged", "Send", "not_master",
    "open_storage",
]
