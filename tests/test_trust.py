"""Cluster trust in the node's Authorizer: members' warrants for their own services only,
never netlet-only rights, nothing from non-members; trust only grows."""

from __future__ import annotations

import datetime as dt

import pytest

import warrants
from hosting.auth import Authorizer, make_auth
from hosting.home import service_id_of
from warrants.errors import InsufficientRights, UntrustedIssuer


def node_identity(name):
    key = warrants.generate_key()
    cert = warrants.make_self_signed_cert(key, name)
    return key, cert, service_id_of(cert)


def warrant(issuer, rights, service=None, holder_key=None):
    key, cert, own_service = issuer
    return warrants.issue_warrant(key, cert, rights=rights, service=service or own_service,
                                  holder=holder_key.public_key() if holder_key else None,
                                  not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))


@pytest.fixture
def here_and_member():
    here, member = node_identity("here"), node_identity("member")
    auth = Authorizer(here[1], here[2])
    auth.trust([member[1]])
    return auth, here, member


def call(auth, xml, right, method="status", app=None):
    return auth.check(make_auth(xml, None, auth.service, method), method, right, app)


def test_own_and_members_warrants_are_accepted_for_their_own_services(here_and_member):
    auth, here, member = here_and_member
    assert call(auth, warrant(here, ["status"]), "status").service == here[2]
    assert call(auth, warrant(member, ["status", "terminate"]), "terminate").service == member[2]


def test_a_member_cannot_issue_for_another_service(here_and_member):
    auth, here, member = here_and_member
    with pytest.raises(InsufficientRights, match="but its issuer is"):
        call(auth, warrant(member, ["status"], service=here[2]), "status")


def test_a_members_warrant_cannot_use_netlet_only_rights(here_and_member):
    auth, _, member = here_and_member
    with pytest.raises(InsufficientRights, match="a netlet deals only with its own node"):
        call(auth, warrant(member, ["lease", "status"]), "lease", method="renew", app="kv")


def test_non_members_are_refused_until_trusted_and_trust_only_grows(here_and_member):
    auth, _, member = here_and_member
    stranger = node_identity("stranger")
    xml = warrant(stranger, ["status"])
    with pytest.raises(UntrustedIssuer):
        call(auth, xml, "status")
    auth.trust([stranger[1]])
    assert call(auth, xml, "status").service == stranger[2]
    assert call(auth, warrant(member, ["status"]), "status").service == member[2]  # still trusted
