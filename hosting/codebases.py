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

An archive arrives in chunks of at most ``MAX_CHUNK_BYTES``, each its own
authenticated call (``add_chunk``, then ``commit``): a partial upload is a
file of its uploader's, appended to only at its end (a chunk at another offset
is answered with the size held, so an upload resumes there; a node restart
drops partials, and the upload restarts from 0), checked against its sha256
only when committed. Quota (what an uploader can make the node keep that no
app uses): each uploader's partial uploads and pinned codebases hold at most
``UPLOADER_MAX_BYTES`` and ``UPLOADER_MAX_CODEBASES``, everyone's at most
``NODE_MAX_BYTES``; beyond, ``QuotaExceeded`` and nothing is written. (The
node's own stores, of codebases it fetches to run an app, count to no quota.)
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
#: the largest chunk of an upload (one call's archive bytes)
MAX_CHUNK_BYTES = 1024 * 1024
#: what one uploader (an app's launch warrant, or a whole-service one) may have kept unused
UPLOADER_MAX_BYTES = 256 * 1024 * 1024
UPLOADER_MAX_CODEBASES = 8
#: what all uploaders together may have kept unused
NODE_MAX_BYTES = 1024 * 1024 * 1024
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


class QuotaExceeded(BadInput):
    """An upload would make the node keep more unused codebase bytes than its quota (exit code 2)."""


class CodebaseStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        #: sha -> (monotonic time it was stored or asked for by this process, its uploader, its
        #: archive's size), until an app uses it
        self._pins: dict[str, tuple[float, str, int]] = {}
        #: (uploader, sha) -> (bytes of its partial upload, monotonic time of its last chunk)
        self._partial: dict[tuple[str, str], tuple[int, float]] = {}

    def dir_of(self, sha: str) -> Path:
        return names.under(self.root, names.check_codebase(sha))

    def _archive_path(self, sha: str) -> Path:
        return names.under(self.root, names.check_codebase(sha) + ".tar.gz")

    def has(self, sha: str) -> bool:
        return self.dir_of(sha).is_dir()

    def archive(self, sha: str) -> bytes:
        """The archive as uploaded (for nodes that fetch it by hash)."""
        return self._archive_path(sha).read_bytes()

    def add(self, data: bytes, expected_sha: str | None = None, uploader: str = "") -> str:
        """Store an archive (``.tar.gz``); returns its sha256. Idempotent; pins the codebase,
        counted to ``uploader``'s quota until an app uses it."""
        if len(data) > MAX_CODEBASE_BYTES:
            raise BadInput(f"codebase archive is {len(data)} bytes, more than {MAX_CODEBASE_BYTES}")
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha is not None and names.check_codebase(expected_sha) != sha:
            raise BadInput(f"codebase sha256 mismatch: got {sha}, expected {expected_sha}")
        if self.pin(sha, uploader):
            return sha
        with self._lock:
            self._check_quota(uploader, len(data), new_codebase=True, replacing=self._partial.get((uploader, sha), (0, 0.0))[0])
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
                self._pins[sha] = (time.monotonic(), uploader, len(data))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sha

    def pin(self, sha: str, uploader: str = "") -> bool:
        """Keep ``sha`` from collection (as if just stored) if it is here; False if it is not.
        A codebase already pinned stays counted to whoever pinned it first."""
        with self._lock:
            if not self.has(sha):
                return False
            _, owner, size = self._pins.get(sha, (0.0, uploader, 0))
            self._pins[sha] = (time.monotonic(), owner, size)
            return True

    def _partial_path(self, uploader: str, sha: str) -> Path:
        tag = hashlib.sha256(uploader.encode()).hexdigest()[:16]
        return names.under(self.root, f"{_INCOMING}part-{tag}-{names.check_codebase(sha)}")

    def add_chunk(self, sha: str, offset: int, data: bytes, uploader: str = "") -> int:
        """Append ``data`` to ``uploader``'s partial upload of ``sha`` if it starts at its end
        (``offset``); the bytes held after (what the next chunk's offset must be)."""
        if len(data) > MAX_CHUNK_BYTES:
            raise BadInput(f"an upload chunk is {len(data)} bytes, more than {MAX_CHUNK_BYTES}")
        path = self._partial_path(uploader, sha)
        with self._lock:
            held = self._partial.get((uploader, sha), (0, 0.0))[0]
            if offset != held or not data:
                return held
            if held + len(data) > MAX_CODEBASE_BYTES:
                raise BadInput(f"codebase archive would be more than {MAX_CODEBASE_BYTES} bytes")
            self._check_quota(uploader, len(data), new_codebase=False)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "ab") as f:
                if f.tell() != held:  # not what this process wrote: start over
                    f.truncate(0)
                    self._partial.pop((uploader, sha), None)
                    return 0
                f.write(data)
            self._partial[(uploader, sha)] = (held + len(data), time.monotonic())
            return held + len(data)

    def commit(self, sha: str, uploader: str = "") -> str:
        """Store ``uploader``'s partial upload of ``sha`` (``add``); the partial is gone after,
        stored or refused."""
        path = self._partial_path(uploader, sha)
        with self._lock:
            if (uploader, sha) not in self._partial:
                raise BadInput(f"no upload of codebase {sha[:12]} in progress (send its chunks first)")
        try:
            return self.add(path.read_bytes(), sha, uploader)
        finally:
            with self._lock:
                self._partial.pop((uploader, sha), None)
                path.unlink(missing_ok=True)

    def _check_quota(self, uploader: str, more: int, new_codebase: bool, replacing: int = 0) -> None:
        """Refuse ``more`` unused bytes (and one more unused codebase) beyond the quotas; under the lock.
        The node's own (``uploader`` empty: what it fetches to run an app) counts to no quota."""
        if not uploader:
            return
        mine = sum(size for _, owner, size in self._pins.values() if owner == uploader) + \
            sum(size for (owner, _), (size, _) in self._partial.items() if owner == uploader) - replacing
        count = sum(1 for _, owner, _ in self._pins.values() if owner == uploader)
        total = sum(size for _, _, size in self._pins.values()) + \
            sum(size for size, _ in self._partial.values()) - replacing
        who = f"uploader {uploader}" if uploader else "this uploader"
        if mine + more > UPLOADER_MAX_BYTES:
            raise QuotaExceeded(f"{who} already keeps {mine} bytes of codebases no app uses (at most"
                                f" {UPLOADER_MAX_BYTES}): submit or wait for them to be collected")
        if new_codebase and count >= UPLOADER_MAX_CODEBASES:
            raise QuotaExceeded(f"{who} already keeps {count} codebases no app uses (at most"
                                f" {UPLOADER_MAX_CODEBASES}): submit or wait for them to be collected")
        if total + more > NODE_MAX_BYTES:
            raise QuotaExceeded(f"this node already keeps {total} bytes of codebases no app uses (at most"
                                f" {NODE_MAX_BYTES}): try again later")

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
            self._pins = {sha: pin for sha, pin in self._pins.items() if now - pin[0] < PIN_S}
            for key, (_, last) in list(self._partial.items()):  # an upload abandoned that long
                if now - last >= PIN_S:
                    del self._partial[key]
                    self._partial_path(*key).unlink(missing_ok=True)
            for entry in os.scandir(self.root):
                sha = entry.name.removesuffix(".tar.gz")
                if incoming and entry.name.startswith(_INCOMING):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                    continue
                if not names.CODEBASE_RE.fullmatch(sha) or sha in keep or sha in self._pins:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(sha)
                else:
                    os.unlink(entry.path)
        return sorted(set(removed))
