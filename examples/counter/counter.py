"""The shortest replicated netlet: a counter."""

from netlets import Netlet, command, master_query, query


class Counter(Netlet):
    def __init__(self):
        self.value = 0

    def apply(self, amount):          # runs on every replica, in the same order
        self.value += amount
        return self.value

    def snapshot(self):
        return self.value

    def restore(self, snapshot):
        self.value = snapshot

    @command
    def add(self, amount=1):          # runs on the master: returns the command to replicate
        return int(amount)

    @query
    def peek(self):                   # any replica: possibly stale
        return self.value

    @master_query
    def read(self):                   # the master, linearizable
        return self.value
