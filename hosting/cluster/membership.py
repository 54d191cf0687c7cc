"""Node membership: which hosting nodes are alive, and whether this one still counts.

Two implementations of one small interface (``join``, ``nodes``, ``claim_app``,
``release_app``, ``close``):

* :class:`LocalMembership` — the single-node default: one member, itself,
  always healthy; every app is its own.
* :class:`EtcdMembership` — a cluster: this node is the key ``nodes/<name>``
  under an etcd lease it keeps alive; apps it runs are ``apps/<app>/owner``
  keys under the *same* lease.

Safety model (etcd):
  * A node is a member exactly while its lease lives. When it stops renewing
    (killed, paused, cut off) etcd deletes its member key and its app claims
    together, one lease TTL after its last renewal: the cluster declares it
    dead and may give its apps to another node.
  * A node that finds its lease gone (a keepalive answering -1), or that could
    not renew for a whole TTL, is *fenced*: it calls ``on_fenced`` exactly once
    per lost lease — the node stops its netlets there, since the cluster
    presumes them dead — and then rejoins with a new lease and re-claims only
    apps nobody else claimed meanwhile.
  * An app is claimed by one live node at a time (``claim_app`` is a create
    transaction); a name is held by one live node at a time, except that a
    node restarting from the same home (same service id) takes its own key
    over — and, while that key's lease still lives, the lease itself, with the
    claims and published netlets under it (its netlets outlived its process).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from hosting.cluster import keys
from hosting.cluster.etcd import Etcd, EtcdUnavailable
from hosting.timing import Timing
from warrants.errors import BadInput, JtrixError

log = logging.getLogger(__name__)

LOCAL_NAME = "local"


@dataclass(frozen=True)
class Member:
    name: str
    uri: str | None
    service: str
    pid: int
    started: float
    healthy: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "service": self.service, "pid": self.pid,
                "started": self.started, "healthy": self.healthy, **self.extra}


class AppClaimed(BadInput):
    """Another live node runs an app of this name (the caller picked a taken name)."""


class Membership(Protocol):
    """What a node needs of its cluster (see module docstring for the contracts)."""

    clustered: bool
    name: str
    info: dict[str, Any]

    def join(self) -> None: ...

    def nodes(self) -> list[Member]: ...

    def claim_app(self, app: str) -> None: ...

    def owns(self, app: str) -> bool: ...

    def release_app(self, app: str) -> None: ...

    def close(self, leave: bool = False) -> None: ...


class LocalMembership:
    """The single-node cluster: this node alone (see module docstring)."""

    clustered = False

    def __init__(self, name: str, info: dict[str, Any]) -> None:
        self.name, self.info = name, info

    def join(self) -> None:
        pass

    def nodes(self) -> list[Member]:
        return [_member(self.name, self.info, healthy=True)]

    def claim_app(self, app: str) -> None:
        pass

    def owns(self, app: str) -> bool:
        return True

    def release_app(self, app: str) -> None:
        pass

    def close(self, leave: bool = False) -> None:
        pass


@dataclass(frozen=True)
class EtcdMembershipConfig:
    """Checked at construction: etcd's lease unit is whole seconds, and the renewal
    timing derived from ``ttl`` (``hosting.timing``) is consistent."""

    ttl: int = 3  # seconds without a renewal before the cluster declares a node dead

    def __post_init__(self) -> None:
        if self.ttl < 1:
            raise BadInput("membership ttl must be at least 1 s")
        Timing(membership_ttl=self.ttl)


class EtcdMembership:
    """Membership of a node in an etcd-backed cluster (see module docstring)."""

    clustered = True

    def __init__(self, etcd: Etcd, name: str, info: dict[str, Any], on_fenced: Callable[[str], None],
                 config: EtcdMembershipConfig = EtcdMembershipConfig(),
                 on_app_lost: Callable[[str], None] | None = None,
                 on_rejoined: Callable[[], None] | None = None) -> None:
        """``on_fenced(why)``: this node's lease is gone (called before rejoining);
        ``on_app_lost(app)``: after a rejoin, another node had claimed ``app``;
        ``on_rejoined()``: a member again after a fence (its apps re-claimed)."""
        if not name or "/" in name:
            raise BadInput(f"invalid node name {name!r} (non-empty, no '/')")
        self.etcd, self.name, self.info, self.config = etcd, name, dict(info), config
        self.on_fenced, self.on_app_lost, self.on_rejoined = on_fenced, on_app_lost, on_rejoined
        # Renewals must fail fast: a keepalive stuck for longer than a third of the ttl
        # would let the lease lapse unnoticed.
        self.timing = Timing(membership_ttl=config.ttl)  # re-derived from the ttl etcd grants
        self._renewer = Etcd(etcd.url, etcd.prefix, timeout=self.timing.membership_renew_timeout_s, tls=etcd.tls)
        self.lease = 0
        self.ttl = config.ttl  # as granted (etcd may raise it to its minimum)
        self._valid_until = 0.0  # monotonic: our lease surely lives until then (from the last renewal sent)
        self._apps: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self) -> str:
        return keys.node(self.name)

    # -- joining ------------------------------------------------------------
    def join(self) -> None:
        """Become a member (BadInput if a live node of another home has the name); start renewing."""
        self._join_once()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="membership")
        self._thread.start()

    def _join_once(self) -> None:
        asked = time.monotonic()
        lease, self.ttl = self.etcd.grant(self.config.ttl)
        self.timing = Timing(membership_ttl=self.ttl)
        value = json.dumps({**self.info, "name": self.name, "pid": os.getpid(), "joined": time.time(),
                            "ttl": self.ttl})
        while self.etcd.create(self._key(), value, lease) is None:
            existing = self.etcd.get(self._key())
            if existing is None:
                continue  # its lease lapsed in between
            if existing.json().get("service") != self.info.get("service"):
                self.etcd.revoke(lease)
                raise BadInput(f"node name {self.name!r} is taken by a live node of another home"
                               f" ({existing.json().get('uri')})")
            # Our own home restarting before its lease lapsed: carry on with that lease, so its
            # claims and published netlets (which outlived the node's process) stay.
            if self.etcd.keepalive(existing.lease) > 0:
                self.etcd.revoke(lease)
                lease = existing.lease
                self.etcd.put(self._key(), value, lease)
                break
            self.etcd.revoke(existing.lease)
        self.lease = lease
        if not self._apps:  # a restart: the claims our lease still holds are ours
            kvs, _ = self.etcd.get_prefix(keys.APPS)
            self._apps = {key.name for kv in kvs if (key := keys.match(kv.key)) is not None and key.kind == "owner"
                          and kv.lease == lease and kv.value.decode() == self.name}
        self._valid_until = asked + self.ttl
        with self._lock:
            lost = {app for app in self._apps if not self._claim(app)}
            self._apps -= lost
        for app in sorted(lost):
            log.warning("app %s was claimed by another node while this one was fenced", app)
            if self.on_app_lost is not None:
                self.on_app_lost(app)

    def _renew_loop(self) -> None:
        """Renew every ttl/3. Membership is counted from when the last successful renewal was
        *sent* (etcd may have extended the lease any time after), so this node gives itself
        up no later than etcd does, plus one renewal attempt (ttl/3 wait + ttl/3 timeout)."""
        last_ok = time.monotonic()
        while not self._stop.wait(self.timing.membership_renew_s):
            sent = time.monotonic()
            try:
                alive = self._renewer.keepalive(self.lease) > 0
            except EtcdUnavailable as err:
                if time.monotonic() - last_ok < self.ttl:
                    continue
                alive, why = False, f"could not renew for {self.ttl} s ({err})"
            else:
                why = "membership lease expired (node paused or cut off)"
            if alive:
                last_ok, self._valid_until = sent, sent + self.ttl
                continue
            log.warning("node %s fenced: %s", self.name, why)
            try:
                self.on_fenced(why)
            except Exception:  # noqa: BLE001 -- the node's handler failed: still rejoin
                log.exception("handling the fence of node %s failed", self.name)
            self._rejoin()
            last_ok = time.monotonic()

    def _rejoin(self) -> None:
        while not self._stop.is_set():
            try:
                self._join_once()
            except EtcdUnavailable as err:
                log.warning("rejoining the cluster failed: %s", err)
                self._stop.wait(self.timing.membership_renew_s)
                continue
            if self.on_rejoined is not None:
                try:
                    self.on_rejoined()
                except Exception:  # noqa: BLE001 -- the node's handler failed: stay a member
                    log.exception("handling the rejoin of node %s failed", self.name)
            return

    # -- apps -------------------------------------------------------------
    def _claim(self, app: str) -> bool:
        key = keys.owner(app)
        if self.etcd.create(key, self.name, self.lease) is not None:
            return True
        owner = self.etcd.get(key)
        return owner is not None and owner.value.decode() == self.name and owner.lease == self.lease

    def claim_app(self, app: str) -> None:
        """Claim ``app`` for this node; AppClaimed if another live node holds it."""
        with self._lock:
            if not self._claim(app):
                owner = self.etcd.get(keys.owner(app))
                raise AppClaimed(f"app {app!r} runs on node {owner.value.decode() if owner else '?'}")
            self._apps.add(app)

    def owns(self, app: str) -> bool:
        """True while this node's claim on ``app`` stands and its lease surely lives, by this
        node's own clock (a node resumed after a pause stops acting as owner at once, before
        its next renewal tells it it was fenced)."""
        return app in self._apps and time.monotonic() < self._valid_until

    def release_app(self, app: str) -> None:
        with self._lock:
            self._apps.discard(app)
            owner = self.etcd.get(keys.owner(app))
            if owner is not None and owner.lease == self.lease:
                self.etcd.delete_if(keys.owner(app), owner.mod_revision)

    # -- views ------------------------------------------------------------
    def nodes(self) -> list[Member]:
        """Every member: one is a member exactly while its key exists; ``healthy`` while
        its lease has more than a third of its ttl left (it renews every third)."""
        kvs, _ = self.etcd.get_prefix(keys.NODES)
        out = []
        for kv in kvs:
            key = keys.match(kv.key)
            if key is None or key.kind != "node":
                continue  # not a member's key
            left = self.etcd.time_to_live(kv.lease)
            info = {**kv.json(), "lease_s": left}
            out.append(_member(key.name, info, healthy=left * 3 >= int(info.get("ttl", 1))))
        return out

    def close(self, leave: bool = False) -> None:
        """Stop renewing. The node's netlets outlive it, so by default its lease is left to
        lapse (a restart from the same home within the ttl takes it over); ``leave``
        revokes it now: members see this node gone at once and its apps unclaimed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not leave:
            return
        try:
            self.etcd.revoke(self.lease)
        except EtcdUnavailable as err:
            log.warning("leaving the cluster: %s (the lease will lapse by itself)", err)


def _member(name: str, info: dict[str, Any], healthy: bool) -> Member:
    known = {"name", "uri", "service", "pid", "started", "joined"}
    return Member(name, info.get("uri"), info.get("service", ""), int(info.get("pid", 0)),
                  float(info.get("started", info.get("joined", 0.0))), healthy,
                  {k: v for k, v in info.items() if k not in known})
