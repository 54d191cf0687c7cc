"""Per-slot resources: directories and TCP ports that outlive netlets.

Contract: a slot's resources are created once (first start) and then handed,
unchanged, to every later netlet of that slot; each start is told which
resources are *inherited* (created by an earlier run) and which are *fresh*.

What is inside a slot directory is its netlets' (links included): the node
removes an entry there without following a link (``wipe``), so a netlet's
link never makes the node delete what it points to.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any

from warrants.descriptor_model import NetletType


def allocate_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (bind to port 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wipe(path: Path) -> bool:
    """Remove what is at ``path`` — a directory tree, or a link or file in its place, never what a
    link points to; False if nothing was there. ``shutil.rmtree`` is the fd-based one on Linux: it
    follows no link inside the tree, and refuses a directory swapped for a link meanwhile."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return True


def bind_resources(ntype: NetletType, slot_dir: Path, recorded: dict[str, Any],
                   incarnation: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make sure every resource of the slot exists.

    Returns ``(recorded, for_netlet)``: the registry record to store (stable
    across runs) and what this run's netlet is told
    (``{name: {"kind", "path"|"port", "inherited"}}``).
    """
    recorded = dict(recorded)
    told: dict[str, Any] = {}
    for res in ntype.resources:
        entry = recorded.get(res.name)
        if entry is None:
            if res.kind == "directory":
                entry = {"kind": "directory", "path": str(slot_dir / res.name), "created_by": incarnation}
            else:
                entry = {"kind": "port", "port": res.port or allocate_port(), "created_by": incarnation}
            recorded[res.name] = entry
        if entry["kind"] == "directory":
            Path(entry["path"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        told[res.name] = {k: v for k, v in entry.items() if k != "created_by"}
        told[res.name]["inherited"] = entry["created_by"] < incarnation
    return recorded, told
