"""A private etcd for the tests: one per test session (per xdist worker), on free ports.

``etcd_url`` (session fixture) starts ``etcd`` with its client and peer ports
chosen free, a data directory in a temp dir, and waits until it answers; it is
stopped (SIGTERM, then SIGKILL by pid) when the session ends. ``etcd`` gives
each test an :class:`hosting.etcd.Etcd` on a prefix of its own, so tests never
see each other's keys. Without the ``etcd`` binary (scripts/test.sh installs
Debian's etcd-server as root) the tests that need it skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from hosting.etcd import Etcd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One etcd process on loopback; ``url`` is its client URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, attempts: int = 3) -> None:
        for _ in range(attempts):  # a chosen free port can be taken before etcd binds it
            client, peer = free_port(), free_port()
            self.url = f"http://127.0.0.1:{client}"
            log = open(self.root / "etcd.log", "ab")
            self.proc = subprocess.Popen(
                ["etcd", "--name", "test", "--data-dir", str(self.root / f"data-{client}"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"test=http://127.0.0.1:{peer}",
                 "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            if self._wait_ready(10.0):
                return
            self.stop()
        raise RuntimeError(f"etcd did not start (see {self.root / 'etcd.log'})")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/health", timeout=0.5).json().get("health") == "true":
                    return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture(scope="session")
def etcd_url():
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (scripts/test.sh installs Debian's etcd-server as root)")
    root = Path(tempfile.mkdtemp(prefix="jtrix-etcd-"))
    server = EtcdServer(root)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def unique_prefix() -> str:
    return f"/jtrix/test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def etcd(etcd_url) -> Etcd:
    """An etcd view on a key prefix no other test uses."""
    return Etcd(etcd_url, unique_prefix())
