"""How the node confines the processes it starts for an app (netlets, bootstraps).

Modes (``Confinement.mode``), chosen once per node run:
  * ``uid`` — the node runs as root (always, as root: app code never runs as uid 0): each app
    gets its own uid = gid from
    :data:`ID_RANGE` (like systemd's DynamicUser), recorded in the registry
    and released when the app is terminated. Its slot directories are owned
    by it (0700), the directories above them are the node's and searchable by
    the app's gid only (0710); every other entry of the home is the node's
    and 0600/0700 (the home, ``apps/`` and ``codebases/``: 0711), so the
    netlet can reach only its own slots, its codebase (group-readable by a
    gid allocated for that codebase, which only its apps' netlets hold) and
    ``node.json``. A different uid cannot signal the node or another app's
    processes. When the home or the Python installation lies below a directory
    other users cannot search (a pyenv under ``/root``), each netlet gets a private
    mount namespace in which a tmpfs covers that directory and only the home and
    the installation are attached back (``netlets.mountns``); the node checks at start
    that this works, and refuses to start (ConfinementError, exit 2) when it cannot
    (no mount namespaces, or a needed path others cannot read itself).
  * ``landlock`` — the node is not root: netlets run as the node's user, and Landlock limits
    their file access to the slot directory, the codebase, ``node.json`` and
    the Python installation; with Landlock ABI >= 6 they cannot signal
    processes outside their own domain.
  * ``none`` — not root and the kernel has no Landlock: netlets run as the
    node's user with only ``no_new_privs`` and the seccomp filter; ``status`` says "landlock unavailable".

A root node refuses ``--confine landlock`` and ``--confine none`` (they would run app code
as root). The netlet is started as root in ``uid`` mode and gives up root itself before any
code of the app is imported (``netlets.sandbox``): the mount namespace first, then the app's
uid/gids with every capability and the bounding set dropped and the securebits locked.

Every mode: no capabilities, ``PR_SET_NO_NEW_PRIVS``, a seccomp filter (``netlets.seccomp``:
no packet or raw sockets, no chmod/chown/utime/xattr by path), a private ``TMPDIR`` in the
slot, umask 077, the codebase added to ``sys.path`` only after the confinement is entered
(``netlets.sandbox``), and Landlock on top of the uid whenever the kernel has it.

Invariants: an id is owned by at most one app or codebase at a time, and never
by a user or group the system knows (``unknown_to_system``); an app's
id is released only after its last process is gone, after every process
still running under it has been killed and its directory given back to the
node (a later app given the same id finds nothing of it). Ownership changes
never follow symbolic links (a netlet's link cannot make the node chown a
file outside the app).
"""

from __future__ import annotations

import json
import logging
import os
import time
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hosting.home import ID_RANGE, Home
from hosting.machine_ids import MachineIds
from netlets import landlock, mountns
from netlets.mountns import unreachable  # noqa: F401 (part of this module's interface)
from warrants.errors import BadInput

log = logging.getLogger(__name__)

MODES = ("auto", "uid", "landlock", "none")
TMP_NAME = ".tmp"


class ConfinementError(BadInput):
    """The operator asked for a confinement this machine cannot give (the operator's fault; exit 2)."""


@dataclass(frozen=True)
class Sandbox:
    """How one process of an app is started: its identity and the start document's ``sandbox``.

    The process is started with the node's identity; it takes ``uid``/``gid``/``groups`` itself
    (``spec["identity"]``, ``netlets.sandbox``) after entering its mount namespace, which needs root."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...]
    spec: dict[str, Any]


def runtime_paths() -> list[Path]:
    """What a netlet under another uid must be able to read to run at all: this interpreter,
    its standard library, jtrix's packages and their dependencies."""
    import cryptography
    import Pyro5

    import netlets

    modules = (os, netlets, Pyro5, cryptography)
    return [Path(os.path.realpath(sys.executable)), *(Path(os.path.realpath(m.__file__)).parent for m in modules)]


def installation_paths() -> list[Path]:
    """Where this interpreter and the packages a netlet imports live, whole: its prefixes and
    the directories holding jtrix's packages and their dependencies (a site-packages, the source
    tree of an editable install)."""
    import hosting
    import warrants

    packages = [p.parent for p in runtime_paths()[2:]]  # netlets, Pyro5, cryptography -> their parent
    packages += [Path(os.path.realpath(m.__file__)).parent.parent for m in (hosting, warrants)]
    return [*runtime_paths(), *{Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)},
            *packages]


def choose_mode(requested: str, home: Path, landlock_abi: int) -> tuple[str, str]:
    """``(mode, why)`` for a node run; ConfinementError if ``requested`` cannot be given.

    As root the mode is always ``uid``: app code never runs as uid 0."""
    if requested not in MODES:
        raise ConfinementError(f"unknown confinement {requested!r} (one of {', '.join(MODES)})")
    if os.geteuid() == 0:
        if requested in ("landlock", "none"):
            raise ConfinementError(f"--confine {requested}: the node runs as root, and app code never runs as "
                                   "root (use uid or auto)")
        return "uid", "root: one uid per app"
    if requested == "uid":
        raise ConfinementError("uid confinement needs a node running as root")
    why = "not root" if requested == "auto" else f"{requested} requested"
    if requested == "none":
        return "none", why
    if landlock_abi == 0:
        if requested == "landlock":
            raise ConfinementError("landlock confinement requested but landlock unavailable in this kernel")
        return "none", why + "; landlock unavailable"
    return "landlock", why


def _chown_tree(root: Path, uid: int, gid: int, dir_mode: int | None = None, file_bits: int = 0) -> None:
    """Give every entry under ``root`` (inclusive) to ``uid:gid`` without following links; with
    ``dir_mode``, directories get that mode and files ``file_bits`` added (group read)."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in filenames:
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if file_bits and stat.S_ISREG(st.st_mode):
                os.chmod(name, (st.st_mode & 0o700) | file_bits, dir_fd=dirfd)
        os.chown(dirfd, uid, gid)
        if dir_mode is not None:
            os.chmod(dirfd, dir_mode)


class Confinement:
    """The node's confinement policy (see the module docstring); one per node run."""

    def __init__(self, home: Home, registry, requested: str = "auto", machine_ids: MachineIds | None = None) -> None:
        self.home = home
        self.registry = registry
        #: ids are claimed machine-wide too (``hosting.machine_ids``): another home's apps never share one
        self.machine_ids = machine_ids or MachineIds(home.root)
        self.landlock_abi = landlock.abi()
        self.mode, self.why = choose_mode(requested, home.root, self.landlock_abi)
        self.node_uid, self.node_gid = os.geteuid(), os.getegid()
        self._open_home()
        #: what each netlet's private mount namespace attaches back below covers (``uid`` mode)
        self.reveal: mountns.Reveal = self._plan_reveal() if self.mode == "uid" else []
        if self.reveal:
            self.why += "; private mount namespace over " + ", ".join(cover for cover, _ in self.reveal)
        log.info("netlet confinement: %s (%s; %s)", self.mode, self.why, self.landlock_status())

    def _plan_reveal(self) -> mountns.Reveal:
        """The reveal that lets an app's uid reach the home and the Python installation; checked
        here in a child as a uid from :data:`ID_RANGE`, so a node that cannot give it does not
        start (ConfinementError) rather than run a netlet that cannot run."""
        needed = [self.home.root, *installation_paths()]
        try:
            reveal = mountns.plan(needed)
        except (mountns.Unrevealable, OSError) as err:
            raise ConfinementError(f"uid confinement: {err}") from None
        if reveal:
            job = json.dumps({"reveal": reveal, "readable": [str(p) for p in installation_paths()],
                              "searchable": [str(self.home.netlet_node_json.parent)], "uid": ID_RANGE[-1]})
            out = subprocess.run([sys.executable, "-P", "-m", "netlets.mountns"], input=job, capture_output=True,
                                 text=True, timeout=60, cwd="/")
            if out.returncode != 0:
                last = (out.stdout.strip() or out.stderr.strip() or "failed").splitlines()[-1]
                raise ConfinementError(f"uid confinement: {last}")
        return reveal

    def _open_home(self) -> None:
        """In ``uid`` mode the home, ``apps/``, ``codebases/`` and ``run/`` are searchable but not listable by
        others (0711): a netlet reaches only entries it can name and whose own mode lets it in."""
        mode = 0o711 if self.mode == "uid" else 0o700
        for d in (self.home.root, self.home.root / "apps", self.home.codebases, self.home.netlet_node_json.parent):
            os.chmod(d, mode)

    def landlock_status(self) -> str:
        return f"landlock ABI {self.landlock_abi}" if self.landlock_abi else "landlock unavailable"

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "why": self.why, "landlock": self.landlock_status()}

    # -- per process ------------------------------------------------------
    def prepare(self, app: str, codebase_dir: Path, work_dir: Path, writable: list[Path]) -> Sandbox:
        """Make ``work_dir`` (a slot directory, or the app directory for a bootstrap) and the
        ``writable`` directories inside it usable by the app's next process running
        ``codebase_dir`` (``codebases/<sha>``); returns how to start it.

        The directories *above* a slot directory (``apps/<app>``, ``apps/<app>/slots``) stay the
        node's (0710, group = the app's gid: searchable by the app only), so no netlet can
        replace a sibling slot directory by a link that the node would then chown through or
        open to Landlock. Landlock opens ``work_dir`` alone read-write; what is inside it is the
        netlet's, links included."""
        tmpdir = work_dir / TMP_NAME
        for d in (work_dir, tmpdir, *writable):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        app_dir = self.home.app_dir(app)
        # a bootstrap (work_dir = the app directory) writes only its TMPDIR: with the app directory
        # it could swap a slot directory for a link that the slot's next netlet would be opened to
        spec = {"codebase": str(codebase_dir), "home": str(self.home.root), "tmpdir": str(tmpdir),
                "landlock": self.landlock_abi > 0 and self.mode != "none",
                "read_only": [str(codebase_dir), str(self.home.netlet_node_json.parent)],
                "read_write": [str(tmpdir if work_dir == app_dir else work_dir)], "reveal": self.reveal}
        if self.mode != "uid":
            return Sandbox(None, None, (), spec)
        app_id = self._id(f"app:{app}")
        code_gid = self._id(f"codebase:{codebase_dir.name}")
        for d in (app_dir, app_dir / "slots"):
            d.mkdir(exist_ok=True, mode=0o700)
            os.chown(d, self.node_uid, app_id, follow_symlinks=False)
            os.chmod(d, 0o710, follow_symlinks=False)
        owned = [tmpdir] if work_dir == app_dir else [work_dir, tmpdir, *writable]
        if os.lstat(owned[0]).st_uid != app_id:
            _chown_tree(owned[0], app_id, app_id)  # first start (or a home used unconfined before)
        for d in owned:
            os.chown(d, app_id, app_id, follow_symlinks=False)
        if os.lstat(codebase_dir).st_gid != code_gid:
            _chown_tree(codebase_dir, self.node_uid, code_gid, dir_mode=0o750, file_bits=0o040)
        spec["identity"] = {"uid": app_id, "gid": app_id, "groups": [code_gid]}
        return Sandbox(app_id, app_id, (code_gid,), spec)

    def _id(self, owner: str) -> int:
        """``owner``'s id: its registry's, claimed machine-wide (one allocated before claims
        existed, or whose claim another home made meanwhile, is given up for a new one)."""
        def usable(i: int) -> bool:
            return unknown_to_system(i) and self.machine_ids.claim(i, owner)

        i = self.registry.allocate_id(owner, ID_RANGE, usable)
        if not self.machine_ids.claim(i, owner):
            self.registry.release_id(owner)
            i = self.registry.allocate_id(owner, ID_RANGE, usable)
        return i

    def released(self, app: str) -> None:
        """The app is gone (its last netlet exited): end what still runs under its uid, give its
        directory back to the node, then free the uid. No-op outside ``uid`` mode."""
        app_id = self.registry.id_of(f"app:{app}")
        if app_id is None:
            return
        kill_uid(app_id)
        app_dir = self.home.app_dir(app)
        if app_dir.exists():
            os.chown(app_dir, self.node_uid, self.node_gid, follow_symlinks=False)
            os.chmod(app_dir, 0o700, follow_symlinks=False)
        self.registry.release_id(f"app:{app}")
        self.machine_ids.release(app_id, f"app:{app}")


def unknown_to_system(i: int) -> bool:
    """No user or group of the system (``/etc/passwd``, systemd's own dynamic users through NSS)
    has id ``i``: giving it to an app shares nothing with anyone."""
    import grp
    import pwd

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(i)
            return False
        except KeyError:
            pass
    return True


def kill_uid(uid: int, timeout: float = 5.0) -> None:
    """SIGKILL every process running as ``uid`` (a netlet's escaped daemon) and wait for them.

    Only ids from :data:`ID_RANGE` are ever passed: nothing else runs as them. The node's own
    children among them (a netlet, a bootstrap run) are waited for until they are zombies but never
    reaped here: the pid watcher reaps them and reports how they ended (reaping them here left it
    an unknown exit: a terminated bootstrap's ``bootstrap.failed`` lost its ``signal``)."""
    assert uid in ID_RANGE
    victims = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uid in (uids.real, uids.effective, uids.saved):
            try:
                proc.kill()
                victims.append(proc)
            except psutil.NoSuchProcess:
                pass
    me = os.getpid()
    children = [p for p in victims if _parent_of(p) == me]
    psutil.wait_procs([p for p in victims if p not in children], timeout=timeout)
    deadline = time.monotonic() + timeout
    while any(not _dead(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.01)


def _parent_of(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.NoSuchProcess:
        return None


def _dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie (dead, waiting for its parent to reap it)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
