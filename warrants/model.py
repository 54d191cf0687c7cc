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
#: what a netlet needs to renew its leases and publish its status.
KNOWN_RIGHTS = frozenset(
    {"launch", "status", "terminate", "kill", "lease", "report", "call", "delegate"}
)


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
