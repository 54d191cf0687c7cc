"""A private mount namespace in which a netlet under its own uid reaches what it needs to run,
even below a directory other users cannot search (a pyenv under ``/root``, a home in a private
temporary directory).

A *reveal* is a list of ``(cover, paths)``: ``cover`` a directory other users cannot search,
``paths`` the directories and files below it the netlet needs (the Python installation, the
node's home). :func:`enter` (as root, before the uid is dropped, while the process has one
thread) unshares the mount namespace, makes every mount in it private (nothing propagates back
to the node's namespace), and for each cover: clones each path's mount tree, mounts an empty
tmpfs (mode 0755, nosuid, nodev, noexec) over the cover, and attaches each clone back at its
own path — the directories between the cover and a path are the tmpfs's, root's and 0755. So
in the namespace a path is reachable by everyone its own modes let in, and nothing else below
the cover exists. The node's own view is unchanged; the netlet's children inherit the
namespace. A path inside another revealed path is left to that one; a cover is never inside a
path (it would be that path's cover's business): :func:`plan` guarantees both.

Needs ``open_tree``/``move_mount`` (Linux >= 5.2).
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

from netlets.landlock import _check, _libc

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429  # the same on every architecture
_OPEN_TREE_CLONE, _AT_RECURSIVE, _MOVE_MOUNT_F_EMPTY_PATH = 1, 0x8000, 4
_AT_FDCWD = -100

Reveal = list[tuple[str, list[str]]]


def unreachable(path: Path, itself: bool = False) -> Path | None:
    """The first ancestor of ``path`` other users cannot search — with ``itself``, or ``path``
    itself they cannot read — or None."""
    for parent in reversed(Path(path).parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    if itself and not os.stat(path).st_mode & stat.S_IROTH:
        return Path(path)
    return None


class Unrevealable(ValueError):
    """A needed path stays out of other users' reach even in a private namespace (its own mode)."""


def plan(needed: list[Path]) -> Reveal:
    """The reveal that makes every path of ``needed`` reachable by other users; raises
    :class:`Unrevealable` if they cannot search one (a directory) or read it (a file) itself."""
    paths = sorted({Path(os.path.realpath(p)) for p in needed})
    kept = [p for p in paths if not any(q != p and q in p.parents for q in paths)]
    covers: dict[Path, list[Path]] = {}
    for p in kept:
        cover = unreachable(p)
        if cover is not None:
            covers.setdefault(cover, []).append(p)
    for p in paths:
        mode = os.stat(p).st_mode
        if not mode & (stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH):
            raise Unrevealable(f"other users cannot {'search' if stat.S_ISDIR(mode) else 'read'} {p} itself")
    return [(str(c), [str(p) for p in ps]) for c, ps in sorted(covers.items())]


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount({target})")


def _makedirs(cover: Path, path: Path) -> None:
    """The directories from ``cover`` (exclusive) to ``path`` (exclusive) on the tmpfs, 0755."""
    for d in reversed(path.parents):
        if cover in d.parents and not d.exists():
            d.mkdir()
            os.chmod(d, 0o755)


def enter(reveal: Reveal) -> None:
    """Apply ``reveal`` in a new private mount namespace (module contract); raises OSError."""
    cwd = os.getcwd()
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for cover, paths in reveal:
        clones = [_check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, p.encode(),
                                       ctypes.c_uint(_OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC)),
                         f"open_tree({p})") for p in paths]
        try:
            _mount("jtrix-reveal", cover, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755,size=1m")
            for p, fd in zip(paths, clones):
                _makedirs(Path(cover), Path(p))
                if stat.S_ISDIR(os.fstat(fd).st_mode):  # the mount point: like what is attached there
                    os.mkdir(p)
                else:
                    open(p, "x").close()
                os.chmod(p, 0o755)
                _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, p.encode(),
                                     ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount({p})")
        finally:
            for fd in clones:
                os.close(fd)
    os.chdir(cwd)  # re-resolved in the new tree (the old cwd may lie below a cover)


def check(reveal: Reveal, readable: list[str], searchable: list[str], uid: int) -> str | None:
    """In a child of the caller only (it changes the process for good): enter ``reveal``, become
    ``uid`` (no groups, no capabilities), try to read each of ``readable`` (a directory: list and
    search it) and to search each of ``searchable``; the first failure as one line, or None."""
    from netlets import privileges

    try:
        enter(reveal)
        privileges.drop(uid, uid, ())
    except OSError as err:
        return f"private mount namespace: {err}"
    wanted = [(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0)) for p in readable]
    for p, want in [*wanted, *((p, os.X_OK) for p in searchable)]:
        if not os.access(p, want):
            return f"uid {uid} cannot reach {p} even in a private mount namespace"
    return None


if __name__ == "__main__":  # the node's check at start (hosting.confine): {"reveal", "readable", "searchable", "uid"}
    import json
    import sys

    job = json.load(sys.stdin)
    why = check(job["reveal"], job["readable"], job["searchable"], job["uid"])
    print(why or "ok")
    sys.exit(1 if why else 0)
