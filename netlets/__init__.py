"""What runs inside a netlet, and how to call one.

Write a :class:`Netlet` subclass, expose methods with :func:`command` (master
only, replicated through ``apply``), :func:`query` (any replica, possibly
stale, never dirty) or :func:`master_query` (the master, linearizable), and
call a running app through :func:`connect`.
"""

from netlets.access import AppProxy, connect
from netlets.bootstrap import Bootstrap
from netlets.netlet import Netlet, command, exposed_methods, is_replicated, master_query, query
from rpc.errors import CommandFailed, NotMaster, Unavailable

__all__ = ["Netlet", "command", "query", "master_query", "exposed_methods", "is_replicated", "connect",
           "AppProxy", "CommandFailed", "NotMaster", "Unavailable", "Bootstrap"]
