"""Directory listings with hidden names left out: ``getdents64(2)`` on the program's behalf.

When the policy hides a path, the path must be absent from ``ls`` of its
parent too, not only fail with ``ENOENT`` when opened. The supervisor traps
``getdents64(fd, dirp, count)``, takes its own copy of the program's fd with
:func:`take_fd` and answers with what :func:`read_listing` returns, written
into ``dirp``.

The copy is the program's *open file description*, not a new open of the
same directory: the directory offset (``f_pos``) lives there, so our reads
advance it exactly as the program's own would, ``lseek``/``rewinddir`` by the
program keep working, and the kernel serialises our read against the
program's other threads with the file's ``f_pos_lock`` (fs/file.c,
``fdget_pos``: taken whenever the file has more than one reference, which our
copy guarantees).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from typing import Final

from . import abi
from .errors import BadArgument, ProgramGone
from .program import read_ids
from .rawsys import libc_syscall

# struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
# (getdents(2)). d_name is NUL-terminated and d_reclen padded to 8 bytes.
DIRENT64_HEAD: Final = struct.Struct("<QqHB")
_NAME_AT: Final = DIRENT64_HEAD.size  # 19
_RECLEN = struct.Struct("<H")

# Our buffer for one getdents64 call. A program may pass a huge count (glibc's
# readdir uses 32 KiB); we never allocate more than this. Nor less than the
# largest record (a 255-byte name: 19 + 256, padded to 8), so that a hidden
# entry too big for the program's count is read and left out, where the
# kernel would answer EINVAL for it and tell the program it is there (audit
# helper-56); what does not fit in count is then given back (read_listing).
MAX_CHUNK: Final = 64 * 1024
_LARGEST_RECORD: Final = (_NAME_AT + 256 + 7) // 8 * 8



def _pidfd(tid: int) -> int:
    """A pidfd naming thread ``tid``: a thread pidfd where possible, else its process's.

    A thread pidfd (``PIDFD_THREAD``, 6.9+) makes ``pidfd_getfd`` look in
    that very thread's fd table (``pidfd_get_task`` takes the task the pidfd
    names). That is the right table even when the thread did
    ``unshare(CLONE_FILES)``, and when the thread-group leader has already
    exited (a zombie leader has no fd table: ``pidfd_getfd`` would say
    ``EBADF``). Older kernels answer ``EINVAL`` to the flag; then the best we
    have is the process (``pidfd_open`` of a non-leader tid without the flag
    is ``EINVAL`` too, hence the Tgid lookup).
    """
    try:
        return os.pidfd_open(tid, abi.PIDFD_THREAD)
    except ProcessLookupError:
        raise ProgramGone(f"thread {tid} is gone") from None
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    tgid, _ = read_ids(tid, innermost=False)
    try:
        return os.pidfd_open(tgid)
    except ProcessLookupError:
        raise ProgramGone(f"thread {tid} is gone") from None


def take_fd(tid: int, fd: int) -> int:
    """Our own fd for the open file description behind fd ``fd`` of thread ``tid``.

    ``pidfd_getfd(2)`` (5.6+): like ``dup`` across processes, so the file
    offset is shared with the program. It needs ``PTRACE_MODE_ATTACH_REALCREDS``
    over the target (we run as root) and the new fd has ``O_CLOEXEC`` set.
    The caller owns the returned fd and must close it.

    ``fd`` is the program's argument as the kernel takes it (an ``unsigned
    int`` for getdents64: ``args[0] & 0xFFFFFFFF``); one that is not a
    non-negative int cannot be open.

    Raises :class:`ProgramGone` if the thread is gone (``ESRCH``),
    :class:`BadArgument` ``(EBADF)`` if it has no such fd, OSError otherwise
    (``EPERM``: not allowed to ptrace it). An exiting thread has no fd table
    any more and also gives ``EBADF`` (fs/file.c, ``fget_task``): as always,
    check ``NOTIF_ID_VALID`` before answering the program with it.
    """
    if not 0 <= fd <= 0x7FFF_FFFF:
        raise BadArgument(errno.EBADF, f"fd {fd} cannot be open")
    pidfd = _pidfd(tid)
    try:
        got: int = libc_syscall(ctypes.c_long(abi.SYS_PIDFD_GETFD), pidfd, fd, 0)
        err = ctypes.get_errno() if got < 0 else 0
    finally:
        os.close(pidfd)
    if got >= 0:
        return got
    if err == errno.ESRCH:
        raise ProgramGone(f"thread {tid} is gone")
    if err == errno.EBADF:
        raise BadArgument(errno.EBADF, f"thread {tid} has no fd {fd}")
    raise OSError(err, f"pidfd_getfd({tid}, {fd}): {os.strerror(err)}")


def filter_records(data: bytes, hidden: Callable[[bytes], bool]) -> bytes:
    """The ``linux_dirent64`` records in ``data`` whose name ``hidden`` rejects, left out.

    The others are kept byte for byte, ``d_off`` included: it is the offset
    *after* that record (the cookie to ``lseek`` to for the next one), so it
    stays right when records before it are dropped. ``hidden`` sees the bare
    name, ``.`` and ``..`` included. Raises ValueError for data that is not
    a sequence of well-formed records (the kernel never writes such).
    """
    kept: list[bytes] = []
    dropped = False
    off = 0
    end = len(data)
    while off < end:
        if end - off < _NAME_AT + 1:
            raise ValueError(f"truncated dirent at {off}")
        (reclen,) = _RECLEN.unpack_from(data, off + 16)
        if reclen < _NAME_AT + 1 or off + reclen > end:
            raise ValueError(f"bad d_reclen {reclen} at {off}")
        nul = data.find(b"\0", off + _NAME_AT, off + reclen)
        if nul < 0:
            raise ValueError(f"unterminated d_name at {off}")
        if hidden(data[off + _NAME_AT : nul]):
            dropped = True
        else:
            kept.append(data[off : off + reclen])
        off += reclen
    return b"".join(kept) if dropped else data


def read_listing(fd: int, count: int, hidden: Callable[[bytes], bool]) -> bytes:
    """``getdents64(fd, ..., count)`` with hidden names left out.

    ``fd`` is ours (from :func:`take_fd`); ``count`` is the program's, taken
    as the kernel takes it (an ``unsigned int``). Returns at most ``count``
    bytes of records to write into the program's buffer; ``b""`` only at the
    real end of the directory. A chunk whose entries were all hidden has
    still moved the offset on, so we read again rather than tell the
    program "end" early. The result may hold fewer records than would fit:
    ``getdents64`` promises no more than "some", and callers loop until 0.

    Raises OSError with the kernel's errno, to answer the program with:
    ``EINVAL`` (``count`` too small for the next entry the program may
    see: a hidden one, however long, is never its answer), ``ENOTDIR``,
    ``EBADF``, ``ENOENT`` (directory removed)...; ValueError never, as the
    kernel writes well-formed records.

    The offset moves before the caller writes into the program's memory: if
    that write fails (``EFAULT``), the entries read are lost to the program,
    where the kernel itself would not have advanced. A caller that cares can
    note ``os.lseek(fd, 0, SEEK_CUR)`` first and seek back to it.
    """
    count &= 0xFFFF_FFFF
    size = min(max(count, _LARGEST_RECORD), MAX_CHUNK)
    buf = ctypes.create_string_buffer(size)
    nr = ctypes.c_long(abi.SYS_GETDENTS64)
    cfd = ctypes.c_long(fd)
    csize = ctypes.c_uint(size)
    # A count below the largest record may get EINVAL for a visible entry,
    # once read: the offset goes back to where this read started, as the
    # kernel leaves it when it answers EINVAL (a caller retries with a bigger
    # buffer, and must find that entry; audit helper-59).
    small = count < _LARGEST_RECORD
    while True:
        start = os.lseek(fd, 0, os.SEEK_CUR) if small else 0
        n: int = libc_syscall(nr, cfd, buf, csize)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                # Only from a filesystem that waits interruptibly (FUSE, NFS);
                # the offset moves only past entries handed out, so retry
                # (PEP 475).
                continue
            raise OSError(err, os.strerror(err))
        if n == 0:
            return b""
        kept = filter_records(ctypes.string_at(buf, n), hidden)
        if kept:
            try:
                return _first_fitting(fd, kept, count)
            except OSError:
                os.lseek(fd, start, os.SEEK_SET)
                raise


def _first_fitting(fd: int, records: bytes, count: int) -> bytes:
    """The first of ``records`` that fit in ``count`` bytes, and ``fd``'s
    offset put back after the last of them (its ``d_off``, the cookie
    ``lseek`` takes for a directory, as seekdir(3) uses it) when some do not.

    EINVAL when not even the first fits: the kernel's answer for a count
    too small for the next entry (filldir64() in fs/readdir.c)."""
    end = last = 0
    while end < len(records):
        (reclen,) = _RECLEN.unpack_from(records, end + 16)
        if end + reclen > count:
            break
        last, end = end, end + reclen
    if end == len(records):
        return records
    if end == 0:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    _, next_off, _, _ = DIRENT64_HEAD.unpack_from(records, last)
    os.lseek(fd, next_off, os.SEEK_SET)
    return records[:end]
