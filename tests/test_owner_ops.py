"""The owner's argument check (``hosting.cluster.agent.owner_op_args``) against what members really forward.

A shape the check does not know is refused, so a forwarded request that changed shape (the
versioned ISR added ``sync`` and a version) would be refused on every call and, in a cluster,
the in-sync set would never refill -- the three-node chaos test found exactly that.
"""

import pytest

from hosting.cluster.agent import owner_op_args
from warrants.errors import BadInput

NETLET = "kv/store/0#3"


@pytest.mark.parametrize("request_", [
    ["sync", 4, None, None, None],
    ["shrink", 4, "store/1", None, 7],
    ["expand", 4, "store/2", "kv/store/2#5", 8],
])
def test_every_isr_request_a_master_forwards_passes_the_owners_check(request_):
    kind, epoch, slot, incarnation, version = request_
    forwarded = [NETLET, kind, epoch, slot, incarnation, version]  # Node.arbiter_request's order
    assert owner_op_args("kv", "arbiter", forwarded) == forwarded


@pytest.mark.parametrize("args, why", [
    (["other/store/0#1", "shrink", 4, "store/1", None, 7], "is not a netlet of"),
    ([NETLET, "expand", 4, "store/1", "other/store/1#2", 7], "is not a netlet of"),
    ([NETLET, "shrink", 4, None, None, 7], "bad slot"),
    ([NETLET, "drop", 4, "store/1", None, 7], "unknown arbiter request"),
    ([NETLET, "shrink", 4, "store/1", None, "7"], "version"),
    ([NETLET, "shrink", 4, "store/1", None], "expected 6 arguments"),
])
def test_malformed_or_foreign_isr_requests_are_refused(args, why):
    with pytest.raises(BadInput, match=why):
        owner_op_args("kv", "arbiter", args)
