"""What the node's API (``hosting.api``) takes: the size of each call, and what it holds for them.

Contract: ``rpc.wire.Daemon`` reads every call on the node's endpoint under ``NODE_LIMITS`` (a
method's limit before its body is read, ``rpc.guard``) and charges the calls of connections that
are not the node's own netlets' to ``NODE_BUDGET`` (``rpc.budget``); ``NODE_LIMITS.largest`` is
within ``rpc.wire.MAX_MESSAGE_SIZE``, what every client reads.
"""

from __future__ import annotations

from hosting.codebases import MAX_CHUNK_BYTES
from rpc.cost import EXPANSION
from rpc.guard import MessageLimits
from rpc.wire import ENVELOPE
from warrants.descriptor import MAX_DESCRIPTOR_BYTES, MAX_WARRANT_BYTES

#: the node's API: every call carries a warrant (auth); submit_app a descriptor too; an upload one
#: chunk of its archive (``hosting.client.upload_codebase``, ``hosting.codebases``): no call is larger than about 2 MiB, and none may
#: deserialize to more than ``rpc.cost.EXPANSION`` times its size
NODE_LIMITS = MessageLimits(default=MAX_WARRANT_BYTES + ENVELOPE, methods={
    "submit_app": MAX_WARRANT_BYTES + MAX_DESCRIPTOR_BYTES + ENVELOPE,
    "upload_codebase": MAX_WARRANT_BYTES + MAX_CHUNK_BYTES + ENVELOPE,
    "upload_chunk": MAX_WARRANT_BYTES + MAX_CHUNK_BYTES + ENVELOPE,
}, expansion=EXPANSION, max_items=64 * 1024)
#: what the node holds for calls on connections that are not its own netlets' (wire bytes as they
#: arrive plus what they deserialize to, until answered): room for one of each largest call at once
NODE_BUDGET = 64 * 1024 * 1024
