"""App uids and codebase gids are claimed machine-wide (``hosting.machine_ids``).

Found while chasing a cluster test's failure in the full suite (a netlet died with its node
while only the node was killed; that failure did not reproduce, and whether it was this is not
established): the nodes of a test cluster on one machine each allocated ids from their own
registry, so all three gave their kvstore netlets uid 61184. Apps of different homes on one
machine could share a uid (files, signals), and one node's sweep of an app's uid
(``confine.kill_uid``) would kill another node's netlets. Two registries on one machine now never
hand out one id (the last test fails with the claims disabled: ``assert (61184 != 61184)``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hosting.confine import Confinement, unknown_to_system
from hosting.home import ID_RANGE, ensure_home
from hosting.machine_ids import MachineIds
from hosting.registry import Registry


def test_a_claim_is_one_homes_until_it_releases_it_or_its_home_is_gone(tmp_path):
    root = tmp_path / "claims"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ids_a, ids_b = MachineIds(a, root), MachineIds(b, root)
    assert ids_a.claim(7, "app:x") and ids_a.claim(7, "app:x")  # idempotent for its holder
    assert not ids_b.claim(7, "app:y") and not ids_a.claim(7, "app:other")
    ids_b.release(7, "app:y")  # not b's: nothing happens
    assert not ids_b.claim(7, "app:y")
    ids_a.release(7, "app:x")
    assert ids_b.claim(7, "app:y")
    b.rmdir()  # a deleted home runs nothing: its claims are stale
    assert ids_a.claim(7, "app:x")


def test_racing_processes_never_both_win_an_id(tmp_path):
    root = tmp_path / "claims"
    homes = []
    for n in range(6):
        (tmp_path / f"h{n}").mkdir()
        homes.append(tmp_path / f"h{n}")
    code = ("import sys; from pathlib import Path; from hosting.machine_ids import MachineIds;"
            "print(MachineIds(Path(sys.argv[1]), Path(sys.argv[2])).claim(42, 'app:z'))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(h), str(root)], stdout=subprocess.PIPE, text=True)
             for h in homes]
    won = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert won.count("True") == 1, won


@pytest.mark.skipif(os.geteuid() != 0, reason="ids are allocated in uid mode, as root")
def test_two_homes_on_one_machine_give_their_apps_different_uids(tmp_path):
    root = tmp_path / "claims"
    confinements = []
    for name in ("n1", "n2"):
        home = ensure_home(tmp_path / name)
        confinements.append(Confinement(home, Registry(home.registry), "uid", MachineIds(home.root, root)))
    codebase = tmp_path / "codebase"
    codebase.mkdir()
    work = [c.home.app_dir("kv") / "slots" / "store-0" for c in confinements]
    uids = [c.prepare("kv", codebase, w, []).uid for c, w in zip(confinements, work)]
    assert uids[0] != uids[1] and all(u in ID_RANGE and unknown_to_system(u) for u in uids)
    confinements[0].released("kv")
    assert confinements[1].prepare("kv", codebase, work[1], []).uid == uids[1]  # its own, kept
