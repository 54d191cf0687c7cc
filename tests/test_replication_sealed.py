"""Replication is sealed from clients: attacks through a real node's and real netlets' endpoints.

A client holding a warrant with only the ``call`` right gets the app's *client*
credential: it can call the app, and nothing it sends reaches replication. A
holder of the *replica* credential still needs a node's grant for the exact
call, and a backup accepts appends only from the master its grant names.
"""

from __future__ import annotations

import datetime as dt

import pytest
from Pyro5.errors import CommunicationError

import netlets
import warrants
from rpc import wire
from hosting.election import grants
from hosting.election.grants import GrantSigner
from rpc.credential import REPLICA, make_handshake, replica_handshake
from testkit.kvstore import launch_kvstore, wait_master
from testkit.node import master_of
from testkit.wait import wait_for
from warrants.errors import JtrixError


def _call_only_access_point(node, tmp_path) -> netlets.AppProxy:
    """An access point acting with a warrant that holds only ``call`` on kvstore."""
    admin_key = warrants.load_private_key(node.home / "admin.key.pem")
    admin_xml = (node.home / "admin.warrant.xml").read_bytes()
    holder = warrants.generate_key()
    now = dt.datetime.now(dt.timezone.utc)
    xml = warrants.issue_warrant(admin_key, warrants.make_self_signed_cert(admin_key, "admin"), rights=["call"],
                                 service=node.client.service, app="kvstore", holder=holder.public_key(),
                                 not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1),
                                 parent_xml=admin_xml)
    (tmp_path / "call.warrant.xml").write_bytes(xml)
    warrants.save_private_key(holder, tmp_path / "call.key.pem")
    return netlets.connect("kvstore", warrant=tmp_path / "call.warrant.xml", key=tmp_path / "call.key.pem")


def _backups(app: dict) -> list[dict]:
    return [n for n in app["netlets"] if n["slot"] != app["master"]]


def _append_after(status: dict, epoch: int, sender: str, command: dict) -> dict:
    """A well-formed append that extends the receiver's log by one committed command."""
    last_epoch, last_seq = status["position"]
    return {"t": "append", "epoch": epoch, "from": sender, "bid": 10**9, "prev_seq": last_seq,
            "prev_epoch": last_epoch, "entries": [[last_seq + 1, epoch, "cmd", "forged-1", command]],
            "commit_seq": last_seq + 1}


@pytest.fixture
def sealed(node, tmp_path):
    """kvstore running with a committed ``k = alice`` everywhere, and a call-only access point."""
    launch_kvstore(node, tmp_path)
    kv = _call_only_access_point(node, tmp_path)
    kv.put("k", "alice")
    app = node.app("kvstore")
    for backup in _backups(app):
        wait_for(lambda b=backup: kv._proxy(b).invoke("get", ["k"], {}) == "alice", 10,
                 f"{backup['slot']} holding the write")
    yield kv, app
    kv.close()


def test_a_call_only_client_cannot_append_to_a_backup(sealed):
    kv, app = sealed
    backup = _backups(app)[0]
    p = kv._proxy(backup)
    forged = _append_after(p.ping(), app["epoch"], app["master"], {"op": "put", "key": "k", "value": "mallory"})
    with pytest.raises(JtrixError, match="replica credential"):
        p.replication_handle(forged)
    # claiming the replica role with the client credential fails the handshake itself
    _refused_handshake(backup["endpoint"], make_handshake(kv._credential, "kvstore", REPLICA, backup["netlet"]),
                      "wrong app credential")
    assert p.invoke("get", ["k"], {}) == "alice"
    assert kv.get_latest("k") == "alice"


def test_a_call_only_client_cannot_fence_the_app_with_prepare(node, sealed):
    kv, app = sealed
    for n in app["netlets"]:
        with pytest.raises(JtrixError, match="replica credential"):
            kv._proxy(n).replication_prepare(10**15)
    # Nothing was promised: the master still commits at its epoch, no election ran.
    kv.put("k", "bob")
    assert kv.get_latest("k") == "bob"
    assert node.app("kvstore")["epoch"] == app["epoch"]
    assert all(kv._proxy(n).ping()["epoch"] < 10**15 for n in app["netlets"])


def test_a_call_only_client_cannot_promote_a_backup(node, sealed):
    kv, app = sealed
    backup = _backups(app)[0]
    p = kv._proxy(backup)
    with pytest.raises(JtrixError, match="replica credential"):
        p.replication_promote(app["epoch"] + 1, [backup["slot"]], {})
    assert p.ping()["role"] == "backup"
    with pytest.raises(JtrixError):  # a backup serves no master query: it was not promoted
        p.invoke("get_latest", ["k"], {})


def test_a_call_only_client_cannot_change_the_masters_peers(node, sealed):
    kv, app = sealed
    with pytest.raises(JtrixError, match="replica credential"):
        kv._proxy(master_of(app)).replication_peers(app["epoch"], {})
    # The master still replicates to every backup.
    kv.put("k", "carol")
    for backup in _backups(app):
        wait_for(lambda b=backup: kv._proxy(b).invoke("get", ["k"], {}) == "carol", 10,
                 f"{backup['slot']} still replicated to")


def _replica_proxy(node, netlet: dict, **extra):
    p = wire.proxy(netlet["endpoint"])
    p._pyroHandshake = replica_handshake(node.app_secret("kvstore"), "kvstore", netlet["netlet"], **extra)
    return p


def _node_signer(node) -> GrantSigner:
    """The node's own grant key (what its elector signs with)."""
    key = warrants.load_private_key(node.home / "node.key.pem")
    return GrantSigner(key, None, {})


def test_the_replica_credential_alone_does_not_open_replication(node, tmp_path):
    launch_kvstore(node, tmp_path)
    app = node.app("kvstore")
    backup = _backups(app)[0]
    rogue = GrantSigner(warrants.generate_key(), None, {})
    with _replica_proxy(node, backup) as p:
        with pytest.raises(JtrixError, match="needs a grant"):
            p.replication_prepare(10**15)
        with pytest.raises(JtrixError, match="does not verify"):
            p.replication_prepare(10**15, rogue.mint("kvstore", "prepare", 10**15, [10**15], backup["netlet"]))
        # a node's grant for another epoch, another op or another addressee is not this call's
        node_signer = _node_signer(node)
        with pytest.raises(JtrixError, match="another call"):
            p.replication_prepare(10**15, node_signer.mint("kvstore", "prepare", 10**15 - 1, [10**15 - 1],
                                                           backup["netlet"]))
        with pytest.raises(JtrixError, match="another call"):
            p.replication_promote(10**15, [backup["slot"]], {},
                                  node_signer.mint("kvstore", "promote", 10**15, [10**15, [], {}], backup["netlet"]))
        with pytest.raises(JtrixError, match="another call"):
            p.replication_peers(app["epoch"], {}, node_signer.mint("kvstore", "peers", app["epoch"],
                                                                   [app["epoch"], {}], master_of(app)["netlet"]))
        # no promote grant on this connection: no append is accepted, whoever it claims to be from
        forged = _append_after(p.ping(), app["epoch"], app["master"], {"op": "put", "key": "k", "value": "x"})
        with pytest.raises(JtrixError, match="grant names no master"):
            p.replication_handle(forged)
        assert p.ping()["epoch"] == app["epoch"] and p.ping()["role"] == "backup"
        # the control: the node's grant for exactly this call (the epoch already promised) is taken
        current = app["epoch"]
        assert p.replication_prepare(current, node_signer.mint("kvstore", "prepare", current, [current],
                                                               backup["netlet"]))["ok"]
    wait_master(node)
    assert node.app("kvstore")["epoch"] == app["epoch"]


def _as_master(node, grant: dict, to: dict) -> dict:
    """The handshake a master holding ``grant`` (and its master key) makes for the backup ``to``."""
    handshake = replica_handshake(node.app_secret("kvstore"), "kvstore", to["netlet"], grant=grants.public(grant))
    handshake["master_proof"] = grants.master_proof(grant["master_key"], "kvstore", to["netlet"],
                                                    handshake["ts"], handshake["nonce"])
    return handshake


def _refused_handshake(endpoint: str, handshake: dict, why: str) -> None:
    with wire.proxy(endpoint) as p:
        p._pyroHandshake = handshake
        with pytest.raises(CommunicationError, match=why):
            p.ping()


def test_a_backup_accepts_appends_only_from_the_master_its_grant_names(node, tmp_path):
    launch_kvstore(node, tmp_path)
    app = node.app("kvstore")
    backup, other = _backups(app)[:2]
    epoch = app["epoch"]
    grant = grants.promote_grant(_node_signer(node), "kvstore", master_of(app)["netlet"], epoch, [], {})
    # A node's promote grant for the master at this epoch, with its master key: still only
    # messages of that epoch from that master pass.
    with wire.proxy(backup["endpoint"]) as p:
        p._pyroHandshake = _as_master(node, grant, backup)
        forged = _append_after(p.ping(), epoch, other["slot"], {"op": "put", "key": "k", "value": "x"})
        with pytest.raises(JtrixError, match=f"names {app['master']} at epoch {epoch}"):
            p.replication_handle(forged)
        forged = _append_after(p.ping(), epoch + 1, app["master"], {"op": "put", "key": "k", "value": "x"})
        with pytest.raises(JtrixError, match=f"names {app['master']} at epoch {epoch}"):
            p.replication_handle(forged)
    # What a backup sees of its master (the grant, a handshake made for it) opens no other backup.
    _refused_handshake(backup["endpoint"], replica_handshake(node.app_secret("kvstore"), "kvstore", backup["netlet"],
                                                             grant=grants.public(grant)), "master key")
    for_other = _as_master(node, grant, other)
    _refused_handshake(backup["endpoint"], for_other, "made for another netlet")
    relayed = {**replica_handshake(node.app_secret("kvstore"), "kvstore", backup["netlet"], grant=grants.public(grant)),
               "master_proof": for_other["master_proof"]}
    _refused_handshake(backup["endpoint"], relayed, "master proof does not verify")
    # A grant the node did not sign makes the whole handshake fail.
    rogue = grants.promote_grant(GrantSigner(warrants.generate_key(), None, {}), "kvstore", other["netlet"],
                                 epoch, [], {})
    _refused_handshake(backup["endpoint"], _as_master(node, rogue, backup), "does not verify")
    # The real master's replication is unaffected.
    kv = netlets.connect("kvstore")
    kv.put("k", "after")
    wait_for(lambda: kv._proxy(backup).invoke("get", ["k"], {}) == "after", 10, "replicated")
    assert node.app("kvstore")["epoch"] == epoch
