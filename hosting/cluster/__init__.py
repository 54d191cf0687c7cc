"""The cluster on etcd: what a node adds to share apps with other nodes.

``etcd`` (the client: compare-and-swap, leases, watches), ``keys`` (every key, built and
parsed in one place), ``membership`` (the node's lease and app claims; ``LocalMembership``
for a single node), ``trust`` (members' certificates and warrants), ``store`` (app specs,
codebases and moved slots), ``view`` (the watched picture of every node's netlets),
``placement`` (where slots go: a pure policy), ``epochs`` (the arbiter's state on etcd) and
``events`` (the cluster-wide event log), ``ca`` (the cluster's certificate authority, in
etcd). ``agent.ClusterAgent`` is the node's side of it all:
the ``hosting.topology.Topology`` of a clustered node, as ``LocalTopology`` is of a single one;
``services.ClusterServices`` builds it with the rest of what a clustered node is built with,
as ``hosting.topology.LocalServices`` does for a single one. Nothing here runs on a single
node's code path except ``membership.LocalMembership``.
"""
