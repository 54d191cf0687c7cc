"""A hostile netlet: at start it tries to reach what a confined netlet must not, and publishes
what happened to each attempt (``probes``), next to what it must still be able to do (``own``).

Params (``|``-separated): ``read`` files to read, ``list`` directories to list, ``signal`` pids
to send SIGCONT (harmless if it arrives, but it proves the netlet could send SIGKILL as well),
``escape`` = "1" to leave a detached process behind (double fork, own session) that sleeps;
``plant`` = a directory: the first run replaces its ``data`` resource by a link to it and
crashes, so the next incarnation starts with that link in its slot.
"""

import os
import signal
import tempfile
import time
from pathlib import Path

from netlets import Bootstrap
from netlets.netlet import Netlet, query


def attempt(action) -> str:
    try:
        action()
        return "ok"
    except OSError as err:
        return f"denied: {type(err).__name__}"


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(1)


def probe(config: dict) -> dict:
    items = lambda key: [x for x in config.get(key, "").split("|") if x]  # noqa: E731
    out = {f"read {p}": attempt(lambda p=p: _read(p)) for p in items("read")}
    out.update({f"list {p}": attempt(lambda p=p: os.listdir(p)) for p in items("list")})
    out.update({f"signal {pid}": attempt(lambda pid=pid: os.kill(int(pid), signal.SIGCONT))
                for pid in items("signal")})
    return out


def leave_escapee() -> int:
    """A grandchild in its own session, outside the netlet's process group; returns its pid."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            time.sleep(3600)
        os._exit(0)
    os.close(w)
    pid = int(os.read(r, 32))
    os.close(r)
    os.wait()
    return pid


class Prober(Netlet):
    def on_started(self, inherited):
        data = self.resources["data"]
        plant = self.config.get("plant")
        if plant and not data.is_symlink():  # first run: leave a link for the next incarnation, crash
            os.rename(data, data.with_name("data.old"))
            data.symlink_to(plant)
            os._exit(3)
        with tempfile.NamedTemporaryFile(prefix="probe-") as tmp:
            own = {"write data": attempt(lambda: (data / "mine").write_text("x")),
                   "read own code": attempt(lambda: _read(__file__)),
                   "tmpdir": os.path.dirname(tmp.name), "uid": os.getuid()}
        escapee = leave_escapee() if self.config.get("escape") == "1" else None
        self.publish(probes=probe(self.config), own=own, escapee=escapee)

    @query
    def ping(self):
        return "pong"


class SwapSlot(Bootstrap):
    """A hostile bootstrap (cwd: the app directory): tries to make the slot directory of
    ``probe/0`` a link to the node's home before the node starts it there, then starts it."""

    def run(self, ctx):
        try:
            (Path.cwd() / "slots").mkdir(exist_ok=True)
            (Path.cwd() / "slots" / "probe-0").symlink_to(Path.cwd().parent.parent)
        except OSError:
            pass  # confined: start the netlet anyway, it must find nothing open
        ctx.run_netlet("probe/0")
        ctx.wait_running(["probe/0"], timeout=15)
