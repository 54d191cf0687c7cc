"""Prometheus metrics of a node, served as text on loopback.

Counters and histograms are updated where things happen; gauges of netlets by
state are computed at scrape time from the supervisor (never stale).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hosting.registry import Registry


class NodeMetrics:
    """The node's metrics: counters fed by ``on_event`` and ``observe_call``, and gauges read at
    each scrape (the slots in ``node_registry``, the gates given to ``watch_gate``)."""

    def __init__(self, node_registry: Registry) -> None:
        self.registry = CollectorRegistry()
        self.restarts = Counter("jtrix_netlet_restarts", "Netlets started to replace an ended one",
                                ["app"], registry=self.registry)
        self.lease_expiries = Counter("jtrix_lease_expiries", "Netlet leases that expired (hangs)",
                                      ["app"], registry=self.registry)
        self.failovers = Counter("jtrix_failovers", "Control lease grants after a master loss",
                                 ["app"], registry=self.registry)
        self.api_latency = Histogram("jtrix_api_call_seconds", "Hosting API call latency", ["method"],
                                     registry=self.registry,
                                     buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5))
        self.registry.register(_NetletStates(node_registry))
        self.server = None

    def observe_call(self, method: str, seconds: float) -> None:
        self.api_latency.labels(method).observe(seconds)

    def on_event(self, kind: str, app: str | None, detail: dict) -> None:
        """Registry event listener: count what the counters count."""
        if app is None:
            return
        if kind == "netlet.started" and detail.get("mode") == "replace":
            self.restarts.labels(app).inc()
        elif kind == "lease.expired":
            self.lease_expiries.labels(app).inc()
        elif kind == "control.granted" and detail.get("epoch", 0) > 1:
            self.failovers.labels(app).inc()

    def watch_gate(self, gate) -> None:
        """Export a ``rpc.gate.ConnectionGate``'s connections and refusals (read at scrape time)."""
        self.registry.register(_GateState(gate))

    def serve(self, host: str = "127.0.0.1") -> int:
        self.server, _ = start_http_server(0, addr=host, registry=self.registry)
        return self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


class _NetletStates:
    def __init__(self, node_registry: Registry) -> None:
        self.node_registry = node_registry

    def collect(self):
        family = GaugeMetricFamily("jtrix_netlets", "Netlets by app and state", labels=["app", "state"])
        counts: dict[tuple[str, str], int] = {}
        for row in self.node_registry.apps():
            for slot in self.node_registry.slots(row["name"]):
                key = (row["name"], slot["state"])
                counts[key] = counts.get(key, 0) + 1
        for (app, state), n in sorted(counts.items()):
            family.add_metric([app, state], n)
        yield family


class _GateState:
    def __init__(self, gate) -> None:
        self.gate = gate

    def collect(self):
        connections = GaugeMetricFamily("jtrix_api_connections", "Connections to the node's API by state",
                                        labels=["state"])
        for state, n in sorted(self.gate.counts().items()):
            connections.add_metric([state], n)
        yield connections
        refused = CounterMetricFamily("jtrix_api_connections_refused",
                                      "Connections to the node's API refused or cut, by reason", labels=["reason"])
        for reason, n in sorted(dict(self.gate.refused).items()):
            refused.add_metric([reason], n)
        yield refused
