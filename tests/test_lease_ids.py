"""``hosting.lease_ids``: the node's lease ids round-trip, and nothing else passes for one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosting import lease_ids
from warrants import names
from warrants.errors import BadInput

apps = st.from_regex(names.APP_RE, fullmatch=True)
netlet_ids = st.builds(lambda a, t, i, n: str(names.NetletId(a, t, i, n)), apps,
                       st.from_regex(names.TYPE_RE, fullmatch=True), st.integers(0, 99), st.integers(0, 10**12 - 1))


@given(netlet_ids, apps)
def test_a_lease_id_round_trips(netlet_id, app):
    assert lease_ids.parse(lease_ids.netlet(netlet_id)) == ("netlet", netlet_id)
    assert lease_ids.parse(lease_ids.control(app)) == ("control", app)


@given(st.text(max_size=40))
def test_parse_refuses_what_no_builder_makes(text):
    try:
        kind, subject = lease_ids.parse(text)
    except BadInput:
        return
    assert text == (lease_ids.netlet(subject) if kind == "netlet" else lease_ids.control(subject))


@pytest.mark.parametrize("text", ["", "netlet:", "control:", "netlet:kv", "control:kv/store/0#1", "kv/store/0#1",
                                  "other:kv", "control:KV", None])
def test_a_malformed_lease_id_is_refused(text):
    with pytest.raises(BadInput):
        lease_ids.parse(text)
