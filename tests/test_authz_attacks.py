"""Issue 14, items 4, 8, 10, 11: attacks through a real node's endpoints and the real CLI.

Each test is the attack the review ran (or the documented command that failed), checked
against what must hold: names that become paths stay under their root, codebases are
bounded, link-free and collected, warrants are UTF-8 only, and the README's delegation works.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

import warrants
from hosting.client import HostingClient
from hosting.codebases import MAX_MEMBERS, MAX_UNPACKED_BYTES
from hosting.daemon import start_background
from testkit.node import APPS, JTRIX, descriptor_xml, events_of
from testkit.procs import process_dead
from testkit.wait import wait_for
from warrants.errors import BadInput

pytestmark = pytest.mark.timeout(120)

ECHO = '<netlet type="w" class="workers:Echo" replicas="1"/>'
LOG_NAME = "29991231T235959.999999Z-9.log"  # sorts after any real run's log


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def delegated(node, rights, app=None) -> tuple[bytes, object]:
    """A warrant delegated from the node's admin warrant (as a colleague would get one)."""
    admin_key = warrants.load_private_key(node.home / "admin.key.pem")
    holder = warrants.generate_key()
    xml = warrants.issue_warrant(admin_key, warrants.make_self_signed_cert(admin_key, "admin"), rights=rights,
                                 app=app, holder=holder.public_key(), not_before=_now() - dt.timedelta(minutes=1),
                                 not_after=_now() + dt.timedelta(hours=1),
                                 parent_xml=(node.home / "admin.warrant.xml").read_bytes())
    return xml, holder


def status_client(node) -> HostingClient:
    """A client holding only ``status``, for every app: what the review's attacker held."""
    xml, key = delegated(node, ["status"])
    return HostingClient(node.client.uri, xml, key)


# -- item 4: names that become paths -------------------------------------------------------
def test_logs_refuses_app_and_slot_names_that_lead_outside_the_logs_root(node, tmp_path):
    outside = tmp_path / "outside" / "x"
    outside.mkdir(parents=True)
    (outside / LOG_NAME).write_text("SECRET outside the home\n")
    (outside / "secret.log").write_text("SECRET outside the home\n")
    client = status_client(node)
    escape = os.path.relpath(outside.parent, node.home / "logs")
    wait_for(lambda: node.home.joinpath("node.log").exists(), 10, "node.log")
    attempts = [(escape, "x"), ("..", "."), ("..", ""), ("a", ".."), ("../../..", "tmp"), ("a/../..", "x"),
                ("a", "w/../../../../outside/x"), ("A", "w/0"), ("a", "w/00"), ("a\0", "w/0")]
    for app, slot in attempts:
        with pytest.raises(BadInput, match="bad (app name|slot)"):
            client.call("logs", app, slot)


def test_logs_do_not_follow_a_link_planted_among_a_netlets_logs(node, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET the netlet should not read through the node\n")
    node.launch(descriptor_xml("planted", ECHO), tmp_path)
    node.wait_running("planted")
    log_dir = node.home / "logs" / "planted" / "w-0"
    wait_for(lambda: any(log_dir.glob("*.log")), 10, "the netlet's log")
    (log_dir / LOG_NAME).symlink_to(secret)  # what a netlet running as the node's user can do
    chunk = status_client(node).call("logs", "planted", "w/0")
    assert b"SECRET" not in chunk["data"]
    assert Path(chunk["path"]).name != LOG_NAME


def test_has_codebase_and_submit_refuse_ids_that_are_not_a_sha256(node, tmp_path):
    xml, key = delegated(node, ["launch", "status"])
    client = HostingClient(node.client.uri, xml, key)
    with pytest.raises(BadInput, match="64 lowercase hex"):
        client.call("has_codebase", "../../../etc")
    evil = tmp_path / "evil"  # code outside the home, never uploaded
    shutil.copytree(APPS / "workers", evil)
    desc = descriptor_xml("evil", ECHO).encode()
    for sha in (os.path.relpath(evil, node.home / "codebases"), str(evil), "A" * 64):
        with pytest.raises(BadInput, match="64 lowercase hex"):
            client.call("submit_app", desc, str(tmp_path / "d.xml"), sha)
    assert node.client.call("status")["apps"] == []


# -- item 8: codebase sizes, links, collection ---------------------------------------------
def _tgz(add_members) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        add_members(tar)
    return raw.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def _file(tar, name: str, data: bytes = b"x = 1\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar, name: str, target: str, kind=tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _bomb(tar) -> None:
    info = tarfile.TarInfo("zeros.bin")
    info.size = MAX_UNPACKED_BYTES + 1
    tar.addfile(info, _Zeros(info.size))


HOSTILE_ARCHIVES = {
    "a compression bomb": (_bomb, "unpacks to more than"),
    "too many members": (lambda tar: [_file(tar, f"m{i}", b"") for i in range(MAX_MEMBERS + 1)], "members"),
    "a symbolic link inside the tree": (lambda tar: (_file(tar, "a.py"), _link(tar, "b.py", "a.py")), "link"),
    "a symbolic link out of the tree": (lambda tar: _link(tar, "passwd", "/etc/passwd"), "link"),
    "a hard link": (lambda tar: (_file(tar, "a.py"), _link(tar, "b.py", "a.py", tarfile.LNKTYPE)), "link"),
}


@pytest.mark.parametrize("what", list(HOSTILE_ARCHIVES))
def test_a_hostile_codebase_archive_is_refused_and_leaves_nothing_on_disk(node, what):
    add_members, cause = HOSTILE_ARCHIVES[what]
    data = _tgz(add_members)
    assert len(data) < 2 * 1024 * 1024  # small on the wire, whatever it unpacks to
    before = sorted(p.name for p in (node.home / "codebases").iterdir())
    with pytest.raises(BadInput, match=cause):
        node.client.call("upload_codebase", data, None)
    assert sorted(p.name for p in (node.home / "codebases").iterdir()) == before


def test_codebases_no_app_uses_are_collected_on_terminate_and_on_start(node, tmp_path):
    node.launch(descriptor_xml("first", ECHO), tmp_path)
    node.launch(descriptor_xml("second", ECHO), tmp_path)  # the same codebase: shared
    node.wait_running("first")
    node.wait_running("second")
    (shared,) = {p.name for p in (node.home / "codebases").iterdir() if p.is_dir()}
    assert node.client.call("terminate", "first", 0.0, 30.0)
    assert (node.home / "codebases" / shared).is_dir()  # "second" still uses it
    assert node.client.call("terminate", "second", 0.0, 30.0)
    assert not (node.home / "codebases" / shared).exists()
    assert not (node.home / "codebases" / f"{shared}.tar.gz").exists()
    assert events_of(node, "codebases.collected")[-1]["detail"]["codebases"] == [shared]

    # Uploaded but never submitted: kept while this run may still submit it, gone at the next start.
    orphan = node.client.call("upload_codebase", _tgz(lambda tar: _file(tar, "orphan.py")), None)
    assert node.client.call("has_codebase", orphan) is True
    _stop_node(node)
    start_background(node.home)
    node.client = HostingClient.for_home(node.home)
    assert node.client.call("has_codebase", orphan) is False
    assert sorted(p.name for p in (node.home / "codebases").iterdir()) == []


def _stop_node(node) -> None:
    pid = node.info["pid"]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: process_dead(pid), 20, "the node to stop")


# -- item 10: UTF-8 only -------------------------------------------------------------------
def test_a_warrant_declared_in_another_encoding_is_refused(node):
    xml, key = delegated(node, ["status"])

    def declared(encoding: str) -> bytes:  # the signature covers the tree, not the declaration
        return f"<?xml version='1.0' encoding='{encoding}'?>\n".encode() + xml

    assert HostingClient(node.client.uri, declared("UTF-8"), key).call("status")["apps"] == []
    for encoding in ("ISO-8859-1", "latin1", "US-ASCII"):
        relabelled = declared(encoding)
        with pytest.raises(BadInput, match="only UTF-8"):
            HostingClient(node.client.uri, relabelled, key).call("status")


# -- item 11: the README's delegation, through the real CLI ---------------------------------
def test_the_documented_read_only_delegation_works_through_the_cli(node, tmp_path):
    home = node.home
    env = {k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")}
    env["JTRIX_HOME"] = str(home)

    def jtrix(*args):
        return subprocess.run([*JTRIX, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)

    node.launch(descriptor_xml("shared", ECHO), tmp_path)
    node.wait_running("shared")
    made = jtrix("warrant", "keygen", "--out", "colleague.pem")
    assert made.returncode == 0, made.stderr
    given = jtrix("warrant", "delegate", f"{home}/admin.warrant.xml", "--key", f"{home}/admin.key.pem",
                  "--right", "status", "--expires", "30d", "--holder", "colleague.crt.pem",
                  "--out", "colleague.warrant.xml")
    assert given.returncode == 0, given.stderr
    as_colleague = ("--warrant", "colleague.warrant.xml", "--key", "colleague.pem")
    seen = jtrix("status", *as_colleague)
    assert seen.returncode == 0 and "shared" in seen.stdout, seen.stderr
    refused = jtrix("terminate", "shared", *as_colleague)
    assert refused.returncode == 2 and "does not grant 'terminate'" in refused.stderr
    assert "Traceback" not in refused.stderr
    stolen = jtrix("status", "--warrant", "colleague.warrant.xml")  # without the colleague's key
    assert stolen.returncode == 2 and "Traceback" not in stolen.stderr
    assert node.app("shared")["state"] == "running"


def test_no_warrant_issued_by_the_cli_carries_the_member_right(node, tmp_path):
    home = node.home
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JTRIX_")}, "JTRIX_HOME": str(home)}
    attempts = [["delegate", f"{home}/admin.warrant.xml", "--key", f"{home}/admin.key.pem"],
                ["issue", "--key", f"{home}/node.key.pem", "--cert", f"{home}/node.crt.pem"]]
    for command in attempts:
        got = subprocess.run([*JTRIX, "warrant", *command, "--right", "status,member", "--expires", "1h",
                              "--out", "m.xml"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert got.returncode == 2 and "'member'" in got.stderr and "Traceback" not in got.stderr, got.stderr
        assert not (tmp_path / "m.xml").exists()
    admin = warrants.verify_warrant((home / "admin.warrant.xml").read_bytes(),
                                    [warrants.load_cert(home / "node.crt.pem")])
    assert admin.rights == warrants.CLIENT_RIGHTS and "member" not in admin.rights
