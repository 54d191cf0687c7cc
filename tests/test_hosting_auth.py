"""Every hosting call is checked: rights, expiry, issuer, holder proof, replay; silent clients stall nobody."""

from __future__ import annotations

import datetime as dt
import socket
import time

import pytest

import warrants
from hosting.auth import CallRefused, make_auth
from hosting.client import HostingClient



def now() -> dt.datetime:
    """At the call: a delegation must not start before its parent (the node's admin warrant,
    made when the test's node started), so no time fixed at import will do."""
    return dt.datetime.now(dt.timezone.utc)


def _admin(node):
    home = node.home
    return (warrants.load_private_key(home / "admin.key.pem"), (home / "admin.warrant.xml").read_bytes(),
            warrants.load_cert(home / "node.crt.pem"))


def _delegate(node, rights, not_after=None, holder_key=None, app=None):
    admin_key, admin_xml, _ = _admin(node)
    holder_key = holder_key or warrants.generate_key()
    admin_cert = warrants.make_self_signed_cert(admin_key, "admin")
    xml = warrants.issue_warrant(admin_key, admin_cert, rights=rights, service=node.client.service, app=app,
                                 holder=holder_key.public_key(), not_before=now() - dt.timedelta(minutes=1),
                                 not_after=not_after or now() + dt.timedelta(hours=1), parent_xml=admin_xml)
    return xml, holder_key


def _netlet_client(node, netlet_id: str) -> HostingClient:
    """A client holding what the node gives the netlet ``netlet_id``: a node-signed warrant bound to it
    and to the current instance of its app (``hosting.bindings``)."""
    from hosting import bindings

    binding = bindings.bind(bindings.NETLET, bindings.instance_of(node.app_secret(netlet_id.split("/")[0])),
                            netlet_id)
    xml, key = bindings.issue(warrants.load_private_key(node.home / "node.key.pem"),
                              warrants.load_cert(node.home / "node.crt.pem"), node.client.service, binding)
    return HostingClient(node.client.uri, xml, key)


def test_warrant_lacking_the_right_is_refused(node):
    xml, key = _delegate(node, ["status"])
    client = HostingClient(node.client.uri, xml, key)
    assert client.call("status")["apps"] == []
    with pytest.raises(warrants.InsufficientRights):
        client.call("terminate", "anything", 1.0, 1.0)


def test_app_scoped_warrant_reaches_only_its_app(node):
    xml, key = _delegate(node, ["status"], app="mine")
    client = HostingClient(node.client.uri, xml, key)
    with pytest.raises(warrants.InsufficientRights):
        client.call("status", "theirs")


def test_expired_warrant_is_refused(node):
    node_key = warrants.load_private_key(node.home / "node.key.pem")
    node_cert = warrants.load_cert(node.home / "node.crt.pem")
    holder = warrants.generate_key()
    xml = warrants.issue_warrant(node_key, node_cert, rights=["status"], service=node.client.service,
                                 holder=holder.public_key(), not_before=now() - dt.timedelta(hours=2),
                                 not_after=now() - dt.timedelta(hours=1))
    with pytest.raises(warrants.WarrantExpired):
        HostingClient(node.client.uri, xml, holder).call("status")


def test_untrusted_issuer_is_refused(node):
    rogue = warrants.generate_key()
    rogue_cert = warrants.make_self_signed_cert(rogue, "rogue")
    xml = warrants.issue_warrant(rogue, rogue_cert, rights=sorted(warrants.KNOWN_RIGHTS),
                                 service=node.client.service, not_after=now() + dt.timedelta(hours=1))
    with pytest.raises(warrants.UntrustedIssuer):
        HostingClient(node.client.uri, xml, None).call("status")


def test_bearer_without_the_holder_key_is_refused(node):
    _, admin_xml, _ = _admin(node)
    with pytest.raises(warrants.HolderProofFailed):
        HostingClient(node.client.uri, admin_xml, None).call("status")
    wrong_key = warrants.generate_key()
    with pytest.raises(warrants.HolderProofFailed):
        HostingClient(node.client.uri, admin_xml, wrong_key).call("status")


def test_replayed_call_is_refused(node):
    from rpc import wire

    admin_key, admin_xml, _ = _admin(node)
    auth = make_auth(admin_xml, admin_key, node.client.service, "status")
    with wire.proxy(node.client.uri) as p:
        p.status(auth)
        with pytest.raises(CallRefused, match="replayed"):
            p.status(auth)
        # a proof made for one method does not work for another
        other = make_auth(admin_xml, admin_key, node.client.service, "status")
        with pytest.raises(warrants.HolderProofFailed):
            p.host_status(other)


def test_netlet_warrant_cannot_act_for_another_netlet(node, tmp_path):
    from testkit.node import descriptor_xml
    node.launch(descriptor_xml("pair", '<netlet type="w" class="workers:Echo" replicas="2"/>'), tmp_path)
    node.wait_running("pair")
    with pytest.raises(warrants.InsufficientRights, match="not pair/w/0#1"):
        _netlet_client(node, "pair/w/1#1").call("renew", "pair/w/0#1", {})


def test_a_netlet_cannot_take_an_apps_control_lease_outside_an_election(node, tmp_path):
    """The control lease is granted by the elector alone (the most up-to-date replica, the warm-start
    proof): no endpoint lets a netlet's code take it. Before, ``acquire_control`` bootstrapped any app
    whose lease was free with the caller's slot as master."""
    from testkit.node import descriptor_xml
    node.launch(descriptor_xml("idle", '<netlet type="w" class="workers:Echo" replicas="1"/>'), tmp_path,
                start=False)
    hostile = _netlet_client(node, "idle/w/0#1")
    for method, args in (("acquire_control", ("idle/w/0#1",)), ("renew_control", ("idle/w/0#1", 1)),
                         ("release_control", ("idle/w/0#1", 1))):
        with pytest.raises(Exception, match="has no exposed attribute or method") as refused:
            hostile.call(method, *args)
        assert not isinstance(refused.value, AssertionError)
    assert node.client.call("control_state", "idle")["holder"] is None


def test_silent_and_garbage_connections_do_not_stall_other_clients(node):
    host, port = node.client.uri.split("@")[1].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(20)]
    garbage = socket.create_connection((host, int(port)))
    garbage.sendall(b"\x00GET / HTTP/1.0\r\n\r\n" * 50)
    try:
        started = time.monotonic()
        for _ in range(20):
            assert node.client.call("host_status")["pid"] == node.info["pid"]
        assert time.monotonic() - started < 5
    finally:
        for s in silent + [garbage]:
            s.close()


def test_app_scoped_launch_warrant_uploads_and_launches_only_its_app(node, tmp_path):
    from testkit.node import descriptor_xml
    xml, key = _delegate(node, ["launch", "status"], app="mine")
    client = HostingClient(node.client.uri, xml, key)
    desc = tmp_path / "mine.xml"
    desc.write_text(descriptor_xml("mine", '<netlet type="w" class="workers:Echo" replicas="1"/>'))
    data, sha = warrants.package_codebase(warrants.load_descriptor(desc))
    assert client.call("upload_codebase", data, sha) == sha  # content-addressed: any app's launcher may upload
    assert client.call("has_codebase", sha) is True
    assert client.call("submit_app", desc.read_bytes(), str(desc), sha)["app"] == "mine"
    other = desc.read_text().replace('name="mine"', 'name="theirs"')
    with pytest.raises(warrants.InsufficientRights):
        client.call("submit_app", other.encode(), str(desc), sha)
    assert [a["name"] for a in node.client.call("status")["apps"]] == ["mine"]


def test_a_relayed_envelope_is_refused_with_other_arguments(node, tmp_path):
    """The proof covers the arguments: whoever relays a signed call cannot change what it asks."""
    from rpc import wire
    from testkit.node import descriptor_xml
    from testkit.procs import process_gone
    node.launch(descriptor_xml("relay", '<netlet type="w" class="workers:Echo" replicas="1"/>'), tmp_path)
    node.wait_running("relay")
    pid = node.slot("relay", "w/0")["pid"]
    admin_key, admin_xml, _ = _admin(node)
    auth = make_auth(admin_xml, admin_key, node.client.service, "signal", ("relay", "w/0", "CONT"))
    with wire.proxy(node.client.uri) as p:
        with pytest.raises(warrants.HolderProofFailed):
            p.signal(auth, "relay", "w/0", "KILL")  # the relay swaps the signal
        with pytest.raises(warrants.HolderProofFailed):
            p.signal(auth, "relay", "w/0", signame="CONT")  # same values, but not as they were signed
        assert not process_gone(pid) and node.slot("relay", "w/0")["pid"] == pid
        # the refused attempts did not consume the nonce: the call as signed goes through once
        p.signal(auth, "relay", "w/0", "CONT")
        with pytest.raises(CallRefused, match="replayed"):
            p.signal(auth, "relay", "w/0", "CONT")
