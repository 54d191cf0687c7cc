"""Landlock (Linux >= 5.13) and ``PR_SET_NO_NEW_PRIVS`` through raw syscalls (ctypes).

Contract of :func:`restrict`: after it returns, this process and every
process it starts can open files only beneath the directories and at the
files it was given, with the rights given (read-only or read-write), for
every file-system right this kernel's Landlock ABI knows; with ABI >= 6 it
also cannot signal, nor connect to abstract UNIX sockets of, processes
outside its own Landlock domain (the node, other apps' netlets). Landlock
also forbids ptrace of processes outside the domain at every ABI. The
restriction cannot be undone. Files already open (the log on stdout) stay
usable.

:func:`abi` is 0 when the kernel has no Landlock (not built, or not enabled
in ``lsm=``): then :func:`restrict` raises :class:`LandlockUnavailable` and
the caller decides what that means.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

#: rights that apply to a file (not a directory) in a rule
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_ONLY = EXECUTE | READ_FILE | READ_DIR


class LandlockUnavailable(OSError):
    """The kernel offers no Landlock (the caller's environment, nobody's fault here)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def abi() -> int:
    """The kernel's Landlock ABI version; 0 if Landlock is unavailable."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def handled_fs(version: int) -> int:
    """Every file-system right ABI ``version`` knows (all of them are restricted)."""
    rights = _ABI1_ALL
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def no_new_privs() -> None:
    """``prctl(PR_SET_NO_NEW_PRIVS, 1)``: no exec from now on gains privileges (setuid, file caps)."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl(PR_SET_NO_NEW_PRIVS)")


def not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: the calling process's ``/proc/<pid>`` entries (descriptors,
    environment, memory, cwd) become root's, and no process of its user may ptrace it; reset by
    exec, so what it starts is unaffected."""
    _check(_libc.prctl(_PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl(PR_SET_DUMPABLE)")


@dataclass(frozen=True)
class Rule:
    path: Path
    writable: bool


def restrict(rules: list[Rule]) -> int:
    """Confine this process to ``rules`` (see module contract); returns the ABI used.

    Paths that do not exist are skipped (a Python without ``/lib64``). Needs
    ``no_new_privs()`` first unless the caller has ``CAP_SYS_ADMIN``.
    """
    version = abi()
    if version == 0:
        raise LandlockUnavailable("landlock unavailable")
    handled = handled_fs(version)
    attr = _RulesetAttr(handled, 0, SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if version >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if version >= 6 else 16  # before ABI 6 the struct had no ``scoped``
    ruleset = _check(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                   ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        for rule in rules:
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = handled if rule.writable else READ_ONLY
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    allowed &= _FILE_RIGHTS
                beneath = _PathBeneathAttr(allowed & handled, fd)
                _check(_libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(beneath),
                                     ctypes.c_uint32(0)), f"landlock_add_rule({rule.path})")
            finally:
                os.close(fd)
        _check(_libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return version
