"""``python -m netlets.bootstrap_runner``: the process a hosting node starts to run an app's bootstrap.

Reads its start document (JSON, on stdin, written by the node: node URI,
warrant and key, app, mode, slots per type, class reference), imports the
:class:`~netlets.bootstrap.Bootstrap` subclass from the app's codebase (added
to ``sys.path`` once confined, ``netlets.sandbox``), and calls its ``run`` with a
:class:`~netlets.bootstrap.BootstrapContext` that acts through the hosting API
with the node-issued warrant.

Exit codes: 0 ``run`` returned; 1 ``run`` raised (the traceback is in the log);
70 the bootstrap class could not be loaded or instantiated.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from netlets import sandbox

EXIT_OK, EXIT_FAILED, EXIT_BAD_CLASS = 0, 1, 70
log = logging.getLogger("netlets.bootstrap_runner")


def load_bootstrap(class_ref: str):
    """Import ``module:Class`` and return an instance; it must subclass ``Bootstrap``."""
    from netlets.bootstrap import Bootstrap
    from netlets.runner import load_class

    cls = load_class(class_ref)
    if not issubclass(cls, Bootstrap):
        raise TypeError(f"{class_ref} is not a subclass of netlets.Bootstrap")
    return cls()


def make_context(doc: dict[str, Any]):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from hosting.client import HostingClient, own_process_handshake
    from rpc.tls import TLSIdentity
    from netlets.bootstrap import BootstrapContext

    key = load_pem_private_key(doc["key_pem"].encode(), password=None)
    tls = TLSIdentity.from_json(doc["tls"]) if doc.get("tls") else None
    client = HostingClient(doc["node_uri"], doc["warrant"].encode(), key, tls=tls,
                           handshake=own_process_handshake(doc))
    return BootstrapContext(doc["app"], doc["mode"], doc["slots"], client.call,
                            logging.getLogger(f"bootstrap.{doc['app']}")), client


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = json.loads(sys.stdin.read())
    sys.stdin.close()
    sandbox.enter(doc.get("sandbox"))  # before any code of the app is imported
    log.info("bootstrap of %s starting (pid %d, mode %s, class %s)", doc["app"], os.getpid(), doc["mode"],
             doc["class_ref"])
    try:
        bootstrap = load_bootstrap(doc["class_ref"])
    except Exception:
        log.exception("cannot load bootstrap class %s", doc["class_ref"])
        sys.exit(EXIT_BAD_CLASS)
    ctx, client = make_context(doc)
    try:
        bootstrap.run(ctx)
    except Exception:
        log.exception("bootstrap of %s failed", doc["app"])
        sys.exit(EXIT_FAILED)
    finally:
        client.close()
    log.info("bootstrap of %s finished", doc["app"])
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
