"""Content-addressed codebase store.

Contract: a codebase is stored once per sha256 of its archive bytes
(``<sha>.tar.gz`` plus its extracted tree ``<sha>/``), its id always 64 hex
digits (``warrants.names``); the extracted tree is complete before it becomes
visible (extract to a temp dir, then rename). Extraction is bounded and refuses
what a codebase never needs:
  * the archive is at most ``MAX_CODEBASE_BYTES``; its uncompressed tar stream
    (headers included) at most ``MAX_UNPACKED_BYTES`` — decompression stops there,
    so a small archive cannot fill the disk — and it has at most ``MAX_MEMBERS``
    members — all checked before the first member is written;
  * absolute paths, ``..``, devices and FIFOs (tarfile's ``data`` filter), and
    every link, symbolic or hard, are refused: the whole upload fails.
Collection (:meth:`CodebaseStore.collect`) removes every codebase not in the
set kept, except one stored, or asked for, in this process and not yet used
(``pin`` until the app using it is registered, at most ``PIN_S``): a codebase
is not collected between its upload (or ``has_codebase``) and its submit.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable
from zlib import error as zlib_error

from hosting.home import make_private
from warrants import names
from warrants.errors import BadInput

log = logging.getLogger(__name__)

MAX_CODEBASE_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 128 * 1024 * 1024
MAX_MEMBERS = 10_000
PIN_S = 3600.0
_INCOMING = ".incoming-"
_DECOMPRESSORS = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


class _Capped(io.RawIOBase):
    """A reader of ``inner`` that refuses to yield more than ``cap`` bytes in total."""

    def __init__(self, inner, cap: int) -> None:
        self.inner, self.left, self.cap = inner, cap, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        chunk = self.inner.read(min(len(buf), self.left + 1))
        if len(chunk) > self.left:
            raise BadInput(f"codebase archive unpacks to more than {self.cap} bytes")
        self.left -= len(chunk)
        buf[:len(chunk)] = chunk
        return len(chunk)


def _tar_stream(data: bytes, cap: int) -> io.BufferedReader:
    """The uncompressed tar stream of ``data`` (gzip, bzip2, xz or plain), capped at ``cap`` bytes."""
    inner = io.BytesIO(data)
    for magic, opener in _DECOMPRESSORS:
        if data.startswith(magic):
            inner = opener(fileobj=inner, mode="rb")
            break
    return io.BufferedReader(_Capped(inner, cap), buffer_size=64 * 1024)


class _Limits:
    """Counts members and their declared bytes and refuses links, one header at a time."""

    def __init__(self) -> None:
        self.members = self.bytes = 0

    def check(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        self.bytes += max(0, member.size)
        if self.members > MAX_MEMBERS:
            raise BadInput(f"codebase archive has more than {MAX_MEMBERS} members")
        if self.bytes > MAX_UNPACKED_BYTES:
            raise BadInput(f"codebase archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        if member.issym() or member.islnk():
            raise BadInput(f"codebase archive member {member.name[:200]!r} is a link (links are refused)")


def extract(data: bytes, dest: Path) -> None:
    """Extract archive ``data`` into the empty directory ``dest`` (module contract's limits).

    Two passes over the (capped) stream: the first checks the limits on every header and
    writes nothing, so an archive over them costs no disk; the second extracts through
    tarfile's ``data`` filter (a path leaving ``dest`` fails it, and the caller removes ``dest``)."""
    try:
        with tarfile.open(fileobj=_tar_stream(data, MAX_UNPACKED_BYTES), mode="r|") as tar:
            limits = _Limits()
            for member in tar:
                limits.check(member)
        with tarfile.open(fileobj=_tar_stream(data, MAX_UNPACKED_BYTES), mode="r|") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib_error, lzma.LZMAError) as err:
        raise BadInput(f"codebase archive refused: {err}") from None


class CodebaseStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        #: sha -> monotonic time it was stored by this process, until an app uses it
        self._pins: dict[str, float] = {}

    def dir_of(self, sha: str) -> Path:
        return names.under(self.root, names.check_codebase(sha))

    def _archive_path(self, sha: str) -> Path:
        return names.under(self.root, names.check_codebase(sha) + ".tar.gz")

    def has(self, sha: str) -> bool:
        return self.dir_of(sha).is_dir()

    def archive(self, sha: str) -> bytes:
        """The archive as uploaded (for nodes that fetch it by hash)."""
        return self._archive_path(sha).read_bytes()

    def add(self, data: bytes, expected_sha: str | None = None) -> str:
        """Store an archive (``.tar.gz``); returns its sha256. Idempotent; pins the codebase."""
        if len(data) > MAX_CODEBASE_BYTES:
            raise BadInput(f"codebase archive is {len(data)} bytes, more than {MAX_CODEBASE_BYTES}")
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha is not None and names.check_codebase(expected_sha) != sha:
            raise BadInput(f"codebase sha256 mismatch: got {sha}, expected {expected_sha}")
        if self.pin(sha):
            return sha
        tmp = Path(tempfile.mkdtemp(prefix=_INCOMING, dir=self.root))
        try:
            extract(data, tmp)
            make_private(tmp)  # the archive's modes (0644…) must not open it to other users
            with self._lock:
                self._archive_path(sha).write_bytes(data)
                try:
                    os.rename(tmp, self.dir_of(sha))
                except OSError:
                    if not self.has(sha):  # lost a race with an identical upload: fine
                        raise
                self._pins[sha] = time.monotonic()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sha

    def pin(self, sha: str) -> bool:
        """Keep ``sha`` from collection (as if just stored) if it is here; False if it is not."""
        with self._lock:
            if not self.has(sha):
                return False
            self._pins[sha] = time.monotonic()
            return True

    def unpin(self, sha: str) -> None:
        """An app now uses ``sha``: from here on the registry keeps it."""
        with self._lock:
            self._pins.pop(sha, None)

    def collect(self, in_use: Callable[[], set[str]], incoming: bool = False) -> list[str]:
        """Remove every codebase neither in ``in_use()`` nor pinned; with ``incoming`` (only when
        no upload can be running: at start) also half-extracted uploads. Returns the removed ids.

        ``in_use`` is read under the store's lock, after any ``unpin`` that preceded it: an app
        registered (then unpinned) concurrently is either in it or still pinned."""
        removed: list[str] = []
        with self._lock:
            keep = in_use()
            now = time.monotonic()
            self._pins = {sha: t for sha, t in self._pins.items() if now - t < PIN_S}
            for entry in os.scandir(self.root):
                sha = entry.name.removesuffix(".tar.gz")
                if incoming and entry.name.startswith(_INCOMING):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    continue
                if not names.CODEBASE_RE.fullmatch(sha) or sha in keep or sha in self._pins:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(sha)
                else:
                    os.unlink(entry.path)
        return sorted(set(removed))
