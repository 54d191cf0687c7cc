"""Entering the confinement the node chose, before any of the app's code runs.

The node's start document carries a ``sandbox`` section (``hosting.confine``
writes it): the app's codebase, the directories and files the netlet may use
(read-write: its slot directory; read-only: the codebase, ``node.json``),
whether to apply Landlock, and under a root node the app's ``identity``
(uid, gid, groups) and the ``reveal`` of its private mount namespace
(``netlets.mountns``). :func:`enter` must be the first thing a runner
does after reading its start document, while the process has one thread
(``PR_SET_NO_NEW_PRIVS`` and Landlock bind the calling thread and what it
starts, not threads already running).

Invariants once :func:`enter` returned:
  * the process is not root and holds no capability (``netlets.privileges``): under a root
    node it runs as its app's uid with an empty bounding set and locked securebits; a start
    document that would leave it root (no identity under a root node) is refused;
  * no exec can gain privileges (``no_new_privs``), whatever the mode;
  * the seccomp filter of ``netlets.seccomp`` holds (no packet or raw sockets, no
    chmod/chown/utime/xattr by path, no ``io_uring``);
  * the process is not dumpable: its ``/proc/<pid>`` (descriptors, environment,
    cwd, memory) is root's, so another netlet with the same uid (``landlock``
    mode) neither lists nor reads it, nor can it ptrace it (the app's own code
    may undo this for itself only);
  * ``TMPDIR`` is the slot's private temporary directory;
  * the codebase is on ``sys.path`` only now: it was not on ``PYTHONPATH`` at
    start, so no ``sitecustomize.py`` of the app ran before the confinement;
  * with Landlock: files are reachable only beneath the paths of the start
    document plus the Python installation and a few system files
    (:func:`system_rules`), never beneath the node's home otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from netlets import landlock, mountns, privileges, seccomp

log = logging.getLogger(__name__)

#: read-only system paths a Python process needs (shared libraries, name resolution, time zones)
SYSTEM_READ_ONLY = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/localtime",
                    "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
                    "/etc/passwd", "/etc/group", "/etc/ssl", "/usr/share/zoneinfo", "/proc")
SYSTEM_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def system_rules(home: Path) -> list[landlock.Rule]:
    """Read-only rules for this interpreter (its prefixes and ``sys.path``), jtrix's own packages and
    the system files above.

    A path that contains the node's home is left out (it would open the whole
    home): an installation inside the home is refused, not half-allowed."""
    import hosting
    import netlets
    import warrants

    jtrix = [os.path.dirname(p.__file__) for p in (hosting, netlets, warrants)]  # also from an editable install
    candidates = [*SYSTEM_READ_ONLY, sys.prefix, sys.base_prefix, sys.exec_prefix,
                  os.path.dirname(os.path.realpath(sys.executable)), *sys.path, *jtrix]
    rules, seen = [], set()
    for raw in candidates:
        if not raw:
            continue
        path = Path(os.path.realpath(raw))
        if path in seen:
            continue
        seen.add(path)
        if _inside(home, path):
            log.warning("not opening %s to the netlet: the node's home %s is inside it", path, home)
            continue
        rules.append(landlock.Rule(path, writable=False))
    rules += [landlock.Rule(Path(p), writable=True) for p in SYSTEM_READ_WRITE]
    return rules


def enter(spec: dict[str, Any] | None) -> str:
    """Apply ``spec`` (the start document's ``sandbox``) to this process; returns what holds, for the log.

    ``spec`` None: a node that confines nothing (older start document): only
    the capabilities, ``no_new_privs`` and the seccomp filter are applied. Raises if the
    identity, Landlock or the filter was required but failed: a netlet never runs less
    confined than its node reported, and never as root.
    """
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("sandbox.enter must run while the process has one thread")
    if spec and spec.get("reveal"):
        mountns.enter(spec["reveal"])  # as root, before the uid is given up
    identity = (spec or {}).get("identity")
    if identity:
        privileges.drop(identity["uid"], identity["gid"], tuple(identity["groups"]))
    else:
        privileges.drop()
    landlock.no_new_privs()
    landlock.not_dumpable()  # after the uid change, which resets it
    seccomp.install()
    if not spec:
        return "no capabilities, no_new_privs, seccomp"
    tmpdir = Path(spec["tmpdir"])
    tmpdir.mkdir(mode=0o700, exist_ok=True)
    os.environ["TMPDIR"] = str(tmpdir)
    import tempfile

    tempfile.tempdir = None  # recomputed from TMPDIR on next use
    what = ("uid %d, " % os.getuid() if identity else "") + "no capabilities, no_new_privs, seccomp, private TMPDIR"
    if spec.get("reveal"):
        what += ", private mount namespace"
    if spec.get("landlock"):
        home = Path(os.path.realpath(spec["home"]))
        rules = system_rules(home)
        rules += [landlock.Rule(Path(p), writable=False) for p in spec.get("read_only", ())]
        rules += [landlock.Rule(Path(p), writable=True) for p in spec.get("read_write", ())]
        version = landlock.restrict(rules)
        what += f", landlock ABI {version}" + (" (signals scoped)" if version >= 6 else "")
    codebase = spec["codebase"]
    sys.path.append(codebase)
    # for the netlet's own Python subprocesses, confined like it
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (os.environ.get("PYTHONPATH"), codebase)))
    return what
