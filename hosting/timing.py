"""The timing model: every lease, heartbeat, replication and membership duration,
derived from two configured lengths and checked against each other at construction.

The two inputs are an app's lease TTL (``<lease ttl=…>`` of its descriptor, at
least 0.2 s) and a node's membership TTL (``--membership-ttl``, whole seconds,
at least 1). Everything else is either derived from them here or one of the
fixed constants below; nothing else in the code base invents a lease-related
duration. ``ttl`` is the lease TTL, ``m`` the membership TTL, ``ε`` ``epsilon``:

==============================  =======================  ==============  ============================================================
value                           derived as               ttl 1 s, m 3 s  meaning
==============================  =======================  ==============  ============================================================
``heartbeat_s``                 ttl/3                    0.333           a netlet renews its lease this often (heartbeat)
``control_grant_s``             ttl                      1.0             every grant/renewal of an app's control lease
``holder_lease_s``              ttl·(1-ε), ε = 0.1       0.9             the master's own view of its lease, from the renewal's
                                                                         *send* time (master queries); ``holder_valid_for(g)``
                                                                         for an answered grant ``g``
``takeover_wait_s``             ttl                      1.0             a restarted node or new owner holds a holder it cannot see
                                                                         dead this long before electing
``retransmit_s``                max(0.1, ttl/4)          0.25            a backup silent this long is resent to
``replication_timeout``         max(0.3, ttl/2)          0.5             a backup lagging this long is dropped from the in-sync set
                                                                         (commits wait at most this)
``ticker_s``                    max(0.02, retransmit/5)  0.05            the replica's tick (retransmits, timeouts)
``replica_rpc_s``               max(0.5, ttl)            1.0             master → backup replication RPC timeout
``storage_lock_wait_s``         2·ttl                    2.0             a replica waits this long for its predecessor's storage lock
``worker_join_s``               max(1.0, ttl)            1.0             stopping a replica waits this long per worker thread
``adopted_lease_s``             max(3·ttl, 3.0)          3.0             node-side lease of a netlet re-adopted after a node restart
``start_lease_s(t)``            max(t, ttl)              15.0            node-side lease of a starting netlet (``t``: the node's
                                                                         ``start_timeout``)
``membership_renew_s``          m/3                      1.0             a node renews its cluster membership this often
``membership_renew_timeout_s``  max(0.5, m/3)            1.0             one membership renewal gives up after this
``PREPARE_TIMEOUT_S``           fixed                    1.0             one election RPC (prepare, promote, peer update)
``ELECTION_RETRY_S``            fixed                    0.2             a failed election attempt is retried after this
``UNTIL_SERVING_S``             fixed                    86400           node-side length of a control lease, or an adopted netlet's,
                                                                         granted before the node serves (re-granted at its ttl then)
==============================  =======================  ==============  ============================================================

What must hold (checked by :class:`Timing`; a config that breaks one is refused):
  * ``0 < ε < 1`` and both TTLs positive.
  * ``heartbeat_s < holder_lease_s``: the master renews before its own view of
    its lease ends (so a healthy master never stops serving queries).
  * ``holder_lease_s < control_grant_s``: the master never believes in its lease
    longer than the node granted it (clock-drift margin ε·ttl).
  * ``control_grant_s <= takeover_wait_s``: a new owner's wait covers the
    longest lease any owner can grant (one lease length everywhere).
  * ``retransmit_s < replication_timeout``: a silent backup is resent to before
    it is dropped from the in-sync set.
  * ``ttl <= adopted_lease_s`` (and ``start_lease_s(t)``, by its definition): a
    netlet the node starts or re-attaches to has at least one TTL to renew in.
  * ``membership_renew_s + membership_renew_timeout_s < m``: one renewal attempt
    started on schedule ends before the membership lease lapses.

Not ordered, on purpose: ``PREPARE_TIMEOUT_S`` and ``ELECTION_RETRY_S``. A retry
is scheduled only when an attempt has finished, i.e. after every prepare was
answered or timed out (``hosting.election.core``), so the two never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from warrants.errors import BadInput

#: ε: the master's view of its lease ends this fraction of the TTL early (clock-drift margin)
EPSILON = 0.1
#: one election RPC to a netlet (prepare, promote, peer update)
PREPARE_TIMEOUT_S = 1.0
#: a failed election attempt that could succeed later is retried after this
ELECTION_RETRY_S = 0.2
#: node-side length of a control lease granted before the node serves (re-granted at its ttl on serving)
UNTIL_SERVING_S = 24 * 3600.0


@dataclass(frozen=True)
class Timing:
    """The durations derived from ``lease_ttl`` and ``membership_ttl`` (see the module table).

    Checked at construction: a combination that breaks an inequality of the
    module docstring raises ``BadInput`` naming it; an instance is always sound.
    """

    lease_ttl: float = 1.0
    membership_ttl: float = 3.0
    epsilon: float = EPSILON

    def __post_init__(self) -> None:
        if not self.lease_ttl > 0 or not self.membership_ttl > 0:
            raise BadInput(f"lease ttl {self.lease_ttl} and membership ttl {self.membership_ttl} must be positive")
        if not 0 < self.epsilon < 1:
            raise BadInput(f"epsilon {self.epsilon} must be in (0, 1)")
        _require(self.heartbeat_s < self.holder_lease_s,
                 "the heartbeat period must be shorter than the master's view of its lease",
                 heartbeat_s=self.heartbeat_s, holder_lease_s=self.holder_lease_s)
        _require(self.holder_lease_s < self.control_grant_s,
                 "the master's view of its lease must end before the node's grant",
                 holder_lease_s=self.holder_lease_s, control_grant_s=self.control_grant_s)
        _require(self.control_grant_s <= self.takeover_wait_s,
                 "a takeover must wait at least the longest lease any owner grants",
                 control_grant_s=self.control_grant_s, takeover_wait_s=self.takeover_wait_s)
        _require(self.retransmit_s < self.replication_timeout,
                 "a silent backup must be resent to before it is dropped from the in-sync set",
                 retransmit_s=self.retransmit_s, replication_timeout=self.replication_timeout)
        _require(self.lease_ttl <= self.adopted_lease_s,
                 "an adopted netlet must have at least one lease ttl to renew in",
                 lease_ttl=self.lease_ttl, adopted_lease_s=self.adopted_lease_s)
        _require(self.membership_renew_s + self.membership_renew_timeout_s < self.membership_ttl,
                 "one membership renewal must end before the membership lease lapses",
                 membership_renew_s=self.membership_renew_s,
                 membership_renew_timeout_s=self.membership_renew_timeout_s, membership_ttl=self.membership_ttl)

    # -- a netlet's lease and the app's control lease -------------------------------
    @property
    def heartbeat_s(self) -> float:
        return self.lease_ttl / 3

    @property
    def control_grant_s(self) -> float:
        return self.lease_ttl

    def holder_valid_for(self, granted_s: float) -> float:
        """How long after *sending* a renewal the master may rely on a grant of ``granted_s``."""
        return granted_s * (1 - self.epsilon)

    @property
    def holder_lease_s(self) -> float:
        return self.holder_valid_for(self.control_grant_s)

    @property
    def takeover_wait_s(self) -> float:
        return self.lease_ttl

    @property
    def adopted_lease_s(self) -> float:
        return max(self.lease_ttl * 3, 3.0)

    def start_lease_s(self, start_timeout: float) -> float:
        """Node-side lease of a netlet being started: its first renewal must come within it."""
        return max(start_timeout, self.lease_ttl)

    # -- replication (master → backups) ---------------------------------------------
    @property
    def retransmit_s(self) -> float:
        return max(0.1, self.lease_ttl / 4)

    @property
    def replication_timeout(self) -> float:
        return max(0.3, self.lease_ttl / 2)

    @property
    def ticker_s(self) -> float:
        return max(0.02, self.retransmit_s / 5)

    @property
    def replica_rpc_s(self) -> float:
        return max(0.5, self.lease_ttl)

    @property
    def storage_lock_wait_s(self) -> float:
        return 2 * self.lease_ttl

    @property
    def worker_join_s(self) -> float:
        return max(1.0, self.lease_ttl)

    # -- cluster membership -----------------------------------------------------------
    @property
    def membership_renew_s(self) -> float:
        return self.membership_ttl / 3

    @property
    def membership_renew_timeout_s(self) -> float:
        return max(0.5, self.membership_ttl / 3)


def _require(holds: bool, what: str, **values: float) -> None:
    if not holds:
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        raise BadInput(f"inconsistent timing: {what} ({shown})")
