"""The harness shared by the tests and the benchmarks (installed with jtrix: no path tricks).

Each module holds one idea: :mod:`testkit.wait` (polling a condition to a
deadline), :mod:`testkit.procs` (finding and killing processes by pid and start
time), :mod:`testkit.node` (a real hosting node in a temporary home),
:mod:`testkit.fleet` (N nodes seen as one; a single node is a fleet of one),
:mod:`testkit.etcd` (a private etcd on free ports), :mod:`testkit.kvstore`
(the kvstore example's descriptor, launched and waited on),
:mod:`testkit.manyapps` (many small replicated apps on one node),
:mod:`testkit.linearizability` (the checker) and :mod:`testkit.chaos` (the
chaos run's clients, nemesis and checks).

Nothing here imports pytest: a failed wait raises ``AssertionError`` (which
pytest reports as a failure and a benchmark as a crash). Paths to the
examples and test apps are those of the source tree this package sits in (it
is installed editable).
"""
