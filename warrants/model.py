"""The verified warrant: an immutable statement of who may do what, where, until when.

A :class:`Warrant` is only ever produced by verification (``warrants.verify``);
holding one means its signature, its chain up to a trusted root and its
narrowing rules have been checked. Its time window is *not* re-checked by the
object itself: callers that use a warrant later call :meth:`Warrant.check_time`
or :meth:`Warrant.authorize`, which do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: Rights a warrant may grant. ``call`` lets the bearer use an app through an
#: access point (it obtains the app's credential); ``lease`` and ``report`` are
#: what a netlet needs to renew its leases and publish its status; ``member`` is
#: a cluster node's own credential to forward owner operations to another node
#: (``hosting.cluster.agent``).
KNOWN_RIGHTS = frozenset(
    {"launch", "status", "terminate", "kill", "lease", "report", "call", "delegate", "member"}
)
#: Every right but ``member``: what an admin warrant carries, so no client warrant, nor any
#: warrant delegated from one (delegation only narrows), can carry ``member``.
CLIENT_RIGHTS = KNOWN_RIGHTS - {"member"}


@dataclass(frozen=True)
class Warrant:
    """A verified warrant (leaf of a possibly delegated chain).

    Invariants (established by verification, relied on by every caller):
      * ``rights`` is a subset of ``KNOWN_RIGHTS`` and, when ``parent`` is set,
        of ``parent.rights``; delegation requires ``"delegate" in parent.rights``.
      * ``app`` is ``None`` (the whole service) or one app name; a delegated
        warrant's app equals its parent's when the parent names one.
      * ``service`` equals ``parent.service``.
      * ``not_before <= not_after`` and, for a delegated warrant, its window lies
        within its parent's.
      * the issuer of a delegated warrant is the holder named by its parent.
    """

    serial: str
    issuer_cert_der: bytes  # the signer's X.509 certificate (DER)
    issuer_fingerprint: str  # sha256 hex of issuer_cert_der
    rights: frozenset[str]
    service: str
    app: str | None
    holder_public_key_der: bytes | None  # SubjectPublicKeyInfo DER, or None (bearer)
    not_before: dt.datetime  # timezone-aware UTC
    not_after: dt.datetime  # timezone-aware UTC
    data: str | None  # opaque warrant data, as issued
    parent: Warrant | None
    xml: bytes  # the exact document that was verified

    @property
    def root(self) -> Warrant:
        """The top of the delegation chain (issued by a trusted certificate)."""
        w = self
        while w.parent is not None:
            w = w.parent
        return w

    @property
    def chain(self) -> tuple[Warrant, ...]:
        """The chain from this warrant up to the root, leaf first."""
        out, w = [], self
        while w is not None:
            out.append(w)
            w = w.parent
        return tuple(out)

    def check_time(self, now: dt.datetime | None = None) -> None:
        """Raise unless every warrant of the chain is valid at ``now`` (default: the current UTC time).

        Raises :class:`~warrants.errors.WarrantExpired` or
        :class:`~warrants.errors.WarrantNotYetValid` naming the serial of the
        first offending link (leaf first).
        """
        from warrants.errors import WarrantExpired, WarrantNotYetValid

        now = _utc(now)
        w: Warrant | None = self
        while w is not None:
            if now < w.not_before:
                which = "warrant" if w is self else "parent warrant"
                raise WarrantNotYetValid(
                    f"{which} {w.serial} is not valid before {_iso(w.not_before)} (now {_iso(now)})"
                )
            if now > w.not_after:
                which = "warrant" if w is self else "parent warrant"
                raise WarrantExpired(f"{which} {w.serial} expired at {_iso(w.not_after)} (now {_iso(now)})")
            w = w.parent

    def authorize(
        self,
        right: str,
        service: str,
        app: str | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        """Raise unless this warrant lets its bearer use ``right`` on ``service`` (and ``app``) at ``now``.

        Checks the time window of the whole chain, then that ``right`` is
        granted, that the warrant is for ``service``, and, when the warrant is
        narrowed to one app, that ``app`` is that app (an app-wide warrant does
        not cover service-wide operations, ``app=None``). A warrant without an
        app covers every app of its service.
        Raises :class:`~warrants.errors.InsufficientRights` for scope problems.
        """
        from warrants.errors import InsufficientRights

        self.check_time(now)
        if right not in self.rights:
            granted = ",".join(sorted(self.rights))
            raise InsufficientRights(f"warrant {self.serial} does not grant {right!r} (grants {granted})")
        if service != self.service:
            raise InsufficientRights(
                f"warrant {self.serial} is for service {self.service!r}, not {service!r}"
            )
        if self.app is not None and app != self.app:
            target = f"app {app!r}" if app is not None else "the whole service"
            raise InsufficientRights(f"warrant {self.serial} covers app {self.app!r} only, not {target}")


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware UTC time")
    return now.astimezone(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
