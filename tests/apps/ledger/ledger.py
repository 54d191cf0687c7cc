"""A tiny ledger whose command validates against the state: a withdrawal that would overdraw
the balance is refused by the ``@command`` method itself (before anything is replicated).

So a retry of a withdrawal that was already applied, if the method ran again, would be
checked against a balance that already includes it and could be refused ("insufficient
funds") although the original succeeded: what ``tests/test_command_retry.py`` checks
does not happen (security review S6).
"""

from __future__ import annotations

from netlets import Netlet, command, master_query


class InsufficientFunds(Exception):
    pass


class Ledger(Netlet):
    def __init__(self) -> None:
        self.balance = 0

    def apply(self, cmd: dict):
        self.balance += int(cmd["delta"])
        return self.balance

    def snapshot(self):
        return self.balance

    def restore(self, snapshot) -> None:
        self.balance = int(snapshot or 0)

    @command
    def deposit(self, amount: int):
        return {"delta": int(amount)}

    @command
    def withdraw(self, amount: int):
        if int(amount) > self.balance:
            raise InsufficientFunds(f"balance {self.balance} < {int(amount)}")
        return {"delta": -int(amount)}

    @master_query
    def get_balance(self):
        return self.balance
