"""A retry of a command is answered with the original's outcome, never re-validated (review S6).

The ``@command`` method validates against the state (``tests/apps/ledger``: a withdrawal
that would overdraw is refused). If the runner ran it again for a retry of a request id the
master already knows -- recorded in the dedup table, or in flight in its log, from this term
or an earlier one -- it would check a balance that may already include the original, and a
caller whose withdrawal was applied would be told "insufficient funds".
"""

from __future__ import annotations

import os
import signal
import sys
from types import SimpleNamespace

import pytest

import netlets
from testkit.kvstore import wait_master
from testkit.node import APPS, descriptor_xml, master_of
from testkit.wait import wait_for
from rpc.errors import CommandFailed

sys.path.insert(0, str(APPS / "ledger"))
from ledger import Ledger  # noqa: E402


class CountingLedger(Ledger):
    """Counts how often the withdraw method itself runs."""

    def __init__(self) -> None:
        super().__init__()
        self.withdraw_calls = 0

    @netlets.command
    def withdraw(self, amount: int):
        self.withdraw_calls += 1
        return super().withdraw(amount)


@pytest.fixture
def ledger_host(tmp_path, monkeypatch):
    """The real ``ReplicatedHost`` in-process (memory durability, one replica, no node): master
    of epoch 1 with nobody else to wait for, its flusher and ticker running."""
    from netlets.replicated import ReplicatedHost

    monkeypatch.chdir(tmp_path)
    doc = SimpleNamespace(raw={"durability": "memory", "ack": "all"}, lease_ttl=1.0, app="ledger",
                          slot="ledger/0", netlet_id="ledger-n1", inherited=lambda: {})
    host = ReplicatedHost(CountingLedger(), doc)
    host.start()
    host.promote(1, ["ledger/0"], {}, {})
    try:
        yield host
    finally:
        host.stop()


def test_a_retried_committed_withdraw_gets_its_result_and_the_method_does_not_run_again(ledger_host):
    host = ledger_host
    assert host.invoke("deposit", [100], {}, "d1") == 100
    assert host.invoke("withdraw", [80], {}, "w1") == 20
    assert host.invoke("withdraw", [80], {}, "w1") == 20  # the retry: recorded, not re-validated
    assert host.netlet.withdraw_calls == 1
    outcomes = host.invoke_batch([["withdraw", [80], {}, "w1"], ["withdraw", [5], {}, "w2"],
                                  ["withdraw", [5], {}, "w2"]])
    assert [o["value"] for o in outcomes] == [20, 15, 15]  # a duplicate in one batch joins the first
    assert host.netlet.withdraw_calls == 2
    with pytest.raises(CommandFailed, match="InsufficientFunds"):  # a new request is validated
        host.invoke("withdraw", [80], {}, "w3")
    assert host.netlet.balance == 15


def test_a_client_retrying_a_committed_withdraw_after_the_master_is_sigkilled_gets_the_original_result(
        node, tmp_path):
    """End to end on a real node: the withdrawal commits, the master is SIGKILLed, and the
    client (its acknowledgement lost, say) retries it with the same request id through its own
    failover path; the new master answers the recorded result, not "insufficient funds"."""
    node.launch(descriptor_xml("ledger", '<netlet type="ledger" class="ledger:Ledger" replicas="3" '
                                         'master-eligible="true"/>', codebase=APPS / "ledger",
                               replication='ack="all" durability="fsync"'), tmp_path)
    before = wait_master(node, app="ledger")
    ledger = netlets.connect("ledger", timeout=30)
    assert ledger.deposit(100) == 100
    ledger._request_id = lambda kind: "client-1:withdraw"  # this client's next withdrawal, and its retry
    assert ledger.withdraw(80) == 20
    os.kill(master_of(before)["pid"], signal.SIGKILL)
    wait_master(node, above_epoch=before["epoch"], app="ledger")
    assert ledger.withdraw(80) == 20  # the retry
    del ledger._request_id
    assert netlets.connect("ledger").get_balance() == 20
    with pytest.raises(CommandFailed, match="InsufficientFunds"):
        ledger.withdraw(80)
