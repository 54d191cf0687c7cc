"""A control lease that runs out while the registry is locked still requests the next election
(issue 13 follow-up F3 audit: the lease-expiry callback recorded ``control.lost`` before asking
for an election, and a "database is locked" there lost the election request: the app stayed
without a master)."""

from __future__ import annotations

from hosting.election.arbiter import Arbiter
from hosting.control import ControlLeases
from hosting.lessor import Lessor
from hosting.registry import Registry, RegistryEpochStore
from hosting.timers import Timers
from testkit.wait import wait_for
from test_store_retry import Locked


def test_an_expiry_while_the_registry_is_locked_still_requests_an_election(tmp_path):
    reg = Registry(tmp_path / "registry.sqlite")
    reg._db.execute("PRAGMA busy_timeout=20")  # fail fast instead of waiting 5 s
    timers = Timers()
    lost = []
    holder = {}
    lessor = Lessor(timers, lambda lease_id: holder["c"].expired(lease_id.split(":", 1)[1]))
    control = holder["c"] = ControlLeases(reg, Arbiter(RegistryEpochStore(reg)), lessor, lambda *a: lost.append(a))
    try:
        epoch = control.acquire("app", "app/s/0#1", 30)
        with Locked(tmp_path / "registry.sqlite"):
            control.start_timing("app", "app/s/0#1", epoch, 0.1, event=False)  # runs out in 0.1 s
            wait_for(lambda: lost, 5, "the election request after the lease ran out")
        assert lost == [("app", "app/s/0#1", epoch, "expired")]
        assert control.holder("app") is None
    finally:
        timers.stop()
        reg.close()
