"""The runtime errors of a call to an app (answered by its netlet, or concluded by the access
point), and the table of every error a client can receive (the bases and exit codes, and the
errors of warrants and XML, are ``warrants.errors``').

They cross the wire as themselves: ``rpc.wire.register_error_classes`` registers every subclass
of ``JtrixError`` by its module and name, and ``rpc.wire`` imports this module, so every process
that makes or serves calls knows them.

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
``NotMaster``         rpc.errors             the replica is not (provably) the master    yes, same    no; a retry
                                                                                         request id   settles it
``Unavailable``       rpc.errors             no master answered within the access        only as a    no
                                             point's timeout                             new call
``CommandFailed``     rpc.errors             the app's own code raised                   no           yes: the
                                                                                                      result
====================  =====================  ==========================================  ===========  =============

``LeaseFenced`` (hosting.control) and ``MasterFenced`` (netlets.replication)
are not in it: the first is answered to a renewing master as
``{"ok": False}``, the second is an effect the runner acts on (the master
exits); neither reaches a client as itself.
"""

from __future__ import annotations

from warrants.errors import JtrixError


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
