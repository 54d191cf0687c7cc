"""Pyro5 settings and error transport shared by every jtrix endpoint.

Contracts (see DESIGN.md, "Pitfalls"): msgpack only (never pickle); no
automatic retries (``MAX_RETRIES = 0``: a retry must be explicit and
idempotent); explicit timeouts; a thread pool sized for many connections,
with idle/silent connections dropped after ``SERVER_IDLE_TIMEOUT_S`` so that a
client that connects and sends nothing cannot hold a worker forever.
``JtrixError`` subclasses raised by a server arrive as the same class.
"""

from __future__ import annotations

import Pyro5.api
from Pyro5 import config
from Pyro5.serializers import SerializerBase

from warrants.errors import JtrixError

SERVER_IDLE_TIMEOUT_S = 30.0
THREADPOOL_SIZE = 512
CALL_TIMEOUT_S = 10.0


def configure() -> None:
    """Apply the process-wide Pyro5 settings (idempotent)."""
    config.SERIALIZER = "msgpack"
    config.SERVERTYPE = "thread"
    config.THREADPOOL_SIZE = THREADPOOL_SIZE
    config.THREADPOOL_SIZE_MIN = 8
    config.COMMTIMEOUT = SERVER_IDLE_TIMEOUT_S
    config.MAX_RETRIES = 0
    config.SOCK_NODELAY = True
    config.DETAILED_TRACEBACK = False
    config.MAX_MESSAGE_SIZE = 256 * 1024 * 1024
    register_error_classes()


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def register_error_classes() -> None:
    """Let every known ``JtrixError`` subclass cross the wire as itself."""
    for cls in [JtrixError, *_all_subclasses(JtrixError)]:
        name = f"{cls.__module__}.{cls.__name__}"

        def revive(classname: str, data: dict, cls: type = cls) -> Exception:
            return cls(*data.get("args", ()))

        SerializerBase.register_dict_to_class(name, revive)


def proxy(uri: str, timeout: float = CALL_TIMEOUT_S) -> Pyro5.api.Proxy:
    """A proxy with jtrix settings; a proxy belongs to one thread."""
    p = Pyro5.api.Proxy(uri)
    p._pyroSerializer = "msgpack"
    p._pyroTimeout = timeout
    p._pyroMaxRetries = 0
    return p
