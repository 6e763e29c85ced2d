"""Raw system calls through libc's ``syscall(2)``, for the calls Python lacks.

``os`` has no ``statx``, ``renameat2``, ``fchmodat2``, ``faccessat2`` with
flags, nor the exact x86_64 ``struct stat`` of ``newfstatat``: emulating a
program's call means making the very same call, so these are made raw.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

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
    result: int = _syscall(ctypes.c_long(nr), *(_c(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result
