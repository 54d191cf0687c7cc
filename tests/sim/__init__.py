"""A deterministic simulated network and cluster for replication tests."""

from .cluster import Cluster, ListNetlet

__all__ = ["Cluster", "ListNetlet"]
