"""Issue 14, items 5 and 10 in a cluster: owner operations are for member nodes only, each
checked for the app it names; NotOwner reaches a client as itself.

One node on a real etcd (``test_cluster``'s fixture) is enough for the attacks: the owner
is the node the attacker calls. Forwarding between two members with the member credential
is what ``test_cluster`` exercises (a netlet's control renewals, access, terminate via n2).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

import warrants
from hosting.client import HostingClient
from hosting.cluster.agent import member_warrant
from rpc.tls import client_identity
from testkit.node import descriptor_xml, events_of
from testkit.wait import wait_for
from test_cluster import cluster, kvstore_master, launch_kvstore  # noqa: F401  (cluster: the fixture)
from warrants.errors import BadInput, InsufficientRights

pytestmark = pytest.mark.timeout(180)

ECHO = '<netlet type="w" class="workers:Echo" replicas="1"/>'


def _client(node, warrant_xml: bytes, key) -> HostingClient:
    return HostingClient(node.client.uri, warrant_xml, key, tls=client_identity(node.home))


def _launch_warrant(node, app: str) -> tuple[bytes, object]:
    """``launch`` (and ``status``) on one app, delegated from the admin warrant: what the review held."""
    admin_key = warrants.load_private_key(node.home / "admin.key.pem")
    holder = warrants.generate_key()
    now = dt.datetime.now(dt.timezone.utc)
    xml = warrants.issue_warrant(admin_key, warrants.make_self_signed_cert(admin_key, "admin"),
                                 rights=["launch", "status"], app=app, holder=holder.public_key(),
                                 not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1),
                                 parent_xml=(node.home / "admin.warrant.xml").read_bytes())
    return xml, holder


@pytest.fixture
def two_apps(cluster, tmp_path):  # noqa: F811
    """One node owning ``mine`` (what the attacker may launch) and ``kvstore`` (someone else's)."""
    n1 = cluster("n1")
    n1.launch(descriptor_xml("mine", ECHO), tmp_path)
    launch_kvstore(n1, tmp_path)
    n1.wait_running("mine")
    kvstore_master(n1)
    wait_for(lambda: len(n1.client.call("control_state", "kvstore")["isr"]) == 3, 30, "every kvstore replica in sync")
    return n1


def test_owner_operations_are_refused_to_every_client_warrant(two_apps):
    n1 = two_apps
    victim = n1.client.call("control_state", "kvstore")
    slot = next(s for s in victim["isr"] if s != victim["holder"].split("/", 1)[1].split("#")[0])
    attacks = {
        "access": ("mine", "access", [None, 0.0]),  # would hand out the app's secret
        "terminate": ("mine", "terminate", [0.0, 5.0]),
        "arbiter": ("mine", "arbiter", [victim["holder"], "shrink", victim["epoch"], slot, None, None]),
        "arbiter on the victim": ("kvstore", "arbiter", [victim["holder"], "shrink", victim["epoch"], slot, None, None]),
    }
    launcher = _client(n1, *_launch_warrant(n1, "mine"))
    admin = n1.client  # every client right, for every app
    for what, (app, op, args) in attacks.items():
        for client in (launcher, admin):
            with pytest.raises(InsufficientRights, match="does not grant 'member'"):
                client.call("owner_op", app, op, args)
    assert n1.app("mine")["state"] == "running"
    after = n1.client.call("control_state", "kvstore")
    assert after["isr"] == victim["isr"] and after["epoch"] == victim["epoch"]
    assert events_of(n1, "isr.shrink", "kvstore") == []


def test_a_member_credential_reaches_only_the_app_its_arguments_belong_to(two_apps):
    n1 = two_apps
    node_key = warrants.load_private_key(n1.home / "node.key.pem")
    member = _client(n1, member_warrant(node_key, warrants.load_cert(n1.home / "node.crt.pem"), n1.client.service),
                     node_key)
    victim = n1.client.call("control_state", "kvstore")
    slot = next(s for s in victim["isr"] if s != victim["holder"].split("/", 1)[1].split("#")[0])
    mine = n1.app("mine")["netlets"][0]["netlet"]
    refused = [
        ("mine", "arbiter", [victim["holder"], "shrink", victim["epoch"], slot, None, None]),  # another app's master
        ("mine", "renew", [victim["holder"], victim["epoch"]]),
        ("kvstore", "arbiter", [victim["holder"], "expand", victim["epoch"], slot, mine, None]),  # incarnation of mine
        ("mine", "arbiter", ["../kvstore/store/0#1", "shrink", 1, slot, None, None]),
        ("mine", "access", ["1", 0.0]),
        ("mine", "drop-tables", []),
        ("../kvstore", "access", [None, 0.0]),
    ]
    for app, op, args in refused:
        with pytest.raises(BadInput):
            member.call("owner_op", app, op, args)
    after = n1.client.call("control_state", "kvstore")
    assert after["isr"] == victim["isr"] and after["epoch"] == victim["epoch"]
    # the credential does what members need, for the app its arguments belong to
    assert member.call("owner_op", "mine", "access", [None, 0.0])["app"] == "mine"


def test_not_owner_reaches_a_client_as_itself(cluster):  # noqa: F811
    n1 = cluster("n1")
    # a fresh client process, which has imported nothing of the node's
    # (``HostingClient.for_home`` would import the node's modules, and with them the class)
    code = ("import json, sys\nfrom pathlib import Path\nimport warrants\n"
            "from hosting.client import HostingClient\nfrom rpc.tls import client_identity\n"
            "home = Path(sys.argv[1])\nuri = json.loads((home / 'node.json').read_text())['uri']\n"
            "client = HostingClient(uri, (home / 'admin.warrant.xml').read_bytes(),\n"
            "                       warrants.load_private_key(home / 'admin.key.pem'), tls=client_identity(home))\n"
            "try:\n    client.call('terminate', 'nobody-owns-this', 0.0, 5.0)\n"
            "except Exception as err:\n    print(type(err).__module__, type(err).__name__, getattr(err, 'exit_code', None))\n"
            "print('node modules imported:', 'hosting.cluster.agent' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")}
    out = subprocess.run([sys.executable, "-c", code, str(n1.home)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.stdout.split() == ["warrants.errors", "NotOwner", "3", "node", "modules", "imported:", "False"], \
        out.stdout + out.stderr


def test_a_netlets_warrant_opens_its_calls_on_its_own_node_only(cluster, tmp_path):  # noqa: F811
    """A node-issued warrant is checked against the live netlets of the node that issued it
    (``hosting.bindings``): another member cannot know whether that netlet lives, so it refuses it."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from testkit.node import APPS

    n1, n2 = cluster("n1"), cluster("n2")
    wait_for(lambda: len(n1.client.call("host_status")["nodes"]) == 2, 20, "both members")
    n1.launch(descriptor_xml("shop", '<netlet type="w" class="hostile:Exfil" replicas="2"/>',
                             codebase=APPS / "hostile"), tmp_path)

    def published():
        netlets = n1.app("shop")["netlets"]
        return netlets if all(n["app_status"].get("warrant") for n in netlets) else None

    by_node = {n["node"]: n["app_status"] for n in wait_for(published, 30, "both netlets' warrants")}
    assert set(by_node) == {"n1", "n2"}
    for home, other in ((n1, n2), (n2, n1)):
        stolen = by_node["n1" if home is n1 else "n2"]
        key = load_pem_private_key(stolen["key_pem"].encode(), None)
        own, foreign = _client(home, stolen["warrant"].encode(), key), _client(other, stolen["warrant"].encode(), key)
        assert own.call("status", "shop")["apps"][0]["name"] == "shop"
        assert own.call("renew", stolen["netlet_id"], {})["lease_s"] > 0
        with pytest.raises(InsufficientRights, match="of another node"):
            foreign.call("status", "shop")
        own.close()
        foreign.close()
