"""What a client of an app (the ``call`` right: the client credential; or no credential at all)
can make a netlet do beyond its client surface, through a real node and real netlet endpoints.

Attacks (issue 14 follow-ups): a client's call is read under a client's limits, not a
replica's, whatever method it names (the 256 MiB a snapshot may take is a replica's only);
a holder of ``call`` and/or ``status`` asks every hosting-API method and every netlet endpoint
(Pyro5's own daemon object included) and gets neither the replica credential, nor the app
secret, nor anything of a grant (held: no fix was needed).
"""

from __future__ import annotations

import socket

import msgpack
import pytest
from Pyro5 import protocol

from rpc.credential import client_handshake
from testkit.node import descriptor_xml
from test_wire_attacks import ECHO, address, connect_data, peak_rss, pyro_message, read_reply


def test_a_client_cannot_make_a_netlet_buffer_a_replica_sized_message(node, tmp_path):
    node.launch(descriptor_xml("big", ECHO.format(n=1)), tmp_path)
    node.wait_running("big")
    view = node.slot("big", "w/0")
    handshake = client_handshake(node.app_secret("big"), "big", view["netlet"])
    with socket.create_connection(address(view["endpoint"]), timeout=5) as s:
        s.sendall(pyro_message(protocol.MSG_CONNECT, connect_data(handshake, "jtrix.netlet")))
        assert read_reply(s)[0] == protocol.MSG_CONNECTOK
        before = peak_rss(view["pid"])
        # a call naming replication_handle, declaring 200 MiB (under a replica's 256): only its first bytes
        call = msgpack.packb(("jtrix.netlet", "replication_handle", [], {}), use_bin_type=True)
        s.sendall(pyro_message(protocol.MSG_INVOKE, call, seq=2, declared=200 << 20))
        msgtype, flags, data = read_reply(s)  # answered from its first bytes, not after 200 MiB
    assert msgtype == protocol.MSG_RESULT and flags & protocol.FLAGS_EXCEPTION
    assert "more than the" in str(data)
    assert peak_rss(view["pid"]) - before < 32 << 20


# -- attack b: a `call` or `status` holder asking every API for the replica credential or a grant --

def _delegated(node, rights: list[str], app: str | None):
    import datetime as dt

    import warrants
    from hosting.client import HostingClient

    admin_key = warrants.load_private_key(node.home / "admin.key.pem")
    holder = warrants.generate_key()
    now = dt.datetime.now(dt.timezone.utc)
    xml = warrants.issue_warrant(admin_key, warrants.make_self_signed_cert(admin_key, "admin"), rights=rights,
                                 service=node.client.service, app=app, holder=holder.public_key(),
                                 not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1),
                                 parent_xml=(node.home / "admin.warrant.xml").read_bytes())
    return HostingClient(node.client.uri, xml, holder, timeout=5)


def _secrets_of(node, app: str) -> list[bytes]:
    """What must never reach a client: the replica credential and the app secret (raw and hex)."""
    from rpc.credential import REPLICA, credential

    secret = node.app_secret(app)
    replica = credential(secret, REPLICA)
    return [secret, secret.hex().encode(), replica, replica.hex().encode()]


def _leaks(answer, secrets: list[bytes]) -> list[str]:
    blob = msgpack.packb(answer, use_bin_type=True, default=repr)
    found = [s.hex()[:8] for s in secrets if s in blob]
    found += [word for word in (b"master_key", b'"sig"', b"grant_trust", b"key_pem") if word in blob]
    return found


def _every_api_call(node, app: str) -> dict[str, tuple]:
    """Each hosting-API method with arguments naming the app's real slots and netlets."""
    a = node.app(app)
    slot = a["netlets"][0]["slot"]
    netlet = a["netlets"][0]["netlet"]
    return {
        "app_access": (app,), "status": (app,), "host_status": (), "events": (0, app),
        "logs": (app, slot), "control_state": (app,),
        "owner_op": (app, "access", [None, 0.0]),
        "renew": (netlet, None), "report": (netlet, {}), "arbiter_request": (netlet, "sync", a["epoch"], None),
        "acquire_control": (netlet,), "renew_control": (netlet, a["epoch"]),
    }


@pytest.mark.parametrize("rights", [["call"], ["status"], ["call", "status"]])
def test_a_client_gets_no_replica_credential_nor_grant_from_any_api(node, tmp_path, rights):
    from rpc import wire
    from rpc.credential import CLIENT, credential, make_handshake
    from testkit.kvstore import launch_kvstore

    launch_kvstore(node, tmp_path)
    secrets = _secrets_of(node, "kvstore")
    assert _leaks({"credential": secrets[3].decode()}, secrets)  # the scan sees one where it is
    client = _delegated(node, rights, "kvstore")
    answered = {}
    for method, args in _every_api_call(node, "kvstore").items():
        try:
            answered[method] = client.call(method, *args)
        except Exception as err:  # refused: what it says must leak nothing either
            assert not _leaks(str(err), secrets), (method, err)
    assert {m: _leaks(v, secrets) for m, v in answered.items() if _leaks(v, secrets)} == {}
    # what each right opens (on this one app: host_status needs a warrant for every app), nothing else
    opens = {"call": {"app_access"}, "status": {"status", "events", "logs", "control_state"}}
    assert set(answered) == set().union(*(opens[r] for r in rights))
    if "call" not in rights:
        return
    # the client credential, on every netlet endpoint: what it answers leaks nothing, replication refuses
    cred = bytes.fromhex(answered["app_access"]["credential"])
    assert cred == credential(node.app_secret("kvstore"), CLIENT)
    for n in answered["app_access"]["netlets"]:
        with wire.proxy(n["endpoint"], timeout=5) as p:
            p._pyroHandshake = make_handshake(cred, "kvstore", CLIENT, n["netlet"])
            described = p.describe()
            outcomes = [p.ping(), described]
            for method in described["methods"]:
                try:
                    outcomes.append(p.invoke(method, [], {}))
                except Exception as err:
                    outcomes.append(str(err))
            for call in (lambda: p.replication_prepare(10**9), lambda: p.replication_handle({}),
                         lambda: p.replication_peers(10**9, {}), lambda: p.replication_promote(10**9, [], {})):
                with pytest.raises(Exception, match="replica credential"):
                    call()
        with wire.proxy(n["endpoint"].replace("jtrix.netlet", "Pyro.Daemon"), timeout=5) as d:
            d._pyroHandshake = make_handshake(cred, "kvstore", CLIENT, n["netlet"])
            outcomes += [d.registered(), d.info(), d.get_metadata("jtrix.netlet")]
        assert not _leaks(outcomes, secrets), (n["slot"], _leaks(outcomes, secrets))
