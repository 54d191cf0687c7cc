"""The hosting API: what clients and netlets may ask of a node, over Pyro5.

Every method but ``hello`` takes ``auth`` first (see ``hosting.auth``) and
checks it for the right the operation needs *before* doing anything; a warrant
scoped to one app only reaches that app. A warrant the node issued to one of its
processes (a netlet, a bootstrap run) is held to its binding in ``_check`` too
(``hosting.bindings``: that process alive, that app instance current, the
methods of its kind only), and a netlet's acts only for its own netlet.
``owner_op`` is for cluster members only (right ``member``, which no client
warrant carries). Names that become paths are checked by ``warrants.names``.
Errors reach the caller as ``JtrixError`` subclasses; anything else is logged
here and reported as a generic failure (no tracebacks cross the wire).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import signal as _signal
import stat
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import Pyro5.api

import warrants
from hosting import bindings
from hosting import status as views
from hosting.auth import ANY_APP, EMPTY_ARGS, Authorizer
from hosting.cluster.agent import owner_op_args
from hosting.codebases import MAX_CHUNK_BYTES, CodebaseStore
from hosting.control import ControlLeases
from rpc.digest import call_digest
from hosting.topology import EventLog
from warrants import names
from warrants.descriptor_model import Descriptor
from warrants.errors import BadInput, JtrixError, NotFound

log = logging.getLogger(__name__)

MAX_EVENT_WAIT_S = 5.0  # well below a client's default call timeout
MAX_LOG_CHUNK = 1024 * 1024
USER_SIGNALS = {"KILL": _signal.SIGKILL, "TERM": _signal.SIGTERM, "STOP": _signal.SIGSTOP,
                "CONT": _signal.SIGCONT, "INT": _signal.SIGINT, "HUP": _signal.SIGHUP}


#: the ``call_digest`` of the arguments (after ``auth``) of the call this thread serves
_CALL_ARGS: contextvars.ContextVar[str] = contextvars.ContextVar("jtrix_call_args")


def _guarded(fn):
    """Turn unexpected exceptions into a one-line JtrixError (and log them here); records the
    digest of the call's arguments as received, which the holder proof must cover."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        token = _CALL_ARGS.set(call_digest(args[1:], kwargs) if args else EMPTY_ARGS)
        try:
            return fn(self, *args, **kwargs)
        except JtrixError:
            raise
        except Exception as err:
            log.exception("hosting call %s failed", fn.__name__)
            raise JtrixError(f"internal error in {fn.__name__}: {type(err).__name__}: {err}") from None
        finally:
            _CALL_ARGS.reset(token)
            if self.metrics is not None:
                self.metrics.observe_call(fn.__name__, time.perf_counter() - started)
    return wrapper


def _netlet_app(netlet_id: str) -> str:
    return names.netlet_app(netlet_id)


class ApiNode(views.StatusNode, bindings.Holders, Protocol):
    """What the hosting API asks of its node (``hosting.node.Node``): the operations it exposes,
    the status views' facts and the bindings' answers. Must hold:
      * Every operation assumes its caller was authorised (the API checks first) and raises
        only ``JtrixError`` for what the caller did wrong or what cannot be done now.
      * ``owner_op`` answers what another member forwarded, as ``renew``, ``arbiter_request``,
        ``app_access`` and ``terminate`` would here; NotOwner where this node is not the owner.
      * ``own_events`` reads this node's event log, ``cluster_events`` the whole cluster's.
      * ``on_trusted_certs`` is called with the certificates of other members to trust.
    """

    node_cert: Any
    codebases: CodebaseStore
    control: ControlLeases
    own_events: EventLog
    cluster_events: EventLog
    on_trusted_certs: Callable[[list], None]

    def descriptor(self, app: str) -> Descriptor: ...

    def add_codebase(self, data: bytes, sha: str | None, uploader: str = "") -> str: ...

    def commit_codebase(self, sha: str, uploader: str) -> str: ...

    def submit_app(self, descriptor_xml: bytes, source: str, codebase_sha: str, replace: bool = False,
                   start: bool = True) -> dict[str, Any]: ...

    def run_netlet(self, app: str, slot: str) -> str: ...

    def terminate(self, app: str, grace: float | None = None, wait_s: float = 60.0) -> bool: ...

    def signal(self, app: str, slot: str, sig: int) -> str: ...

    def reset(self, app: str, slot: str) -> str | None: ...

    def owner_op(self, app: str, op: str, args: list) -> Any: ...

    def renew(self, netlet_id: str, status: dict | None, control_epoch: int | None = None) -> dict[str, Any]: ...

    def arbiter_request(self, netlet_id: str, kind: str, epoch: int, slot: str | None,
                        incarnation: str | None, version: int | None = None) -> dict[str, Any]: ...

    def app_access(self, app: str, after_epoch: int | None = None, wait_s: float = 0.0) -> dict[str, Any]: ...

    def report(self, netlet_id: str, status: dict) -> None: ...


@Pyro5.api.expose
class HostingAPI:
    def __init__(self, node: ApiNode, metrics=None) -> None:
        self.node = node
        self.metrics = metrics
        self.auth = Authorizer(node.node_cert, node.service_id)
        self.bindings = bindings.Bindings(warrants.cert_fingerprint(node.node_cert), node)
        node.on_trusted_certs = self.auth.trust

    def _check(self, auth, method: str, right: str | tuple[str, ...], app=None, netlet_id: str | None = None):
        """The one authorization of every call: the warrant (``hosting.auth``: every right in
        ``right``), then its binding if the node issued it to a process (``hosting.bindings``);
        with ``netlet_id``, a netlet's warrant must be that netlet's own."""
        warrant = self.auth.check(auth, method, right, app, _CALL_ARGS.get())
        binding = self.bindings.check(warrant, method)
        if netlet_id is not None and binding is not None and binding.process != netlet_id:
            raise warrants.InsufficientRights(f"warrant is for {binding.process}, not {netlet_id}")
        daemon = getattr(self, "_pyroDaemon", None)  # set by the daemon that serves this API
        if daemon is not None:
            daemon.caller_proven()  # an authenticated caller's connection keeps its place (rpc.gate)
        return warrant

    def _check_netlet(self, auth, method: str, right: str, netlet_id: str):
        """For one netlet's own calls (renew, report, its ISR requests)."""
        return self._check(auth, method, right, _netlet_app(netlet_id), netlet_id=netlet_id)

    # -- public -----------------------------------------------------------
    @_guarded
    def hello(self) -> dict[str, Any]:
        return {"service": self.node.service_id, "protocol": 1}

    # -- apps -------------------------------------------------------------
    def _uploader(self, auth, method: str) -> str:
        """Check a codebase call (right ``launch`` on any app); whose quota it counts to
        (``hosting.codebases``): the app its warrant is scoped to, ``*`` for a whole-service one."""
        return self._check(auth, method, "launch", ANY_APP).app or "*"

    @_guarded
    def has_codebase(self, auth, sha: str) -> bool:
        uploader = self._uploader(auth, "has_codebase")
        return self.node.codebases.pin(names.check_codebase(sha), uploader)  # kept for the submit that follows

    @_guarded
    def upload_codebase(self, auth, data: bytes, sha: str | None = None) -> str:
        """A whole archive in one call: at most ``codebases.MAX_CHUNK_BYTES`` (larger: ``upload_chunk``)."""
        uploader = self._uploader(auth, "upload_codebase")
        if not isinstance(data, bytes):
            raise BadInput("codebase must be bytes")
        if len(data) > MAX_CHUNK_BYTES:
            raise BadInput(f"a codebase of more than {MAX_CHUNK_BYTES} bytes is sent in chunks (upload_chunk)")
        return self.node.add_codebase(data, None if sha is None else names.check_codebase(sha), uploader)

    @_guarded
    def upload_chunk(self, auth, sha: str, offset: int, data: bytes) -> int:
        """Append one chunk (at most ``codebases.MAX_CHUNK_BYTES``) to this uploader's upload of
        ``sha`` at ``offset``; the bytes held after (a chunk elsewhere changes nothing: resume there)."""
        uploader = self._uploader(auth, "upload_chunk")
        if not isinstance(data, bytes):
            raise BadInput("codebase chunk must be bytes")
        return self.node.codebases.add_chunk(names.check_codebase(sha), int(offset), data, uploader)

    @_guarded
    def upload_commit(self, auth, sha: str) -> str:
        """Store this uploader's chunks of ``sha`` as the codebase ``sha`` (checked against it)."""
        uploader = self._uploader(auth, "upload_commit")
        return self.node.commit_codebase(names.check_codebase(sha), uploader)

    @_guarded
    def submit_app(self, auth, descriptor_xml: bytes, source: str, codebase_sha: str,
                   replace: bool = False, start: bool = True) -> dict[str, Any]:
        # the warrant first (right launch; replacing terminates the running app: terminate too), on
        # whatever app it is scoped to; the descriptor only then, and its app must be in that scope
        warrant = self._check(auth, "submit_app", ("launch", "terminate") if replace else "launch", ANY_APP)
        descriptor = warrants.parse_descriptor(bytes(descriptor_xml), str(source), read_files=False)
        if warrant.app is not None and warrant.app != descriptor.name:
            raise warrants.InsufficientRights(f"warrant is scoped to app {warrant.app!r}, not {descriptor.name!r}")
        return self.node.submit_app(bytes(descriptor_xml), str(source), names.check_codebase(codebase_sha), bool(replace),
                                    bool(start))

    @_guarded
    def run_netlet(self, auth, app: str, slot: str) -> str:
        self._check(auth, "run_netlet", "launch", app)
        return self.node.run_netlet(app, slot)

    @_guarded
    def terminate(self, auth, app: str, grace: float | None = None, wait_s: float = 60.0) -> bool:
        self._check(auth, "terminate", "terminate", app)
        return self.node.terminate(app, grace, min(float(wait_s), 600.0))

    @_guarded
    def signal(self, auth, app: str, slot: str, signame: str) -> str:
        self._check(auth, "signal", "kill", app)
        sig = USER_SIGNALS.get(str(signame).upper().removeprefix("SIG"))
        if sig is None:
            raise BadInput(f"unknown signal {signame!r} (use one of {', '.join(USER_SIGNALS)})")
        return self.node.signal(app, slot, sig)

    @_guarded
    def reset(self, auth, app: str, slot: str) -> str | None:
        """Wipe one backup's replica storage and restart it (it catches up from the master)."""
        self._check(auth, "reset", "kill", app)
        return self.node.reset(str(app), str(slot))

    # -- status -----------------------------------------------------------
    @_guarded
    def status(self, auth, app: str | None = None, scope: str = "cluster") -> dict[str, Any]:
        """Apps and netlets of the whole cluster (``scope="node"``: of this node only)."""
        self._check(auth, "status", "status", app)
        if scope not in ("cluster", "node"):
            raise BadInput(f"unknown status scope {scope!r} (cluster or node)")
        view = views.cluster_apps_view(self.node, app) if scope == "cluster" else views.apps_view(self.node, app)
        if app is not None and not view["apps"]:
            raise NotFound(f"no app named {app!r}")
        return view

    @_guarded
    def owner_op(self, auth, app: str, op: str, args: list) -> Any:
        """Node to node: what only an app's owner can answer (``hosting.cluster.agent``). Only a member
        node's credential (right ``member``) is accepted, and only arguments that concern ``app``."""
        self._check(auth, "owner_op", "member", names.check_app(app))
        return self.node.owner_op(app, op, owner_op_args(app, op, args))

    @_guarded
    def host_status(self, auth) -> dict[str, Any]:
        self._check(auth, "host_status", "status")
        return views.host_view(self.node)

    @_guarded
    def events(self, auth, since: int = 0, app: str | None = None, wait_s: float = 0.0,
               scope: str = "node") -> list[dict]:
        """Events after index ``since``: this node's own log (``scope="node"``, indexes of its
        registry), or in a cluster every node's (``scope="cluster"``, indexes are etcd revisions,
        each event names its node). A node alone answers ``cluster`` with its own log."""
        self._check(auth, "events", "status", app)
        if scope not in ("node", "cluster"):
            raise BadInput(f"events: scope must be 'node' or 'cluster', not {scope!r}")
        wait = max(0.0, min(float(wait_s), MAX_EVENT_WAIT_S))
        events = self.node.cluster_events if scope == "cluster" else self.node.own_events
        return events.read(int(since), app, wait_s=wait)

    @_guarded
    def logs(self, auth, app: str, slot: str, previous: bool = False, offset: int = -1,
             max_bytes: int = 65536) -> dict[str, Any]:
        """A chunk of a netlet's log: the current run's (or the previous one's) file.

        ``offset`` -1 means "the last ``max_bytes``"; returns ``{"path", "data",
        "offset", "size"}`` where ``offset`` is where the next read starts.
        """
        self._check(auth, "logs", "status", app)
        log_dir = self.node.home.log_dir(app, slot)  # names checked, under the logs root
        files = sorted(Path(e.path) for e in os.scandir(log_dir)  # regular files named as logs only
                       if names.LOG_FILE_RE.fullmatch(e.name) and e.is_file(follow_symlinks=False)) \
            if log_dir.is_dir() else []
        if not files or (previous and len(files) < 2):
            raise NotFound(f"no {'previous ' if previous else ''}log for {app}/{slot}")
        path: Path = files[-2] if previous else files[-1]
        max_bytes = max(1, min(int(max_bytes), MAX_LOG_CHUNK))
        try:  # nor a link swapped in since
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as err:
            raise NotFound(f"log {path.name} of {app}/{slot} cannot be opened ({err.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"log {path.name} of {app}/{slot} is not a regular file")
            size = st.st_size
            start = max(0, size - max_bytes) if offset < 0 else min(int(offset), size)
            f.seek(start)
            data = f.read(max_bytes)
        return {"path": str(path), "data": data, "offset": start + len(data), "size": size}

    # -- netlets ----------------------------------------------------------
    @_guarded
    def renew(self, auth, netlet_id: str, status: dict | None = None,
              control_epoch: int | None = None) -> dict[str, Any]:
        self._check_netlet(auth, "renew", "lease", netlet_id)
        return self.node.renew(netlet_id, status if isinstance(status, dict) else None,
                               None if control_epoch is None else int(control_epoch))

    @_guarded
    def arbiter_request(self, auth, netlet_id: str, kind: str, epoch: int, slot: str | None,
                        incarnation: str | None = None, version: int | None = None) -> dict[str, Any]:
        """The master's shrink/expand of the in-sync set, or its sync (see ``hosting.election.arbiter``)."""
        self._check_netlet(auth, "arbiter_request", "lease", netlet_id)
        return self.node.arbiter_request(netlet_id, str(kind), int(epoch), None if slot is None else str(slot),
                                         None if incarnation is None else str(incarnation),
                                         None if version is None else int(version))

    @_guarded
    def app_access(self, auth, app: str, after_epoch: int | None = None, wait_s: float = 0.0) -> dict[str, Any]:
        """For access points: the app credential, endpoints and master (right ``call``);
        with ``after_epoch``, waits up to ``wait_s`` (at most MAX_EVENT_WAIT_S) for a newer master."""
        self._check(auth, "app_access", "call", app)
        wait = max(0.0, min(float(wait_s), MAX_EVENT_WAIT_S))
        return self.node.app_access(app, None if after_epoch is None else int(after_epoch), wait)

    @_guarded
    def report(self, auth, netlet_id: str, status: dict) -> None:
        self._check_netlet(auth, "report", "report", netlet_id)
        if not isinstance(status, dict):
            raise BadInput("status must be a mapping")
        self.node.report(netlet_id, status)

    # -- control lease: granted by the elector alone, never on request; observable ------
    @_guarded
    def control_state(self, auth, app: str) -> dict[str, Any]:
        self._check(auth, "control_state", "status", app)
        self.node.descriptor(app)
        return self.node.control.current(app)
