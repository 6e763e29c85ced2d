"""Raw system calls through libc's ``syscall(2)``, for the calls Python lacks.

``os`` has no ``statx``, ``renameat2``, ``fchmodat2``, ``faccessat2`` with
flags, nor the exact x86_64 ``struct stat`` of ``newfstatat``: emulating a
program's call means making the very same call, so these are made raw.
"""

from __future__ import annotations

import ctypes
import errno
import os

#: The C library, loaded once for every module of the kernel layer (errno kept
#: per thread: ``ctypes.get_errno()`` after a call).
libc = ctypes.CDLL(None, use_errno=True)
#: ``syscall(2)`` itself, returning a ``long``: for callers that pass ready
#: ctypes arguments on a hot path (see :func:`syscall` for the checked form).
libc_syscall = libc.syscall
libc_syscall.restype = ctypes.c_long

Arg = int | bytes | None | ctypes.Array[ctypes.c_char]


def _c(a: Arg) -> object:
    if a is None:
        return ctypes.c_void_p(0)
    if isinstance(a, int):
        return ctypes.c_long(a)
    return a


def syscall(nr: int, *args: Arg) -> int:
    """Make system call ``nr``; its result, or OSError with its errno.

    Integers are passed as ``long`` (so a 32-bit ``-1`` uid must be given
    as ``0xFFFFFFFF`` where the kernel wants ``u32``), ``bytes`` as a
    pointer to a NUL-terminated copy, a ctypes buffer by address, None as NULL.
    """
    result: int = libc_syscall(ctypes.c_long(nr), *(_c(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def memfd_create(name: str, flags: int, *, optional: int = 0) -> int:
    """memfd_create(2), without the ``optional`` flags on a kernel that does not know
    them (EINVAL: ``MFD_NOEXEC_SEAL`` came with Linux 6.3)."""
    try:
        return os.memfd_create(name, flags)
    except OSError as e:
        if e.errno != errno.EINVAL or not flags & optional:
            raise
    return os.memfd_create(name, flags & ~optional)
