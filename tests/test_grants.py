"""hosting.election.grants: only a node can mint a grant a netlet accepts, and only for the exact call.

Real keys and certificates (a node's own key alone; a cluster CA, node and netlet certificates
in a cluster); the end-to-end refusals through real endpoints are in test_replication_sealed.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import warrants
from hosting.election.grants import GRANT_SIGNER, PREPARE, PROMOTE, GrantRefused, GrantSigner, GrantVerifier
from hosting.cluster.ca import ClusterCA


def _alone():
    key = warrants.generate_key()
    node = SimpleNamespace(tls=None, node_key=key, node_cert=warrants.make_self_signed_cert(key, "node"))
    return GrantSigner.for_node(node)


def _cluster_node(ca: ClusterCA, name: str = "n1"):
    return GrantSigner.for_node(SimpleNamespace(tls=ca.issue(f"node {name}", ("127.0.0.1",),
                                                             extra_usages=(GRANT_SIGNER,))))


def test_a_nodes_grant_verifies_for_exactly_its_call():
    signer = _alone()
    verifier = GrantVerifier(signer.trust())
    args = [7, ["s/0"], {"s/1": "PYRO:x@h:1"}]
    grant = signer.mint("app", PROMOTE, 7, args, "app/s/0#2")
    g = verifier.check_call(grant, "app", PROMOTE, 7, args, "app/s/0#2")
    assert (g.app, g.op, g.epoch, g.to, g.master) == ("app", PROMOTE, 7, "app/s/0#2", "s/0")
    for op, epoch, call_args, to in [(PREPARE, 7, [7], "app/s/0#2"), (PROMOTE, 8, [8, *args[1:]], "app/s/0#2"),
                                     (PROMOTE, 7, [7, ["s/0"], {"s/1": "PYRO:evil@h:1"}], "app/s/0#2"),
                                     (PROMOTE, 7, args, "app/s/1#1"),
                                     (PROMOTE, 7, args, "app/s/0#3")]:  # a later process in the same slot
        with pytest.raises(GrantRefused, match="another call"):
            verifier.check_call(grant, "app", op, epoch, call_args, to)
    with pytest.raises(GrantRefused, match="for app 'app'"):
        verifier.check_call(grant, "other", PROMOTE, 7, args, "app/s/0#2")
    assert verifier.verify(signer.mint("app", PREPARE, 7, [7], "app/s/0#2"), "app").master is None


def test_a_grant_from_another_key_or_tampered_is_refused():
    signer, rogue = _alone(), _alone()
    verifier = GrantVerifier(signer.trust())
    with pytest.raises(GrantRefused, match="does not verify"):
        verifier.verify(rogue.mint("app", PREPARE, 1, [1], "app/s/0#1"), "app")
    grant = signer.mint("app", PREPARE, 1, [1], "app/s/0#1")
    verifier.verify(grant, "app")  # cached as verified: a tampered copy must still be checked
    tampered = {**grant, "body": grant["body"].replace(b'"epoch":1', b'"epoch":9')}
    with pytest.raises(GrantRefused, match="does not verify"):
        verifier.verify(tampered, "app")
    for malformed in (None, "grant", {"body": "x", "sig": b"", "cert": None}, {}):
        with pytest.raises(GrantRefused, match="needs a grant"):
            verifier.verify(malformed, "app")


def test_in_a_cluster_any_member_node_signs_but_no_netlet_certificate_can():
    ca = ClusterCA.create("c")
    verifier = GrantVerifier(_cluster_node(ca).trust())
    other_node = _cluster_node(ca, "n2")  # the app's owner may be another member
    assert verifier.verify(other_node.mint("app", PREPARE, 3, [3], "app/s/0#1"), "app").epoch == 3
    netlet_tls = ca.issue("app/s/0#1", ("127.0.0.1",))  # a netlet's certificate: same CA, no grant usage
    netlet = GrantSigner.for_node(SimpleNamespace(tls=netlet_tls))
    with pytest.raises(GrantRefused, match="not a node"):
        verifier.verify(netlet.mint("app", PREPARE, 3, [3], "app/s/0#1"), "app")
    stranger = _cluster_node(ClusterCA.create("another"))
    with pytest.raises(GrantRefused, match="not of this cluster"):
        verifier.verify(stranger.mint("app", PREPARE, 3, [3], "app/s/0#1"), "app")
    # a node's certificate attached to a grant signed with a netlet's key does not pass either
    node_cert = other_node.mint("app", PREPARE, 3, [3], "app/s/0#1")["cert"]
    forged = {**netlet.mint("app", PREPARE, 3, [3], "app/s/0#1"), "cert": node_cert}
    with pytest.raises(GrantRefused, match="does not verify"):
        verifier.verify(forged, "app")
    with pytest.raises(GrantRefused, match="names no signer"):
        verifier.verify({**other_node.mint("app", PREPARE, 3, [3], "app/s/0#1"), "cert": None}, "app")
