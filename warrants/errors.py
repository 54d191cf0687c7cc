"""Errors named by whose fault they are.

Every error a user can cause or meet derives from :class:`JtrixError` and
carries the process exit code the CLI uses for it (README, "Command line": exit codes):

* ``BadInput`` (2): the caller handed us something wrong — malformed XML, an
  invalid descriptor, a refused warrant. The message is one line and names the
  cause (``file:line: ...`` for XML). Nothing was changed.
* ``NotFound`` (3): the thing named (app, netlet, hosting node) does not exist
  or is not running.
* ``JtrixError`` itself (1): the operation was valid but failed.

Anything that is not a ``JtrixError`` is a bug in jtrix and may show a traceback.

The table of every error a client can receive, by its unique name and where
it is defined, is the docstring of :mod:`rpc.errors` (the runtime errors of a
call live there; the base classes, and the errors of warrants and XML, here).
"""

from __future__ import annotations


class JtrixError(Exception):
    """An operation failed for a reason the user should see (exit code 1)."""

    exit_code = 1


class BadInput(JtrixError):
    """The caller's input is wrong; nothing was changed (exit code 2)."""

    exit_code = 2


class NotFound(JtrixError):
    """The named app, netlet or node does not exist or is not running (exit code 3)."""

    exit_code = 3


class XmlRejected(BadInput):
    """An XML document was refused before use: unsafe, malformed, oversize or schema-invalid.

    The message is ``source:line: cause`` and never quotes the document's content
    beyond element and attribute names.
    """


class WarrantError(BadInput):
    """Base of every reason a warrant is refused (exit code 2)."""


class WarrantMalformed(WarrantError):
    """The warrant is not a well-formed, schema-valid warrant document."""


class BadSignature(WarrantError):
    """A signature in the warrant chain does not verify: the document was tampered with."""


class WarrantExpired(WarrantError):
    """Some warrant in the chain is past its not-after time."""


class WarrantNotYetValid(WarrantError):
    """Some warrant in the chain is before its not-before time."""


class UntrustedIssuer(WarrantError):
    """The root of the chain was not signed by a trusted certificate."""


class BrokenDelegation(WarrantError):
    """A delegated warrant widens its parent, or was not signed by the parent's holder."""


class InsufficientRights(WarrantError):
    """The warrant is valid but does not grant this right on this service/app."""


class HolderProofFailed(WarrantError):
    """The warrant names a holder and the bearer did not prove possession of its key."""


class NotOwner(NotFound):
    """In a cluster: this node does not own the app (ownership moved, or the caller's view is behind).

    Defined here, with the other errors every client registers, so that it crosses the wire as itself.
    """
