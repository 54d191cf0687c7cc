"""Netlet handshakes (rpc/credential.py) and master proofs (hosting/election/grants.py) as properties.

Each netlet process checks handshakes against a replay cache of its own, new when the process
starts; so "accepted once" holds only if a handshake is accepted by no process but the one it
was made for (security review B7). Modelled here: the checkers of any two processes with
distinct netlet ids (another netlet of the app, or the next process of the same slot, whose
cache starts empty). A handshake opens its addressee once and no other process; with its
addressee changed it proves nothing; a master's proof made for one backup process verifies for
no other.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from hosting.election.grants import PROMOTE, Grant, GrantRefused, check_master_proof, master_proof
from rpc.credential import ROLES, CredentialRefused, HandshakeChecker, credential, make_handshake
from warrants.keys import private_key_pem

APP = "app"
secrets = st.binary(min_size=32, max_size=32)
places = st.from_regex(rf"{APP}/[a-z]{{1,4}}/[0-9]{{1,2}}", fullmatch=True)
incarnations = st.integers(1, 10**6)


@st.composite
def two_processes(draw) -> tuple[str, str]:
    """Two distinct netlet ids of one app: often the same slot's process and its next one."""
    place, n = draw(places), draw(incarnations)
    me = f"{place}#{n}"
    other = draw(st.one_of(st.just(f"{place}#{n + draw(st.integers(1, 3))}"),
                           st.builds(lambda p, i: f"{p}#{i}", places, incarnations)))
    return me, other


def _checker(secret: bytes, netlet: str) -> HandshakeChecker:
    """The endpoint check of the process ``netlet`` (a fresh one: a new replay cache)."""
    return HandshakeChecker(secret, APP, netlet)


@given(secret=secrets, role=st.sampled_from(ROLES), pair=two_processes())
def test_a_handshake_opens_its_addressee_once_and_no_other_process(secret, role, pair):
    me, other = pair
    handshake = make_handshake(credential(secret, role), APP, role, me)
    if other != me:
        with pytest.raises(CredentialRefused, match="another netlet"):
            _checker(secret, other).check(handshake)  # before or after its addressee saw it
    mine = _checker(secret, me)
    assert mine.check(handshake) == role
    with pytest.raises(CredentialRefused, match="replayed"):
        mine.check(handshake)
    if other != me:
        with pytest.raises(CredentialRefused, match="another netlet"):
            _checker(secret, other).check(handshake)


@given(secret=secrets, role=st.sampled_from(ROLES), pair=two_processes())
def test_a_handshake_with_its_addressee_changed_proves_nothing(secret, role, pair):
    me, other = pair
    if other == me:
        return
    handshake = make_handshake(credential(secret, role), APP, role, me)
    readdressed = {**handshake, "to": other}
    with pytest.raises(CredentialRefused, match="wrong app credential"):
        _checker(secret, other).check(readdressed)
    with pytest.raises(CredentialRefused, match="another netlet"):
        _checker(secret, me).check(readdressed)
    assert _checker(secret, me).check(handshake) == role  # the control: unchanged, it opens its addressee


_MASTER_KEY = ec.generate_private_key(ec.SECP256R1())  # one per module: a promotion's key (a property of any key)
_GRANT = Grant(APP, PROMOTE, 7, f"{APP}/m/0#1", "m/0", "-", _MASTER_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


@given(secret=secrets, pair=two_processes())
def test_a_masters_proof_made_for_one_backup_process_verifies_for_no_other(secret, pair):
    me, other = pair
    handshake = make_handshake(credential(secret, "replica"), APP, "replica", me)
    handshake["master_proof"] = master_proof(private_key_pem(_MASTER_KEY), APP, me, handshake["ts"],
                                             handshake["nonce"])
    check_master_proof(_GRANT, APP, me, handshake)  # the control
    if other != me:
        with pytest.raises(GrantRefused, match="does not verify"):
            check_master_proof(_GRANT, APP, other, handshake)
        with pytest.raises(GrantRefused, match="does not verify"):
            check_master_proof(_GRANT, APP, other, {**handshake, "to": other})
