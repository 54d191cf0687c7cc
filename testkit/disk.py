"""Disk faults a power loss makes, applied to real files: what the storage tests break."""

from __future__ import annotations

from pathlib import Path

PAGE = 4096


def lose_pages(seg: Path, start: int, lost: list[int], page: int = PAGE, fill: bytes | None = None) -> None:
    """A power loss during the write of ``seg[start:]``: the pages (file offsets ``k*page``) listed in
    ``lost`` never reached the disk; the bytes of the write in them read as ``fill`` (zeros: a hole
    or an unwritten extent; other bytes: stale blocks), everything else of the write landed. Bytes
    before ``start`` were fsynced earlier and stay."""
    data = bytearray(seg.read_bytes())
    for k in lost:
        lo, hi = max(start, k * page), min(len(data), (k + 1) * page)
        if lo < hi:
            data[lo:hi] = (fill or bytes(hi - lo))[:hi - lo].ljust(hi - lo, b"\0")
    seg.write_bytes(bytes(data))
