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
    name), and ``fchmod`` to any mode with group, other, setuid, setgid or sticky bits (a
    descriptor opened read-only on a file the netlet's uid owns — ``node.json``, an installation
    of its own user — must not become writable by others). ``fchmod`` to an owner-only mode,
    ``fchown`` and ``futimens`` (``utimensat`` on a descriptor) on files it opened stay allowed;
  * ``io_uring`` (``io_uring_setup``/``_enter``/``_register``): its operations (sockets, opens)
    would bypass this filter;
  * any call through another architecture's entry (32-bit ``int 0x80``, x32 on x86_64), whose
    numbers this filter does not know.

The filter is classic BPF built here (about forty instructions) and loaded with
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
          "utime", "utimes", "futimesat", "io_uring_setup", "io_uring_enter", "io_uring_register")


@dataclass(frozen=True)
class Arch:
    audit: int  #: AUDIT_ARCH_* the kernel reports for this entry
    numbers: dict[str, int]
    x32_bit: int = 0  #: set in the number of a call through the x32 entry (x86_64 only)


_COMMON_NEW = {"fchmodat2": 452, "setxattrat": 463, "removexattrat": 466, "io_uring_setup": 425,
               "io_uring_enter": 426, "io_uring_register": 427}
ARCHES = {
    "x86_64": Arch(0xC000003E, {"socket": 41, "chmod": 90, "fchmod": 91, "chown": 92, "lchown": 94, "utime": 132,
                                "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
                                "lremovexattr": 198, "fremovexattr": 199, "utimes": 235, "fchownat": 260,
                                "futimesat": 261, "fchmodat": 268, "utimensat": 280, **_COMMON_NEW},
                   x32_bit=0x40000000),
    "aarch64": Arch(0xC00000B7, {"socket": 198, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14,
                                 "lremovexattr": 15, "fremovexattr": 16, "fchmod": 52, "fchmodat": 53,
                                 "fchownat": 54, "utimensat": 88, **_COMMON_NEW}),
}

#: mode bits ``fchmod`` may not set: group, other, setuid, setgid, sticky
FCHMOD_FORBIDDEN = 0o7077
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
    p.op(_JEQ, arch.numbers["socket"], "socket", 0)
    p.op(_JEQ, arch.numbers["fchmod"], "fchmod", 0)
    p.op(_JEQ, arch.numbers["utimensat"], "utimensat", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("socket")  # socket(family, type, protocol)
    p.op(_LD_ABS, _arg(0))
    p.op(_JEQ, socket.AF_PACKET, "deny", 0)
    p.op(_LD_ABS, _arg(1))
    p.op(_AND, _SOCK_TYPE_MASK)
    p.op(_JEQ, socket.SOCK_RAW, "deny", 0)
    p.op(_JEQ, _SOCK_PACKET, "deny", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("fchmod")  # fchmod(fd, mode)
    p.op(_LD_ABS, _arg(1))
    p.op(_JSET, FCHMOD_FORBIDDEN, "deny", 0)
    p.op(_RET, _RET_ALLOW)
    p.label("utimensat")  # utimensat(dirfd, path, times, flags): a NULL path is futimens(dirfd)
    p.op(_LD_ABS, _arg(1))
    p.op(_JEQ, 0, 0, "deny")
    p.op(_LD_ABS, _arg(1, high=True))
    p.op(_JEQ, 0, 0, "deny")
    p.op(_RET, _RET_ALLOW)
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
