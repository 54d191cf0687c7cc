"""Netlets used by the hosting tests: a healthy worker and a crash-looping one."""

import os
import sys

from netlets.netlet import Netlet, query


class Echo(Netlet):
    """Answers queries; records every start in its data directory."""

    def on_started(self, inherited):
        self.inherited = inherited
        self.publish(greeting=self.config.get("greeting"), started_pid=os.getpid())
        data = self.resources.get("data")
        if data is not None:
            with open(data / "starts", "a") as f:
                f.write(f"{os.getpid()}\n")

    @query
    def echo(self, value):
        return value

    @query
    def info(self):
        return {"pid": os.getpid(), "slot": self.slot, "config": self.config,
                "resources": {k: str(v) for k, v in self.resources.items()},
                "inherited": self.inherited}


class CrashAtStart(Netlet):
    """Exits with code 3 as soon as it starts."""

    def on_started(self, inherited):
        sys.exit(3)
