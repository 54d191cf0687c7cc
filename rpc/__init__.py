"""Calls between jtrix processes: the layer beneath ``hosting`` and ``netlets``.

Contract: ``rpc`` imports only ``warrants`` (and third-party libraries), never
``hosting``, ``netlets`` or ``launcher`` (``tests/test_import_layers.py``).
It holds the Pyro5 settings and the guarded daemon (``rpc.wire`` with
``rpc.guard``, ``rpc.gate``, ``rpc.budget``, ``rpc.cost``), TLS identities
(``rpc.tls``), the app credential handshake (``rpc.credential``), the
canonical digest of call arguments (``rpc.digest``) and the runtime errors a
caller sees from a call (``rpc.errors``, with the table of every error a
client can receive). What an endpoint accepts (its limits) is its owner's.
"""
