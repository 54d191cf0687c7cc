"""``warrants.names``: what a grammar accepts can never name a path outside its root, and
every name jtrix itself makes is accepted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosting.spawn import new_log_path
from hosting.supervisor import netlet_id_of
from warrants import names
from warrants.errors import BadInput

# text biased towards what a traversal is made of
TOKENS = [".", "..", "/", "\\", "\0", "-", "_", "a", "Z", "z", "0", "9", "#", "~", " ", "\n", "%2e", "\u2024",
          "store", "/0", "/07", ".log", "bootstrap", "T", "Z-1"]
hostile = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join) | st.text(max_size=40)

CHECKS = [names.check_app, names.check_type, names.check_codebase, names.check_log_file,
          lambda n: names.check_slot(n, allow_bootstrap=True)]


@given(hostile, st.sampled_from(range(len(CHECKS))))
def test_an_accepted_name_stays_one_path_component_below_its_root(text, which):
    try:
        accepted = CHECKS[which](text)
    except BadInput:
        return
    parts = accepted.replace("/", "-").split(os.sep)  # slots become one directory name (TYPE-INDEX)
    assert parts == [accepted.replace("/", "-")]
    assert accepted not in (".", "..") and ".." not in accepted and "\0" not in accepted
    root = Path("/nonexistent-root")
    assert names.under(root, accepted.replace("/", "-")).parent == root


@given(st.from_regex(names.APP_RE, fullmatch=True), st.from_regex(names.TYPE_RE, fullmatch=True),
       st.integers(0, 63), st.integers(1, 10**9))
def test_every_name_jtrix_makes_is_accepted(app, ntype, index, incarnation):
    slot = f"{ntype}/{index}"
    assert names.check_slot(slot) == slot
    assert names.netlet_app(netlet_id_of(app, slot, incarnation)) == app
    assert names.check_log_file(new_log_path(Path("/x"), incarnation).name)


def test_under_refuses_a_link_that_leads_out_of_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    (root / "in").symlink_to(root / "inside")
    assert names.under(root, "in") == root / "in"
    with pytest.raises(BadInput, match="leads outside"):
        names.under(root, "out")
    with pytest.raises(BadInput, match="leads outside"):
        names.under(root, "..", "root-sibling")
