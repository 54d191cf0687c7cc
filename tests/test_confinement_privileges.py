"""A hostile netlet against the kernel's own doors (security review B1, B2), through a real node:
it must run without root and without capabilities, must not change the mode of the node's files
(Landlock governs opening, not chmod), and must not open packet or raw sockets (which would let
it read other apps' credentials off loopback).

Three ways a node runs here:
  * as root, started plainly by this test (root) — this interpreter may live where other users
    cannot reach it (a pyenv under /root) and the home is below pytest's private temp directory:
    the node must still give every app its own uid (never run app code as root);
  * as root in an open home (``python_for_others``): the ordinary ``uid`` mode;
  * as nobody (``landlock`` mode): the netlet shares the node's uid, so chmod is the hole.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import psutil
import pytest

from hosting.confine import ID_RANGE
from netlets import landlock
from testkit.node import JTRIX, cleanup_node
from test_confinement import (NOBODY, launch, netlets_xml, open_home, published,  # noqa: F401 (fixtures)
                              python_for_others, start_node_as_nobody, start_node_as_root)

SECRETS = ("admin.key.pem", "node.key.pem", "secrets.key", "registry.sqlite")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the node runs as root or is started as nobody (needs root)")


def _modes(home, names):
    return {name: stat.S_IMODE(os.lstat(home / name).st_mode) for name in names}


def attack(node, tmp) -> dict:
    """The hostile netlet's attempts against the node's secrets, the home, node.json and loopback;
    asserts every one failed and nothing on disk changed; returns what it saw of itself."""
    home = node.home
    targets = [*SECRETS, ".", "run/node.json"]
    before = _modes(home, targets)
    launch(node, netlets_xml("mallory", chmod="|".join(str(home / t) for t in targets), raw="1"), tmp)
    seen = published(node, "mallory")
    assert seen["probes"] and {k: v for k, v in seen["probes"].items() if not v.startswith("denied")} == {}, \
        seen["probes"]
    assert _modes(home, targets) == before
    own = seen["own"]
    assert own["write data"] == "ok" and own["fchmod own file 0600"].startswith("denied"), own  # fchmod: none at all
    caps = own["privileges"]
    assert {k: caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapAmb"), "0000000000000000"), caps
    assert caps["NoNewPrivs"] == "1" and caps["Seccomp"] == "2", caps
    return own


@ROOT_ONLY
def test_a_root_node_never_runs_app_code_as_root_even_where_others_cannot_reach_python(tmp_path, monkeypatch):
    home = tmp_path / "home"  # below /tmp/pytest-of-root (0700): other users cannot reach it
    home.mkdir(mode=0o700)
    monkeypatch.setenv("JTRIX_HOME", str(home))
    node = start_node_as_root(home, ([], sys.executable, {}))
    try:
        status = node.client.call("host_status")["confinement"]
        assert status["mode"] == "uid", status
        own = attack(node, tmp_path)
        assert own["uid"] in ID_RANGE, own
        caps = own["privileges"]
        assert set(caps["uids"]) == {str(own["uid"])} and "0" not in caps["gids"], caps
        assert caps["CapBnd"] == "0000000000000000", caps
    finally:
        cleanup_node(node)


@ROOT_ONLY
def test_a_netlet_under_its_own_uid_changes_no_mode_and_opens_no_raw_socket(open_home, tmp_path, monkeypatch,
                                                                           python_for_others):
    monkeypatch.setenv("JTRIX_HOME", str(open_home))
    node = start_node_as_root(open_home, python_for_others)
    try:
        own = attack(node, tmp_path)
        assert own["uid"] in ID_RANGE and own["privileges"]["CapBnd"] == "0000000000000000", own
    finally:
        cleanup_node(node)


@pytest.mark.skipif(landlock.abi() == 0, reason="landlock unavailable")
@ROOT_ONLY
def test_a_netlet_with_the_nodes_uid_changes_no_mode_and_opens_no_raw_socket(open_home, tmp_path,
                                                                             python_for_others):
    node = start_node_as_nobody(open_home, python_for_others)
    try:
        assert node.client.call("host_status")["confinement"]["mode"] == "landlock"
        own = attack(node, tmp_path)
        assert own["uid"] == NOBODY, own
        # what the review did next: another local user reads the key (it must still be the node's alone)
        other = subprocess.run(["setpriv", "--reuid=12345", "--regid=12345", "--clear-groups", "--", "head", "-c1",
                                str(open_home / "node.key.pem")], capture_output=True, timeout=30)
        assert other.returncode != 0 and other.stdout == b"", other
    finally:
        cleanup_node(node)


@ROOT_ONLY
@pytest.mark.parametrize("mode", ["landlock", "none"])
def test_a_root_node_refuses_a_confinement_that_would_run_app_code_as_root(tmp_path, mode):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")}
    for argv in ([sys.executable, "-m", "hosting.daemon", "--home", str(home), "--confine", mode],
                 [*JTRIX, "host", "start", "--home", str(home), "--confine", mode]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2, out
        assert len(out.stderr.strip().splitlines()) == 1 and "app code never runs as root" in out.stderr, out.stderr
    assert not [p for p in psutil.process_iter(["cmdline"])  # no node was left running
                if "hosting.daemon" in (p.info["cmdline"] or ()) and str(home) in (p.info["cmdline"] or ())]
