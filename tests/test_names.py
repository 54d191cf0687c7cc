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


# -- typed ids: the one place an id is taken apart or put together --------------------------------
apps = st.from_regex(names.APP_RE, fullmatch=True)
slot_ids = st.builds(names.SlotId, st.from_regex(names.TYPE_RE, fullmatch=True), st.integers(0, 99))
netlet_ids = st.builds(lambda app, s, n: names.NetletId(app, s.type, s.index, n), apps, slot_ids,
                       st.integers(0, 10**12 - 1))
bootstrap_runs = st.builds(names.BootstrapRun, apps, st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
ID_TYPES = [names.SlotId, names.NetletId, names.BootstrapRun]
# text made of id parts, so near misses (a leading zero, a missing part, one too many) are common
ID_TOKENS = ["kv", "store", "a-b", "/", "#", "0", "00", "07", "1", "99", "100", "bootstrap", "0123456789abcdef",
             "-", "A", " ", ""]
id_like = st.lists(st.sampled_from(ID_TOKENS), max_size=8).map("".join) | hostile


@given(slot_ids)
def test_a_slot_id_round_trips(slot):
    assert names.SlotId.parse(str(slot)) == slot
    assert names.check_slot(str(slot)) == str(slot)


@given(netlet_ids)
def test_a_netlet_id_round_trips(netlet):
    text = str(netlet)
    assert names.NetletId.parse(text) == netlet == names.process_of(text)
    assert names.NetletId.of(netlet.app, netlet.slot, netlet.incarnation) == netlet
    assert names.netlet_app(text) == netlet.app
    assert text == f"{netlet.place}#{netlet.incarnation}" and netlet.place == f"{netlet.app}/{netlet.slot}"
    assert netlet_id_of(netlet.app, netlet.slot, netlet.incarnation) == text


@given(bootstrap_runs)
def test_a_bootstrap_run_round_trips(run):
    assert names.BootstrapRun.parse(str(run)) == run == names.process_of(str(run))
    assert run.place == f"{run.app}/bootstrap"


@given(id_like, st.sampled_from(range(len(ID_TYPES))))
def test_an_id_parse_accepts_is_canonical_and_anything_else_is_bad_input(text, which):
    """``parse`` refuses with BadInput (never another error), and what it accepts is exactly what
    formatting the parsed id gives back: one spelling per id."""
    try:
        parsed = ID_TYPES[which].parse(text)
    except BadInput:
        return
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["kv/store/0", "kv/store/00#1", "kv/store/07#1", "kv/store/100#1", "kv/store/1#01",
                                  "kv/store/1#", "kv/store/1#1#1", "Kv/store/1#1", "kv/store#1", "kv//0#1",
                                  "kv/store/1#1234567890123", "kv/bootstrap#0123456789abcdef", "", None, 7])
def test_a_malformed_netlet_id_is_refused(text):
    with pytest.raises(BadInput):
        names.NetletId.parse(text)


@pytest.mark.parametrize("fields", [("kv", "store", -1, 1), ("kv", "store", 100, 1), ("kv", "store", "1", 1),
                                    ("kv", "store", True, 1), ("kv", "store", 1, -1), ("kv", "store", 1, 10**12),
                                    ("kv", "Store", 1, 1), ("k/v", "store", 1, 1), (None, "store", 1, 1)])
def test_a_netlet_id_is_checked_at_construction(fields):
    with pytest.raises(BadInput):
        names.NetletId(*fields)


@pytest.mark.parametrize("text", ["kv/bootstrap#0123456789ABCDEF", "kv/bootstrap#0123", "kv/bootstrap", "kv/store/0#1x"])
def test_a_malformed_process_name_is_refused(text):
    with pytest.raises(BadInput):
        names.process_of(text)
