"""N hosting nodes in temporary homes, seen as one; a single node is a fleet of one.

``Fleet(tmp, 1)`` is one standalone node on ``tmp/home`` (SQLite, no etcd).
``Fleet(tmp, N)`` with N >= 2 starts a private etcd under ``tmp/etcd`` and N
nodes ``tmp/n1`` .. ``tmp/nN`` joined on it (on a key prefix of their own).
Either way the fleet answers like one node: an app's status and the
control state from the first member that answers (each merges the whole
cluster), and the events of every member merged by time.

Contracts: the member count is checked at construction (ValueError below
1); a fleet that fails to start cleans up what it started before raising;
``close()`` kills every member and every process still running from their
homes (by pid and start time), then the etcd, and may be called at any
point, more than once. Members named in ``paused`` (their daemon is
SIGSTOPped) are not asked meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from testkit.etcd import EtcdServer, unique_prefix
from testkit.node import RunningNode, cleanup_node, events_since, start_node
from testkit.procs import kill_under


class Fleet:
    def __init__(self, tmp: Path, count: int = 1) -> None:
        if count < 1:
            raise ValueError(f"a fleet has at least one node, not {count}")
        self.tmp = Path(tmp)
        self.homes = [self.tmp / "home"] if count == 1 else [self.tmp / f"n{i}" for i in range(1, count + 1)]
        self.nodes: list[RunningNode] = []
        self.paused: set[str] = set()  # homes whose daemon is SIGSTOPped: not asked meanwhile
        self.etcd: EtcdServer | None = None
        self.url: str | None = None
        try:
            if count > 1:
                (self.tmp / "etcd").mkdir(parents=True, exist_ok=True)
                self.etcd = EtcdServer(self.tmp / "etcd")
                self.etcd.start()
                self.url = self.etcd.url + unique_prefix().rstrip("/")
            for home in self.homes:
                self.nodes.append(self.start(home))
        except BaseException:
            self.close()
            raise

    def start(self, home: Path) -> RunningNode:
        """Start the member on ``home`` (joined to the fleet's etcd when there is one)."""
        return start_node(home, cluster=self.url, name=home.name) if self.url else start_node(home)

    def restart(self, node: RunningNode) -> RunningNode:
        """Start ``node``'s daemon again on its home (after it was killed) and put it in its place."""
        new = self.start(node.home)
        self.nodes = [new if n.home == node.home else n for n in self.nodes]
        node.client.close()
        return new

    def by_name(self, name: str) -> RunningNode:
        return next(n for n in self.nodes if n.home.name == name)

    @property
    def home(self) -> Path:
        return self.nodes[0].home

    def launch(self, xml: str, tmp: Path, start: bool = True) -> dict:
        """Submit through the first member (the app's owner)."""
        return self.nodes[0].launch(xml, tmp, start)

    def _ask(self, what):
        last = None
        for node in self.nodes:
            if str(node.home) in self.paused:
                continue
            try:
                return what(node)
            except Exception as err:  # that node is down: ask the next
                last = err
        raise last or RuntimeError("no node answers")

    def app(self, app: str) -> dict:
        return self._ask(lambda node: node.app(app))

    @property
    def client(self):
        """The client of the first member that answers."""
        return self._ask(lambda node: (node.client.call("host_status"), node.client)[1])

    def events(self, since: int = 0, app: str | None = None) -> list[dict]:
        """Every member's events (of ``app``, or all) merged by time, each with its ``node``, numbered
        from 1 in that order; those numbered above ``since``. A member that is down is skipped (its
        events are read when it is back, and the numbering shifts)."""
        merged = []
        for node in self.nodes:
            if str(node.home) in self.paused:
                continue
            try:
                merged += [dict(e, node=node.home.name) for e in events_since(node, 0, app)]
            except Exception:  # a node that is down: its events are read when it is back
                pass
        merged.sort(key=lambda e: e["time"])
        for index, event in enumerate(merged, 1):
            event["index"] = index
        return [e for e in merged if e["index"] > since]

    def close(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            cleanup_node(node)
        for home in self.homes:
            kill_under(home)  # a daemon that never got into node.json, a netlet it never recorded
        if self.etcd is not None:
            self.etcd.stop()
