"""Giving up root and every capability before an app's code runs.

Contract of :func:`drop` (call it while the process has one thread: credentials are per thread):
once it returned, the process runs as ``uid``/``gid`` with exactly ``groups`` (when given; else
with its own), its real, effective and saved uids are all non-zero, and its permitted,
effective, inheritable and ambient capability sets are empty. When it held ``CAP_SETPCAP``
(a process started as root) it also emptied its bounding set and locked the securebits
``NOROOT``, ``NO_SETUID_FIXUP``, ``KEEP_CAPS`` (off) and ``NO_CAP_AMBIENT_RAISE``: neither an
exec of a setuid-root or file-capability binary nor a later uid 0 can bring a capability back
(``no_new_privs`` already stops the first). Anything else raises :class:`StillPrivileged`:
app code never runs as root, nor with a capability.
"""

from __future__ import annotations

import ctypes
import os

from netlets.landlock import _check, _libc

_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 28, 47, 4
_CAP_SETPCAP = 8
#: NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (left off) and NO_CAP_AMBIENT_RAISE, each with its lock
SECUREBITS = (1 << 0 | 1 << 1) | (1 << 2 | 1 << 3) | (1 << 5) | (1 << 6 | 1 << 7)
_CAP_VERSION_3 = 0x20080522
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


class StillPrivileged(PermissionError):
    """The process could not give up root or a capability: it must not run the app's code."""


def status() -> dict[str, int]:
    """The capability sets (and ``Bnd``) of this process, from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        return {k: int(v, 16) for k, _, v in (line.partition(":") for line in f) if k.startswith("Cap")}


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), what)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _clear_capabilities() -> None:
    """capset(): empty permitted, effective and inheritable sets (lowering needs no privilege)."""
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data), "capset")


def drop(uid: int | None = None, gid: int | None = None, groups: tuple[int, ...] = ()) -> None:
    """See the module contract."""
    held = status()
    if held["CapEff"] >> _CAP_SETPCAP & 1:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last + 1):
            _prctl(_PR_CAPBSET_DROP, cap, f"prctl(PR_CAPBSET_DROP, {cap})")
        _prctl(_PR_SET_SECUREBITS, SECUREBITS, "prctl(PR_SET_SECUREBITS)")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if uid is not None:
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    _clear_capabilities()
    left = {k: v for k, v in status().items() if k in CAP_SETS and v}
    if 0 in (*os.getresuid(), *os.getresgid()) or left:
        raise StillPrivileged(f"refusing to run app code with uids {os.getresuid()}, gids {os.getresgid()}, "
                              f"capabilities {left}")
