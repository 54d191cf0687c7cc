"""Three nodes on three "machines" (network namespaces on a bridge), one cut off by its link.

Each node runs in a namespace of its own with its own address; etcd listens
on the bridge. kvstore is placed one replica per node. The node running the
master has its link taken down under write load: the others must fail over
and keep acknowledging writes, and the cut-off master must not get a single
write acknowledged — a client inside its namespace, talking to it directly,
gets none — while nothing acknowledged anywhere is lost. Skipped where the
machine does not allow network namespaces (needs root and iproute2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netlets
import netns
from testkit.etcd import EtcdServer, unique_prefix
from hosting.client import HostingClient
from hosting.daemon import node_answers
from testkit.node import RunningNode, cleanup_node
from testkit.wait import wait_for
from test_cluster import Writers, kvstore_master, launch_kvstore

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not netns.available(), reason="needs root and iproute2 (ip netns)")]

ISOLATED_WRITER = """
import json, sys, time
from rpc import wire
from rpc.tls import client_identity
from rpc.credential import client_handshake
endpoint, secret, app, seconds, prefix = (sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], float(sys.argv[4]),
                                          sys.argv[5])
tls = client_identity(sys.argv[6])  # the victim node's home: the machine's own cluster certificate
netlet = sys.argv[7]  # the master's netlet id: the addressee of each handshake
wire.configure()
acked, errors, deadline, i = 0, {}, time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    i += 1
    try:
        with wire.proxy(endpoint, timeout=1.0, tls=tls) as p:
            p._pyroHandshake = client_handshake(secret, app, netlet)
            p.invoke("put", [f"{prefix}-{i}", "x"], {}, f"{prefix}-client:{i}")
        acked += 1
    except Exception as err:
        errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
        time.sleep(0.05)
print(json.dumps({"acked": acked, "attempts": i, "errors": errors}))
"""


@pytest.fixture
def lab(tmp_path):
    lab = netns.NetnsLab(3)
    etcd = EtcdServer(tmp_path, host=lab.gateway)
    nodes: list[RunningNode] = []
    try:
        etcd.start()
        url = etcd.url + unique_prefix().rstrip("/")
        for i in (1, 2, 3):
            home = tmp_path / f"n{i}"
            home.mkdir()
            with open(home / "node.log", "ab") as log:
                subprocess.Popen([*lab.prefix(i), sys.executable, "-m", "hosting.daemon", "--home", str(home),
                                  "--listen", f"{lab.address(i)}:0", "--cluster", url, "--name", f"n{i}"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            wait_for(lambda: node_answers(home), 30, f"node n{i} in its namespace")
            nodes.append(RunningNode(home, HostingClient.for_home(home)))
        yield lab, nodes
    finally:
        for node in nodes:
            cleanup_node(node)
        etcd.stop()
        lab.close()


def test_a_node_cut_off_by_its_link_loses_the_master_and_cannot_get_a_write_acknowledged(lab, tmp_path):
    lab, (n1, n2, n3) = lab
    by_name = {"n1": n1, "n2": n2, "n3": n3}
    launch_kvstore(n1, tmp_path)
    before = kvstore_master(n1)
    assert {n["node"] for n in before["netlets"]} == {"n1", "n2", "n3"}
    assert all(lab.subnet in n["endpoint"] for n in before["netlets"])  # each on its own machine's address
    master = next(n for n in before["netlets"] if n["slot"] == before["master"])
    victim = int(master["node"][1:])
    via = by_name[f"n{1 + victim % 3}"]
    secret = by_name[master["node"]].app_secret("kvstore").hex()

    def write_from_the_victims_machine(seconds: float, prefix: str) -> dict:
        done = subprocess.run([*lab.prefix(victim), sys.executable, "-c", ISOLATED_WRITER, master["endpoint"],
                               secret, "kvstore", str(seconds), prefix, str(by_name[master["node"]].home),
                               master["netlet"]],
                              capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout.strip().splitlines()[-1])

    connected = write_from_the_victims_machine(1.0, "connected")
    assert connected["acked"] > 0, connected  # the probe can get writes acknowledged while linked
    writers = Writers(via.home)
    try:
        writers.wait_acked(100)
        lab.cut(victim)
        # inside the cut-off machine, straight at the old master: nothing may be acknowledged
        result = write_from_the_victims_machine(6.0, "isolated")
        after = kvstore_master(via, above_epoch=before["epoch"])
        acked_at = len(writers.acked)
        writers.wait_acked(acked_at + 100)
    finally:
        acked = writers.finish()
        lab.heal(victim)
    assert result["acked"] == 0 and result["attempts"] > 0, result
    assert after["master"] != master["slot"] or next(
        n for n in after["netlets"] if n["slot"] == after["master"])["node"] != master["node"]
    kv = netlets.connect("kvstore", via.home)
    lost = [k for k, v in acked.items() if kv.get_latest(k) != v]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:3]}"
    assert all(kv.get_latest(f"isolated-{i}") is None for i in range(1, result["attempts"] + 1))
