"""Node-issued warrants: each is bound to one live process of one instance of its app.

The node issues a warrant to every process it starts for an app: each netlet, each run of a
custom bootstrap (``hosting.bootstrapper``). Such a warrant's ``data`` is its *binding*,
``KIND:INSTANCE:PROCESS``:

  * KIND — ``netlet`` or ``bootstrap`` (:data:`KINDS`: the rights it is issued with, the only
    hosting methods it opens, its lifetime);
  * INSTANCE — the instance of the app it was issued for, :func:`instance_of` the app's secret:
    every submit makes a new secret, so the next app of the same name is another instance, and
    every node of a cluster (each holds the secret) derives the same one;
  * PROCESS — the process it was issued to: a netlet id (``app/type/i#incarnation``, never reused
    within an instance) or a bootstrap run's door holder (``app/bootstrap#<random>``).

Contracts (:meth:`Bindings.check`, called on every hosting call by ``hosting.api`` alone):
  * A warrant any link of whose chain holds a binding is accepted only by the node that issued
    that link (only it knows whether the process lives), only for the methods of its kind, only
    while its app's current instance here is the binding's, and only while its process is alive
    here (``Node.holder_alive``: for a netlet, one the supervisor watches — a netlet re-adopted
    after a node restart keeps its warrant; for a bootstrap, the run the node watches now).
  * Refusals: :class:`HolderGone` (a ``NotFound``) when the process or the instance is gone — a
    netlet's heartbeat takes it as "disowned" and exits; ``InsufficientRights`` for a method of
    another kind, another node's binding, or a malformed one.
  * The time window (``Kind.lifetime``) is a second layer only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Protocol

import warrants
from warrants import names
from warrants.errors import BadInput, InsufficientRights, NotFound


@dataclass(frozen=True)
class Kind:
    """One kind of process the node issues warrants to."""

    name: str
    rights: tuple[str, ...]  # what its warrant grants (each method still checks its own right)
    methods: frozenset[str]  # the only hosting methods its warrant opens
    lifetime: dt.timedelta  # its warrant's window (a second layer: the binding is the first)


NETLET = Kind("netlet", ("lease", "report", "status"),
              frozenset({"renew", "arbiter_request", "report", "status"}), dt.timedelta(days=365))
BOOTSTRAP = Kind("bootstrap", ("launch", "status"), frozenset({"run_netlet", "status"}), dt.timedelta(hours=1))
KINDS = {k.name: k for k in (NETLET, BOOTSTRAP)}

_INSTANCE_RE = re.compile(r"[0-9a-f]{32}")
_PREFIXES = tuple(f"{k}:" for k in KINDS)


class HolderGone(NotFound):
    """The process a node-issued warrant was bound to is gone, or its app instance is."""


def instance_of(app_secret: bytes) -> str:
    """The app instance a secret stands for (one-way: it reveals nothing of the secret)."""
    return hmac.new(app_secret, b"jtrix-instance/1", hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Binding:
    kind: Kind
    instance: str
    process: str
    app: str

    @property
    def data(self) -> str:
        return f"{self.kind.name}:{self.instance}:{self.process}"


def bind(kind: Kind, instance: str, process: str) -> Binding:
    """A binding, checked: ``process`` must be a process name of ``kind``; ValueError otherwise."""
    if not _INSTANCE_RE.fullmatch(instance):
        raise ValueError(f"bad app instance {instance!r}")
    try:
        app = (names.NetletId if kind is NETLET else names.BootstrapRun).parse(process).app
    except BadInput:
        raise ValueError(f"bad {kind.name} process name {process!r}") from None
    return Binding(kind, instance, process, app)


def parse(data: str | None) -> Binding | None:
    """The binding ``data`` holds; None if it names none; InsufficientRights if it is malformed
    (a warrant claiming a binding it does not spell right opens nothing)."""
    if not data or not data.startswith(_PREFIXES):
        return None
    parts = data.split(":", 2)
    try:
        if len(parts) != 3:
            raise ValueError("KIND:INSTANCE:PROCESS expected")
        return bind(KINDS[parts[0]], parts[1], parts[2])
    except ValueError as err:
        raise InsufficientRights(f"malformed node-issued warrant data ({err})") from None


def issue(node_key, node_cert, service: str, binding: Binding, now: dt.datetime | None = None) -> tuple[bytes, Any]:
    """A warrant bound to ``binding``, for its app only, held by a fresh key: (xml, key)."""
    key = warrants.generate_key()
    now = now or dt.datetime.now(dt.timezone.utc)
    xml = warrants.issue_warrant(node_key, node_cert, rights=list(binding.kind.rights), service=service,
                                 app=binding.app, holder=key.public_key(),
                                 not_before=now - dt.timedelta(minutes=5), not_after=now + binding.kind.lifetime,
                                 data=binding.data)
    return xml, key


class Holders(Protocol):
    """What the node answers about the processes it issued warrants to."""

    def app_instance(self, app: str) -> str | None: ...

    def holder_alive(self, binding: Binding) -> bool: ...


class Bindings:
    """Checks the bindings of verified warrants against this node's live processes."""

    def __init__(self, own_fingerprint: str, holders: Holders) -> None:
        self.own = own_fingerprint
        self.holders = holders

    def check(self, warrant, method: str) -> Binding | None:
        """Raise unless every binding in ``warrant``'s chain holds for a call of ``method`` now
        (module docstring); returns the leaf-most binding (None: the warrant has none)."""
        found = None
        for link in warrant.chain:
            binding = parse(link.data)
            if binding is None:
                continue
            if link.issuer_fingerprint != self.own:
                raise InsufficientRights(f"warrant {link.serial} is bound to {binding.kind.name}"
                                         f" {binding.process} of another node")
            if method not in binding.kind.methods:
                raise InsufficientRights(f"a {binding.kind.name}'s warrant does not open {method!r}"
                                         f" (only {', '.join(sorted(binding.kind.methods))})")
            if self.holders.app_instance(binding.app) != binding.instance:
                raise HolderGone(f"warrant of {binding.process} refused: its instance of app"
                                 f" {binding.app!r} is gone")
            if not self.holders.holder_alive(binding):
                raise HolderGone(f"warrant of {binding.process} refused: that {binding.kind.name}"
                                 " is not alive on this node")
            found = found or binding
        return found
