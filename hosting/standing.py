"""Whether a node stands alone or in a cluster: the one place that asks.

Everything that differs is built here, by the topology's factory (``hosting.topology.Services``);
the node and its collaborators only ever see the services and the topology they got.
"""

from __future__ import annotations

from typing import Any, Callable

from hosting.cluster.services import ClusterConfig, ClusterServices
from hosting.home import Home
from hosting.registry import Registry
from hosting.topology import LocalServices, Services


def services_for(config: ClusterConfig, home: Home, registry: Registry, name: str, member_info: dict[str, Any],
                 on_fenced: Callable[[str], None], on_app_lost: Callable[[str], None],
                 on_rejoined: Callable[[], None]) -> Services:
    """A member of the cluster ``config.cluster`` names (it calls the three hooks, see
    ``ClusterServices``); without one, a node alone (which is never fenced)."""
    if not config.cluster:
        return LocalServices(home, registry, name, member_info)
    return ClusterServices(config, home, registry, name, member_info, on_fenced, on_app_lost, on_rejoined)
