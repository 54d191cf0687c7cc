"""Bootstrap classes used by tests/test_bootstrap.py (named in descriptors as ``bootstraps:Class``)."""

import subprocess

from netlets import Bootstrap


class SecondFirst(Bootstrap):
    """Starts w/1, waits until it runs, then starts w/0; does nothing else."""

    def run(self, ctx):
        ctx.run_netlet("w/1")
        ctx.wait_running(["w/1"], timeout=15)
        ctx.run_netlet("w/0")
        ctx.wait_running(["w/0"], timeout=15)


class Fails(Bootstrap):
    """Raises at once."""

    def run(self, ctx):
        raise RuntimeError("bootstrap failed on purpose")


class Slow(Bootstrap):
    """Starts w/0, leaves a child process in its group, then waits (for a slot it never starts)."""

    def run(self, ctx):
        ctx.run_netlet("w/0")
        subprocess.Popen(["sleep", "300"])
        ctx.wait_running(["w/1"], timeout=300)


class NotABootstrap:
    """Not a Bootstrap subclass: the runner refuses it (exit 70)."""

    def run(self, ctx):
        pass
