"""jtrix-launch through the real console script: progress, results, refusals that change nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import warrants
from testkit.node import RunningNode, cleanup_node, descriptor_xml

BIN = Path(sys.executable).parent
ECHO2 = '  <netlet type="w" class="workers:Echo" replicas="2"/>'
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def tidy(node):  # noqa: F811
    """The node, with every app terminated (grace 0) after the test: the node reaps its own
    children at once, which is much faster than the harness killing orphans one by one."""
    yield node
    terminate_all(node.client)


def terminate_all(client) -> None:
    for app in client.call("status")["apps"]:
        client.call("terminate", app["name"], 0.0, 8.0)


def launch(home: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "JTRIX_HOME": str(home)}
    env.pop("JTRIX_HOST", None)
    return subprocess.run([str(BIN / "jtrix-launch"), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def snapshot(node) -> tuple:
    """What a refused launch must not change: the apps, the event log, the stored codebases."""
    return (node.client.call("status"), node.events(0), sorted(p.name for p in (node.home / "codebases").iterdir()))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_launch_shows_progress_then_refuses_a_running_app_then_replaces_it(tidy, tmp_path):
    node = tidy
    path = write(tmp_path, "echo.xml", descriptor_xml("echo", ECHO2))
    first = launch(node.home, path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    # not a terminal: plain timestamped lines, one per change, then the summary
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3}  codebase [0-9a-f]{12} uploaded", out, re.M), out
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3}  w/0 +pid +\d+ +running +role worker", out, re.M), out
    assert "echo is ready: 2 netlet(s) running" in out
    assert "jtrix call echo METHOD" in out and 'netlets.connect("echo")' in out
    pids = {n["slot"]: n["pid"] for n in node.app("echo")["netlets"]}
    assert all(n["state"] == "running" and n["phase"] == "running" for n in node.app("echo")["netlets"])

    again = launch(node.home, path)
    assert again.returncode == 2
    assert "already running" in one_line_error(again) and "--replace" in again.stderr
    assert {n["slot"]: n["pid"] for n in node.app("echo")["netlets"]} == pids  # untouched

    replaced = launch(node.home, path, "--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    result = json.loads(replaced.stdout)  # nothing but the JSON result
    assert result["ok"] is True and result["app"] == "echo" and result["uploaded"] is False  # same codebase
    assert result["master"] is None and result["backups"] == []
    assert [n["state"] for n in result["netlets"]] == ["running", "running"]
    new_pids = {n["slot"]: n["pid"] for n in result["netlets"]}
    assert set(new_pids.values()).isdisjoint(pids.values())


def test_master_eligible_app_waits_for_the_master(tidy, tmp_path):
    node = tidy
    netlets = '  <netlet type="c" class="counter:Counter" replicas="2" master-eligible="true"/>'
    root = Path(__file__).resolve().parent.parent
    path = write(tmp_path, "counter.xml", descriptor_xml("counter", netlets, codebase=root / "examples/counter"))
    r = launch(node.home, path, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["master"] is not None and result["epoch"] >= 1
    assert result["backups"] == [n["slot"] for n in result["netlets"] if n["slot"] != result["master"]]
    assert node.app("counter")["master"] == result["master"]


def test_detach_returns_once_submitted(tidy, tmp_path):
    node = tidy
    path = write(tmp_path, "echo.xml", descriptor_xml("detached", ECHO2))
    r = launch(node.home, path, "--detach", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "app": "detached", "submitted": True, "slots": ["w/0", "w/1"],
                                    "codebase": json.loads(r.stdout)["codebase"]}
    assert node.client.call("status", "detached")["apps"][0]["name"] == "detached"


BAD_DESCRIPTORS = {
    "malformed.xml": ('<app xmlns="urn:jtrix:descriptor:1" name="x">\n  <codebase path="."/>\n  <lease', 3),
    "schema.xml": ('<app xmlns="urn:jtrix:descriptor:1" name="x">\n  <codebase path="."/>\n  <surprise/>\n</app>', 3),
    "nowarrant.xml": (descriptor_xml("x", ECHO2).replace("</app>", '  <warrant href="missing.xml"/>\n</app>'), None),
}


def test_bad_descriptors_exit_2_with_file_and_line_and_change_nothing(tidy, tmp_path):
    node = tidy
    before = snapshot(node)
    for name, (text, line) in BAD_DESCRIPTORS.items():
        path = write(tmp_path, name, text)
        r = launch(node.home, path)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        error = one_line_error(r)
        m = re.match(rf"jtrix-launch: {re.escape(path)}:(\d+): ", error)
        assert m, error
        if line is not None:
            assert int(m.group(1)) == line, error
        assert r.stdout == ""
    assert "warrant file missing.xml not found" in error
    missing = launch(node.home, str(tmp_path / "nope.xml"))
    assert missing.returncode == 2 and "descriptor file not found" in one_line_error(missing)
    assert snapshot(node) == before


def test_refused_warrants_exit_2_and_change_nothing(tidy, tmp_path):
    node = tidy
    node_key = warrants.load_private_key(node.home / "node.key.pem")
    node_cert = warrants.load_cert(node.home / "node.crt.pem")
    service = node.client.service
    expired = warrants.issue_warrant(node_key, node_cert, rights=["launch", "status"], service=service,
                                     not_before=NOW - dt.timedelta(hours=2), not_after=NOW - dt.timedelta(hours=1))
    rogue = warrants.generate_key()
    untrusted = warrants.issue_warrant(rogue, warrants.make_self_signed_cert(rogue, "rogue"),
                                       rights=sorted(warrants.KNOWN_RIGHTS), service=service,
                                       not_after=NOW + dt.timedelta(hours=1))
    other_app = warrants.issue_warrant(node_key, node_cert, rights=["launch"], service=service, app="other",
                                       not_after=NOW + dt.timedelta(hours=1))
    (tmp_path / "expired.xml").write_bytes(expired)
    (tmp_path / "untrusted.xml").write_bytes(untrusted)
    (tmp_path / "other.xml").write_bytes(other_app)
    before = snapshot(node)
    cases = {"expired.xml": "expired", "untrusted.xml": "trusted", "other.xml": "covers app 'other' only"}
    for warrant, cause in cases.items():
        # named by the descriptor: file:line of its <warrant> element
        text = descriptor_xml("w", ECHO2).replace("</app>", f'  <warrant href="{warrant}"/>\n</app>')
        path = write(tmp_path, f"desc-{warrant}", text)
        r = launch(node.home, path)
        assert r.returncode == 2, (warrant, r.stdout, r.stderr)
        error = one_line_error(r)
        assert error.startswith(f"jtrix-launch: {path}:5: warrant {tmp_path / warrant} refused: "), error
        assert cause in error, error
        # given with --warrant: the warrant file is named
        plain = write(tmp_path, "plain.xml", descriptor_xml("w", ECHO2))
        r = launch(node.home, plain, "--warrant", str(tmp_path / warrant))
        assert r.returncode == 2, (warrant, r.stdout, r.stderr)
        error = one_line_error(r)
        assert error.startswith(f"jtrix-launch: {tmp_path / warrant}: warrant refused: ") and cause in error, error
    assert snapshot(node) == before


def test_replace_needs_a_warrant_that_may_terminate(tidy, tmp_path):
    """--replace terminates the running app: a launch+status warrant is refused before anything is sent."""
    node = tidy
    node_key = warrants.load_private_key(node.home / "node.key.pem")
    node_cert = warrants.load_cert(node.home / "node.crt.pem")
    now = dt.datetime.now(dt.timezone.utc)
    no_terminate = warrants.issue_warrant(node_key, node_cert, rights=["launch", "status"], service=node.client.service,
                                          app="w", not_after=now + dt.timedelta(hours=1))
    (tmp_path / "launch-only.xml").write_bytes(no_terminate)
    path = write(tmp_path, "w.xml", descriptor_xml("w", ECHO2))
    assert launch(node.home, path).returncode == 0
    pids = {n["slot"]: n["pid"] for n in node.app("w")["netlets"]}
    since = node.events(0)[-1]["index"]
    r = launch(node.home, path, "--replace", "--warrant", str(tmp_path / "launch-only.xml"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    error = one_line_error(r)  # checked locally, before anything is sent
    assert error.startswith(f"jtrix-launch: {tmp_path / 'launch-only.xml'}: warrant refused: ") and \
        "does not grant 'terminate'" in error, error
    assert {n["slot"]: n["pid"] for n in node.app("w")["netlets"]} == pids
    assert not [e for e in node.events(since) if e["kind"].startswith(("app.", "netlet."))]


def test_crash_looping_app_exits_1_with_its_log_lines(tidy, tmp_path):
    node = tidy
    netlets = '  <netlet type="c" class="workers:CrashAtStart" replicas="1"/>'
    path = write(tmp_path, "crashy.xml", descriptor_xml("crashy", netlets, restart='backoff-base="0.2" backoff-cap="1"'))
    r = launch(node.home, path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr.split("---")[0]
    assert "jtrix-launch: crashy/c/0 is crash-looping (backoff)" in r.stderr and "code 3" in r.stderr
    assert "log line(s) of crashy/c/0" in r.stderr
    assert "class workers:CrashAtStart" in r.stderr  # a line from the netlet's own log
    again = launch(node.home, path, "--replace", "--json")
    assert again.returncode == 1
    result = json.loads(again.stdout)
    assert result["ok"] is False and result["slot"] == "c/0" and any("CrashAtStart" in x for x in result["log"])


def test_timeout_exits_1(tidy, tmp_path):
    node = tidy
    path = write(tmp_path, "slow.xml", descriptor_xml("slow", ECHO2))
    r = launch(node.home, path, "--timeout", "0.1")
    assert r.returncode == 1
    assert "timed out after 0.1s" in r.stderr


def test_without_a_node_launch_starts_the_local_one(tmp_path):
    home = tmp_path / "fresh"
    env = {**os.environ, "JTRIX_HOME": str(home)}
    for args in (["host", "status"], ["status"], ["status", "x", "--json"]):
        r = subprocess.run([str(BIN / "jtrix"), *args], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 3, (args, r.stderr)
        assert "no hosting node is running" in one_line_error(r)
    path = write(tmp_path, "echo.xml", descriptor_xml("echo", ECHO2))
    from hosting.client import HostingClient
    from hosting.daemon import node_answers

    rogue = warrants.generate_key()
    (tmp_path / "rogue.xml").write_bytes(warrants.issue_warrant(
        rogue, warrants.make_self_signed_cert(rogue, "rogue"), rights=["launch"], service="local",
        not_after=NOW + dt.timedelta(hours=1)))
    refused = launch(home, path, "--warrant", str(tmp_path / "rogue.xml"))
    assert refused.returncode == 2 and "warrant refused" in one_line_error(refused)
    assert node_answers(home) is None  # a refused launch does not even start the node
    try:
        r = launch(home, path, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ok"] is True
    finally:
        if (home / "node.json").exists():
            client = HostingClient.for_home(home)
            terminate_all(client)
            cleanup_node(RunningNode(home, client))


def test_remote_host_needs_a_warrant_and_checks_it(tidy, tmp_path):
    node = tidy
    path = write(tmp_path, "echo.xml", descriptor_xml("remote", ECHO2))
    uri = node.info["uri"]
    r = launch(node.home, path, "--host", uri)
    assert r.returncode == 2 and "--host needs a warrant" in one_line_error(r)
    r = launch(node.home, path, "--host", "not a uri", "--warrant", str(node.home / "admin.warrant.xml"))
    assert r.returncode == 2 and "not a Pyro URI" in one_line_error(r)
    r = launch(node.home, path, "--host", "PYRO:jtrix.hosting@127.0.0.1:1",
               "--warrant", str(node.home / "admin.warrant.xml"), "--key", str(node.home / "admin.key.pem"))
    assert r.returncode == 3 and "unreachable" in one_line_error(r)
    r = launch(node.home, path, "--host", uri, "--warrant", str(node.home / "admin.warrant.xml"))
    assert r.returncode == 2 and "holder key" in one_line_error(r)  # the admin warrant is holder-bound
    r = launch(node.home, path, "--host", uri, "--warrant", str(node.home / "admin.warrant.xml"),
               "--key", str(node.home / "admin.key.pem"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["app"] == "remote"


@pytest.mark.parametrize("prog", ["jtrix", "jtrix-launch"])
def test_shell_completion_script(prog):
    var = "_" + prog.upper().replace("-", "_") + "_COMPLETE"
    r = subprocess.run([str(BIN / prog)], capture_output=True, text=True, env={**os.environ, var: "bash_source"},
                       timeout=30)
    assert r.returncode == 0 and "complete -o nosort -F" in r.stdout


def test_a_launch_only_warrant_can_detach_but_not_follow(tidy, tmp_path):
    node = tidy
    node_key = warrants.load_private_key(node.home / "node.key.pem")
    node_cert = warrants.load_cert(node.home / "node.crt.pem")
    (tmp_path / "launch-only.xml").write_bytes(warrants.issue_warrant(
        node_key, node_cert, rights=["launch"], service=node.client.service,
        not_after=NOW + dt.timedelta(hours=1)))  # service-wide: the node checks codebase calls with no app
    path = write(tmp_path, "scoped.xml", descriptor_xml("scoped", ECHO2))
    before = snapshot(node)
    r = launch(node.home, path, "--warrant", str(tmp_path / "launch-only.xml"))
    assert r.returncode == 2 and "does not grant 'status'" in one_line_error(r)
    assert snapshot(node) == before
    r = launch(node.home, path, "--warrant", str(tmp_path / "launch-only.xml"), "--detach")
    assert r.returncode == 0, r.stderr
    assert "scoped submitted" in r.stdout
    again = launch(node.home, path, "--warrant", str(tmp_path / "launch-only.xml"), "--detach")
    assert again.returncode == 2 and "already running" in one_line_error(again)  # refused by the node itself


def test_failed_custom_bootstrap_exits_1_with_its_log(tidy, tmp_path):
    node = tidy
    code = tmp_path / "code"
    code.mkdir()
    (code / "boot.py").write_text(
        "from netlets import Bootstrap\n\n\nclass Broken(Bootstrap):\n    def run(self, ctx):\n"
        "        raise RuntimeError('no database configured')\n")
    (code / "workers.py").write_text((Path(__file__).parent / "apps/workers/workers.py").read_text())
    netlets = '  <netlet type="w" class="workers:Echo" replicas="1"/>\n  <bootstrap class="boot:Broken"/>'
    path = write(tmp_path, "boot.xml", descriptor_xml("boot", netlets, codebase=code))
    r = launch(node.home, path, "--timeout", "20")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "jtrix-launch: the bootstrap of boot failed: exited, code 1" in r.stderr
    assert "RuntimeError: no database configured" in r.stderr  # from the bootstrap's log
