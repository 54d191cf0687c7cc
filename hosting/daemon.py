"""Running a hosting node: foreground (``jtrix host run``) and background management.

Contracts:
  * ``start_background`` is idempotent: if a node already answers for the
    home it returns that node's info; otherwise it starts one detached (own
    session, output to ``node.log``) and returns only once it answers.
  * ``stop`` ends the node recorded in the home, by its pid, after checking the
    process is that home's node; netlets keep running.
  * A node reuses the port recorded in its home when free, so netlets that
    outlived it find it again at the same address.
  * A node runs with umask 077: nothing it creates in its home is readable by
    other users unless :mod:`hosting.confine` grants it to a netlet.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from rpc import wire
from hosting.api import HostingAPI
from hosting.api_limits import NODE_BUDGET, NODE_LIMITS
from hosting.cluster.etcd import TLSFiles
from hosting.home import Home, read_node_info
from hosting.metrics import NodeMetrics
from hosting.node import Node, NodeConfig
from rpc.tls import client_identity
from rpc.gate import Holder, RefusalEvents
from netlets import landlock
from rpc.credential import DoorChecker
from warrants import names
from warrants.errors import JtrixError, NotFound

log = logging.getLogger(__name__)
OBJECT_ID = "jtrix.hosting"


def etcd_tls_of(ca: str | None, cert: str | None, key: str | None) -> TLSFiles | None:
    """The etcd TLS settings from three optional file paths (None when none is given)."""
    return TLSFiles(ca, cert, key) if (ca or cert or key) else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class NodeDoor:
    """The node's ``wire.Door``: a connection is held by one of the node's processes when its first
    message proves that process's door key (``rpc.credential.DoorChecker``; the key is in
    the process's start document); it stays open to that process only while it is alive."""

    def __init__(self, door_root: bytes, door_open: Callable[[str], bool]) -> None:
        """``door_root``: what the node derives its processes' door keys from; ``door_open``:
        whether a holder's door is open now (``Node.door_open``)."""
        self.checker = DoorChecker(door_root)
        self.door_open = door_open

    def holder(self, handshake: object) -> Holder | None:
        name = self.checker.holder(handshake)
        return (names.process_of(name).app, name) if name is not None else None

    def is_open(self, holder: str) -> bool:
        return self.door_open(holder)


def serve(config: NodeConfig, ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or ``stop`` is set)."""
    os.umask(0o077)
    wire.configure()
    node = Node(config)
    port = config.port
    if port == 0:
        previous = read_node_info(config.home) or {}
        last = previous.get("uri", "") or ""
        if last.rsplit(":", 1)[-1].isdigit():
            candidate = int(last.rsplit(":", 1)[-1])
            if _port_free(config.host, candidate):
                port = candidate
    daemon = wire.Daemon(config.host, port, tls=node.tls, limits=NODE_LIMITS,
                         observer=RefusalEvents(node.registry.add_event),
                         door=NodeDoor(node.door_root, node.door_open), budget=NODE_BUDGET)
    node.door_revoked = daemon.gate.revoke
    metrics = NodeMetrics(node.registry) if config.metrics else None
    if metrics is not None:
        metrics.watch_gate(daemon.gate)
    api = HostingAPI(node, metrics)
    node.uri = str(daemon.register(api, OBJECT_ID))
    if metrics is not None:
        node.registry.event_listeners.append(metrics.on_event)
        node.metrics_port = metrics.serve("127.0.0.1")  # plain HTTP, unauthenticated: loopback only
    stopping = stop or threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        node.recover()
        node.write_node_json()  # where a netlet finds the node (after a clean stop: a new port)...
        node.start_serving()  # ...before the leases granted during recovery start to run
        log.info("jtrix hosting node %s (%s) listening at %s", node.name, node.service_id, node.uri)
        if ready is not None:
            ready.set()
        daemon.requestLoop(loopCondition=lambda: not stopping.is_set())
    finally:
        daemon.close()
        if metrics is not None:
            metrics.close()
        node.shutdown()


def node_answers(home: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The node info if the node recorded in ``home`` answers ``hello``."""
    info = read_node_info(home)
    if not info or not info.get("uri"):
        return None
    wire.configure()
    try:
        with wire.proxy(info["uri"], timeout=timeout, tls=client_identity(home)) as p:
            p.hello()
        return info
    except Exception:
        return None


def start_background(home: Path, host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0,
                     cluster: str | None = None, name: str | None = None,
                     etcd_tls: TLSFiles | None = None, membership_ttl: int = 3,
                     confine: str = "auto", election_threads: int | None = None,
                     start_limit: int | None = None) -> dict[str, Any]:
    home = Path(home).expanduser().resolve()
    info = node_answers(home)
    if info is not None:
        return info
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    cluster_args = (["--cluster", cluster, "--membership-ttl", str(membership_ttl)] if cluster else []) + \
        (["--name", name] if name else []) + ["--confine", confine] + \
        (["--election-threads", str(election_threads)] if election_threads is not None else []) + \
        (["--start-limit", str(start_limit)] if start_limit is not None else [])
    for flag, value in (("--etcd-ca", etcd_tls and etcd_tls.ca), ("--etcd-cert", etcd_tls and etcd_tls.cert),
                        ("--etcd-key", etcd_tls and etcd_tls.key)):
        cluster_args += [flag, str(Path(value).resolve())] if value else []
    with open(os.open(Home(home).node_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hosting.daemon", "--home", str(home),
                                 "--listen", f"{host}:{port}", *cluster_args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = node_answers(home, timeout=1.0)
        if info is not None and info.get("pid") == proc.pid:
            return info
        if proc.poll() is not None:
            last = _last_line(Home(home).node_log)
            error = JtrixError(f"hosting node exited at start{': ' + last if last else ''}"
                               f" (code {proc.returncode}; see {Home(home).node_log})")
            error.exit_code = proc.returncode if proc.returncode in (1, 2, 3) else 1
            raise error
        time.sleep(0.05)  # polling a child's readiness; the deadline bounds it
    raise JtrixError(f"hosting node did not answer within {timeout:.0f}s; see {Home(home).node_log}")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].removeprefix("jtrix-host: ") if lines else ""


def is_node_process(pid: int, home: Path) -> bool:
    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "hosting.daemon" in " ".join(cmd) and str(Path(home).expanduser().resolve()) in cmd


def stop(home: Path, timeout: float = 20.0) -> int:
    """Stop the home's node; returns its pid. NotFound if none is running."""
    info = read_node_info(home)
    pid = info.get("pid") if info else None
    if not pid or not is_node_process(pid, home):
        raise NotFound(f"no hosting node is running for {home}")
    proc = psutil.Process(pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return pid


def main(argv: list[str] | None = None) -> None:
    """``python -m hosting.daemon --home DIR --listen HOST:PORT`` (what ``jtrix host run`` execs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="jtrix-host")
    parser.add_argument("--home", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--cluster", default=None, help="etcd URL http://HOST:PORT[/PREFIX]")
    parser.add_argument("--name", default=None)
    parser.add_argument("--membership-ttl", type=int, default=3)
    parser.add_argument("--etcd-ca", default=None)
    parser.add_argument("--etcd-cert", default=None)
    parser.add_argument("--etcd-key", default=None)
    parser.add_argument("--confine", default="auto", help="auto, uid, landlock or none (hosting.confine)")
    parser.add_argument("--election-threads", type=int, default=32, help="threads of the elector's pool")
    parser.add_argument("--start-limit", type=int, default=None, help="netlets starting at once (default 2 per core)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    landlock.not_dumpable()  # netlets with the node's uid (landlock mode) see nothing in /proc/<node>
    try:
        config = NodeConfig(home=Path(args.home), host=host or "127.0.0.1", port=int(port or 0),
                            cluster=args.cluster, name=args.name, membership_ttl=args.membership_ttl,
                            etcd_tls=etcd_tls_of(args.etcd_ca, args.etcd_cert, args.etcd_key),
                            confine=args.confine, election_threads=args.election_threads,
                            start_limit=args.start_limit)
        serve(config)
    except JtrixError as err:  # the operator's configuration (bad name, taken name, etcd down)
        print(f"jtrix-host: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
