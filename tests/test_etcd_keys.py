"""``hosting.cluster.keys``: every etcd key is built and taken apart in one place, with one spelling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosting.cluster import keys
from warrants import names
from warrants.errors import BadInput

apps = st.from_regex(names.APP_RE, fullmatch=True)
slots = st.builds(lambda t, i: f"{t}/{i}", st.from_regex(names.TYPE_RE, fullmatch=True), st.integers(0, 99))
node_names = st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s)
shas = st.from_regex(names.CODEBASE_RE, fullmatch=True)

every_key = st.one_of(
    st.just(keys.Key("ca")),
    st.builds(keys.Key, st.sampled_from(["node", "cert"]), node_names),
    st.builds(lambda n, i: keys.Key("event", n, number=i), node_names, st.integers(0, 10**12 - 1)),
    st.builds(keys.Key, st.just("codebase"), shas),
    st.builds(lambda s, i: keys.Key("codebase_chunk", s, number=i), shas, st.integers(0, 10**30)),
    st.builds(keys.Key, st.sampled_from(keys.APP_KINDS), apps),
    st.builds(lambda k, a, s: keys.Key(k, a, slot=s), st.sampled_from(keys.SLOT_KINDS), apps, slots),
)
PREFIXES = {"node": keys.NODES, "cert": keys.CERTS, "event": keys.EVENTS, "codebase": keys.CODEBASES,
            "codebase_chunk": keys.CODEBASES, **{k: keys.APPS for k in keys.APP_KINDS + keys.SLOT_KINDS}}

# text made of key parts, so near misses (a missing part, one too many, a padded number) are common
TOKENS = ["apps", "nodes", "events", "certs", "codebases", "tls", "ca", "/", "kv", "store", "0", "00", "7", "07",
          "owner", "placement", "live", "incarnations", "spec", "moved", "arbiter", "a" * 64, "000000000007",
          "Kv", "", "#", ".."]
key_like = st.lists(st.sampled_from(TOKENS), max_size=8).map("".join) | st.text(max_size=60)


@given(every_key)
def test_a_key_round_trips_and_starts_with_its_familys_prefix(key):
    text = str(key)
    assert keys.parse(text) == key == keys.match(text)
    assert key.kind == "ca" or text.startswith(PREFIXES[key.kind])


@given(key_like)
def test_parse_accepts_only_canonical_keys_and_refuses_the_rest_with_bad_input(text):
    try:
        key = keys.parse(text)
    except BadInput:
        assert keys.match(text) is None
        return
    assert str(key) == text


@given(apps, slots, node_names, shas, st.integers(0, 10**12 - 1))
def test_the_builders_spell_the_documented_keys(app, slot, node, sha, index):
    assert keys.node(node) == f"nodes/{node}" and keys.cert(node) == f"certs/{node}"
    for kind in keys.APP_KINDS:
        assert getattr(keys, kind)(app) == keys.app_key(kind, app) == f"apps/{app}/{kind}"
    assert keys.live(app, slot) == f"apps/{app}/live/{slot}"
    assert keys.incarnations(app, slot) == f"apps/{app}/incarnations/{slot}"
    assert keys.codebase(sha) == f"codebases/{sha}" and keys.codebase_chunk(sha, 3) == f"codebases/{sha}/3"
    assert keys.event(node, index) == f"events/{node}/{index:012d}"
    assert keys.event(node, index).startswith(keys.events_of(node))


@given(node_names, node_names, st.integers(0, 10**12 - 1))
def test_a_nodes_event_prefix_holds_only_its_own_events(node, other, index):
    assert keys.event(other, index).startswith(keys.events_of(node)) == (node == other)


def test_event_keys_sort_in_index_order():
    assert sorted(keys.event("n", i) for i in (10, 9, 100, 1)) == [keys.event("n", i) for i in (1, 9, 10, 100)]


@pytest.mark.parametrize("text", ["", "apps/", "apps/kv", "apps/kv/", "apps/kv/bogus", "apps/KV/owner",
                                  "apps/kv/owner/x", "apps/kv/live/store", "apps/kv/live/store/00",
                                  "apps/kv/live/store/0/x", "apps/kv/placement/store/0", "nodes/", "nodes/a/b",
                                  "events/n/7", "events/n/0000000000007", "events//000000000007",
                                  "codebases/abc", f"codebases/{'a' * 64}/01", f"codebases/{'a' * 64}/-1",
                                  "tls/ca/x", "tls/other", "/nodes/a", "certs/", None, b"nodes/a"])
def test_a_key_outside_the_schema_is_refused(text):
    with pytest.raises(BadInput):
        keys.parse(text)
    assert keys.match(text) is None


@pytest.mark.parametrize("make", [lambda: keys.Key("bogus", "kv"), lambda: keys.Key("owner", "kv", slot="s/0"),
                                  lambda: keys.Key("live", "kv"), lambda: keys.Key("event", "n"),
                                  lambda: keys.Key("event", "n", number=10**12), lambda: keys.Key("node", "a/b"),
                                  lambda: keys.Key("codebase_chunk", "a" * 64, number=True),
                                  lambda: keys.Key("ca", "x"), lambda: keys.app_key("live", "kv"),
                                  lambda: keys.live("kv", "store/07"), lambda: keys.events_of("a/b")])
def test_a_key_is_checked_when_it_is_made(make):
    with pytest.raises(BadInput):
        make()


def test_a_key_too_long_to_parse_cannot_be_made():
    with pytest.raises(BadInput, match="longer than"):
        keys.node("n" * keys.MAX_KEY)
    assert keys.parse(keys.node("n" * (keys.MAX_KEY - len(keys.NODES)))).name == "n" * (keys.MAX_KEY - len(keys.NODES))
