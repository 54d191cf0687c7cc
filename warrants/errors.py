"""Errors named by whose fault they are.

Every error a user can cause or meet derives from :class:`JtrixError` and
carries the process exit code the CLI uses for it (DESIGN.md, "Exit codes"):

* ``BadInput`` (2): the caller handed us something wrong — malformed XML, an
  invalid descriptor, a refused warrant. The message is one line and names the
  cause (``file:line: ...`` for XML). Nothing was changed.
* ``NotFound`` (3): the thing named (app, netlet, hosting node) does not exist
  or is not running.
* ``JtrixError`` itself (1): the operation was valid but failed.

Anything that is not a ``JtrixError`` is a bug in jtrix and may show a traceback.

Every error a client (the CLI, an access point, a netlet's node client) can
receive, by its unique name. *Retryable*: the same call may succeed later
without changing it. *Outcome known*: whether the caller knows that the call
did not take effect (or, for ``CommandFailed``, what its effect was).

====================  =====================  ==========================================  ===========  =============
error                 defined in             meaning                                     retryable    outcome known
====================  =====================  ==========================================  ===========  =============
``JtrixError``        warrants.errors        a valid operation failed (base; exit 1)     no           yes
``BadInput``          warrants.errors        the caller's input is wrong (exit 2)        no           yes: nothing
                                                                                                      changed
``XmlRejected``       warrants.errors        unsafe, malformed or invalid XML            no           yes
``WarrantError``      warrants.errors        a warrant is refused (base of: Malformed,   no           yes
                                             BadSignature, Expired, NotYetValid,
                                             UntrustedIssuer, BrokenDelegation,
                                             InsufficientRights, HolderProofFailed)
``CallRefused``       hosting.auth           the node refused the call's authorization   no           yes
``CredentialRefused`` rpc.credential         a netlet refused the caller's credential    no           yes
``ConnectionRefused`` hosting.client         the node refused the connection (TLS)       no           yes
``NotFound``          warrants.errors        the app, netlet or node is not there        no           yes
                                             (exit 3)
``HolderGone``        hosting.bindings       a bound warrant's process or run has ended  no           yes
``NotOwner``          warrants.errors        cluster: this node does not own the app     yes, at the  yes
                                                                                         owner
``NodeUnreachable``   hosting.client         no node answers at the known address        yes          no (may have
                                             (exit 3)                                                 been sent)
``CallTimedOut``      hosting.client         the node did not answer in time             if           no
                                                                                         idempotent
``NotMaster``         warrants.errors        the replica is not (provably) the master    yes, same    no; a retry
                                                                                         request id   settles it
``Unavailable``       warrants.errors        no master answered within the access        only as a    no
                                             point's timeout                             new call
``CommandFailed``     warrants.errors        the app's own code raised                   no           yes: the
                                                                                                      result
====================  =====================  ==========================================  ===========  =============

``LeaseFenced`` (hosting.control) and ``MasterFenced`` (netlets.replication)
are not in it: the first is answered to a renewing master as
``{"ok": False}``, the second is an effect the runner acts on (the master
exits); neither reaches a client as itself.
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


class NotMaster(JtrixError):
    """The netlet asked is not (or no longer provably) the master: re-resolve and retry.

    Retrying the same call with the same request id is always safe.
    """


class Unavailable(JtrixError):
    """The app could not be reached within the access point's timeout (no master, lost connections).

    For a command the outcome is unknown: it may or may not have been applied.
    Retrying it as a new call may apply it twice; make such commands idempotent.
    """


class CommandFailed(JtrixError):
    """The app's own code raised: ``apply`` (or the method) refused the call.

    The message starts with the exception's type name. This is the call's
    result, not a failure of jtrix; retrying will not change it.
    """
