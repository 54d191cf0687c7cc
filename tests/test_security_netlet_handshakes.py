"""A netlet handshake opens the one process it was made for (security review B7).

Every netlet endpoint keeps its own replay cache, so a handshake that any other
process would accept (another netlet of the app, or the next process of the same
slot, whose cache starts empty) could be replayed there within the replay window.
Through a real node and real netlets: a handshake made for one netlet, client or
replica role, is refused by another netlet of the same app and by the restarted
process of its slot; a master's handshake made for one backup (its promote grant
and its master proof) opens nothing on that backup's restarted process.
"""

from __future__ import annotations

import pytest
from Pyro5.errors import CommunicationError

import warrants
from rpc import wire
from hosting.election import grants
from hosting.election.grants import GrantSigner
from rpc.credential import CLIENT, REPLICA, credential, make_handshake, replica_handshake
from testkit.kvstore import launch_kvstore
from testkit.node import master_of
from testkit.wait import wait_for

APP = "kvstore"
FOR_ANOTHER = "made for another netlet"


def _backups(app: dict) -> list[dict]:
    return [n for n in app["netlets"] if n["slot"] != app["master"]]


def _restarted(node, netlet: dict) -> dict:
    """Kill ``netlet``'s process and return its slot's next process once it serves."""
    node.client.call("signal", APP, netlet["slot"], "KILL")

    def serving():
        n = node.slot(APP, netlet["slot"])
        return n if n["netlet"] != netlet["netlet"] and n["state"] == "running" and n.get("endpoint") else None
    return wait_for(serving, 20, f"{netlet['slot']} restarted")


def _opens(endpoint: str, handshake: dict) -> bool:
    """Whether ``handshake`` opens a connection to ``endpoint`` (a ping answers)."""
    with wire.proxy(endpoint) as p:
        p._pyroHandshake = handshake
        return bool(p.ping())


def _refused(endpoint: str, handshake: dict, why: str) -> None:
    with wire.proxy(endpoint) as p:
        p._pyroHandshake = handshake
        with pytest.raises(CommunicationError, match=why):
            p.ping()


def _handshake(node, role: str, to: dict) -> dict:
    """A ``role`` handshake made for the netlet ``to`` (as the access point, resp. the node's elector, make them)."""
    key = credential(node.app_secret(APP), role)
    return make_handshake(key, APP, role, to=to["netlet"])


@pytest.mark.parametrize("role", [CLIENT, REPLICA])
def test_a_handshake_opens_only_the_netlet_it_was_made_for(node, tmp_path, role):
    launch_kvstore(node, tmp_path)
    first, second = _backups(node.app(APP))[:2]
    handshake = _handshake(node, role, first)
    assert _opens(first["endpoint"], handshake)  # the control: its addressee takes it, once
    _refused(first["endpoint"], handshake, "replayed")
    _refused(second["endpoint"], handshake, FOR_ANOTHER)  # another netlet of the same app
    restarted = _restarted(node, first)
    _refused(restarted["endpoint"], handshake, FOR_ANOTHER)  # the next process of the same slot
    assert _opens(restarted["endpoint"], _handshake(node, role, restarted))


def _as_master(node, grant: dict, to: dict) -> dict:
    """The handshake a master holding ``grant`` (and its master key) makes to dial the backup ``to``."""
    handshake = replica_handshake(node.app_secret(APP), APP, to=to["netlet"], grant=grants.public(grant))
    handshake["master_proof"] = grants.master_proof(grant["master_key"], APP, to["netlet"],
                                                    handshake["ts"], handshake["nonce"])
    return handshake


def test_a_masters_handshake_opens_nothing_on_the_backups_next_process(node, tmp_path):
    launch_kvstore(node, tmp_path)
    app = node.app(APP)
    backup = _backups(app)[0]
    signer = GrantSigner(warrants.load_private_key(node.home / "node.key.pem"), None, {})  # the node's own key
    grant = grants.promote_grant(signer, APP, master_of(app)["netlet"], app["epoch"], [], {})
    sniffed = _as_master(node, grant, backup)
    assert _opens(backup["endpoint"], sniffed)  # the control: the backup it was made for takes it
    restarted = _restarted(node, backup)
    _refused(restarted["endpoint"], sniffed, FOR_ANOTHER)
    # Its master proof alone (under a fresh handshake for the new process) proves nothing either.
    relayed = {**replica_handshake(node.app_secret(APP), APP, to=restarted["netlet"], grant=grants.public(grant)),
               "master_proof": sniffed["master_proof"]}
    _refused(restarted["endpoint"], relayed, "master proof does not verify")
