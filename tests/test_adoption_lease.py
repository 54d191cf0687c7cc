"""An adopted netlet's first lease runs from when the node serves, not from its adoption.

A restarted node adopts the netlets still running during ``recover()``; until the node serves
(and, after a clean stop, has written node.json with its new address) no netlet can renew. The
adoption lease (``Timing.adopted_lease_s``, 3 s) used to start at the adoption, so a recovery
slowed by load ate it, and a healthy adopted netlet was declared hung and replaced (seen as the
intermittent failure of test_confinement's adoption test at load average ~10). A real
supervisor, registry, lessor and an adopted real process: before ``start_serving`` the lease
does not run out however long recovery takes; from it, the full adoption lease is left.
Fails on the old code: "the adoption lease runs during recovery: 2.99s left".
"""

from __future__ import annotations

from hosting.supervisor import lease_id_of
from hosting.timing import Timing
from testkit.manyapps import kvstore_xml
from testkit.supervision import supervised

APP = "kv0"


def test_an_adopted_netlets_lease_waits_for_the_node_to_serve(tmp_path):
    with supervised(tmp_path, {APP: kvstore_xml(APP, replicas=1)}, serving=False) as rig:
        sup, descriptor = rig.supervisor, rig.descriptors[APP]
        netlet, _ = rig.adoptee(APP, rig.registry.slots(APP)[0]["slot"])
        adopted_lease_s = Timing(lease_ttl=descriptor.lease_ttl).adopted_lease_s
        assert sup.adopt(rig.registry.netlet(netlet), descriptor.lease_ttl)
        lease = rig.lessor.get(lease_id_of(netlet))
        assert lease is not None and lease.remaining() > 10 * adopted_lease_s, \
            f"the adoption lease runs during recovery: {lease.remaining():.2f}s left"
        sup.start_serving()
        lease = rig.lessor.get(lease_id_of(netlet))
        assert adopted_lease_s - 0.5 < lease.remaining() <= adopted_lease_s
        assert lease.ttl == adopted_lease_s
