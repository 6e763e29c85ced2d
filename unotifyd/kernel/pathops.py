"""The raw ``*at`` system calls an emulated path call is made with, and their structs.

``os`` has no ``statx``, ``renameat2``, ``fchmodat2``, ``faccessat2`` with
flags, no ``*xattrat``, nor the exact x86_64 ``struct stat`` of
``newfstatat``: performing a program's call means making the very same call
(the kernel then judges flags, sizes and permissions as for the program),
so they are made raw here, each returning what the kernel wrote. Each
raises OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

from . import abi
from .rawsys import syscall

NR = abi.SYSCALL_NUMBERS

STAT_SIZE = 144  # struct stat on x86_64 (arch/x86/include/uapi/asm/stat.h)
STAT_MODE = struct.Struct("<I")
STAT_MODE_AT = 24
STATX_SIZE = 256  # struct statx (include/uapi/linux/stat.h)
STATX_MODE = struct.Struct("<H")
STATX_MODE_AT = 28
STATFS_SIZE = 120  # struct statfs on x86_64 (include/uapi/asm-generic/statfs.h)
STATFS_FLAGS = struct.Struct("<q")
STATFS_FLAGS_AT = 80  # f_flags
ST_RDONLY = 1
XATTR_ARGS = struct.Struct("<QII")  # struct xattr_args: value, size, flags
AT_HANDLE_MNT_ID_UNIQUE = 0x001


def newfstatat(dirfd: int, name: bytes, flags: int) -> bytearray:
    buf = ctypes.create_string_buffer(STAT_SIZE)
    syscall(NR["newfstatat"], dirfd, name, buf, flags)
    return bytearray(buf.raw)


def statx(dirfd: int, name: bytes, flags: int, mask: int) -> bytearray:
    buf = ctypes.create_string_buffer(STATX_SIZE)
    syscall(NR["statx"], dirfd, name, flags, mask, buf)
    return bytearray(buf.raw)


def fstatfs(fd: int) -> bytearray:
    buf = ctypes.create_string_buffer(STATFS_SIZE)
    syscall(abi.SYS_FSTATFS, fd, buf)
    return bytearray(buf.raw)


def faccessat2(dirfd: int, name: bytes, mode: int, flags: int) -> None:
    syscall(NR["faccessat2"], dirfd, name, mode, flags)


def readlinkat(dirfd: int, name: bytes) -> bytes:
    buf = ctypes.create_string_buffer(abi.PATH_MAX)
    n = syscall(NR["readlinkat"], dirfd, name, buf, abi.PATH_MAX)
    return buf.raw[:n]


def getxattrat(
    dirfd: int, name: bytes, at_flags: int, attr: bytes, size: int, *, xflags: int
) -> tuple[int, bytes]:
    """The value's length and (if ``size``) the value.

    Made with our own ``struct xattr_args`` pointing into our buffer: the
    kernel checks the flags and sizes as for the program.
    """
    buf = ctypes.create_string_buffer(max(size, 1))
    ours = ctypes.create_string_buffer(XATTR_ARGS.pack(ctypes.addressof(buf), size, xflags))
    n = syscall(NR["getxattrat"], dirfd, name, at_flags, attr, ours, XATTR_ARGS.size)
    return n, buf.raw[:n] if size else b""


def setxattrat(
    dirfd: int, name: bytes, at_flags: int, attr: bytes, value: bytes, *, xflags: int
) -> None:
    buf = ctypes.create_string_buffer(value, max(len(value), 1))
    ours = ctypes.create_string_buffer(XATTR_ARGS.pack(ctypes.addressof(buf), len(value), xflags))
    syscall(NR["setxattrat"], dirfd, name, at_flags, attr, ours, XATTR_ARGS.size)


def listxattrat(dirfd: int, name: bytes, at_flags: int, size: int) -> tuple[int, bytes]:
    """The list's length and (if ``size``) the list."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = syscall(NR["listxattrat"], dirfd, name, at_flags, buf, size)
    return n, buf.raw[:n] if size else b""


def removexattrat(dirfd: int, name: bytes, at_flags: int, attr: bytes) -> None:
    syscall(NR["removexattrat"], dirfd, name, at_flags, attr)


def file_getattr(dirfd: int, name: bytes, usize: int, at_flags: int) -> bytes:
    """``usize`` bytes of ``struct file_attr``: what the kernel knows, zeros after."""
    buf = ctypes.create_string_buffer(max(usize, 1))
    syscall(NR["file_getattr"], dirfd, name, buf, usize, at_flags)
    return buf.raw[:usize]


def file_setattr(dirfd: int, name: bytes, attr: bytes, at_flags: int) -> None:
    buf = ctypes.create_string_buffer(attr, len(attr))
    syscall(NR["file_setattr"], dirfd, name, buf, len(attr), at_flags)


def name_to_handle_at(
    dirfd: int, name: bytes, handle_bytes: int, flags: int
) -> tuple[int, bytes, bytes]:
    """0 or ``-EOVERFLOW``, the ``struct file_handle`` the kernel wrote (the header
    and the handle used) and the mount id's bytes.

    On EOVERFLOW (the handle does not fit) the kernel still writes the
    header (the size it needs in ``handle_bytes``, FILEID_INVALID as the
    type) and the mount id (do_sys_name_to_handle() in fs/fhandle.c): both
    are returned, for the caller to hand back. Any other error raises
    OSError.
    """
    header = struct.pack("<I", handle_bytes)
    handle = ctypes.create_string_buffer(header + bytes(4 + handle_bytes), 8 + handle_bytes)
    mount_id = ctypes.create_string_buffer(8)
    value = 0
    try:
        syscall(NR["name_to_handle_at"], dirfd, name, handle, mount_id, flags)
    except OSError as e:
        if e.errno != errno.EOVERFLOW:
            raise
        value = -errno.EOVERFLOW
    # AT_HANDLE_MNT_ID_UNIQUE (6.12) asks for a u64 mount id, else an int.
    id_size = 8 if flags & AT_HANDLE_MNT_ID_UNIQUE else 4
    used = 0 if value else struct.unpack_from("<I", handle.raw)[0]
    return value, handle.raw[: 8 + used], mount_id.raw[:id_size]


def unlinkat(dirfd: int, name: bytes, flags: int) -> None:
    syscall(NR["unlinkat"], dirfd, name, flags)


def mkdirat(dirfd: int, name: bytes, mode: int) -> None:
    syscall(NR["mkdirat"], dirfd, name, mode)


def mknodat(dirfd: int, name: bytes, mode: int, dev: int) -> None:
    syscall(NR["mknodat"], dirfd, name, mode, dev)


def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> None:
    syscall(NR["renameat2"], olddirfd, old, newdirfd, new, flags)


def linkat(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> None:
    syscall(NR["linkat"], olddirfd, old, newdirfd, new, flags)


def symlinkat(text: bytes, dirfd: int, name: bytes) -> None:
    syscall(NR["symlinkat"], text, dirfd, name)


def fchmodat2(dirfd: int, name: bytes, mode: int, flags: int) -> None:
    """fchmodat2(2) (Linux 6.6), or what it does made another way on older kernels.

    fchmodat(2) has no flags: a name that must not be followed is looked at
    through an ``O_PATH|O_NOFOLLOW`` fd (a symlink's mode cannot be changed:
    EOPNOTSUPP, as glibc's lchmod says), and a file given by fd is changed
    through its ``/proc/self/fd`` name (``fchmod`` refuses ``O_PATH`` fds).
    """
    try:
        syscall(NR["fchmodat2"], dirfd, name, mode, flags)
        return
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
    if flags & abi.AT_EMPTY_PATH and not name:
        os.chmod(f"/proc/self/fd/{dirfd}", mode)
    elif flags & abi.AT_SYMLINK_NOFOLLOW:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
    else:
        syscall(NR["fchmodat"], dirfd, name, mode)


def fchownat(dirfd: int, name: bytes, uid: int, gid: int, flags: int) -> None:
    syscall(NR["fchownat"], dirfd, name, uid, gid, flags)


def utimensat(dirfd: int, name: bytes, times: bytes | None, flags: int) -> None:
    syscall(NR["utimensat"], dirfd, name, times, flags)


def inotify_add_watch(fd: int, path: bytes, mask: int) -> int:
    return syscall(NR["inotify_add_watch"], fd, path, mask)


def connect(sock: int, address: bytes) -> None:
    """connect(2) ``sock`` to the raw ``struct sockaddr`` ``address``."""
    buf = ctypes.create_string_buffer(address, max(len(address), 1))
    syscall(NR["connect"], sock, buf, len(address))


def bind(sock: int, address: bytes) -> None:
    """bind(2) ``sock`` to the raw ``struct sockaddr`` ``address``."""
    buf = ctypes.create_string_buffer(address, max(len(address), 1))
    syscall(NR["bind"], sock, buf, len(address))


_SOL_SOCKET = 1
_SO_SNDTIMEO = 21  # SO_SNDTIMEO_OLD: a struct timeval (asm-generic/socket.h)


def has_send_timeout(sock: int) -> bool:
    """Whether ``sock`` has a send timeout (``SO_SNDTIMEO``, socket(7)), which
    a connect's and a send's waits use: interrupted, they then end with
    EINTR, never a restart (sock_intr_errno() in include/net/sock.h)."""
    value = ctypes.create_string_buffer(16)
    size = ctypes.create_string_buffer((16).to_bytes(4, "little"), 4)
    syscall(NR["getsockopt"], sock, _SOL_SOCKET, _SO_SNDTIMEO, value, size)
    return value.raw != bytes(16)
