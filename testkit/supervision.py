"""A real supervisor without a node: its registry, home, timers, lessor and pid watcher, for tests
of the supervisor's own rules (locks, leases, adoption), and a sleeper process to adopt.

``supervised(tmp_path, apps, **supervisor_args)`` registers each app (name -> descriptor XML) as
the node would and yields a :class:`Rig`; everything it made is stopped on the way out, and every
sleeper :meth:`Rig.adoptee` started is killed (by its own handle, never by name).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

import warrants
from hosting.confine import Confinement
from hosting.home import Home, ensure_home
from hosting.lessor import Lessor
from hosting.registry import Registry
from hosting.supervisor import Supervisor
from hosting.timers import Timers

CODEBASE = "0" * 64
SECRET = b"s" * 32


@dataclass
class Rig:
    supervisor: Supervisor
    registry: Registry
    lessor: Lessor
    home: Home
    descriptors: dict
    sleepers: list[subprocess.Popen] = field(default_factory=list)

    def sleeper(self) -> subprocess.Popen:
        """A process that does nothing for a minute, in its own session (killed on the way out)."""
        popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        self.sleepers.append(popen)
        return popen

    def adoptee(self, app: str, slot: str, incarnation: int = 1) -> tuple[str, subprocess.Popen]:
        """A sleeper recorded as ``app``'s netlet in ``slot``, as a node's earlier run left it:
        (its netlet id, its process), ready for ``supervisor.adopt``."""
        popen = self.sleeper()
        netlet = f"{app}/{slot}#{incarnation}"
        self.registry.add_netlet(netlet, app, slot, incarnation, popen.pid, psutil.Process(popen.pid).create_time(),
                                 "log")
        return netlet, popen


@contextlib.contextmanager
def supervised(tmp_path: Path, apps: dict[str, str], **supervisor_args) -> Iterator[Rig]:
    home = ensure_home(tmp_path / "home")
    registry = Registry(home.registry)
    timers = Timers()
    lessor = Lessor(timers, lambda lease: None)
    supervisor_args.setdefault("make_secrets", lambda *args: {})
    sup = Supervisor(home=home, registry=registry, timers=timers, lessor=lessor,
                     confinement=Confinement(home, registry, "auto"), **supervisor_args)
    rig = Rig(sup, registry, lessor, home, {})
    try:
        for name, xml in apps.items():
            descriptor = rig.descriptors[name] = warrants.parse_descriptor(xml.encode(), "test", read_files=False)
            registry.add_app(name, xml.encode(), "test", CODEBASE, SECRET,
                             [(slot, t.name, {}) for t in descriptor.netlet_types for slot in t.slots])
            sup.register_app(descriptor, tmp_path)
        yield rig
    finally:
        for popen in rig.sleepers:
            if popen.poll() is None:
                popen.kill()
            popen.wait(10)
        sup.shutdown()
        timers.stop()
        registry.close()
