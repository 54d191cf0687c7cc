"""Packaging an app's codebase for upload: a deterministic tar.gz and its SHA-256.

A directory is packed with sorted entries, zeroed mtimes and owners, fixed
modes (0644, or 0755 when executable by its owner), and without
``__pycache__``, ``.git`` and ``*.pyc``; the same tree always gives the same
bytes. Symbolic links are not followed into directories; a link to a regular
file inside the tree is stored as that file's content, any other link is
skipped. An archive codebase is shipped as is, after checking the sha256 the
descriptor records, if any.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

from warrants.descriptor_model import Descriptor
from warrants.errors import BadInput

SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
SKIP_SUFFIXES = (".pyc", ".pyo")


def _entries(root: Path) -> list[tuple[str, Path, bool]]:
    """(archive name, path, is_dir) for everything packed, sorted by name."""
    out: list[tuple[str, Path, bool]] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        keep = []
        for name in dirnames:
            p = d / name
            if name in SKIP_DIRS or p.is_symlink():
                continue
            keep.append(name)
            out.append((p.relative_to(root).as_posix(), p, True))
        dirnames[:] = sorted(keep)
        for name in filenames:
            p = d / name
            if name.endswith(SKIP_SUFFIXES):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not target.is_file() or not target.is_relative_to(real_root):
                    continue
            elif not p.is_file():
                continue
            out.append((p.relative_to(root).as_posix(), p, False))
    out.sort(key=lambda e: e[0])
    return out


def pack_directory(root: str | os.PathLike) -> bytes:
    """The deterministic tar.gz of directory ``root``."""
    root = Path(root)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, path, is_dir in _entries(root):
                info = tarfile.TarInfo(name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if is_dir:
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    continue
                data = path.read_bytes()
                executable = path.stat().st_mode & stat.S_IXUSR
                info.mode = 0o755 if executable else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def package_codebase(descriptor: Descriptor) -> tuple[bytes, str]:
    """The codebase as upload-ready bytes and their sha256 (hex).

    A directory becomes a deterministic tar.gz; an archive is returned as is
    after checking the recorded sha256 (a mismatch is :class:`BadInput`).
    """
    cb = descriptor.codebase
    path = Path(cb.path)
    if path.is_dir():
        data = pack_directory(path)
    elif path.is_file():
        data = path.read_bytes()
    else:
        raise BadInput(f"{descriptor.source}: codebase {path} not found")
    digest = hashlib.sha256(data).hexdigest()
    if cb.sha256 is not None and cb.sha256 != digest:
        raise BadInput(
            f"{descriptor.source}: codebase {path.name} has sha256 {digest}, the descriptor records {cb.sha256}"
        )
    return data, digest
