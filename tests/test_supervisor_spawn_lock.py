"""The supervisor never holds its lock across a spawn (issue 13, finding 5): while one slot's
start is still inside the node's slow part of a spawn (``make_secrets``: key generation and
signing), another netlet's death is recorded and the supervisor answers elections' questions.
(It used to hold the lock across the whole spawn: with 50 replacements starting, the death of
the 50th master was noticed 7-18 s late and every election's gather waited behind spawns.)

A real supervisor on a real registry, home and pid watcher; the dying netlet is a real process
the supervisor adopts, the slow spawn a ``make_secrets`` held until the checks are done."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil
import pytest

import warrants
from hosting.confine import Confinement
from hosting.home import ensure_home
from hosting.lessor import Lessor
from hosting.registry import Registry
from hosting.supervisor import Supervisor
from hosting.timers import Timers
from testkit.manyapps import kvstore_xml
from testkit.wait import wait_for

APP = "kv0"
CODEBASE = "0" * 64


class SlowSpawn(Exception):
    """The held spawn gives up once released (so no process of it is left behind)."""


@pytest.fixture
def supervisor(tmp_path):
    home = ensure_home(tmp_path / "home")
    registry = Registry(home.registry)
    timers = Timers()
    lessor = Lessor(timers, lambda lease: None)
    held, entered = threading.Event(), threading.Event()

    def make_secrets(app, slot, netlet_id, incarnation, resources):
        entered.set()
        held.wait(30)
        raise SlowSpawn(netlet_id)

    xml = kvstore_xml(APP, replicas=2).encode()
    descriptor = warrants.parse_descriptor(xml, "test", read_files=False)
    registry.add_app(APP, xml, "test", CODEBASE, b"s" * 32,
                     [(slot, t.name, {}) for t in descriptor.netlet_types for slot in t.slots])
    sup = Supervisor(home=home, registry=registry, timers=timers, lessor=lessor, make_secrets=make_secrets,
                     confinement=Confinement(home, registry, "auto"))
    sup.register_app(descriptor, tmp_path)
    try:
        yield sup, held, entered
    finally:
        held.set()
        sup.shutdown()
        timers.stop()
        registry.close()


def test_a_death_is_recorded_and_questions_answered_while_a_spawn_is_in_progress(supervisor):
    sup, held, entered = supervisor
    slots = [s["slot"] for s in sup.registry.slots(APP)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        netlet = f"{APP}/{slots[0]}#1"
        sup.registry.add_netlet(netlet, APP, slots[0], 1, sleeper.pid, psutil.Process(sleeper.pid).create_time(),
                                "log")
        assert sup.adopt(sup.registry.netlet(netlet), 1.0)
        outcome = []

        def start() -> None:
            try:
                outcome.append(sup.start_slot(APP, slots[1], "replace"))
            except SlowSpawn as err:
                outcome.append(err)
        spawn = threading.Thread(target=start, daemon=True)
        spawn.start()
        assert entered.wait(10)  # the spawn of slots[1] is in the node's slow part now
        answered = threading.Event()
        threading.Thread(target=lambda: (sup.is_terminating(APP), answered.set()), daemon=True).start()
        assert answered.wait(10), "the supervisor's answer to an election waited for a spawn"
        sleeper.kill()
        sleeper.wait(10)
        exited = wait_for(lambda: [e for e in sup.registry.events(0) if e.kind == "netlet.exited"], 10,
                          "the death recorded while the spawn is still held")
        assert [e.detail["netlet"] for e in exited] == [netlet]
        assert sup.live_in_slot(APP, slots[1]) is not None  # the slot being spawned counts as taken
        assert sup.start_slot(APP, slots[1]) is None  # so it is not started twice
        held.set()
        spawn.join(10)
        assert [type(o) for o in outcome] == [SlowSpawn]
        assert sup.live_in_slot(APP, slots[1]) is None  # the failed spawn left the slot free
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
