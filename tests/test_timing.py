"""The timing model (hosting.timing): derived values, cross-field checks, the documented table."""

import itertools

import pytest

from hosting import timing
from hosting.timing import Timing
from warrants.errors import BadInput

LEASE_TTLS = (0.2, 0.25, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 7.3, 60.0)
MEMBERSHIP_TTLS = (1, 2, 3, 5, 10, 60)


@pytest.mark.parametrize("ttl,m", list(itertools.product(LEASE_TTLS, MEMBERSHIP_TTLS)))
def test_derived_values_are_the_formulas_used_before_the_model(ttl, m):
    """Bit for bit what the modules computed inline before (heartbeat, replicated, supervisor, membership)."""
    t = Timing(lease_ttl=ttl, membership_ttl=m)
    assert t.heartbeat_s == ttl / 3
    assert t.holder_valid_for(ttl) == ttl * (1 - 0.1)
    assert t.control_grant_s == t.takeover_wait_s == ttl
    assert t.retransmit_s == max(0.1, ttl / 4)
    assert t.replication_timeout == max(0.3, ttl / 2)
    assert t.ticker_s == max(0.02, max(0.1, ttl / 4) / 5)
    assert t.replica_rpc_s == max(0.5, ttl)
    assert t.storage_lock_wait_s == 2 * ttl
    assert t.worker_join_s == max(1.0, ttl)
    assert t.adopted_lease_s == max(ttl * 3, 3.0)
    assert t.start_lease_s(15.0) == max(15.0, ttl)
    assert t.membership_renew_s == m / 3
    assert t.membership_renew_timeout_s == max(0.5, m / 3)


def test_fixed_constants():
    assert (timing.EPSILON, timing.PREPARE_TIMEOUT_S, timing.ELECTION_RETRY_S, timing.UNTIL_SERVING_S) == \
        (0.1, 1.0, 0.2, 86400.0)


@pytest.mark.parametrize("kwargs,broken", [
    ({"lease_ttl": 0}, "positive"),
    ({"membership_ttl": -1}, "positive"),
    ({"epsilon": 0}, "epsilon"),
    ({"epsilon": 1.0}, "epsilon"),
    # ttl/3 >= ttl·(1-ε): the master's own view would lapse between two renewals
    ({"epsilon": 0.7}, "heartbeat period must be shorter"),
    # 0.5/3 + max(0.5, 0.5/3) >= 0.5: a renewal could still be pending when the lease lapses
    ({"membership_ttl": 0.5}, "membership renewal must end"),
])
def test_an_inconsistent_config_is_refused(kwargs, broken):
    with pytest.raises(BadInput, match=broken):
        Timing(**kwargs)


def test_membership_config_checks_its_timing():
    from hosting.cluster.membership import EtcdMembershipConfig
    assert EtcdMembershipConfig(ttl=1).ttl == 1
    with pytest.raises(BadInput):
        EtcdMembershipConfig(ttl=0)


def test_every_derived_value_is_in_the_documented_table():
    derived = [name for name, v in vars(Timing).items()
               if not name.startswith("_") and (isinstance(v, property) or callable(v))]
    assert len(derived) >= 15
    for name in derived:
        assert f"``{name}" in timing.__doc__, name
