"""jtrix status/events/logs/terminate/kill through the real console script, against a real node."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from testkit.node import descriptor_xml
from testkit.procs import process_gone
from testkit.wait import wait_for

BIN = Path(sys.executable).parent
ECHO2 = '  <netlet type="w" class="workers:Echo" replicas="2"/>'
APP_KEYS = {"name", "state", "epoch", "master", "netlets"}
NETLET_KEYS = {"slot", "type", "node", "pid", "state", "role", "epoch", "seq", "restarts", "last_exit", "lease_ms",
               "uptime_s", "cpu_percent", "rss_bytes"}
EVENT_KEYS = {"index", "time", "app", "slot", "kind", "detail"}


@pytest.fixture
def echo(node, tmp_path):  # noqa: F811
    """A running 2-replica ``workers:Echo`` app called "echo", launched by jtrix-launch; terminated after.

    Its lease TTL is long, so a netlet stopped by a test outlives the CLI calls
    of a loaded machine (these tests are about the CLI, not lease expiry)."""
    path = tmp_path / "echo.xml"
    path.write_text(descriptor_xml("echo", ECHO2, lease='ttl="10.0" grace="1.0"'))
    env = {**os.environ, "JTRIX_HOME": str(node.home)}
    r = subprocess.run([str(BIN / "jtrix-launch"), str(path), "--json"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    yield node
    for app in node.client.call("status")["apps"]:
        node.client.call("terminate", app["name"], 0.0, 8.0)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def popen(node, *args: str) -> subprocess.Popen:
    env = {**os.environ, "JTRIX_HOME": str(node.home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([str(BIN / "jtrix"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _lines_of(proc: subprocess.Popen) -> queue.Queue:
    """The queue a reader thread fills with ``proc``'s stdout lines (None at end of output).

    A thread, not select() on the pipe: select() cannot see lines already read
    into the text wrapper's buffer, so two lines arriving in one chunk would
    leave the second unseen until the deadline."""
    lines = getattr(proc, "_line_queue", None)
    if lines is None:
        lines = proc._line_queue = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
    return lines


def read_lines_until(proc: subprocess.Popen, predicate, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout until one satisfies ``predicate`` (the test fails after ``timeout``)."""
    source = _lines_of(proc)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = source.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        if predicate(line):
            return lines
    exited = proc.poll()
    why = f"it exited {exited}: {proc.stderr.read()[-2000:]}" if exited is not None else "it is still running"
    raise AssertionError(f"no matching line within {timeout}s; got {lines}; {why}")


def interrupt(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_status_kill_events_logs_terminate(echo, tmp_path):
    node = echo
    # status: the documented JSON shape, all apps and one app
    data = json.loads(ok(node.jtrix("status", "--json")))
    assert set(data) == {"apps"} and [a["name"] for a in data["apps"]] == ["echo"]
    app = data["apps"][0]
    assert APP_KEYS <= set(app)
    assert [n["slot"] for n in app["netlets"]] == ["w/0", "w/1"]
    for n in app["netlets"]:
        assert NETLET_KEYS <= set(n), NETLET_KEYS - set(n)
        assert n["state"] == "running" and n["type"] == "w" and psutil.pid_exists(n["pid"])
        assert n["restarts"] == 0 and n["last_exit"] is None and n["lease_ms"] is not None  # may read 0 under load
    assert json.loads(ok(node.jtrix("status", "echo", "--json")))["apps"][0]["name"] == "echo"
    table = ok(node.jtrix("status"))
    assert "echo" in table and "w/0" in table and "w/1" in table and "running" in table
    last_index = node.events(0)[-1]["index"]
    old_pid = app["netlets"][0]["pid"]

    # kill: SIGKILL the netlet in w/0; the node replaces it
    out = ok(node.jtrix("kill", "echo/w/0"))
    assert "SIGKILL" in out and "echo/w/0" in out
    wait_for(lambda: process_gone(old_pid), 10, "the killed netlet to be gone")
    node.wait_running("echo")
    new_pid = node.slot("echo", "w/0")["pid"]
    assert new_pid != old_pid

    # events: ndjson with the exit and the replacement of w/0
    lines = ok(node.jtrix("events", "echo", "--json", "--since", str(last_index))).splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(set(e) == EVENT_KEYS and e["app"] == "echo" for e in events)
    assert all(e["index"] > last_index for e in events)
    kinds = [(e["kind"], e["slot"]) for e in events]
    exited = kinds.index(("netlet.exited", "w/0"))
    started = kinds.index(("netlet.started", "w/0"))
    assert exited < started
    assert events[exited]["detail"]["signal"] == "SIGKILL" and events[started]["detail"]["pid"] == new_pid
    text = ok(node.jtrix("events", "echo"))
    assert "netlet.exited" in text and "signal=SIGKILL" in text

    # logs: the last lines of the current run, and of the previous (killed) one
    current = ok(node.jtrix("logs", "echo/w/0", "-n", "5")).splitlines()
    assert 1 <= len(current) <= 5 and any(f"pid {new_pid}" in line for line in current), current
    assert len(ok(node.jtrix("logs", "echo/w/0", "-n", "1")).splitlines()) == 1
    previous = ok(node.jtrix("logs", "echo/w/0", "--previous"))
    assert f"pid {old_pid}" in previous and f"pid {new_pid}" not in previous
    assert node.jtrix("logs", "echo/w/1", "--previous").returncode == 3  # w/1 never restarted

    # terminate: returns once every process is gone
    pids = [n["pid"] for n in node.app("echo")["netlets"]]
    out = ok(node.jtrix("terminate", "echo", "--grace", "1"))
    assert "echo terminated: 2 netlet(s) stopped" in out
    assert not any(psutil.pid_exists(p) for p in pids)
    assert json.loads(ok(node.jtrix("status", "--json"))) == {"apps": []}
    assert node.jtrix("status", "echo").returncode == 3


def test_unknown_names_and_bad_arguments(node):  # noqa: F811
    cases = [
        (("status", "nosuchapp"), 3, "no app named 'nosuchapp'"),
        (("status", "nosuchapp", "--json"), 3, "no app named"),
        (("terminate", "nosuchapp"), 3, "no app named"),
        (("kill", "nosuchapp/w/0"), 3, "nosuchapp"),
        (("logs", "nosuchapp/w/0"), 3, "no app named"),
        (("kill", "nosuchapp"), 2, "expected APP/TYPE/INDEX"),
        (("logs", "echo/w"), 2, "expected APP/TYPE/INDEX"),
        (("kill", "x/w/0", "--signal", "HUP"), 2, "HUP"),
        (("logs", "x/w/0", "-f", "--previous"), 2, "cannot be combined"),
        (("events", "--since", "-1"), 2, "--since"),
    ]
    for args, code, text in cases:
        r = node.jtrix(*args)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert ok(node.jtrix("status")).strip() == "no apps"
    assert ok(node.jtrix("events", "nosuchapp", "--json")) == ""


def test_follow_events_logs_and_watch(echo):
    node = echo
    last_index = node.events(0)[-1]["index"]
    follower = popen(node, "events", "echo", "-f", "--json", "--since", str(last_index))
    old_pid = node.slot("echo", "w/1")["pid"]
    logs = popen(node, "logs", "echo/w/1", "-f", "-n", "50")
    watch = popen(node, "status", "echo", "--watch", "--json", "--interval", "0.2")
    try:
        # the follower printed the current run's start line: it follows that run's file (so the kill
        # below makes it cross to the replacement's, which is what this checks)
        read_lines_until(logs, lambda line: f"pid {old_pid}," in line, 15)
        assert ok(node.jtrix("kill", "echo/w/1", "--signal", "TERM"))
        seen = read_lines_until(follower, lambda line: json.loads(line)["kind"] == "netlet.started", 15)
        assert [json.loads(line)["kind"] for line in seen][:1] == ["netlet.signalled"]
        new_pid = json.loads(seen[-1])["detail"]["pid"]
        # logs -f goes on with the replacement's log file
        crossed = read_lines_until(logs, lambda line: f"pid {new_pid}," in line, 15)
        assert any(line.startswith("--- echo/w/1: new run") for line in crossed), crossed
        snapshots = read_lines_until(watch, lambda line: True, 5) + read_lines_until(watch, lambda line: True, 5)
        assert all(json.loads(s)["apps"][0]["name"] == "echo" for s in snapshots)
        assert old_pid != new_pid
    finally:
        codes = [interrupt(p) for p in (follower, logs, watch)]
    assert codes == [0, 0, 0], [p.stderr.read() for p in (follower, logs, watch)]


def test_terminate_force_and_kill_stop_cont(echo):
    node = echo
    pid = node.slot("echo", "w/0")["pid"]
    ok(node.jtrix("kill", "echo/w/0", "--signal", "stop"))
    wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 5, "the netlet to stop")
    ok(node.jtrix("kill", "echo/w/0", "--signal", "CONT"))
    wait_for(lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, 5, "the netlet to continue")
    pids = [n["pid"] for n in node.app("echo")["netlets"]]
    started = time.monotonic()
    ok(node.jtrix("terminate", "echo", "--force"))
    assert time.monotonic() - started < 5
    assert not any(psutil.pid_exists(p) for p in pids)


def test_completion_lists_apps_and_netlets(echo):
    node = echo
    env = {**os.environ, "JTRIX_HOME": str(node.home), "_JTRIX_COMPLETE": "bash_complete"}
    r = subprocess.run([str(BIN / "jtrix")], capture_output=True, text=True, timeout=30,
                       env={**env, "COMP_WORDS": "jtrix kill ec", "COMP_CWORD": "2"})
    assert r.stdout.split() == ["plain,echo/w/0", "plain,echo/w/1"]
    r = subprocess.run([str(BIN / "jtrix")], capture_output=True, text=True, timeout=30,
                       env={**env, "COMP_WORDS": "jtrix status ", "COMP_CWORD": "2"})
    assert "plain,echo" in r.stdout.split()
