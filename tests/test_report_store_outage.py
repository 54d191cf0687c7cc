"""A netlet's durable status reported while the registry is locked is written once it is not
(F3 audit: the node cached the status before writing it, so after a failed write no later
renewal saw a change and the registry kept the old status for good: a fail-stop ``fault``
the supervisor reads on the netlet's exit, the ``storage`` generation the warm-start proof
reads). The renewal itself is not failed by a status write."""

from __future__ import annotations

import json
import types

from hosting.node import Node
from hosting.registry import Registry
from test_store_retry import Locked


def test_a_status_reported_while_the_registry_is_locked_is_written_by_the_next_renewal(tmp_path):
    reg = Registry(tmp_path / "registry.sqlite")
    reg._db.execute("PRAGMA busy_timeout=20")  # fail fast instead of waiting 5 s
    reg.add_app("app", b"<app/>", "src", "0" * 64, b"secret", [("s/0", "s", {})])
    reg.add_netlet("app/s/0#1", "app", "s/0", 1, 1, 0.0, "log")
    node = types.SimpleNamespace(status_cache={}, registry=reg, cluster=None)
    status = {"phase": "running", "storage": {"generation": "g2"}}
    try:
        with Locked(tmp_path / "registry.sqlite"):
            Node.report(node, "app/s/0#1", status)  # the renewal goes on
        Node.report(node, "app/s/0#1", status)  # the next renewal, same status
        assert json.loads(reg.netlet("app/s/0#1")["status"]) == status
    finally:
        reg.close()
