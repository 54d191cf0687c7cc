"""Netlets are confined (issue 14, item 2) and the home is private (item 7), through a real node.

A hostile netlet (``tests/apps/hostile``) tries to read the node's keys, its
registry and another app's slot directory, and to signal the node and another
app's netlet; every attempt must fail while the netlet can still use its own
data directory, code and private TMPDIR. Two modes:
  * ``uid``: the node runs as root (this test process must be root) in a home
    below searchable directories: one uid per app;
  * ``landlock``: the node runs as ``nobody`` (setpriv) in a home owned by it,
    so the netlet has the node's uid and only Landlock stands in between.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from hosting.client import HostingClient
from hosting.confine import ID_RANGE, runtime_paths, unreachable
from hosting.daemon import node_answers, stop
from hosting.home import ensure_home
from netlets import landlock
from testkit.node import APPS, RunningNode, cleanup_node, descriptor_xml, start_node
from testkit.wait import wait_for

NOBODY = 65534
HOSTILE = APPS / "hostile"


def netlets_xml(name: str, read: str = "", listing: str = "", signal: str = "", escape: str = "0",
                plant: str = "", chmod: str = "", raw: str = "0") -> str:
    return descriptor_xml(name, f"""
  <netlet type="probe" class="hostile:Prober" replicas="1">
    <resource kind="directory" name="data"/>
    <param name="read">{read}</param>
    <param name="list">{listing}</param>
    <param name="signal">{signal}</param>
    <param name="escape">{escape}</param>
    <param name="plant">{plant}</param>
    <param name="chmod">{chmod}</param>
    <param name="raw">{raw}</param>
  </netlet>""", codebase=HOSTILE)


@pytest.fixture
def open_home(open_tmp):
    """A home directory below directories every user can search (``open_tmp``)."""
    return open_tmp


#: in a private mount namespace: keep the installation ($0) at $1, put a searchable tmpfs over
#: the ancestor others cannot search ($2), bind the installation back at its own path, exec the rest
_REVEAL = ('mount --bind "$0" "$1" && mount -t tmpfs -o mode=0755 jtrix-test "$2" && mkdir -p "$0" && '
           'mount --bind "$1" "$0" && shift 2 && exec "$@"')


@pytest.fixture
def python_for_others():
    """``(prefix, python, env)``: how to run this interpreter so that other users can run it too.

    When it lives where they cannot reach (pyenv under /root), the node runs in a private mount
    namespace (``unshare``) where a tmpfs hides that ancestor and the installation is bound back
    at its own path; the node's netlets inherit the namespace, nothing else sees it."""
    blocked = [p for p in runtime_paths() if unreachable(p, itself=True) is not None]
    if not blocked:
        yield [], sys.executable, {}
        return
    install = Path(os.path.realpath(sys.base_prefix))
    ancestor = unreachable(install)
    if shutil.which("unshare") is None or ancestor is None or any(not Path(os.path.realpath(p)).is_relative_to(
            install) and unreachable(p, itself=True) for p in blocked):
        pytest.skip(f"other users cannot run {sys.executable} ({blocked[0]}) and it cannot be revealed to them")
    keep = Path(tempfile.mkdtemp(prefix="jtrix-python-", dir="/tmp"))
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _REVEAL,
              str(install), str(keep), str(ancestor)]
    try:
        yield prefix, sys.executable, {}
    finally:
        os.rmdir(keep)  # an empty mount point here: the bind mount was private to the namespace


def start_node_process(home: Path, prefix: list[str], python: str = sys.executable,
                       env_extra: dict[str, str] | None = None) -> RunningNode:
    """``python -m hosting.daemon`` for ``home`` behind ``prefix`` (e.g. setpriv), hermetic
    (no JTRIX_* of the caller); returns once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")} | (env_extra or {})
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen([*prefix, python, "-m", "hosting.daemon", "--home", str(home),
                                 "--listen", "127.0.0.1:0"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd="/", start_new_session=True, env=env)
    running = RunningNode(home, None, extra_pids=[(proc.pid, psutil.Process(proc.pid).create_time())])
    try:
        wait_for(lambda: (node_answers(home) or {}).get("pid") == proc.pid or proc.poll() is not None, 30,
                 "the node to answer")
        if proc.poll() is not None:
            raise AssertionError(f"node exited {proc.returncode}: {(home / 'node.log').read_text()[-2000:]}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    running.client = HostingClient.for_home(home)
    return running


def start_node_as_nobody(home: Path, python_for_others) -> RunningNode:
    """The node as an unprivileged user: ``setpriv`` to nobody, home owned by nobody."""
    os.chown(home, NOBODY, NOBODY)
    (home / "node.log").touch(mode=0o600)
    os.chown(home / "node.log", NOBODY, NOBODY)
    prefix, python, env = python_for_others
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return start_node_process(home, [*prefix, *setpriv], python, env)


def start_node_as_root(home: Path, python_for_others) -> RunningNode:
    prefix, python, env = python_for_others
    return start_node_process(home, prefix, python, env)


def launch(node: RunningNode, xml: str, tmp: Path) -> None:
    node.launch(xml, tmp)


def published(node: RunningNode, app: str) -> dict:
    try:
        return wait_for(lambda: node.slot(app, "probe/0").get("app_status", {}).get("probes") is not None and
                        node.slot(app, "probe/0")["app_status"], 30, f"{app}'s probes published")
    except AssertionError as err:
        logs = sorted((node.home / "logs" / app).rglob("*.log"))
        tail = logs[-1].read_text()[-3000:] if logs else "(no netlet log)"
        raise AssertionError(f"{err}\n--- netlet log:\n{tail}\n--- node log:\n"
                             f"{(node.home / 'node.log').read_text()[-2000:]}") from None


def assert_confined(node: RunningNode, tmp: Path) -> dict:
    """Start a victim app and a hostile one aimed at the node and the victim; every probe must fail."""
    home = node.home
    launch(node, netlets_xml("victim"), tmp)
    victim = published(node, "victim")
    victim_pid = node.slot("victim", "probe/0")["pid"]
    victim_slot = home / "apps" / "victim" / "slots" / "probe-0"
    wait_for(lambda: (victim_slot / "data" / "mine").exists(), 10, "the victim's own file")
    targets = [home / "admin.key.pem", home / "node.key.pem", home / "admin.warrant.xml",
               home / "registry.sqlite", home / "registry.sqlite-wal", home / "secrets.key",
               victim_slot / "data" / "mine"]
    listings = [home, home / "apps", victim_slot, home / "logs"]
    launch(node, netlets_xml("mallory", read="|".join(map(str, targets)), listing="|".join(map(str, listings)),
                             signal=f"{node.info['pid']}|{victim_pid}"), tmp)
    seen = published(node, "mallory")
    assert seen["probes"] and all(v.startswith("denied") for v in seen["probes"].values()), seen["probes"]
    assert seen["own"]["write data"] == "ok" and seen["own"]["read own code"] == "ok", seen["own"]
    assert seen["own"]["tmpdir"] == str(home / "apps" / "mallory" / "slots" / "probe-0" / ".tmp")
    assert victim["own"]["write data"] == "ok"
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="uid confinement needs the node to run as root")
def test_hostile_netlet_under_its_own_uid_reaches_nothing_of_the_node_or_other_apps(open_home, tmp_path,
                                                                                    monkeypatch, python_for_others):
    monkeypatch.setenv("JTRIX_HOME", str(open_home))
    node = start_node_as_root(open_home, python_for_others)
    try:
        seen = assert_confined(node, tmp_path)
        assert seen["own"]["uid"] in ID_RANGE
        status = node.client.call("host_status")["confinement"]
        assert status["mode"] == "uid", status
        victim_uid = os.stat(open_home / "apps" / "victim" / "slots" / "probe-0").st_uid
        assert victim_uid in ID_RANGE and victim_uid != seen["own"]["uid"]
        for above in (open_home / "apps" / "mallory", open_home / "apps" / "mallory" / "slots"):
            st = os.stat(above)  # the node's: no netlet can swap a slot directory for a link
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, seen["own"]["uid"], 0o710), above
        ensure_home(open_home)  # what jtrix-launch does on the same home: must not lock the netlets out
        assert [stat.S_IMODE(os.stat(open_home / p).st_mode) for p in (".", "apps", "codebases", "node.json")] == \
            [0o711, 0o711, 0o711, 0o644]
    finally:
        cleanup_node(node)


@pytest.mark.skipif(os.geteuid() != 0, reason="uid confinement needs the node to run as root")
def test_terminate_kills_what_escaped_under_the_apps_uid_and_gives_the_uid_back(open_home, tmp_path, monkeypatch,
                                                                               python_for_others):
    monkeypatch.setenv("JTRIX_HOME", str(open_home))
    node = start_node_as_root(open_home, python_for_others)
    try:
        node.launch(netlets_xml("leaver", escape="1"), tmp_path)
        seen = published(node, "leaver")
        escapee = psutil.Process(seen["escapee"])
        uid = seen["own"]["uid"]
        assert escapee.uids().real == uid and os.getpgid(escapee.pid) != node.slot("leaver", "probe/0")["pid"]
        assert node.client.call("terminate", "leaver", None, 30.0)
        wait_for(lambda: not escapee.is_running() or escapee.status() == psutil.STATUS_ZOMBIE, 10,
                 "the escaped process killed")
        db = sqlite3.connect(str(open_home / "registry.sqlite"))
        try:
            assert db.execute("SELECT COUNT(*) FROM ids WHERE owner='app:leaver'").fetchone()[0] == 0
        finally:
            db.close()
        assert os.stat(open_home / "apps" / "leaver").st_uid == 0
    finally:
        cleanup_node(node)


@pytest.mark.skipif(os.geteuid() != 0, reason="uid confinement needs the node to run as root")
def test_a_confined_netlet_outlives_its_node_and_is_adopted_by_the_next(open_home, tmp_path, monkeypatch,
                                                                         python_for_others):
    monkeypatch.setenv("JTRIX_HOME", str(open_home))
    node = start_node_as_root(open_home, python_for_others)
    try:
        node.launch(netlets_xml("lasting"), tmp_path)
        published(node, "lasting")
        pid = node.slot("lasting", "probe/0")["pid"]
        stop(open_home)
        node.client.close()
        restarted = start_node_as_root(open_home, python_for_others)
        node.extra_pids += restarted.extra_pids
        node.client = restarted.client
        wait_for(lambda: any(e["kind"] == "netlet.adopted" for e in node.events(0, "lasting")), 20, "adoption")
        before = len(node.events(0, "lasting"))
        # an adopted netlet's first lease is 3 s: running past it means it renews with the new node
        wait_for(lambda: node.client.call("host_status")["uptime_s"] > 4.0, 20, "the adoption lease to run out")
        assert node.slot("lasting", "probe/0")["pid"] == pid and psutil.pid_exists(pid)
        assert not [e for e in node.events(0, "lasting")[before:] if e["kind"] == "netlet.exited"]
    finally:
        cleanup_node(node)


@pytest.mark.skipif(landlock.abi() < 6, reason="landlock unavailable (or ABI < 6: no signal scoping)")
@pytest.mark.skipif(os.geteuid() != 0, reason="the node is started as nobody through setpriv (needs root)")
def test_hostile_netlet_with_the_nodes_uid_is_held_by_landlock(open_home, tmp_path, python_for_others):
    node = start_node_as_nobody(open_home, python_for_others)
    try:
        seen = assert_confined(node, tmp_path)
        assert seen["own"]["uid"] == NOBODY
        status = node.client.call("host_status")["confinement"]
        assert status["mode"] == "landlock" and status["landlock"] == f"landlock ABI {landlock.abi()}", status
        shown = node.jtrix("host", "status")
        assert f" confinement: landlock (not root; landlock ABI {landlock.abi()})" in shown.stdout, shown
    finally:
        cleanup_node(node)


@pytest.mark.skipif(landlock.abi() == 0, reason="landlock unavailable")
@pytest.mark.skipif(os.geteuid() != 0, reason="the node is started as nobody through setpriv (needs root)")
def test_a_link_a_netlet_leaves_in_its_slot_opens_nothing_to_its_next_incarnation(open_home, tmp_path,
                                                                                  python_for_others):
    node = start_node_as_nobody(open_home, python_for_others)
    try:
        through_link = open_home / "apps" / "planter" / "slots" / "probe-0" / "data" / "admin.key.pem"
        node.launch(netlets_xml("planter", read=str(through_link), plant=str(open_home)), tmp_path)
        seen = published(node, "planter")
        assert (through_link.parent).is_symlink()  # the second incarnation did start with the link
        assert seen["probes"] == {f"read {through_link}": "denied: PermissionError"}, seen["probes"]
    finally:
        cleanup_node(node)


@pytest.mark.skipif(landlock.abi() == 0, reason="landlock unavailable")
@pytest.mark.skipif(os.geteuid() != 0, reason="the node is started as nobody through setpriv (needs root)")
def test_a_bootstrap_cannot_swap_a_slot_directory_for_a_link(open_home, tmp_path, python_for_others):
    node = start_node_as_nobody(open_home, python_for_others)
    try:
        xml = netlets_xml("swapper", read=str(open_home / "admin.key.pem")).replace(
            "</app>", '  <bootstrap class="hostile:SwapSlot"/>\n</app>')
        node.launch(xml, tmp_path)
        seen = published(node, "swapper")
        assert not (open_home / "apps" / "swapper" / "slots" / "probe-0").is_symlink()
        assert seen["probes"] == {f"read {open_home / 'admin.key.pem'}": "denied: PermissionError"}, seen["probes"]
    finally:
        cleanup_node(node)


def test_a_home_open_to_others_is_closed(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / "notes.txt").write_text("left here by the operator")
    os.chmod(home / "notes.txt", 0o644)
    monkeypatch.setenv("JTRIX_HOME", str(home))
    node = start_node(home)
    try:
        node.launch(netlets_xml("quiet"), tmp_path)
        published(node, "quiet")
        # uid mode (a root node): these are searchable by the apps' uids, by design, never listable
        search_only = {home, home / "apps", home / "run", home / "codebases"} \
            if node.client.call("host_status")["confinement"]["mode"] == "uid" else set()
        exposed = []
        for path in [home, *home.rglob("*")]:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or path in (home / "node.json", home / "run" / "node.json"):
                continue
            if path in search_only and stat.S_IMODE(st.st_mode) == 0o711:
                continue
            if st.st_mode & 0o077 and st.st_gid not in ID_RANGE:
                exposed.append(f"{path.relative_to(home)} {stat.filemode(st.st_mode)}")
        assert not exposed, exposed
        assert stat.S_IMODE(os.stat(home / "secrets.key").st_mode) == 0o600
    finally:
        cleanup_node(node)


def test_app_secrets_are_not_stored_in_clear(node, tmp_path):
    node.launch(netlets_xml("quiet"), tmp_path)
    published(node, "quiet")
    secret = node.app_secret("quiet")
    assert len(secret) >= 16
    stored = b"".join((node.home / name).read_bytes() for name in ("registry.sqlite", "registry.sqlite-wal")
                      if (node.home / name).exists())
    assert len(stored) > 0 and secret not in stored, "the app secret is in clear in the registry"


def test_a_home_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the home to another user")
    home = tmp_path / "theirs"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    out = subprocess.run([sys.executable, "-m", "hosting.daemon", "--home", str(home)], capture_output=True,
                         text=True, timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")})
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [
        f"jtrix-host: home {home} is owned by uid {NOBODY}, not by this node's user 0"], out.stderr
