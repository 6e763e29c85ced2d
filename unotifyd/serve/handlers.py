"""The handler table: how to decode each trapped syscall into a request.

Adding a syscall is adding one entry to :data:`HANDLERS`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..kernel import abi
from ..kernel.errors import BadArgument
from ..kernel.listener import Notification
from ..kernel.target import MemoryReader
from ..policy.decision import VALID_OPEN_FLAGS

# The kernel's O_LARGEFILE on x86_64 (asm-generic/fcntl.h); Python's
# os.O_LARGEFILE is 0 on 64-bit builds, so it cannot be used to test the bit.
_VALID_RESOLVE = 0x3F
_OPEN_HOW_SIZE_VER0 = 24


@dataclass(frozen=True, slots=True)
class OpenCall:
    """An open-family call, decoded. ``dirfd`` is None for ``open``/``creat``."""

    syscall: str
    dirfd: int | None
    path: bytes
    flags: int
    mode: int
    resolve: int = 0

    @property
    def follows_last_link(self) -> bool:
        # O_CREAT|O_EXCL never follows a final symlink (open(2), O_EXCL).
        if self.flags & os.O_NOFOLLOW:
            return False
        return not (self.flags & os.O_CREAT and self.flags & os.O_EXCL)


def int_arg(x: int) -> int:
    """An ``int`` syscall argument: the low 32 bits, sign-extended."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def extensible_struct(
    mem: MemoryReader, n: Notification, arg: int, size_arg: int, known: int
) -> bytes:
    """The struct at ``args[arg]`` of ``args[size_arg]`` bytes, read as the kernel reads it.

    ``copy_struct_from_user`` (include/linux/uaccess.h), for extensible
    structs (``open_how``, ``xattr_args``, ``file_attr``): smaller than
    version 0 (``known`` bytes here) is EINVAL, larger than a page E2BIG,
    and bytes beyond what we know must be zero (E2BIG). Returns the
    ``known`` bytes.
    """
    usize = n.args[size_arg]
    if usize < known:
        raise BadArgument(errno.EINVAL, "struct argument too small")
    if usize > abi.PAGE_SIZE:
        raise BadArgument(errno.E2BIG, "struct argument too large")
    data = mem.read(n.pid, n.args[arg], usize)
    if any(data[known:]):
        raise BadArgument(errno.E2BIG, "unknown fields set in a struct argument")
    return data[:known]


def _mode(flags: int, mode: int) -> int:
    # The mode argument is only read when a file may be created (open(2)).
    return mode & 0o7777 if flags & (os.O_CREAT | os.O_TMPFILE) else 0


def decode_open(mem: MemoryReader, n: Notification) -> OpenCall:
    flags = n.args[1] & 0xFFFFFFFF
    return OpenCall("open", None, mem.read_path(n.pid, n.args[0]), flags, _mode(flags, n.args[2]))


def decode_creat(mem: MemoryReader, n: Notification) -> OpenCall:
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    return OpenCall("creat", None, mem.read_path(n.pid, n.args[0]), flags, n.args[1] & 0o7777)


def decode_openat(mem: MemoryReader, n: Notification) -> OpenCall:
    flags = n.args[2] & 0xFFFFFFFF
    path = mem.read_path(n.pid, n.args[1])
    return OpenCall("openat", int_arg(n.args[0]), path, flags, _mode(flags, n.args[3]))


def decode_openat2(mem: MemoryReader, n: Notification) -> OpenCall:
    """Decode ``openat2(dirfd, path, how, size)``, validating ``how`` as the kernel does.

    The kernel copies ``size`` bytes of ``struct open_how``: fewer than the
    first version's 24 is EINVAL, more than a page E2BIG, and bytes beyond
    the struct it knows must be zero or it is E2BIG (copy_struct_from_user).
    Unknown flag or resolve bits are EINVAL, and so is a mode without
    O_CREAT/O_TMPFILE (build_open_flags).
    """
    raw = extensible_struct(mem, n, 2, 3, _OPEN_HOW_SIZE_VER0)
    flags, mode, resolve = abi.OPEN_HOW_STRUCT.unpack_from(raw)
    if flags & ~VALID_OPEN_FLAGS or resolve & ~_VALID_RESOLVE or flags > 0xFFFFFFFF:
        raise BadArgument(errno.EINVAL, "unknown open_how flags")
    if (mode and not flags & (os.O_CREAT | os.O_TMPFILE)) or mode & ~0o7777:
        raise BadArgument(errno.EINVAL, "open_how mode without O_CREAT")
    path = mem.read_path(n.pid, n.args[1])
    return OpenCall("openat2", int_arg(n.args[0]), path, flags, mode, resolve)


Decoder = Callable[[MemoryReader, Notification], OpenCall]

HANDLERS: dict[int, Decoder] = {
    abi.SYS_OPEN: decode_open,
    abi.SYS_OPENAT: decode_openat,
    abi.SYS_OPENAT2: decode_openat2,
    abi.SYS_CREAT: decode_creat,
}
