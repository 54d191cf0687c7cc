"""Access points: calling a running app by method name, across failovers.

``connect(app)`` asks the hosting node (with a warrant holding the ``call``
right: by default the local node's admin warrant) for the app's client
credential (it opens the netlets' client surface only, never replication) and
endpoints, and returns an :class:`AppProxy`.

Contracts:
  * ``@command`` and ``@master_query`` calls go to the master; ``@query`` calls
    to any live replica (stale at worst, never dirty).
  * Each command carries a request id (this proxy's id + a counter). On a
    failover (``NotMaster``, a lost connection, a timeout) the proxy
    re-resolves the master and retries with the *same* request id, with
    jittered exponential backoff, until ``timeout`` — so the caller sees at
    most a delay, never a duplicate: the app applies a request id at most once.
  * ``CommandFailed`` (the app's own code raised) is the call's result and is
    never retried. When the app is gone, ``NotFound`` is raised at once. When
    no master answered within ``timeout``, ``Unavailable`` is raised: the
    outcome of that command is unknown.
  * ``submit`` is the pipelined path (``netlets.pipeline``): it returns a
    future at once, with the same at-most-once guarantee; calls submitted
    together travel in one RPC and their commands are group-committed.
    Pipelined calls, queries included, all go to the master.
  * With ``coalesce`` (the default) a blocking ``call`` of a command is a
    submitted call whose result it waits for: commands called at the same
    time from many threads share batch RPCs and group commits, as a pipelined
    client's do. Queries are always called directly.
  * An AppProxy may be shared by threads (each thread gets its own connections).
  * Each connection's handshake is made for the one netlet process it dials
    (its netlet id, from ``app_access``): it opens no other netlet, nor the
    next process of the same slot (``rpc.credential``).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from Pyro5.errors import CommunicationError

from rpc import wire
from hosting.client import HostingClient
from rpc.credential import CLIENT, make_handshake
from netlets.netlet import COMMAND, MASTER_QUERY
from netlets.pipeline import Pipeline, PipelineConfig
from rpc.errors import NotMaster, Unavailable
from warrants.errors import JtrixError, NotFound

DEFAULT_TIMEOUT_S = 30.0
BASE_BACKOFF_S, MAX_BACKOFF_S = 0.02, 0.5


class AppProxy:
    """A client of one app (see module docstring)."""

    def __init__(self, app: str, hosting: HostingClient, timeout: float = DEFAULT_TIMEOUT_S,
                 call_timeout: float = 10.0, pipeline: PipelineConfig = PipelineConfig(),
                 coalesce: bool = True) -> None:
        self.app = app
        self.pipeline_config = pipeline
        self.coalesce = coalesce
        self.hosting = hosting
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.client_id = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._access: dict[str, Any] = {}
        self._methods: dict[str, str] = {}
        self._pipeline: Pipeline | None = None
        self.refresh()

    # -- resolution -----------------------------------------------------------
    def refresh(self, after_epoch: int | None = None, wait_s: float = 0.0) -> dict[str, Any]:
        """Ask the node again for the app's endpoints and master. NotFound if the app is gone.

        With ``after_epoch`` the node answers as soon as a master of a higher
        epoch is promoted, or after ``wait_s``, whichever comes first.
        """
        access = self.hosting.call("app_access", self.app, after_epoch, wait_s,
                                   timeout=wait_s + self.hosting.timeout)
        with self._lock:
            self._access = access
            self._credential = bytes.fromhex(access["credential"])
        if not self._methods:
            for n in access["netlets"]:
                if n.get("endpoint"):
                    try:
                        self._methods = self._proxy(n).describe()["methods"]
                        break
                    except (CommunicationError, JtrixError):
                        self._drop(n)
        return access

    @property
    def methods(self) -> dict[str, str]:
        """``{name: kind}`` of the app's exposed methods."""
        return dict(self._methods)

    def _target(self, kind: str) -> dict[str, Any]:
        """The netlet (its ``app_access`` entry) a call of ``kind`` goes to."""
        access = self._access
        netlets = [n for n in access["netlets"] if n.get("endpoint")]
        if kind in (COMMAND, MASTER_QUERY):
            master = [n for n in netlets if n["slot"] == access.get("master")]
            if not master:
                raise Unavailable(f"{self.app} has no master right now")
            return master[0]
        if not netlets:
            raise Unavailable(f"{self.app} has no live netlet right now")
        return random.choice(netlets)

    def _proxy(self, netlet: dict[str, Any]):
        """This thread's connection to ``netlet`` (a mapping with its ``netlet`` id and ``endpoint``,
        as ``app_access`` and ``status`` list them), its handshake made for that process alone."""
        proxies = getattr(self._local, "proxies", None)
        if proxies is None:
            proxies = self._local.proxies = {}
        key = (netlet["netlet"], netlet["endpoint"])
        p = proxies.get(key)
        if p is None:
            p = wire.proxy(netlet["endpoint"], timeout=self.call_timeout, tls=self.hosting.tls)
            p._pyroHandshake = make_handshake(self._credential, self.app, CLIENT, netlet["netlet"])
            proxies[key] = p
        return p

    def _drop(self, netlet: dict[str, Any]) -> None:
        p = getattr(self._local, "proxies", {}).pop((netlet["netlet"], netlet["endpoint"]), None)
        if p is not None:
            p._pyroRelease()

    # -- calls ------------------------------------------------------------------
    def _kind(self, method: str) -> str:
        if not self._methods:
            self.refresh()
        kind = self._methods.get(method)
        if kind is None:
            raise NotFound(f"{self.app} exposes no method {method!r} (it has: {', '.join(sorted(self._methods))})")
        return kind

    def _request_id(self, kind: str) -> str | None:
        return f"{self.client_id}:{next(self._counter)}" if kind == COMMAND else None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` where its kind says it runs; see the module contracts."""
        kind = self._kind(method)
        if kind == COMMAND and self.coalesce:
            return self.submit(method, *args, **kwargs).result()  # resolved by the pipeline's deadline
        req_id = self._request_id(kind)
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                netlet = self._target(kind)
                try:
                    return self._proxy(netlet).invoke(method, list(args), kwargs, req_id)
                except NotMaster as err:
                    raise Unavailable(str(err)) from None
                except CommunicationError as err:  # includes timeouts: outcome unknown, retry is safe
                    self._drop(netlet)
                    raise Unavailable(f"{netlet['endpoint']}: {err}") from None
            except Unavailable as err:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"{self.app}: no answer within {self.timeout:.0f}s ({err}); "
                                      "outcome unknown") from None
                self.recover(kind, attempt, deadline)
                attempt += 1

    def recover(self, kind: str, attempt: int, deadline: float) -> None:
        """After failed attempt number ``attempt``: wait for what may fix it, then re-resolve.

        For calls to the master, the node is asked to answer as soon as a newer
        master than the one that failed is promoted, waiting at most the backoff
        delay (jittered exponential, 20 ms doubling to 0.5 s); other calls back
        off, then re-resolve. Never waits past ``deadline``. ``NotFound`` (the app
        is gone) propagates; an unreachable node is waited out like a failure.
        """
        delay = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** min(attempt, 16)) * random.uniform(0.5, 1.0)
        delay = max(0.0, min(delay, deadline - time.monotonic()))
        started = time.monotonic()
        try:
            if kind in (COMMAND, MASTER_QUERY):
                access = self._access
                failed = access.get("epoch", 0) - (0 if access.get("ready", True) else 1)
                self.refresh(after_epoch=failed, wait_s=delay)
                if self._access.get("epoch", 0) > failed and self._access.get("ready", True):
                    return  # a newer master can serve: try it at once
            else:
                self.refresh()
        except NotFound:
            raise
        except Exception:  # the node itself is unreachable (restarting?): back off and try again later
            pass
        # No newer master (or the same one refused again): the full backoff, never a busy loop.
        time.sleep(max(0.0, delay - (time.monotonic() - started)))

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Future:
        """Pipelined ``call``: a future of its result (see ``netlets.pipeline``)."""
        kind = self._kind(method)
        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline(self, self.pipeline_config)
            pipeline = self._pipeline
        return pipeline.submit(method, list(args), kwargs, self._request_id(kind))

    def send_batch(self, calls: list[list]) -> list[dict]:
        """One ``invoke_batch`` RPC to the master as last resolved (the pipeline's transport).

        Raises ``Unavailable`` when no master is known and ``CommunicationError``
        when the connection failed (outcomes unknown; the pipeline re-sends).
        """
        netlet = self._target(COMMAND)
        try:
            return self._proxy(netlet).invoke_batch(calls)
        except CommunicationError:
            self._drop(netlet)
            raise

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)

    def close(self) -> None:
        """End the pipeline (if any) and this thread's connections."""
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        proxies = getattr(self._local, "proxies", {})
        while proxies:
            proxies.popitem()[1]._pyroRelease()


def connect(app: str, home: str | Path | None = None, *, warrant: str | Path | None = None,
            key: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_S,
            pipeline: PipelineConfig = PipelineConfig(), coalesce: bool = True) -> AppProxy:
    """An access point for ``app`` on the node of ``home`` (default ``$JTRIX_HOME``)."""
    hosting = HostingClient.for_home(Path(home) if home else None, Path(warrant) if warrant else None,
                                     Path(key) if key else None)
    return AppProxy(app, hosting, timeout, pipeline=pipeline, coalesce=coalesce)
