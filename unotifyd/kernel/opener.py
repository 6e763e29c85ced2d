"""Opening files on behalf of a program, with the program's credentials.

The supervisor usually runs as root. An emulated open done with root's
credentials would let a program read, through a rule, files it could never
open itself (a confused deputy). So an emulated open runs with the
program's file-system uid and gid, supplementary groups and umask.

Credentials are per *thread* in the kernel, but glibc's ``setgroups`` and
``setfsuid`` wrappers are not all per thread: ``setgroups`` is broadcast to
every thread of the process (nptl "setxid" signal). We therefore make the raw
syscalls, which change only the calling thread, and only from a thread that
restores its credentials before it serves anything else: a worker thread, or
the serving thread itself for the few lookups of :func:`runnable_errno`,
which make no call that can block.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from . import abi
from .rawsys import libc_syscall, syscall
from .target import Credentials, openat2


def _setfsuid(uid: int) -> int:
    # setfsuid(2) returns the previous fsuid and never fails visibly; passing
    # -1 (an invalid id) changes nothing and so reads the current one.
    return int(libc_syscall(ctypes.c_long(abi.SYS_SETFSUID), ctypes.c_long(uid)))


def _setfsgid(gid: int) -> int:
    return int(libc_syscall(ctypes.c_long(abi.SYS_SETFSGID), ctypes.c_long(gid)))


def _setgroups(groups: tuple[int, ...]) -> None:
    arr = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
    if libc_syscall(ctypes.c_long(abi.SYS_SETGROUPS), ctypes.c_long(len(groups)), arr) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def may_create(flags: int) -> bool:
    """True if an open with ``flags`` may create a file (and so uses mode and umask).

    ``O_TMPFILE`` includes the ``O_DIRECTORY`` bit, so test for all of it.
    """
    return bool(flags & os.O_CREAT) or flags & os.O_TMPFILE == os.O_TMPFILE


class CredentialError(OSError):
    """This thread could not take on the program's credentials."""


def _become(creds: Credentials) -> None:
    _setfsgid(creds.fsgid)
    _setgroups(creds.groups)
    _setfsuid(creds.fsuid)
    if _setfsuid(-1) != creds.fsuid or _setfsgid(-1) != creds.fsgid:
        raise CredentialError(1, "cannot switch file-system credentials (needs CAP_SETUID/SETGID)")


def _restore() -> None:
    _setfsuid(os.geteuid())
    _setgroups(tuple(os.getgroups()))
    _setfsgid(os.getegid())
    if _setfsuid(-1) != os.geteuid() or _setfsgid(-1) != os.getegid():
        # A worker thread left with a program's identity would serve the next
        # program with it: better to stop everything.
        os.abort()


@contextmanager
def acting_as(creds: Credentials | None) -> Iterator[None]:
    """Run the body with ``creds`` as this thread's file-system credentials.

    A no-op for None or credentials equal to ours; otherwise the calling
    thread must be a worker thread (see the module doc). Raises
    :class:`CredentialError` if the switch fails.
    """
    if creds is None or creds.same_as_supervisor():
        yield
        return
    try:
        _become(creds)
    except BaseException:
        _restore()
        raise
    try:
        yield
    finally:
        _restore()


def open_as(
    creds: Credentials | None,
    path: str,
    flags: int,
    mode: int,
    *,
    no_symlinks: bool = False,
    root_fd: int | None = None,
    beneath: str | None = None,
) -> int:
    """Open ``path`` as the program with ``creds`` would; return our own fd.

    The fd is always close-on-exec in the supervisor. ``mode`` is masked
    with the program's umask when the open may create a file, since our own
    umask is 0 (see :func:`unotifyd.launch.launch`). With ``no_symlinks``
    the path must be free of symlinks (it was resolved already), so a
    symlink swapped in since then fails with ``ELOOP`` instead of leading
    elsewhere. With ``root_fd`` (an fd of the program's ``/proc/TID/root``,
    opened beforehand: with the program's credentials we might not be
    allowed to) ``path`` is the program's name for the file, looked up in
    its root (``RESOLVE_IN_ROOT``). ``creds=None`` or credentials equal to
    ours open directly; otherwise this must run in a worker thread (it
    switches the calling thread's credentials for the duration of the open).
    """
    if creds is not None and may_create(flags):
        mode &= ~creds.umask
    flags |= os.O_CLOEXEC
    resolve = abi.RESOLVE_NO_SYMLINKS | abi.RESOLVE_NO_MAGICLINKS if no_symlinks else 0
    dirfd = abi.AT_FDCWD
    if root_fd is not None:
        dirfd = root_fd
        path = path.lstrip("/") or "."
        resolve |= abi.RESOLVE_IN_ROOT
    elif beneath is not None:
        # ``path`` lies in a directory whose contents the program controls
        # (a private tree's scratch directory): no symlink or ".." of its
        # may lead out of it (RESOLVE_BENEATH fails those with EXDEV).
        path = os.path.relpath(path, beneath)
        if path.startswith(".."):
            raise OSError(errno.EXDEV, f"{path} is not beneath {beneath}")
        resolve |= abi.RESOLVE_BENEATH
    with acting_as(creds):
        if beneath is not None and root_fd is None:
            dirfd = os.open(beneath, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return openat2(dirfd, path, flags, mode, resolve)
            finally:
                os.close(dirfd)
        if resolve:
            return openat2(dirfd, path, flags, mode, resolve)
        return os.open(path, flags, mode)


def runnable_errno(creds: Credentials, path: str, *, directory: bool) -> int | None:
    """The errno an ``execve`` (or, with ``directory``, a ``chdir``) of our
    ``path`` would fail with for the program with ``creds``, or None.

    Checked as the kernel checks (fs/exec.c, do_open_execat; fs/open.c,
    chdir): the lookup (ENOENT, ENOTDIR, EACCES on a directory on the way),
    then a regular file that the program may execute, on a mount without
    ``noexec`` (EACCES), or a directory it may search. A program could not
    tell these from the kernel's own answers; what only the exec itself
    finds (ENOEXEC, ETXTBSY, E2BIG) is left to it.
    """
    with acting_as(creds):
        try:
            mode = os.stat(path).st_mode
            if directory and not stat.S_ISDIR(mode):
                return errno.ENOTDIR
            if not directory and not stat.S_ISREG(mode):
                return errno.EACCES
            # AT_EACCESS: the fs ids just set are the ones the kernel uses.
            syscall(
                abi.SYSCALL_NUMBERS["faccessat2"],
                abi.AT_FDCWD,
                os.fsencode(path),
                os.X_OK,
                abi.AT_EACCESS,
            )
            if not directory and os.statvfs(path).f_flag & os.ST_NOEXEC:
                return errno.EACCES
        except OSError as e:
            return e.errno or errno.EACCES
    return None
