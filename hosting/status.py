"""Status views: what ``jtrix status`` and ``jtrix host status`` show.

Every value comes from the registry, the node's latest per-netlet reports and
psutil; the shape is the documented JSON contract of ``jtrix status --json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Protocol

import psutil

from hosting.cluster.membership import Membership
from hosting.confine import Confinement
from hosting.control import ControlLeases
from hosting.home import Home
from hosting.lessor import Lessor
from hosting.registry import Registry
from hosting.supervisor import Supervisor, lease_id_of
from hosting.topology import Topology
from warrants.errors import JtrixError
from warrants.names import NetletId


class StatusNode(Protocol):
    """What the status views read of a node (``hosting.node.Node``). Must hold:
      * ``registry`` is the durable truth (apps, slots, netlets); ``status_cache`` holds each
        live netlet's latest report (newer than the registry's copy), ``lessor`` its lease.
      * ``topology.hosts(app, slot)``: the slot is this node's to show (others show theirs);
        ``topology.member_client(uri)`` reaches another member, which ``membership`` lists
        (``membership.clustered`` is False for a node alone: it has no other member).
      * ``uri`` and ``metrics_port`` are set once the node serves; ``config.cluster`` is the
        etcd URL it was started with (None alone).
    """

    name: str
    service_id: str
    uri: str | None
    metrics_port: int | None
    started_wall: float
    config: Any  # hosting.node.NodeConfig (its ``cluster``)
    home: Home
    confinement: Confinement
    registry: Registry
    supervisor: Supervisor
    status_cache: Mapping[str, Mapping[str, Any]]
    lessor: Lessor
    control: ControlLeases
    topology: Topology
    membership: Membership


def netlet_view(node: StatusNode, slot_row, netlet_row) -> dict[str, Any]:
    """One netlet (or the empty slot) in the ``jtrix status --json`` shape."""
    app, slot = slot_row["app"], slot_row["slot"]
    live = node.supervisor.live_in_slot(app, slot)
    view: dict[str, Any] = {
        "slot": slot, "type": slot_row["type"], "node": node.name, "pid": None,
        "state": slot_row["state"], "role": None, "epoch": None, "seq": None,
        "restarts": slot_row["restarts"], "failures": slot_row["failures"],
        "last_exit": json.loads(slot_row["last_exit"]) if slot_row["last_exit"] else None,
        "lease_ms": None, "uptime_s": None, "cpu_percent": None, "rss_bytes": None,
        "next_attempt_s": None, "netlet": None, "fault": None,
        "store_error": node.supervisor.store_error(app, slot),  # its bookkeeping waits out a store outage
    }
    if slot_row["state"] in ("backoff", "restarting") and slot_row["next_attempt"]:
        view["next_attempt_s"] = round(max(0.0, slot_row["next_attempt"] - time.time()), 3)
    if view["last_exit"] and view["state"] in ("corrupt", "backoff", "restarting", "failed"):
        view["fault"] = view["last_exit"].get("fault")  # why the last run fail-stopped (file, offset, errno)
    if live is None or netlet_row is None:
        if view["state"] == "running":
            view["state"] = "restarting"
        return view
    status = node.status_cache.get(live.netlet_id) or json.loads(netlet_row["status"] or "{}")
    lease = node.lessor.get(lease_id_of(live.netlet_id))
    view.update(
        netlet=live.netlet_id, pid=live.pid, state=netlet_row["state"],
        role=status.get("role"), epoch=status.get("epoch"), seq=status.get("seq"),
        lease_ms=int(lease.remaining() * 1000) if lease else 0,
        uptime_s=round(time.time() - netlet_row["started"], 3),
        endpoint=status.get("endpoint"), phase=status.get("phase"), app_status=status.get("app_status") or {},
        storage=status.get("storage"), fault=status.get("fault") or view["fault"],
    )
    try:
        proc = psutil.Process(live.pid)
        with proc.oneshot():
            view["cpu_percent"] = proc.cpu_percent(interval=None)
            view["rss_bytes"] = proc.memory_info().rss
    except psutil.Error:
        pass
    return view


def app_view(node: StatusNode, app_row) -> dict[str, Any]:
    app = app_row["name"]
    netlets = {(n["slot"], n["incarnation"]): n for n in node.registry.netlets(app)}
    control = node.control.current(app)
    views = []
    for slot_row in node.registry.slots(app):
        if node.topology.hosts(app, slot_row["slot"]):  # others: their nodes
            views.append(netlet_view(node, slot_row, netlets.get((slot_row["slot"], slot_row["incarnation"]))))
    master = None
    if control["holder"]:
        master = NetletId.parse(control["holder"]).slot
    return {"name": app, "state": app_row["state"], "epoch": control["epoch"], "master": master,
            "netlets": views}


def apps_view(node: StatusNode, app: str | None = None) -> dict[str, Any]:
    rows = [node.registry.app(app)] if app else node.registry.apps()
    return {"apps": [app_view(node, r) for r in rows if r is not None]}


PEER_STATUS_TIMEOUT_S = 3.0


def cluster_apps_view(node: StatusNode, app: str | None = None) -> dict[str, Any]:
    """``apps_view`` of every live member, merged (this node's own first).

    Members are asked in parallel with this node's member credential
    (``hosting.cluster.agent.member_warrant``, trusted cluster-wide); the names of those that did not answer are listed under
    ``unreachable``. A single-node cluster is just ``apps_view``.
    """
    view = apps_view(node, app)
    if not node.membership.clustered:
        return view
    from concurrent.futures import ThreadPoolExecutor

    peers = [m for m in node.membership.nodes() if m.name != node.name and m.uri]
    if not peers:
        return view
    with ThreadPoolExecutor(max_workers=min(16, len(peers))) as pool:
        answers = list(pool.map(lambda m: (m, _peer_status(node, m.uri, app)), peers))
    unreachable = sorted(member.name for member, answer in answers if answer is None)
    merged = _merge_apps([view["apps"]] + [answer["apps"] for _, answer in answers if answer is not None])
    return {"apps": merged, **({"unreachable": unreachable} if unreachable else {})}


def _merge_apps(per_node: list[list[dict]]) -> list[dict]:
    """One entry per app: every node's netlets of it (each node lists the slots placed on
    it), and the master, epoch and state as the app's owner sees them."""
    merged: dict[str, dict] = {}
    for apps in per_node:
        for a in apps:
            entry = merged.setdefault(a["name"], {**a, "netlets": []})
            entry["netlets"] += a["netlets"]
            if a.get("master"):
                entry.update(master=a["master"], epoch=a["epoch"], state=a["state"])
    for entry in merged.values():
        entry["netlets"].sort(key=lambda n: n["slot"])
    return [merged[name] for name in sorted(merged)]


def _peer_status(node: StatusNode, uri: str, app: str | None) -> dict[str, Any] | None:
    """One member's own ``apps_view`` (None if it did not answer; an unknown app is no apps)."""
    from warrants.errors import NotFound

    try:
        return node.topology.member_client(uri).call("status", app, "node", timeout=PEER_STATUS_TIMEOUT_S)
    except NotFound:
        return {"apps": []}
    except JtrixError:
        return None


def host_view(node: StatusNode) -> dict[str, Any]:
    apps = node.registry.apps()
    live = len(node.supervisor.live)
    return {"pid": os.getpid(), "address": node.uri, "service": node.service_id, "name": node.name,
            "cluster": node.config.cluster, "uptime_s": round(time.time() - node.started_wall, 3),
            "apps": len(apps), "netlets": live, "metrics_port": node.metrics_port, "home": str(node.home.root),
            "confinement": node.confinement.status(), "nodes": nodes_view(node)}


def nodes_view(node: StatusNode) -> list[dict[str, Any]] | dict[str, str]:
    """The cluster's members as this node sees them (an ``error`` if etcd does not answer)."""
    try:
        return [m.as_dict() for m in node.membership.nodes()]
    except JtrixError as err:
        return {"error": str(err)}
