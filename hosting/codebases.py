"""Content-addressed codebase store.

Contract: a codebase is stored once per sha256 of its archive bytes
(``<sha>.tar.gz`` plus its extracted tree ``<sha>/``); the extracted tree is
complete before it becomes visible (extract to a temp dir, then rename), and
extraction refuses absolute paths, ``..``, links and devices (tarfile's
``data`` filter).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hosting.home import make_private
from warrants.errors import BadInput

MAX_CODEBASE_BYTES = 64 * 1024 * 1024


class CodebaseStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def dir_of(self, sha: str) -> Path:
        return self.root / sha

    def has(self, sha: str) -> bool:
        return self.dir_of(sha).is_dir()

    def archive(self, sha: str) -> bytes:
        """The archive as uploaded (for nodes that fetch it by hash)."""
        return (self.root / f"{sha}.tar.gz").read_bytes()

    def add(self, data: bytes, expected_sha: str | None = None) -> str:
        """Store an archive (``.tar.gz``); returns its sha256. Idempotent."""
        if len(data) > MAX_CODEBASE_BYTES:
            raise BadInput(f"codebase archive is {len(data)} bytes, more than {MAX_CODEBASE_BYTES}")
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha is not None and expected_sha != sha:
            raise BadInput(f"codebase sha256 mismatch: got {sha}, expected {expected_sha}")
        if self.has(sha):
            return sha
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                    tar.extractall(tmp, filter="data")
                make_private(tmp)  # the archive's modes (0644…) must not open it to other users
            except (tarfile.TarError, OSError, EOFError) as err:
                raise BadInput(f"codebase archive is not a valid tar archive: {err}") from None
            (self.root / f"{sha}.tar.gz").write_bytes(data)
            try:
                os.rename(tmp, self.dir_of(sha))
            except OSError:
                if not self.has(sha):  # lost a race with an identical upload: fine
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sha
