"""An adopted netlet's first lease runs from when the node serves, not from its adoption.

A restarted node adopts the netlets still running during ``recover()``; until the node serves
(and, after a clean stop, has written node.json with its new address) no netlet can renew. The
adoption lease (``Timing.adopted_lease_s``, 3 s) used to start at the adoption, so a recovery
slowed by load ate it, and a healthy adopted netlet was declared hung and replaced (seen as the
intermittent failure of test_confinement's adoption test at load average ~10). A real
supervisor, registry, lessor and an adopted real process: before ``start_serving`` the lease
does not run out however long recovery takes; from it, the full adoption lease is left.
Fails on the old code: the lease had ~3 s left at adoption and kept running down.
"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

import warrants
from hosting.confine import Confinement
from hosting.home import ensure_home
from hosting.lessor import Lessor
from hosting.registry import Registry
from hosting.supervisor import Supervisor, lease_id_of
from hosting.timers import Timers
from hosting.timing import Timing
from testkit.manyapps import kvstore_xml

APP = "kv0"


@pytest.fixture
def recovering(tmp_path):
    """A supervisor as the node makes it: not serving until recovery is over."""
    home = ensure_home(tmp_path / "home")
    registry = Registry(home.registry)
    timers = Timers()
    lessor = Lessor(timers, lambda lease: None)
    xml = kvstore_xml(APP, replicas=1).encode()
    descriptor = warrants.parse_descriptor(xml, "test", read_files=False)
    registry.add_app(APP, xml, "test", "0" * 64, b"s" * 32,
                     [(slot, t.name, {}) for t in descriptor.netlet_types for slot in t.slots])
    sup = Supervisor(home=home, registry=registry, timers=timers, lessor=lessor,
                     make_secrets=lambda *a: {}, confinement=Confinement(home, registry, "auto"),
                     serving=False)
    sup.register_app(descriptor, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        yield sup, lessor, descriptor, sleeper
    finally:
        sleeper.kill()
        sleeper.wait()
        sup.shutdown()
        timers.stop()
        registry.close()


def test_an_adopted_netlets_lease_waits_for_the_node_to_serve(recovering):
    sup, lessor, descriptor, sleeper = recovering
    slot = sup.registry.slots(APP)[0]["slot"]
    netlet = f"{APP}/{slot}#1"
    sup.registry.add_netlet(netlet, APP, slot, 1, sleeper.pid, psutil.Process(sleeper.pid).create_time(), "log")
    adopted_lease_s = Timing(lease_ttl=descriptor.lease_ttl).adopted_lease_s
    assert sup.adopt(sup.registry.netlet(netlet), descriptor.lease_ttl)
    lease = lessor.get(lease_id_of(netlet))
    assert lease is not None and lease.remaining() > 10 * adopted_lease_s, \
        f"the adoption lease runs during recovery: {lease.remaining():.2f}s left"
    sup.start_serving()
    lease = lessor.get(lease_id_of(netlet))
    assert adopted_lease_s - 0.5 < lease.remaining() <= adopted_lease_s
    assert lease.ttl == adopted_lease_s
