"""What a clustered node is built with: the ``hosting.topology.Services`` of a member of an etcd cluster.

One etcd client serves them all: the arbiter's epochs (``epochs``), the node's membership and
app claims (``membership``), the cluster CA and this run's node certificate (``rpc.tls``),
other members' certificates (``trust``), the cluster-wide event log (``events``) and the
node's topology, its ``agent.ClusterAgent``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from hosting.cluster.agent import AgentNode, ClusterAgent
from hosting.cluster.epochs import EtcdEpochStore
from hosting.cluster.etcd import Etcd, TLSFiles
from hosting.cluster.events import ClusterEvents, EventShipper
from hosting.cluster.membership import EtcdMembership, EtcdMembershipConfig
from hosting.cluster.trust import EtcdTrust
from hosting.election import grants
from hosting.home import Home, save_tls_identity
from hosting.registry import Registry
from hosting.cluster.ca import cluster_ca
from hosting.topology import Topology


class ClusterConfig(Protocol):
    """What of the node's configuration (``hosting.node.NodeConfig``) the cluster needs."""

    cluster: str | None  # the etcd URL: set for a clustered node
    etcd_tls: TLSFiles | None
    membership_ttl: int
    host: str  # this node's address as other nodes (and clients) reach it: in its certificates


class ClusterServices:
    """A member of the etcd cluster at ``config.cluster``. Building it talks to etcd (the cluster
    CA is created or read there); the membership calls ``on_fenced``, ``on_app_lost`` and
    ``on_rejoined`` (``hosting.cluster.membership.EtcdMembership``)."""

    def __init__(self, config: ClusterConfig, home: Home, registry: Registry, name: str,
                 member_info: dict[str, Any], on_fenced: Callable[[str], None],
                 on_app_lost: Callable[[str], None], on_rejoined: Callable[[], None]) -> None:
        assert config.cluster is not None
        self.host = config.host
        self.etcd = Etcd(config.cluster, tls=config.etcd_tls)
        self.epoch_store = EtcdEpochStore(self.etcd, owner_lease=lambda: self.membership.lease)
        self.membership = EtcdMembership(self.etcd, name, member_info, on_fenced=on_fenced,
                                         on_app_lost=on_app_lost, on_rejoined=on_rejoined,
                                         config=EtcdMembershipConfig(ttl=config.membership_ttl))
        #: the cluster CA, and this run's node certificate (it signs grants: ``hosting.election.grants``)
        self.ca = cluster_ca(self.etcd, config.cluster)
        self.tls = self.ca.issue(f"node {name}", (config.host,), extra_usages=(grants.GRANT_SIGNER,))
        # for clients acting from the home (``rpc.tls.client_identity``)
        save_tls_identity(self.ca.issue(f"client of node {name}"), home.root / "tls", "client")
        #: this node's events copied to etcd, and the whole cluster's read from there
        self.event_shipper = EventShipper(self.etcd, name, registry)
        self.cluster_events = ClusterEvents(self.etcd)
        self._trust: EtcdTrust | None = None

    def topology(self, node: AgentNode) -> Topology:
        return ClusterAgent(node, self.etcd)

    def issue_tls(self, name: str) -> dict[str, str] | None:
        return self.ca.issue(name, (self.host,)).to_json()

    def start(self, own_cert: Any, on_trusted_certs: Callable[[list], None]) -> None:
        self._trust = EtcdTrust(self.etcd, own_cert, on_trusted_certs)
        self.event_shipper.start()

    def close(self) -> None:
        if self._trust is not None:
            self._trust.close()
        self.event_shipper.close()
        self.cluster_events.close()
        self.epoch_store.close()
