"""A netlet's status is its own code's word: the node keeps only what it understands, bounded.

Found by the security review after issue 14: ``Node.report`` merged every key a netlet sent
into its status cache and registry row (``{**old, **status}``), so a netlet reporting new keys
with its own node-issued warrant grew the node's memory and registry without bound (300
reports of ~0.9 MB: node RSS 62 MB -> 1.8 GB, registry 1.6 GB). ``hosting.netlet_status``
now keeps the known keys only and bounds ``app_status``.
"""

from __future__ import annotations

import json
import sqlite3

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from hosting.netlet_status import APP_STATUS_MAX_BYTES, FIELDS, RECORD_MAX_BYTES, accepted
from testkit.node import APPS, descriptor_xml
from testkit.wait import wait_for

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=50),
                       lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)


@given(st.dictionaries(st.text(max_size=20), JSONISH, max_size=20))
def test_only_known_keys_of_their_type_are_kept_and_the_whole_is_bounded(status):
    kept = accepted(status)
    assert set(kept) <= set(FIELDS)
    for key, value in kept.items():
        assert isinstance(value, FIELDS[key]) and not isinstance(value, bool)
    assert len(msgpack.packb(kept)) <= APP_STATUS_MAX_BYTES + 4 * RECORD_MAX_BYTES + 4096


def test_an_oversized_app_status_is_replaced_by_a_note_and_known_fields_stay():
    big = {"a": "x" * (APP_STATUS_MAX_BYTES + 1)}
    kept = accepted({"phase": "running", "seq": 3, "app_status": big, "junk": "y" * 10**6})
    assert kept["phase"] == "running" and kept["seq"] == 3 and "junk" not in kept
    assert "dropped" in kept["app_status"]


def test_a_netlet_cannot_grow_the_nodes_status_of_it(node, tmp_path):
    """Real node, real netlet: 20 reports of ~200 KB of invented keys and app_status each (~4 MB
    in all) leave the netlet's registry row and its status view small, and the renewals go on
    (the netlet keeps its lease). On the code before: the row held every invented key (~4 MB)."""
    xml = descriptor_xml("bloat", """
  <netlet type="b" class="hostile:StatusBloat" replicas="1">
    <param name="reports">20</param><param name="kb">200</param>
  </netlet>""", codebase=APPS / "hostile")
    node.launch(xml, tmp_path)
    done = wait_for(lambda: node.slot("bloat", "b/0").get("app_status", {}).get("bloat"), 60,
                    "the netlet's reports")
    assert done["sent"] == 20, done
    with sqlite3.connect(node.home / "registry.sqlite") as db:
        rows = db.execute("SELECT status FROM netlets WHERE app = 'bloat'").fetchall()
    assert rows and all(len(r[0] or "") < 64 * 1024 for r in rows), [len(r[0] or "") for r in rows]
    assert not any(k.startswith("k") for r in rows for k in json.loads(r[0] or "{}"))
    view = node.slot("bloat", "b/0")
    assert view["state"] == "running" and len(json.dumps(view)) < 64 * 1024
