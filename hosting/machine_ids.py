"""The app uids and codebase gids of ``hosting.home.ID_RANGE``, claimed machine-wide.

Each node allocates ids for its apps and codebases in its own registry. Several homes on one
machine (a test cluster, two nodes, two users' nodes run as root) would otherwise hand the same
uid to different apps -- which would then share files and signals, and one node's sweep of an
app's uid (``confine.kill_uid``) would kill another node's netlets. Like systemd's DynamicUser
(``/run/systemd/dynamic-uid``), a claim is a file in a root-only directory on the machine's
``/run``: ``<id>``, holding the claiming home and owner.

Contracts (every change under an exclusive ``flock`` of the directory's lock file, so two
processes never both win an id):
  * :meth:`MachineIds.claim` succeeds iff no claim of ``id`` exists, or it is this home's for
    the same owner, or it is stale: the home that made it no longer exists (a deleted home can
    run nothing). A successful claim is on disk before it returns.
  * :meth:`MachineIds.release` removes only this home's claim for that owner.
  * A claim outlives node restarts (``/run`` lives as long as the machine runs, and so do the
    processes that could hold the id); nothing else ever removes one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

#: where claims live (root's, on the machine's tmpfs)
CLAIMS = Path("/run/jtrix/ids")


class MachineIds:
    def __init__(self, home: Path, root: Path = CLAIMS) -> None:
        self.home = str(Path(home).resolve())
        self.root = root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _holder(self, i: int) -> tuple[str, str] | None:
        try:
            home, owner = (self.root / str(i)).read_text().split("\n")[:2]
            return home, owner
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "", ""  # unreadable: held by nobody we know, so never taken over

    def claim(self, i: int, owner: str) -> bool:
        """Whether ``i`` is (now) this home's for ``owner`` (see the module contracts)."""
        with self._locked():
            held = self._holder(i)
            if held == (self.home, owner):
                return True
            if held is not None and (not held[0] or Path(held[0]).exists()):
                return False
            path = self.root / str(i)
            tmp = self.root / f".{i}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{self.home}\n{owner}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # over a stale claim, or where there was none
            return True

    def release(self, i: int, owner: str) -> None:
        with self._locked():
            if self._holder(i) == (self.home, owner):
                (self.root / str(i)).unlink(missing_ok=True)
