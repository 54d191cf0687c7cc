"""``hosting.bindings``: the grammar of node-issued warrants' data and the order of its checks
(through a real node: tests/test_bound_warrants.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, strategies as st

import warrants
from hosting import bindings
from warrants.errors import InsufficientRights

SERVICE = "svc-test"
names_ = st.from_regex(r"[a-z][a-z0-9_\-]{0,12}", fullmatch=True)
instances = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
netlet_ids = st.builds(lambda a, t, i, n: f"{a}/{t}/{i}#{n}", names_, names_, st.integers(0, 99),
                       st.integers(0, 10**12 - 1))
bootstrap_runs = st.builds(lambda a, r: f"{a}/bootstrap#{r}", names_, st.from_regex(r"[0-9a-f]{16}", fullmatch=True))


@given(st.one_of(st.tuples(st.just(bindings.NETLET), instances, netlet_ids),
                 st.tuples(st.just(bindings.BOOTSTRAP), instances, bootstrap_runs)))
def test_a_binding_reads_back_as_written(case):
    kind, instance, process = case
    binding = bindings.bind(kind, instance, process)
    assert bindings.parse(binding.data) == binding
    assert binding.app == process.split("/", 1)[0]


@given(st.text(max_size=200))
def test_any_data_is_no_binding_a_binding_or_refused(data):
    try:
        binding = bindings.parse(data)
    except InsufficientRights:
        assert data.startswith(("netlet:", "bootstrap:"))
        return
    assert (binding is not None) == data.startswith(("netlet:", "bootstrap:"))


@pytest.mark.parametrize("data", ["netlet:", "netlet:abc:shop/w/0#1", "netlet:" + "0" * 32 + ":shop/w/0",
                                  "netlet:" + "0" * 32 + ":shop/bootstrap#" + "0" * 16,
                                  "bootstrap:" + "0" * 32 + ":shop/w/0#1", "bootstrap:" + "0" * 32 + ":shop"])
def test_malformed_bindings_are_refused_not_ignored(data):
    with pytest.raises(InsufficientRights, match="malformed"):
        bindings.parse(data)


def test_the_instance_is_one_way_and_new_with_every_secret():
    a, b = bindings.instance_of(b"\x01" * 32), bindings.instance_of(b"\x02" * 32)
    assert a != b and len(a) == 32 and (b"\x01" * 32).hex()[:32] != a


@dataclass
class Node:
    """What one node knows of its processes (the ``Holders`` a real node answers)."""

    instances: dict = field(default_factory=dict)
    alive: set = field(default_factory=set)

    def app_instance(self, app):
        return self.instances.get(app)

    def holder_alive(self, binding):
        return binding.process in self.alive


def _issued(key, cert, binding):
    xml, _ = bindings.issue(key, cert, SERVICE, binding)
    return warrants.verify_warrant(xml, [cert])


def test_checks_refuse_another_nodes_binding_other_methods_gone_instances_and_dead_processes():
    key = warrants.generate_key()
    cert = warrants.make_self_signed_cert(key, "node-a")
    other_key = warrants.generate_key()
    other_cert = warrants.make_self_signed_cert(other_key, "node-b")
    instance = bindings.instance_of(b"s" * 32)
    binding = bindings.bind(bindings.NETLET, instance, "shop/w/0#1")
    node = Node({"shop": instance}, {"shop/w/0#1"})
    check = bindings.Bindings(warrants.cert_fingerprint(cert), node)
    warrant = _issued(key, cert, binding)
    assert check.check(warrant, "renew") == binding
    with pytest.raises(InsufficientRights, match="another node"):
        check.check(_issued(other_key, other_cert, binding), "renew")
    with pytest.raises(InsufficientRights, match="does not open 'logs'"):
        check.check(warrant, "logs")
    node.instances["shop"] = bindings.instance_of(b"t" * 32)  # the app was replaced
    with pytest.raises(bindings.HolderGone, match="instance"):
        check.check(warrant, "renew")
    node.instances["shop"] = instance
    node.alive.clear()  # its netlet exited
    with pytest.raises(bindings.HolderGone, match="not alive"):
        check.check(warrant, "status")
    assert isinstance(bindings.HolderGone("x"), warrants.NotFound)  # a heartbeat's "disowned"
