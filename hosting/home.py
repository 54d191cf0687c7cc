"""The hosting node's home directory (``$JTRIX_HOME``, default ``~/.jtrix``).

Layout (everything the node owns lives here; nothing else is written):

    node.json            address, pid, metrics port of the running node (0644)
    run/node.json        the same, for netlets (0644 in a 0711 directory: a Landlock rule on the
                         directory survives the file being replaced, one on the file would not)
    node.key.pem         the node's private key (0600) — signs warrants it issues
    node.crt.pem         the node's self-signed certificate (the trust root)
    admin.key.pem        the admin key (0600)
    admin.warrant.xml    every client right (all but ``member``), holder-bound to admin.key.pem,
                         delegable (0600); ``jtrix warrant delegate`` needs no certificate for it
    registry.sqlite      apps, slots, netlets, leases, epochs, events (WAL); app secrets sealed
    secrets.key          the key sealing app secrets in the registry (0600, hosting.secretbox)
    codebases/<sha>.tar.gz, codebases/<sha>/   content-addressed app code (``hosting.codebases``)
    apps/<app>/slots/<type>-<i>/<resource>/    per-slot resource directories
    logs/<app>/<type>-<i>/<stamp>-<incarnation>.log   one file per netlet run
    node.log             the daemon's own log when started in the background
    tls/                 in a cluster only: ca.crt.pem and the client certificate and key
                         (client.crt.pem, client.key.pem, 0600) clients acting from this home use

Contract: :func:`ensure_home` is idempotent and never overwrites keys or the
admin warrant once written; files holding secrets are created 0600. It
refuses a home owned by another user and takes every group/other right off
an existing home's entries (a home made 0755 beforehand, files written under a
lax umask); only :mod:`hosting.confine` grants rights to netlets again, and
only those it needs (see there).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpc.tls import TLSIdentity
from warrants import names
from warrants.errors import BadInput

ADMIN_WARRANT_DAYS = 3650
#: uids/gids the node gives to apps and codebases (systemd's DynamicUser range; ``hosting.confine``)
ID_RANGE = range(61184, 65520)
log = logging.getLogger(__name__)


def default_home() -> Path:
    """``$JTRIX_HOME`` if set, else ``~/.jtrix``."""
    env = os.environ.get("JTRIX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".jtrix"


@dataclass(frozen=True)
class Home:
    """Paths inside one hosting node's home directory."""

    root: Path

    @property
    def node_json(self) -> Path:
        return self.root / "node.json"

    @property
    def node_key(self) -> Path:
        return self.root / "node.key.pem"

    @property
    def node_cert(self) -> Path:
        return self.root / "node.crt.pem"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin.key.pem"

    @property
    def admin_warrant(self) -> Path:
        return self.root / "admin.warrant.xml"

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def netlet_node_json(self) -> Path:
        return self.root / "run" / "node.json"

    @property
    def secrets_key(self) -> Path:
        return self.root / "secrets.key"

    @property
    def codebases(self) -> Path:
        return self.root / "codebases"

    @property
    def node_log(self) -> Path:
        return self.root / "node.log"

    # Names become paths only through these (``warrants.names``: grammar checked, result under root).
    def slot_dir(self, app: str, slot: str) -> Path:
        return names.under(self.root / "apps", names.check_app(app), "slots", names.check_slot(slot).replace("/", "-"))

    def app_dir(self, app: str) -> Path:
        return names.under(self.root / "apps", names.check_app(app))

    def log_dir(self, app: str, slot: str) -> Path:
        """``slot`` may be ``bootstrap`` (a custom bootstrap's runs)."""
        return names.under(self.root / "logs", names.check_app(app),
                           names.check_slot(slot, allow_bootstrap=True).replace("/", "-"))


def read_node_info(home: Path) -> dict[str, Any] | None:
    """What the home's ``node.json`` records of its running node (None: none recorded, or unreadable)."""
    try:
        return json.loads(Home(Path(home)).node_json.read_text())
    except (OSError, ValueError):
        return None


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_tls_identity(identity: TLSIdentity, directory: Path, name: str) -> None:
    """Write ``identity``'s files (``TLSIdentity.files``: ``ca.crt.pem``, ``<name>.crt.pem`` and
    ``<name>.key.pem``), each 0600, into ``directory`` (made 0700 if missing), so that
    ``TLSIdentity.load(directory, name)`` reads it back."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for filename, data in identity.files(name).items():
        write_secret(directory / filename, data)


class HomeNotOwned(BadInput):
    """The home belongs to another user (the operator's mistake: wrong --home or wrong user)."""


#: the most other users may have on an entry of the home: ``node.json`` is readable (netlets
#: re-read the node's address from it); the home, ``apps/`` and ``codebases/`` searchable but
#: not listable (netlets under their own uid reach their own entries by name, hosting.confine)
OPEN_TO_OTHERS = {"node.json": 0o644, ".": 0o711, "apps": 0o711, "codebases": 0o711, "run": 0o711,
                  "run/node.json": 0o644}


def secure_home(root: Path) -> int:
    """Refuse a home not owned by this user; :func:`make_private` everything in it beyond
    :data:`OPEN_TO_OTHERS`. Returns how many entries were tightened."""
    st = os.lstat(root)
    if st.st_uid != os.geteuid():
        raise HomeNotOwned(f"home {root} is owned by uid {st.st_uid}, not by this node's user {os.geteuid()}")
    return make_private(root, {(root / name).resolve(): mode for name, mode in OPEN_TO_OTHERS.items()})


def make_private(root: Path, at_most: dict[Path, int] | None = None) -> int:
    """Take group and other rights off ``root`` and every entry under it (no link followed),
    except the group rights :mod:`hosting.confine` granted to a netlet gid (read and search at
    most); an entry of ``at_most`` keeps at most the mode given there. Returns how many entries
    were changed; HomeNotOwned for one this user cannot change."""
    tightened = 0
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in [*filenames, *dirnames, None]:
            entry = os.stat(name, dir_fd=dirfd, follow_symlinks=False) if name else os.fstat(dirfd)
            if stat.S_ISLNK(entry.st_mode):
                continue
            keep = 0o750 if entry.st_gid in ID_RANGE else 0o700
            keep = (at_most or {}).get(Path(dirpath, name) if name else Path(dirpath), keep)
            mode = stat.S_IMODE(entry.st_mode)
            if not mode & ~keep & 0o777:
                continue
            try:
                if name:
                    os.chmod(name, mode & keep, dir_fd=dirfd, follow_symlinks=False)
                else:
                    os.chmod(dirfd, mode & keep)
            except PermissionError:
                where = os.path.join(dirpath, name or "")
                raise HomeNotOwned(f"{where} is owned by uid {entry.st_uid}: this node's user "
                                   f"{os.geteuid()} cannot make it private") from None
            tightened += 1
    return tightened


def service_id_of(cert) -> str:
    """The hosting service id named in warrants: derived from the node certificate."""
    from warrants import cert_fingerprint

    return "node-" + cert_fingerprint(cert)[:16]


def ensure_home(root: Path) -> Home:
    """Create the home with the node key/cert and the admin key/warrant if missing."""
    import warrants

    home = Home(Path(root).expanduser().resolve())
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous_umask = os.umask(0o077)  # also when a client (jtrix-launch) makes the home
    try:
        return _fill_home(home)
    finally:
        os.umask(previous_umask)


def _fill_home(home: Home) -> Home:
    import warrants

    tightened = secure_home(home.root)
    if tightened:
        log.warning("home %s was accessible to other users: took group/other rights off %d entries",
                    home.root, tightened)
    for sub in (home.codebases, home.root / "apps", home.root / "logs", home.netlet_node_json.parent):
        sub.mkdir(exist_ok=True)
    if not home.node_key.exists() or not home.node_cert.exists():
        key = warrants.generate_key()
        cert = warrants.make_self_signed_cert(key, "jtrix hosting node")
        warrants.save_private_key(key, home.node_key)
        warrants.save_cert(cert, home.node_cert)
    if not home.admin_key.exists() or not home.admin_warrant.exists():
        node_key = warrants.load_private_key(home.node_key)
        node_cert = warrants.load_cert(home.node_cert)
        admin_key = warrants.generate_key()
        now = dt.datetime.now(dt.timezone.utc)
        xml = warrants.issue_warrant(
            node_key,
            node_cert,
            rights=sorted(warrants.CLIENT_RIGHTS),
            service=service_id_of(node_cert),
            holder=admin_key.public_key(),
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=ADMIN_WARRANT_DAYS),
        )
        warrants.save_private_key(admin_key, home.admin_key)
        write_secret(home.admin_warrant, xml)
    return home
