"""Every key jtrix keeps in etcd, built and taken apart here only (as etcd's own ``schema`` package).

Keys, under the cluster's prefix (``hosting.cluster.etcd`` adds it):

==========================================  ==============================================================
``nodes/<node>``                            a member, under its lease (``hosting.cluster.membership``)
``certs/<service>``                         a member's node certificate (``hosting.cluster.trust``)
``tls/ca``                                  the cluster CA (``hosting.cluster.ca``)
``apps/<app>/owner``                        the node running the app's elections, under its lease
``apps/<app>/placement``                    ``{slot: node}`` (``hosting.cluster.agent``)
``apps/<app>/live/<type>/<index>``          a ready netlet of the slot, under its node's lease
``apps/<app>/incarnations/<type>/<index>``  the slot's incarnation counter
``apps/<app>/spec``                         what the owner registered (``hosting.cluster.store``)
``apps/<app>/moved``                        slots re-created elsewhere, not caught up yet
``apps/<app>/arbiter``                      the arbiter's state (``hosting.cluster.epochs``)
``codebases/<sha>``                         a codebase's index; its chunks at ``codebases/<sha>/<n>``
``events/<node>/<index>``                   a node's event, the index in 12 digits (``hosting.cluster.events``)
==========================================  ==============================================================

Contracts:
  * Every name in a key obeys its grammar (``warrants.names`` for apps, slots and codebases; a
    node or service name is non-empty without ``/``), checked when a :class:`Key` is made, so
    a key can be built only for what it may name.
  * ``parse(str(k)) == k`` for every :class:`Key`, and ``str(parse(s)) == s`` for every ``s``
    that ``parse`` accepts: one spelling per key. Anything else is BadInput (``match``: None).
  * Every key of a family starts with that family's prefix (``NODES``, ``CERTS``, ``APPS``,
    ``CODEBASES``, ``EVENTS``), which range reads and watches use; ``events_of(node)`` is a
    prefix of exactly that node's event keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warrants import names
from warrants.errors import BadInput

NODES = "nodes/"
CERTS = "certs/"
APPS = "apps/"
CODEBASES = "codebases/"
EVENTS = "events/"
CA = "tls/ca"

#: ``apps/<app>/<kind>``
APP_KINDS = ("owner", "placement", "spec", "moved", "arbiter")
#: ``apps/<app>/<kind>/<type>/<index>``
SLOT_KINDS = ("live", "incarnations")
#: the other kinds, by their family's prefix (``ca`` is the one key of its kind)
KINDS = ("node", "cert", "ca", "codebase", "codebase_chunk", "event") + APP_KINDS + SLOT_KINDS
EVENT_DIGITS = 12
_DIGITS = re.compile(r"[0-9]+")
MAX_KEY = 1024  # characters: far below etcd's limit, far above any key jtrix makes


def check_node(name) -> str:
    """A member's name (and a certificate's service id): non-empty, no ``/``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise BadInput(f"bad node name {str(name)[:80]!r} (non-empty, no '/')")
    return name


def _number(value, what: str, below: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (below is not None and value >= below):
        raise BadInput(f"bad {what} {value!r}")
    return value


@dataclass(frozen=True)
class Key:
    """One key: its ``kind`` and what it names. ``name`` is the app, node, service or codebase
    (``""`` for ``ca``); ``slot`` only for the slot kinds; ``number`` only for a codebase chunk
    (its position) and an event (its index). Checked at construction."""

    kind: str
    name: str = ""
    slot: str | None = None
    number: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadInput(f"unknown etcd key kind {self.kind!r}")
        if self.kind == "ca":
            if self.name != "":
                raise BadInput("the CA key names nothing")
        elif self.kind in ("node", "cert", "event"):
            check_node(self.name)
        elif self.kind in ("codebase", "codebase_chunk"):
            names.check_codebase(self.name)
        else:
            names.check_app(self.name)
        if (self.slot is not None) != (self.kind in SLOT_KINDS):
            raise BadInput(f"an etcd key of kind {self.kind} {'needs' if self.slot is None else 'has no'} slot")
        if self.slot is not None:
            names.check_slot(self.slot)
        if (self.number is not None) != (self.kind in ("codebase_chunk", "event")):
            raise BadInput(f"an etcd key of kind {self.kind} {'needs' if self.number is None else 'has no'} number")
        if self.number is not None:
            _number(self.number, f"{self.kind} number", 10 ** EVENT_DIGITS if self.kind == "event" else None)
        if len(str(self)) > MAX_KEY:
            raise BadInput(f"etcd key longer than {MAX_KEY} characters")

    def __str__(self) -> str:
        kind = self.kind
        if kind == "ca":
            return CA
        if kind == "node":
            return NODES + self.name
        if kind == "cert":
            return CERTS + self.name
        if kind == "codebase":
            return CODEBASES + self.name
        if kind == "codebase_chunk":
            return f"{CODEBASES}{self.name}/{self.number}"
        if kind == "event":
            return f"{EVENTS}{self.name}/{self.number:0{EVENT_DIGITS}d}"
        if kind in SLOT_KINDS:
            return f"{APPS}{self.name}/{kind}/{self.slot}"
        return f"{APPS}{self.name}/{kind}"


def _candidate(parts: list[str]) -> Key:
    """The key ``parts`` would spell (``parse`` then checks it spells exactly that)."""
    family, rest = parts[0] + "/", parts[1:]
    if "/".join(parts) == CA:
        return Key("ca")
    if family == NODES and len(rest) == 1:
        return Key("node", rest[0])
    if family == CERTS and len(rest) == 1:
        return Key("cert", rest[0])
    if family == CODEBASES and len(rest) == 1:
        return Key("codebase", rest[0])
    if family == CODEBASES and len(rest) == 2 and _DIGITS.fullmatch(rest[1]):
        return Key("codebase_chunk", rest[0], number=int(rest[1]))
    if family == EVENTS and len(rest) == 2 and _DIGITS.fullmatch(rest[1]):
        return Key("event", rest[0], number=int(rest[1]))
    if family == APPS and len(rest) == 2 and rest[1] in APP_KINDS:
        return Key(rest[1], rest[0])
    if family == APPS and len(rest) == 4 and rest[1] in SLOT_KINDS:
        return Key(rest[1], rest[0], slot=f"{rest[2]}/{rest[3]}")
    raise BadInput("not a key of the schema")


def parse(key) -> Key:
    """The :class:`Key` ``key`` spells; BadInput for anything that is not exactly one."""
    if not isinstance(key, str) or len(key) > MAX_KEY:
        raise BadInput(f"bad etcd key ({type(key).__name__})")
    try:
        parsed = _candidate(key.split("/"))
        if str(parsed) != key:
            raise BadInput("not spelled canonically")
    except BadInput as err:
        raise BadInput(f"bad etcd key {key[:120]!r}: {err}") from None
    return parsed


def match(key) -> Key | None:
    """``parse(key)``, or None for a key outside the schema (what a scan or a watch skips)."""
    try:
        return parse(key)
    except BadInput:
        return None


# -- builders: each key as the etcd client takes it ------------------------------------------
def node(name: str) -> str:
    return str(Key("node", name))


def cert(service: str) -> str:
    return str(Key("cert", service))


def app_key(kind: str, app: str) -> str:
    """``apps/<app>/<kind>`` for ``kind`` in :data:`APP_KINDS`."""
    if kind not in APP_KINDS:
        raise BadInput(f"not a per-app key kind: {kind!r}")
    return str(Key(kind, app))


def owner(app: str) -> str:
    return app_key("owner", app)


def placement(app: str) -> str:
    return app_key("placement", app)


def spec(app: str) -> str:
    return app_key("spec", app)


def moved(app: str) -> str:
    return app_key("moved", app)


def arbiter(app: str) -> str:
    return app_key("arbiter", app)


def live(app: str, slot: str) -> str:
    return str(Key("live", app, slot=slot))


def incarnations(app: str, slot: str) -> str:
    return str(Key("incarnations", app, slot=slot))


def codebase(sha: str) -> str:
    return str(Key("codebase", sha))


def codebase_chunk(sha: str, index: int) -> str:
    return str(Key("codebase_chunk", sha, number=index))


def event(node_name: str, index: int) -> str:
    return str(Key("event", node_name, number=index))


def events_of(node_name: str) -> str:
    """The prefix of exactly ``node_name``'s event keys."""
    return f"{EVENTS}{check_node(node_name)}/"
