"""A seccomp filter for a netlet's process: the kernel calls Landlock and file modes do not govern.

Contract of :func:`install` (needs ``no_new_privs`` first; binds the calling thread and every
process it starts, and cannot be undone): from then on these calls fail with ``EPERM``, and
nothing else changes —

  * sockets that see or forge other processes' traffic: ``socket()`` of the ``AF_PACKET``
    family, or of type ``SOCK_RAW`` or ``SOCK_PACKET`` in any family (Landlock's network rules
    cover TCP bind/connect only, and a packet socket on ``lo`` reads every local connection);
  * changing a file's mode, owner, times or extended attributes (ACLs) by path: ``chmod``,
    ``fchmodat``, ``fchmodat2``, ``chown``, ``lchown``, ``fchownat``, ``setxattr``,
    ``lsetxattr``, ``removexattr``, ``lremovexattr``, ``setxattrat``, ``removexattrat``,
    ``utime``, ``utimes``, ``futimesat``, and ``utimensat`` with a path (Landlock governs opening
    a file, not these: a netlet with the node's uid could otherwise make the node's keys
    world-readable without opening them);
  * through a descriptor: ``fsetxattr``/``fremovexattr`` (a POSIX ACL is a mode by another
    name), ``fchmod`` and ``fchown`` altogether (a descriptor opened read-only on a directory the
    netlet's uid owns in landlock mode -- the node's ``run/``, a shared codebase -- must not be
    made unusable to the node and other apps by ``fchmod(fd, 0)``: second security review D1a);
    ``futimens`` (``utimensat`` on a descriptor) on files it opened stays allowed;
  * new namespaces: ``clone`` and ``unshare`` with any ``CLONE_NEW*`` flag, ``setns``; ``clone3``
    answers ``ENOSYS`` (its flags are in a struct the filter cannot read; glibc then falls back
    to ``clone``). A user namespace would give the app every capability inside it (review D1b);
  * creating a file or directory with the setuid or setgid bit (``open``, ``openat``, ``creat``,
    ``mkdir(at)``, ``mknod(at)``; ``openat2``, whose mode is in a struct, is denied): the shared
    ``/tmp`` must not receive a setuid-to-the-app executable another local user could run
    (review D1c);
  * ``io_uring`` (``io_uring_setup``/``_enter``/``_register``): its operations (sockets, opens)
    would bypass this filter;
  * any call through another architecture's entry (32-bit ``int 0x80``, x32 on x86_64), whose
    numbers this filter does not know.

The filter is classic BPF built here (about eighty instructions) and loaded with
``prctl(PR_SET_SECCOMP)`` through ctypes: no library, nothing to install (libseccomp's Python
binding is not on PyPI as a wheel). Architectures: x86_64 and aarch64; elsewhere
:func:`install` raises :class:`SeccompUnavailable` and the netlet does not start.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct
from dataclasses import dataclass

from netlets.landlock import _check, _libc

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _JGE, _JSET, _AND, _RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
_NR, _ARCH = 0, 4


def _arg(i: int, high: bool = False) -> int:
    """Offset of argument ``i``'s low (or high) 32-bit word in ``struct seccomp_data`` (little-endian)."""
    return 16 + 8 * i + (4 if high else 0)


#: syscalls that never pass, by name (a name an architecture lacks is skipped)
DENIED = ("chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "setxattr", "lsetxattr",
          "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
          "utime", "utimes", "futimesat", "io_uring_setup", "io_uring_enter", "io_uring_register",
          "fchmod", "fchown", "setns", "openat2")
#: syscalls answered ENOSYS, so that the C library falls back to one this filter can inspect
#: (``clone3`` passes its flags in a struct; glibc then uses ``clone``)
UNSUPPORTED = ("clone3",)
#: namespace flags: ``clone`` and ``unshare`` may not make new namespaces (a user namespace gives
#: the app every capability inside it: the kernel's namespace-only code is the usual way to root)
CLONE_NEW = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
UNSHARE_NEW = CLONE_NEW | 0x80  # and NEWTIME (in clone's flags, 0x80 is part of the exit signal)
#: mode bits no file may be created with: setuid, setgid
CREATE_FORBIDDEN = 0o6000
#: calls that create a file, by name -> the argument holding its mode
CREATE_MODE_ARG = {"open": 2, "creat": 1, "openat": 3, "mkdir": 1, "mkdirat": 2, "mknod": 1, "mknodat": 2}


@dataclass(frozen=True)
class Arch:
    audit: int  #: AUDIT_ARCH_* the kernel reports for this entry
    numbers: dict[str, int]
    x32_bit: int = 0  #: set in the number of a call through the x32 entry (x86_64 only)


_COMMON_NEW = {"fchmodat2": 452, "setxattrat": 463, "removexattrat": 466, "io_uring_setup": 425,
               "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435, "openat2": 437}
ARCHES = {
    "x86_64": Arch(0xC000003E, {"socket": 41, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94,
                                "utime": 132, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
                                "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "utimes": 235,
                                "fchownat": 260, "futimesat": 261, "fchmodat": 268, "utimensat": 280,
                                "clone": 56, "unshare": 272, "setns": 308, "open": 2, "creat": 85, "mkdir": 83,
                                "mknod": 133, "openat": 257, "mkdirat": 258, "mknodat": 259, **_COMMON_NEW},
                   x32_bit=0x40000000),
    "aarch64": Arch(0xC00000B7, {"socket": 198, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14,
                                 "lremovexattr": 15, "fremovexattr": 16, "fchmod": 52, "fchmodat": 53,
                                 "fchownat": 54, "fchown": 55, "utimensat": 88, "clone": 220, "unshare": 97,
                                 "setns": 268, "openat": 56, "mkdirat": 34, "mknodat": 33, **_COMMON_NEW}),
}

_SOCK_TYPE_MASK, _SOCK_PACKET = 0xF, 10


class SeccompUnavailable(OSError):
    """This architecture (or kernel) gets no filter: the netlet must not start."""


class _Program:
    """A tiny assembler: instructions with symbolic forward jumps, resolved by :meth:`code`."""

    def __init__(self) -> None:
        self.ins: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def op(self, code: int, k: int = 0, jt: object = 0, jf: object = 0) -> None:
        self.ins.append((code, jt, jf, k))

    def code(self) -> bytes:
        def offset(at: int, target: object) -> int:
            if isinstance(target, int):
                return target
            delta = self.labels[target] - at - 1
            assert 0 <= delta < 256, (target, delta)
            return delta

        return b"".join(struct.pack("<HBBI", c, offset(i, jt), offset(i, jf), k)
                        for i, (c, jt, jf, k) in enumerate(self.ins))


def program(arch: Arch) -> bytes:
    """The filter for ``arch`` (see the module contract), as ``struct sock_filter[]``."""
    deny = _RET_ERRNO | errno.EPERM
    p = _Program()
    p.op(_LD_ABS, _ARCH)
    p.op(_JEQ, arch.audit, 0, "deny")
    p.op(_LD_ABS, _NR)
    if arch.x32_bit:
        p.op(_JGE, arch.x32_bit, "deny", 0)
    for name in DENIED:
        if name in arch.numbers:
            p.op(_JEQ, arch.numbers[name], "deny", 0)
    for name in UNSUPPORTED:
        p.op(_JEQ, arch.numbers[name], "enosys", 0)
    p.op(_JEQ, arch.numbers["socket"], "socket", 0)
    p.op(_JEQ, arch.numbers["utimensat"], "utimensat", 0)
    p.op(_JEQ, arch.numbers["clone"], "clone", 0)
    p.op(_JEQ, arch.numbers["unshare"], "unshare", 0)
    for name, i in CREATE_MODE_ARG.items():
        if name in arch.numbers:
            p.op(_JEQ, arch.numbers[name], f"mode{i}", 0)
    p.op(_RET, _RET_ALLOW)
    for i in sorted(set(CREATE_MODE_ARG.values())):
        p.label(f"mode{i}")  # the new file's mode is argument i
        p.op(_LD_ABS, _arg(i))
        p.op(_JSET, CREATE_FORBIDDEN, "deny", 0)
        p.op(_RET, _RET_ALLOW)
    p.label("clone")  # clone(flags, ...)
    p.op(_LD_ABS, _arg(0))
    p.op(_JSET, CLONE_NEW, "deny", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("unshare")  # unshare(flags)
    p.op(_LD_ABS, _arg(0))
    p.op(_JSET, UNSHARE_NEW, "deny", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("socket")  # socket(family, type, protocol)
    p.op(_LD_ABS, _arg(0))
    p.op(_JEQ, socket.AF_PACKET, "deny", 0)
    p.op(_LD_ABS, _arg(1))
    p.op(_AND, _SOCK_TYPE_MASK)
    p.op(_JEQ, socket.SOCK_RAW, "deny", 0)
    p.op(_JEQ, _SOCK_PACKET, "deny", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("utimensat")  # utimensat(dirfd, path, times, flags): a NULL path is futimens(dirfd)
    p.op(_LD_ABS, _arg(1))
    p.op(_JEQ, 0, 0, "deny")
    p.op(_LD_ABS, _arg(1, high=True))
    p.op(_JEQ, 0, 0, "deny")
    p.op(_RET, _RET_ALLOW)
    p.label("enosys")
    p.op(_RET, _RET_ERRNO | errno.ENOSYS)
    p.label("deny")
    p.op(_RET, deny)
    return p.code()


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into this process (module contract); raises if it cannot be loaded."""
    arch = ARCHES.get(platform.machine())
    if arch is None:
        raise SeccompUnavailable(errno.ENOSYS, f"no seccomp filter for architecture {platform.machine()}")
    code = program(arch)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _Fprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_SECCOMP)")
