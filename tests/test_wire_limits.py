"""Every endpoint's limits are within what a client reads (``rpc.wire.MAX_MESSAGE_SIZE``).

The limits are their endpoint's (``hosting.api_limits``, ``netlets.endpoint``); the client's
bound is ``rpc``'s, which knows no endpoint: a limit raised past it would let an endpoint take a
call whose answer, of the same size, no client could read.
"""

from hosting.api_limits import NODE_LIMITS
from netlets.endpoint import NETLET_CLIENT_LIMITS, NETLET_LIMITS
from rpc import wire


def test_every_endpoints_largest_message_is_within_what_clients_read():
    for limits in (NODE_LIMITS, NETLET_LIMITS, NETLET_CLIENT_LIMITS, wire.DEFAULT_LIMITS):
        assert limits.largest <= wire.MAX_MESSAGE_SIZE


def test_pyro5_reads_up_to_the_clients_bound():
    wire.configure()
    from Pyro5 import config

    assert config.MAX_MESSAGE_SIZE == wire.MAX_MESSAGE_SIZE
