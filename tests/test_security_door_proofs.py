"""Door proofs (rpc/credential.py: door_key, door_handshake, DoorChecker) as properties.

A proof made with one holder's key proves that holder only: naming another holder, changing
any field, or using another node's root makes it prove nothing; a proof is accepted once.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rpc.credential import CLIENT, NODE, DoorChecker, door_handshake, door_key, make_handshake

holders = st.from_regex(r"[a-z][a-z0-9_-]{0,8}/[a-z]{1,4}/[0-9]{1,2}#[0-9]{1,4}", fullmatch=True)
roots = st.binary(min_size=32, max_size=32)


@given(root=roots, holder=holders, other=holders)
def test_a_proof_names_its_holder_and_no_other(root, holder, other):
    checker = DoorChecker(root)
    proof = door_handshake(door_key(root, holder), holder)
    assert checker.holder(proof) == holder
    assert checker.holder(proof) is None  # accepted once: a replay proves nothing
    if other != holder:
        forged = door_handshake(door_key(root, holder), other)  # my key, someone else's name
        assert checker.holder(forged) is None


@given(root=roots, other_root=roots, holder=holders,
       field=st.sampled_from(["role", "app", "ts", "nonce", "mac"]))
def test_a_changed_field_or_another_nodes_root_proves_nothing(root, other_root, holder, field):
    checker = DoorChecker(root)
    proof = door_handshake(door_key(root, holder), holder)
    changed = {**proof, field: {"ts": proof["ts"] + 1}.get(field, "x" + str(proof[field]))}
    assert checker.holder(changed) is None
    if other_root != root:
        assert checker.holder(door_handshake(door_key(other_root, holder), holder)) is None
    # an app's client credential handshake is no door proof, even under the same bytes as key
    assert checker.holder(make_handshake(door_key(root, holder), holder, CLIENT, NODE)) is None
    assert checker.holder(proof) == holder
