"""The bootstrapper never holds its lock across a spawn (issue 17 item 6): its runs' exits are
reported on the supervisor's pid watcher thread, the one that learns netlets' deaths, and that
thread takes the bootstrapper's lock to handle them. While one app's bootstrap is still being
spawned, another app's bootstrap exit and a netlet's death are both recorded at once. (Holding
the lock across the spawn, as the bootstrapper did on a watcher of its own, would hold up every
netlet's death behind the first bootstrap exit on the shared thread.) A run ended while it is
being spawned is killed as soon as it runs (``hosting.watched``).

A real supervisor on a real registry, home and pid watcher, and a real bootstrapper on them; the
node around them is a stand-in with what the bootstrapper asks of it. A bootstrap's process is a
sleeper (the fork is replaced, so it can be held until the checks are done); the dying netlet a
sleeper the supervisor adopts."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

import warrants
from hosting import bindings, bootstrapper as bootstrapper_module
from hosting.bootstrapper import Bootstrapper
from hosting.spawn import Spawned, new_log_path
from hosting.supervisor import Supervisor, SupervisorHooks
from testkit.manyapps import kvstore_xml
from testkit.procs import process_gone
from testkit.supervision import SECRET, supervised
from testkit.wait import wait_for

APPS = ("kv0", "kv1")



class SlowSpawn(Exception):
    """A held spawn that gives up once released (so no process of it is left behind)."""


class NoNetletStarts(SupervisorHooks):
    """The dead netlet's slot is not refilled (no netlet is started in these tests)."""

    def may_start(self, app, slot):
        return False


class StandInNode:
    """What ``Bootstrapper`` asks of its node, around a real supervisor and registry."""

    def __init__(self, supervisor: Supervisor, home, descriptors: dict, codebase_dir: Path) -> None:
        self.supervisor, self.registry, self.home = supervisor, supervisor.registry, home
        self.descriptors = descriptors
        self.codebases = type("Codebases", (), {"dir_of": staticmethod(lambda sha: codebase_dir)})()
        self.node_key = warrants.generate_key()
        self.node_cert = warrants.make_self_signed_cert(self.node_key, "node")
        self.service_id, self.uri = "svc-test", "tcp://127.0.0.1:1"
        self.doors: set[str] = set()

    def descriptor(self, app):
        return self.descriptors[app]

    def app_instance(self, app):
        return bindings.instance_of(SECRET)

    def issue_tls(self, name):
        return {}

    def door_of(self, holder):
        self.doors.add(holder)
        return {"holder": holder, "key": "00"}

    def close_door(self, holder):
        self.doors.discard(holder)


class Spawns:
    """Replaces the bootstrapper's fork: a sleeper, or (for an app in ``hold``) a fork held until
    ``release``, which then gives up (``give_up``) or forks."""

    def __init__(self) -> None:
        self.hold: dict[str, bool] = {}  # app -> give up once released
        self.entered, self.released = threading.Event(), threading.Event()
        self.sleepers: list[subprocess.Popen] = []

    def __call__(self, *, log_dir, incarnation, env_extra, **_) -> Spawned:
        app = env_extra["JTRIX_APP"]
        if app in self.hold:
            self.entered.set()
            self.released.wait(30)
            if self.hold[app]:
                raise SlowSpawn(app)
        log_dir.mkdir(parents=True, exist_ok=True)
        popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        self.sleepers.append(popen)
        return Spawned(popen.pid, popen, new_log_path(log_dir, incarnation))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    xml = kvstore_xml("APP", replicas=2).replace("</app>", '  <bootstrap class="netlets.bootstrap:Bootstrap"/>\n</app>')
    apps = {app: xml.replace('name="APP"', f'name="{app}"') for app in APPS}
    with supervised(tmp_path, apps, make_secrets=lambda *args: pytest.fail("no netlet is started here"),
                    hooks=NoNetletStarts()) as rig:
        spawns = Spawns()
        monkeypatch.setattr(bootstrapper_module, "spawn_app_process", spawns)
        node = StandInNode(rig.supervisor, rig.home, rig.descriptors, tmp_path)
        try:
            yield node, Bootstrapper(node), spawns, rig
        finally:
            spawns.released.set()
            for p in spawns.sleepers:
                if p.poll() is None:
                    p.kill()


def events(registry, kind):
    return [e for e in registry.events(0) if e.kind == kind]


def test_a_netlet_death_and_a_bootstrap_exit_are_recorded_while_a_bootstrap_spawn_is_held(setup):
    node, boot, spawns, rig = setup
    sup, registry = node.supervisor, node.registry
    first, held = APPS
    boot_pid = boot.start(first, "cold")
    first_door = boot.running(first).door
    assert first_door in node.doors
    slot = registry.slots(first)[0]["slot"]
    netlet, sleeper = rig.adoptee(first, slot)
    assert sup.adopt(registry.netlet(netlet), 1.0)
    spawns.hold[held] = True
    outcome = []

    def start() -> None:
        try:
            outcome.append(boot.start(held, "warm"))
        except SlowSpawn as err:
            outcome.append(err)
    spawn = threading.Thread(target=start, daemon=True)
    spawn.start()
    assert spawns.entered.wait(10)  # the spawn of the second app's bootstrap is held now
    assert boot.running(held).pid == 0  # reserved: it counts as running
    assert boot.start(held, "cold") is None  # so it is not started twice
    assert events(registry, "bootstrap.skipped")[0].detail["reason"] == "a bootstrap is still running (being spawned)"
    # The bootstrap's exit first: on a watcher thread held by it, the netlet's death would wait too.
    psutil.Process(boot_pid).kill()
    wait_for(lambda: events(registry, "bootstrap.failed"), 10, "the bootstrap's exit recorded while a spawn is held")
    sleeper.kill()
    sleeper.wait(10)
    exited = wait_for(lambda: events(registry, "netlet.exited"), 10, "the netlet's death recorded while a spawn is held")
    assert [e.detail["netlet"] for e in exited] == [netlet]
    failed = events(registry, "bootstrap.failed")
    assert [(e.app, e.detail["pid"], e.detail["signal"]) for e in failed] == [(first, boot_pid, "SIGKILL")]
    assert boot.running(first) is None and first_door not in node.doors and process_gone(boot_pid)
    assert spawn.is_alive() and not outcome
    spawns.released.set()
    spawn.join(10)
    assert [type(o) for o in outcome] == [SlowSpawn]
    assert boot.running(held) is None and not node.doors  # the failed spawn left the app free
    assert [e.app for e in events(registry, "bootstrap.started")] == [first]


def test_a_bootstrap_killed_while_it_is_spawned_is_killed_on_arrival(setup):
    node, boot, spawns, _ = setup
    registry = node.registry
    app = APPS[0]
    spawns.hold[app] = False  # released, it forks
    pids, killed = [], []
    spawn = threading.Thread(target=lambda: pids.append(boot.start(app, "cold")), daemon=True)
    spawn.start()
    assert spawns.entered.wait(10)
    kill = threading.Thread(target=lambda: killed.append(boot.kill(app, 10)), daemon=True)
    kill.start()
    wait_for(lambda: boot.running(app).end_reason == "terminated", 10, "the kill to mark the run being spawned")
    assert not killed  # it waits for the run to be gone
    spawns.released.set()
    spawn.join(10)
    kill.join(10)
    assert killed == [True] and pids and pids[0] > 0
    started, failed = events(registry, "bootstrap.started"), events(registry, "bootstrap.failed")
    assert started[0].idx < failed[0].idx  # started always comes first
    assert failed[0].detail["pid"] == pids[0]
    assert failed[0].detail["reason"] == "terminated" and failed[0].detail["signal"] == "SIGKILL"
    assert boot.running(app) is None and not node.doors and process_gone(pids[0])
