"""The supervisor never holds its lock across a spawn (issue 13, finding 5): while one slot's
start is still inside the node's slow part of a spawn (``make_secrets``: key generation and
signing), another netlet's death is recorded and the supervisor answers elections' questions.
(It used to hold the lock across the whole spawn: with 50 replacements starting, the death of
the 50th master was noticed 7-18 s late and every election's gather waited behind spawns.)

A real supervisor on a real registry, home and pid watcher; the dying netlet is a real process
the supervisor adopts, the slow spawn a ``make_secrets`` held until the checks are done."""

from __future__ import annotations

import threading

import pytest

from testkit.manyapps import kvstore_xml
from testkit.supervision import supervised
from testkit.wait import wait_for

APP = "kv0"


class SlowSpawn(Exception):
    """The held spawn gives up once released (so no process of it is left behind)."""


@pytest.fixture
def supervisor(tmp_path):
    held, entered = threading.Event(), threading.Event()

    def make_secrets(app, slot, netlet_id, incarnation, resources):
        entered.set()
        held.wait(30)
        raise SlowSpawn(netlet_id)

    with supervised(tmp_path, {APP: kvstore_xml(APP, replicas=2)}, make_secrets=make_secrets) as rig:
        try:
            yield rig, held, entered
        finally:
            held.set()


def test_a_death_is_recorded_and_questions_answered_while_a_spawn_is_in_progress(supervisor):
    rig, held, entered = supervisor
    sup = rig.supervisor
    slots = [s["slot"] for s in sup.registry.slots(APP)]
    netlet, sleeper = rig.adoptee(APP, slots[0])
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
