"""The Netlet programming model: decorators and definition-time errors."""

from __future__ import annotations

import os
import pytest

from netlets.netlet import (COMMAND, MASTER_QUERY, QUERY, Netlet, command, exposed_methods,
                            is_replicated, master_query, query)


class Counter(Netlet):
    def __init__(self):
        self.n = 0

    @command
    def add(self, k: int):
        if k < 0:
            raise ValueError("k must be >= 0")
        return ["add", k]

    @query
    def value(self):
        return self.n

    @master_query
    def latest(self):
        return self.n

    def apply(self, cmd):
        self.n += cmd[1]
        return self.n

    def snapshot(self):
        return self.n

    def restore(self, snapshot):
        self.n = snapshot


def test_exposed_methods_and_inheritance():
    assert exposed_methods(Counter) == {"add": COMMAND, "value": QUERY, "latest": MASTER_QUERY}
    assert is_replicated(Counter)

    class Sub(Counter):
        def value(self):  # overridden without decorator: no longer exposed
            return 0

    assert "value" not in exposed_methods(Sub) and "add" in exposed_methods(Sub)


def test_worker_without_commands_needs_no_state_machine():
    class Worker(Netlet):
        @query
        def ping(self):
            return "pong"

    assert not is_replicated(Worker) and exposed_methods(Worker) == {"ping": QUERY}
    with pytest.raises(NotImplementedError):
        Worker().snapshot()


def test_hooks_are_noops():
    c = Counter()
    c.on_started({"data": False})
    c.on_master(3)
    c.on_backup("s/0")
    c.on_stopping()


def test_private_name_rejected_at_definition():
    with pytest.raises(TypeError, match="public"):
        class Bad(Netlet):
            @query
            def _secret(self):
                return 1


def test_shadowing_framework_name_rejected():
    with pytest.raises(TypeError, match="shadow"):
        class Bad(Counter):
            @query
            def snapshot(self):
                return 1
    with pytest.raises(TypeError, match="shadow"):
        class Bad2(Netlet):
            @master_query
            def on_master(self, epoch):
                return 1


def test_commands_require_state_machine_trio():
    with pytest.raises(TypeError, match="apply, snapshot, restore"):
        class Bad(Netlet):
            @command
            def put(self, k):
                return k
    with pytest.raises(TypeError, match="restore"):
        class Bad2(Netlet):
            @command
            def put(self, k):
                return k

            def apply(self, c):
                return c

            def snapshot(self):
                return None


def test_double_decoration_rejected():
    with pytest.raises(TypeError, match="exposed twice"):
        class Bad(Counter):
            @query
            @master_query
            def both(self):
                return 1


def test_a_slot_replica_storage_is_opened_by_one_process_at_a_time(tmp_path):
    import subprocess
    import sys

    from netlets.replicated import lock_directory

    fd = lock_directory(tmp_path / "replica", wait_s=0.1)
    try:
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from netlets.replicated import lock_directory;"
             " lock_directory(Path(sys.argv[1]), 0.2)", str(tmp_path / "replica")],
            capture_output=True, text=True, timeout=30)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    finally:
        os.close(fd)
    lock_directory(tmp_path / "replica", wait_s=0.1)  # free again once the holder let go
