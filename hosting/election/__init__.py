"""Who is master: the arbiter and the elector, together.

``arbiter`` (epochs, the holder and the versioned in-sync set: pure state transitions over
an ``EpochStore``), ``core`` (the election as an I/O-free state machine: facts in, actions
out), ``elector`` (the node's driver of the core: prepare/promote RPCs on its pool),
``warm_proof`` (which storage may be elected in a warm start), ``grants`` (the node's signed
word for each replication call) and ``promotions`` (which epoch's promotion completed).
The simulator (``tests/sim``) drives the same core and arbiter.
"""
