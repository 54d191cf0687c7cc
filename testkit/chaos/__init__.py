"""The chaos run's parts (bench/chaos.py assembles them; its docstring is the run's contract).

:mod:`~testkit.chaos.history` records every operation; :mod:`~testkit.chaos.clients`
runs the load; :mod:`~testkit.chaos.nemesis` injects the faults and times the
heals; :mod:`~testkit.chaos.checks` turns a history, the final values, the
events and the netlets' logs into verdicts (lost / duplicated / phantom writes,
double masters, linearizability). The app is examples/kvstore, named ``APP``.
"""

APP = "kvstore"
REPLICAS = 3
