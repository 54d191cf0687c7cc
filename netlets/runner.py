"""``python -m netlets.runner``: the process a hosting node starts for each netlet.

Reads its start document (JSON, on stdin, written by the node: identity,
class, params, resources, warrant and key, app secret), imports the netlet
class from the app's codebase (put on ``sys.path`` only once confined, by
``netlets.sandbox``), serves the netlet's own RPC endpoint (an app credential
required; replication also a node's grant, ``hosting.election.grants``), renews its
lease every TTL/3 and publishes its status.

Exit codes: 0 stopped on request (SIGTERM/SIGINT, after ``on_stopping``);
65 the replica's storage is corrupt (never restarted; ``jtrix reset``);
70 the netlet class could not be loaded or started, or failed while running
(the log says why); 74 the replica's storage failed (a write or fsync error:
restarted with backoff); 75 the node disowned the netlet or stayed
unreachable too long; 76 a fenced master stepped down. 65, 70 and 74 are
reported to the node first (``status["fault"]``, see ``netlets.faults``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from hosting.client import HostingClient, own_process_handshake
from hosting.election.grants import GrantVerifier
from rpc.tls import TLSIdentity
from rpc.credential import HandshakeChecker
from netlets.endpoint import serve_endpoint
from netlets import sandbox
from netlets.faults import fail_stop
from netlets.heartbeat import Heartbeat
from netlets.replication.storage import CorruptStorage, StorageFailed

EXIT_STOPPED, EXIT_BAD_NETLET, EXIT_ABANDONED = 0, 70, 75
log = logging.getLogger("netlets.runner")


class StartDocument:
    """The node's start document, with typed accessors (the node is trusted)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.app: str = raw["app"]
        self.slot: str = raw["slot"]
        self.netlet_id: str = raw["netlet_id"]
        self.class_ref: str = raw["class_ref"]
        self.params: dict[str, str] = raw.get("params", {})
        self.resources: dict[str, dict] = raw.get("resources", {})
        self.lease_ttl: float = float(raw["lease_ttl"])
        self.mode: str = raw.get("mode", "cold")
        self.app_secret = bytes.fromhex(raw["app_secret"])
        #: in a cluster: this netlet's certificate, for its endpoint and every connection it makes
        self.tls: TLSIdentity | None = TLSIdentity.from_json(raw["tls"]) if raw.get("tls") else None
        #: checks the grants of replication calls against the node(s) this netlet trusts
        self.grants = GrantVerifier(raw["grant_trust"])

    def resource_values(self) -> dict[str, Any]:
        return {name: (Path(r["path"]) if r["kind"] == "directory" else int(r["port"]))
                for name, r in self.resources.items()}

    def inherited(self) -> dict[str, bool]:
        return {name: bool(r.get("inherited")) for name, r in self.resources.items()}

    def client(self) -> HostingClient:
        key = load_pem_private_key(self.raw["key_pem"].encode(), password=None)
        return HostingClient(self.raw["node_uri"], self.raw["warrant"].encode(), key, tls=self.tls,
                             handshake=own_process_handshake(self.raw))


def load_class(class_ref: str) -> type:
    module_name, _, class_name = class_ref.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ImportError(f"{class_ref}: module {module_name} has no class {class_name}")
    return cls


def instantiate(cls: type, doc: StartDocument) -> Any:
    """Create the netlet with its context attributes set *before* ``__init__`` runs."""
    netlet = cls.__new__(cls)
    netlet.app, netlet.slot = doc.app, doc.slot
    netlet.config = dict(doc.params)
    netlet.resources = doc.resource_values()
    netlet.log = logging.getLogger(f"netlet.{doc.slot}")
    netlet.__init__()
    return netlet


def make_host(cls: type, doc: StartDocument):
    """A replicated host for the master-eligible type, a plain supervised one otherwise."""
    from netlets.host import NetletHost
    from netlets.netlet import is_replicated

    if doc.raw.get("replicated"):
        if not is_replicated(cls):
            raise TypeError(f"{doc.class_ref} is master-eligible but not replicated: it must define "
                            "apply/snapshot/restore and at least one @command")
        from netlets.replicated import ReplicatedHost

        return ReplicatedHost(instantiate(cls, doc), doc)
    return NetletHost(instantiate(cls, doc), doc)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = StartDocument(json.loads(sys.stdin.read()))
    sys.stdin.close()
    confined = sandbox.enter(doc.raw.get("sandbox"))  # before any code of the app is imported
    log.info("netlet %s starting (pid %d, uid %d, mode %s, class %s; %s)", doc.netlet_id, os.getpid(),
             os.getuid(), doc.mode, doc.class_ref, confined)
    stop = threading.Event()
    exit_code = [EXIT_STOPPED]

    def on_signal(signum, frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def abandon(why: str) -> None:
        log.error("stopping: %s", why)
        exit_code[0] = EXIT_ABANDONED
        stop.set()

    try:
        cls = load_class(doc.class_ref)
        host = make_host(cls, doc)
    except (CorruptStorage, StorageFailed) as err:
        fail_stop(doc.client(), doc.netlet_id, {"phase": "recovering"}, err)
    except Exception:
        log.exception("cannot load netlet class %s", doc.class_ref)
        sys.exit(EXIT_BAD_NETLET)
    # On the node's own address: in a cluster, replicas on other machines must reach it.
    daemon, uri, _ = serve_endpoint(host.service(), HandshakeChecker(doc.app_secret, doc.app, doc.netlet_id),
                                    doc.grants, host=doc.raw.get("listen_host") or "127.0.0.1", tls=doc.tls)
    host.endpoint = uri
    client = doc.client()
    heartbeat = Heartbeat(client, doc.netlet_id, doc.lease_ttl, Path(doc.raw["node_json"]), host.status,
                          on_disowned=abandon, on_orphaned=abandon,
                          control=host if hasattr(host, "claim") else None)
    host.heartbeat = heartbeat
    try:
        host.start()
    except SystemExit as exit_:
        log.error("netlet %s exited while starting (sys.exit(%r) in on_started)", doc.netlet_id, exit_.code)
        logging.shutdown()
        raise
    except Exception:
        log.exception("netlet %s failed to start", doc.netlet_id)
        sys.exit(EXIT_BAD_NETLET)
    heartbeat.start()
    log.info("netlet %s serving at %s", doc.netlet_id, uri)
    stop.wait()
    heartbeat.stop()
    try:
        host.stop()
    finally:
        # No daemon.shutdown(): Pyro's pool joins every worker thread for up to
        # 0.1 s each, so a netlet with many client connections would outlast its
        # grace period and be SIGKILLed. Exiting closes every socket anyway.
        log.info("netlet %s stopped", doc.netlet_id)
        logging.shutdown()
        os._exit(exit_code[0])


if __name__ == "__main__":
    main()
