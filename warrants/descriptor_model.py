"""The validated bootstrap descriptor: an immutable model of one application.

Produced only by ``warrants.parse_descriptor`` (which validates the XML against
the shipped schema and checks the cross-field rules listed on each class);
hosting and netlets rely on these invariants without re-checking them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

AckPolicy = Literal["all", "async"]  # quorum is not offered: see README "Guarantees"
Durability = Literal["fsync", "write", "memory"]
ResourceKind = Literal["directory", "port"]


@dataclass(frozen=True)
class Resource:
    """A resource bound to every slot of a netlet type.

    ``directory``: a persistent per-slot directory, kept across replacements.
    ``port``: a TCP port chosen once per slot (``port=0`` in the descriptor
    means "allocate one"); a replacement netlet gets the same port.
    """

    kind: ResourceKind
    name: str  # unique within its netlet type; [a-z][a-z0-9_-]*
    port: int = 0  # only for kind == "port"; 0 = allocate


@dataclass(frozen=True)
class RestartPolicy:
    """Crash-loop handling for every slot of the app.

    The n-th consecutive failed start waits ``min(cap, base * 2**(n-1))``
    seconds (with full jitter). A run lasting ``healthy_after`` seconds resets
    the count. After ``give_up_after`` consecutive failures (0 = never) the slot
    stays exited.
    Invariants: ``0 < base <= cap``; ``healthy_after > 0``; ``give_up_after >= 0``.
    """

    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    healthy_after: float = 10.0
    give_up_after: int = 0


@dataclass(frozen=True)
class NetletType:
    """A named role of the app.

    Invariants: ``name`` matches ``[a-z][a-z0-9_-]*`` and is unique in the app;
    ``class_ref`` is ``module:Class`` (dotted module, identifier class);
    ``replicas >= 1``; resource names unique; param names unique.
    """

    name: str
    class_ref: str
    replicas: int = 1
    master_eligible: bool = False
    resources: tuple[Resource, ...] = ()
    params: tuple[tuple[str, str], ...] = ()  # (name, value) in document order

    @property
    def slots(self) -> tuple[str, ...]:
        """The stable slot names of this type: ``name/0`` .. ``name/replicas-1``."""
        return tuple(f"{self.name}/{i}" for i in range(self.replicas))


@dataclass(frozen=True)
class Codebase:
    """Where the app's code lives.

    ``path`` is absolute (resolved against the descriptor's directory) and is
    either a directory or a ``.tar.gz``/``.zip`` archive. ``sha256`` is the
    archive's digest when the descriptor records one (checked on packaging).
    """

    path: Path
    sha256: str | None = None


@dataclass(frozen=True)
class Descriptor:
    """One application, as described by its bootstrap descriptor.

    Invariants: ``name`` matches ``[a-z][a-z0-9_-]{0,62}``; at most one netlet
    type is master-eligible; ``lease_ttl >= 0.2``; ``grace >= 0``.
    ``warrant_xml`` is the embedded warrant or the content of the referenced
    file (``warrant_source`` names where it came from); ``None`` means "use the
    local default node's admin warrant".
    """

    name: str
    codebase: Codebase
    netlet_types: tuple[NetletType, ...]
    lease_ttl: float = 1.0
    grace: float = 2.0  # seconds between SIGTERM and SIGKILL
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    ack: AckPolicy = "all"
    durability: Durability = "fsync"
    bootstrap_class: str | None = None  # custom bootstrap, module:Class
    warrant_xml: bytes | None = None
    warrant_source: str | None = None
    source: str = "<descriptor>"  # file the descriptor was read from

    @property
    def master_type(self) -> NetletType | None:
        """The master-eligible netlet type, if any."""
        for t in self.netlet_types:
            if t.master_eligible:
                return t
        return None

    def netlet_type(self, name: str) -> NetletType:
        """The netlet type called ``name`` (KeyError if none)."""
        for t in self.netlet_types:
            if t.name == name:
                return t
        raise KeyError(name)
