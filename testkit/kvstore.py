"""The kvstore example (examples/kvstore) as the tests and benchmarks launch it.

:func:`kvstore_xml` is the example's own descriptor with its codebase made
absolute and any of its settings overridden; every setting it overrides must
be in the example (ValueError otherwise), so a change to the example cannot
silently leave a test or a benchmark on a configuration nobody chose.
"""

from __future__ import annotations

import re

from testkit.node import ROOT, RunningNode, master_of
from testkit.wait import wait_for

KVSTORE = ROOT / "examples" / "kvstore"


def kvstore_xml(name: str = "kvstore", replicas: int | None = None, ttl: float | None = None,
                grace: float | None = None, durability: str | None = None, ack: str | None = None) -> str:
    """examples/kvstore/bootstrap.xml runnable from anywhere, named ``name``; a setting left None is
    the example's."""
    xml = _set((KVSTORE / "bootstrap.xml").read_text(), "codebase", "path", str(KVSTORE))
    for element, attribute, value in [("app", "name", name), ("netlet", "replicas", replicas),
                                      ("lease", "ttl", ttl), ("lease", "grace", grace),
                                      ("replication", "durability", durability), ("replication", "ack", ack)]:
        if value is not None:
            xml = _set(xml, element, attribute, str(value))
    return xml


def _set(xml: str, element: str, attribute: str, value: str) -> str:
    pattern = re.compile(rf'(<{element}\b[^>]*?\s{attribute}=")[^"]*(")')
    out, n = pattern.subn(lambda m: m[1] + value + m[2], xml)
    if n != 1:
        raise ValueError(f"examples/kvstore/bootstrap.xml has {n} <{element} {attribute}=...> (expected 1)")
    return out


def launch_kvstore(node: RunningNode, tmp, ttl: float = 1.0, durability: str = "fsync") -> None:
    """Launch kvstore (lease ``ttl``, grace 1 s) and wait for its master."""
    node.launch(kvstore_xml(ttl=ttl, grace=1.0, durability=durability), tmp)
    wait_master(node)


def wait_master(node: RunningNode, above_epoch: int = 0, timeout: float = 20.0, app: str = "kvstore") -> dict:
    """The app's status once a netlet acts as master at an epoch above ``above_epoch``."""
    def ready():
        a = node.app(app)
        if not a["master"] or a["epoch"] <= above_epoch:
            return None
        return a if master_of(a)["role"] == "master" else None
    return wait_for(ready, timeout, f"a {app} master above epoch {above_epoch}")
