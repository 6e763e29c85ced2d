"""The operations: how each ``*at`` call is performed on the places a decision chose.

An operation gets the decoded call (its arguments in the ``*at`` layout,
see :mod:`unotifyd.calls.decode`) and one :class:`Place` per path: a
directory fd of ours and a last component, opened by the serving layer
(:mod:`unotifyd.serve.pathwork`) where the decision put the path. It makes
the same call there, with the program's flags (``_flags``), and says what
the program gets: a value or ``-errno``, and the bytes the kernel would
have written into its memory. It runs acting as the program
(:func:`~unotifyd.kernel.creds.acting_as`): the kernel checks permissions
as for it. OSError from the kernel becomes the outcome's ``-errno``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import struct
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..kernel import abi, pathops
from ..kernel.creds import Credentials
from ..kernel.opener import umask_applies
from ..kernel.program import soft_limit
from ..record import field, record
from .decode import AF_UNIX, IN_DONT_FOLLOW, SUN_PATH_MAX, XATTR_SIZE_MAX, PathCall, int_arg

# A content rule's file reads as a plain read-only file, not as the memfd.
_CONTENT_MODE = stat.S_IFREG | 0o444
_AT_PLACE_FLAGS = abi.AT_SYMLINK_NOFOLLOW | abi.AT_EMPTY_PATH


@record(slots=True)
class Outcome:
    """What a performed call gives the program: ``value`` (or ``-errno``) and memory to write."""

    value: int
    writes: list[tuple[int, bytes]] = field(default_factory=list)


@record(slots=True)
class Place:
    """An ``*at`` location: a directory fd of ours and a name in it."""

    dirfd: int
    name: bytes
    follow: bool
    itself: bool = False  # the name is empty: dirfd is the file itself (AT_EMPTY_PATH)
    content: bool = False
    link_text: bytes | None = None  # what readlink answers (a redirected path)
    read_only: bool = False  # answer probes as a read-only mount (MapPath.read_only)

    @property
    def at_flags(self) -> int:
        flags = 0 if self.follow else abi.AT_SYMLINK_NOFOLLOW
        return flags | (abi.AT_EMPTY_PATH if self.itself else 0)

    @property
    def proc_path(self) -> str:
        """A name for the place usable by the calls with no ``*at`` form (xattrs)."""
        base = f"/proc/self/fd/{self.dirfd}"
        return base if self.itself else f"{base}/{os.fsdecode(self.name)}"


class Acting(Protocol):
    """What an operation may ask of the serving layer besides its places."""

    @property
    def creds(self) -> Credentials: ...

    @property
    def tid(self) -> int:
        """The trapped thread, for what the kernel would do to it (a signal)."""
        ...

    def take(self, fd: int) -> int:
        """Our copy of the program's ``fd``, valid while the operation runs."""
        ...

    def interrupted(self) -> bool:
        """Whether a signal to the program ended the wait of the call made for it
        (serve/trioserve._watch_waiting, kernel/kick.py), or the call was abandoned."""
        ...

    def abandoned(self) -> bool:
        """Whether the call was abandoned: the program is gone."""
        ...


Op = Callable[[PathCall, list[Place], Acting], Outcome]

T = TypeVar("T")


def until_interrupted(
    acting: Acting, sock: int, make: Callable[[], T], at_once: Callable[[], T] | None = None
) -> T:
    """``make()``, a raw system call on our copy ``sock`` of the program's
    socket that may wait (a connect, a send), made again after EINTR unless
    a signal to the program was meant to end it.

    Our copy is the same open file: an interrupted connect or send has done
    nothing, and ends as the kernel ends the program's own
    (sock_intr_errno() in include/net/sock.h): ``-ERESTARTSYS``, which the
    program's signal handling turns into EINTR or a restart, or plain EINTR
    on a socket with a send timeout. Any other signal that reaches this
    thread is one of the supervisor's: the program, which got none, must
    not see EINTR for it. A call abandoned before it began is not made; one
    interrupted before it began is made as ``at_once`` (the same without
    waiting: natively what needs no wait is done despite a pending signal),
    or waits to be kicked. Raises OSError.
    """
    while True:
        try:
            if acting.abandoned():
                raise InterruptedError(errno.EINTR, "abandoned")
            if acting.interrupted() and at_once is not None:
                try:
                    return at_once()
                except BlockingIOError:
                    raise InterruptedError(errno.EINTR, "interrupted") from None
            return make()
        except InterruptedError:
            if acting.interrupted():
                if pathops.has_send_timeout(sock):
                    raise
                raise OSError(abi.ERESTARTSYS, "interrupted: the program's call restarts") from None


def _flags(call_flags: int, p: Place) -> int:
    """The program's ``*at`` flags, with ours for following and AT_EMPTY_PATH."""
    return (call_flags & 0xFFFFFFFF & ~_AT_PLACE_FLAGS) | p.at_flags


# --- metadata ----------------------------------------------------------------------


def newfstatat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    data = pathops.newfstatat(p.dirfd, p.name, _flags(a[3], p))
    if p.content:
        pathops.STAT_MODE.pack_into(data, pathops.STAT_MODE_AT, _CONTENT_MODE)
    return Outcome(0, [(a[2], bytes(data))])


def statx(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    data = pathops.statx(p.dirfd, p.name, _flags(a[2], p), a[3] & 0xFFFFFFFF)
    if p.content:
        pathops.STATX_MODE.pack_into(data, pathops.STATX_MODE_AT, _CONTENT_MODE)
    return Outcome(0, [(a[4], bytes(data))])


def _special(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def faccessat2(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    mode = a[2] & 0xFFFFFFFF
    # Always AT_EACCESS: the thread's fs ids are already the ids to check
    # with (the real ones unless the program asked for AT_EACCESS; see
    # serve/pathwork.py).
    pathops.faccessat2(p.dirfd, p.name, mode, _flags(a[3], p) | abi.AT_EACCESS)
    if p.read_only and mode & os.W_OK:
        # do_faccessat() in fs/open.c: once permission is granted, a write
        # check on a read-only mount is EROFS, except for devices, FIFOs
        # and sockets, whose writes do not reach the file system.
        if p.itself:
            st = os.fstat(p.dirfd)
        else:
            st = os.stat(p.name, dir_fd=p.dirfd, follow_symlinks=p.follow)
        if not _special(st.st_mode):
            return Outcome(-errno.EROFS)
    return Outcome(0)


def statfs(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    fd = p.dirfd
    if not p.itself:
        # statfs(2) follows the last link; a place that must not follow one
        # (resolved already, enforcing mode) refuses it as openat2 would.
        nofollow = 0 if p.follow else os.O_NOFOLLOW
        fd = os.open(p.name, os.O_PATH | os.O_CLOEXEC | nofollow, dir_fd=p.dirfd)
    try:
        if not p.follow and stat.S_ISLNK(os.fstat(fd).st_mode):
            return Outcome(-errno.ELOOP)
        data = pathops.fstatfs(fd)
    finally:
        if fd != p.dirfd:
            os.close(fd)
    if p.read_only:
        (flags,) = pathops.STATFS_FLAGS.unpack_from(data, pathops.STATFS_FLAGS_AT)
        pathops.STATFS_FLAGS.pack_into(data, pathops.STATFS_FLAGS_AT, flags | pathops.ST_RDONLY)
    return Outcome(0, [(call.args[2], bytes(data))])


def readlinkat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    size = int_arg(a[3])
    if size <= 0:
        return Outcome(-errno.EINVAL)  # readlink(2), checked before the lookup
    text = p.link_text if p.link_text is not None else pathops.readlinkat(p.dirfd, p.name)
    data = text[:size]
    return Outcome(len(data), [(a[2], data)])


# --- extended attributes -------------------------------------------------------------
# The legacy calls (getxattr...) are performed on the place's /proc/self/fd
# name, not with their *xattrat forms: those need Linux 6.13.


def _sized(value: bytes, addr: int, size: int) -> Outcome:
    """getxattr(2)'s answer: the size alone for size 0, ERANGE if it does not fit."""
    if size == 0:
        return Outcome(len(value))
    if len(value) > size:
        return Outcome(-errno.ERANGE)
    return Outcome(len(value), [(addr, value)])


def getxattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    name = call.data[0]
    assert name is not None
    value = os.getxattr(p.proc_path, name, follow_symlinks=p.follow)
    return _sized(value, a[4], a[5])


def listxattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    names = os.listxattr(p.proc_path, follow_symlinks=p.follow)
    value = b"".join(os.fsencode(n) + b"\0" for n in names)
    return _sized(value, a[3], a[4])


def setxattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    name, value = call.data
    assert name is not None and value is not None
    os.setxattr(p.proc_path, name, value, a[6] & 0xFFFFFFFF, follow_symlinks=p.follow)
    return Outcome(0)


def removexattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    name = call.data[0]
    assert name is not None
    os.removexattr(p.proc_path, name, follow_symlinks=p.follow)
    return Outcome(0)


def getxattrat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    name, xargs = call.data
    assert name is not None and xargs is not None
    addr, size, xflags = pathops.XATTR_ARGS.unpack(xargs)
    size = min(size, XATTR_SIZE_MAX)  # getxattr clamps it so (fs/xattr.c)
    n, value = pathops.getxattrat(p.dirfd, p.name, _flags(a[2], p), name, size, xflags=xflags)
    return Outcome(n, [(addr, value)] if size else [])


def setxattrat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    name, xargs, value = call.data
    assert name is not None and xargs is not None and value is not None
    _addr, _size, xflags = pathops.XATTR_ARGS.unpack(xargs)
    pathops.setxattrat(p.dirfd, p.name, _flags(a[2], p), name, value, xflags=xflags)
    return Outcome(0)


def listxattrat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    size = min(a[4], XATTR_SIZE_MAX)  # XATTR_LIST_MAX, the same
    n, value = pathops.listxattrat(p.dirfd, p.name, _flags(a[2], p), size)
    return Outcome(n, [(a[3], value)] if size else [])


def removexattrat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    name = call.data[0]
    assert name is not None
    pathops.removexattrat(p.dirfd, p.name, _flags(call.args[2], p), name)
    return Outcome(0)


def file_getattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    if a[3] > abi.PAGE_SIZE:
        return Outcome(-errno.E2BIG)  # fs/file_attr.c, before the lookup
    return Outcome(0, [(a[2], pathops.file_getattr(p.dirfd, p.name, a[3], _flags(a[4], p)))])


def file_setattr(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    attr = call.data[0]
    assert attr is not None
    pathops.file_setattr(p.dirfd, p.name, attr, _flags(call.args[4], p))
    return Outcome(0)


def name_to_handle_at(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    header = call.data[0]
    assert header is not None
    (handle_bytes,) = struct.unpack("<I", header)
    flags = a[4] & 0xFFFFFFFF & ~(abi.AT_SYMLINK_FOLLOW | abi.AT_EMPTY_PATH)
    flags |= (abi.AT_SYMLINK_FOLLOW if p.follow else 0) | (abi.AT_EMPTY_PATH if p.itself else 0)
    value, handle, mount_id = pathops.name_to_handle_at(p.dirfd, p.name, handle_bytes, flags)
    # do_sys_name_to_handle() (fs/fhandle.c) writes the mount id first, then
    # the handle, on success and on EOVERFLOW alike (then only the header:
    # the size it needs and FILEID_INVALID); a mount id it cannot write is
    # EFAULT with nothing else written. write_memory writes in this order
    # and stops at the first place it cannot write, with EFAULT.
    return Outcome(value, [(a[3], mount_id), (a[2], handle)])


# --- changes -----------------------------------------------------------------------


def unlinkat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    pathops.unlinkat(p.dirfd, p.name, call.args[2] & 0xFFFFFFFF)
    return Outcome(0)


def mkdirat(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    p = pl[0]
    # Our umask is 0 (see launch): the program's is applied here, as the
    # kernel would apply it (mkdir(2)), unless a default ACL rules instead.
    pathops.mkdirat(p.dirfd, p.name, call.args[2] & 0o7777 & ~_umask(p, acting))
    return Outcome(0)


def _umask(p: Place, acting: Acting) -> int:
    """The program's umask for a file made in ``p.dirfd``; 0 where a default ACL rules."""
    return acting.creds.umask if umask_applies(f"/proc/self/fd/{p.dirfd}") else 0


def mknodat(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    p, a = pl[0], call.args
    mode = a[2] & 0xFFFFFFFF
    mode = (mode & ~0o7777) | (mode & 0o7777 & ~_umask(p, acting))
    pathops.mknodat(p.dirfd, p.name, mode, a[3] & 0xFFFFFFFF)
    return Outcome(0)


def renameat2(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    old, new = pl
    pathops.renameat2(old.dirfd, old.name, new.dirfd, new.name, call.args[4] & 0xFFFFFFFF)
    return Outcome(0)


def linkat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    """linkat(2) with the program's flags, ours for following and AT_EMPTY_PATH.

    Its other bits stay, for the kernel to refuse (do_linkat() in
    fs/namei.c; the decoder refused them first already, in the kernel's
    order: decode.flags_first).

    ``linkat(fd, "", ..., AT_EMPTY_PATH)`` cannot be made as the program
    would make it: since Linux 6.10 the kernel allows it without
    CAP_DAC_READ_SEARCH (in the user namespace of the file's opener) only
    when the file was opened with the very credentials the caller has now,
    compared as one object (``fd_file(f)->f_cred != current_cred()`` under
    LOOKUP_LINKAT_EMPTY in path_init(), fs/namei.c). A thread acting for
    the program has credentials of its own, never that object, and nothing
    shows from outside whether the program's are still the ones the file
    was opened with (an exec, a setuid() make new ones). Linking the file's
    ``/proc/TID/fd/N`` with AT_SYMLINK_FOLLOW instead would link files the
    kernel refuses to link for the program (one a more privileged process
    opened and passed on: what the check is for). So it is made as is, and
    the kernel answers what it answers a caller whose credentials differ
    (ENOENT) unless the program has CAP_DAC_READ_SEARCH: a known limit
    (README.md).
    """
    old, new = pl
    ours = abi.AT_SYMLINK_FOLLOW if old.follow else 0
    if old.itself:
        ours |= abi.AT_EMPTY_PATH
    flags = (call.args[4] & 0xFFFFFFFF & ~(abi.AT_SYMLINK_FOLLOW | abi.AT_EMPTY_PATH)) | ours
    pathops.linkat(old.dirfd, old.name, new.dirfd, new.name, flags)
    return Outcome(0)


def symlinkat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    text = call.data[0]
    assert text is not None
    pathops.symlinkat(text, p.dirfd, p.name)
    return Outcome(0)


def fchmodat2(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    pathops.fchmodat2(p.dirfd, p.name, a[2] & 0o7777, _flags(a[3], p))
    return Outcome(0)


def fchownat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p, a = pl[0], call.args
    pathops.fchownat(p.dirfd, p.name, a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF, _flags(a[4], p))
    return Outcome(0)


def truncate(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    p, a = pl[0], call.args
    length = a[2] - (1 << 64) if a[2] >= 1 << 63 else a[2]
    if length < 0:
        return Outcome(-errno.EINVAL)
    # There is no truncateat: look at what is there through an O_PATH fd
    # (which opens nothing: a device's open may have side effects), then
    # reopen that very file for writing through its /proc/self/fd name.
    nofollow = 0 if p.follow else os.O_NOFOLLOW
    if p.itself:  # the place is a file of ours already (AT_EMPTY_PATH): no name
        look = os.open(p.proc_path, os.O_PATH | os.O_CLOEXEC)
    else:
        look = os.open(p.name, os.O_PATH | os.O_CLOEXEC | nofollow, dir_fd=p.dirfd)
    try:
        mode = os.fstat(look).st_mode
        if stat.S_ISDIR(mode):
            return Outcome(-errno.EISDIR)
        if not stat.S_ISREG(mode):
            return Outcome(-errno.EINVAL)
        fd = os.open(f"/proc/self/fd/{look}", os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(look)
    try:
        if length > os.fstat(fd).st_size and length > _file_size_limit(acting.tid):
            # Growing a file past the caller's RLIMIT_FSIZE: SIGXFSZ to its
            # process, and EFBIG (inode_newsize_ok() in fs/attr.c). Ours may
            # be another limit; the program's is the one that counts.
            os.kill(acting.tid, signal.SIGXFSZ)
            return Outcome(-errno.EFBIG)
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    return Outcome(0)


def _file_size_limit(tid: int) -> int:
    """The soft RLIMIT_FSIZE of thread ``tid``'s process, from ``/proc/TID/limits``.

    Not prlimit(2): it wants our *real* uid to be the program's, and the
    thread acting for it keeps ours (see unotifyd.kernel.creds).
    """
    soft = soft_limit(tid, b"Max file size")
    return (1 << 64) if soft is None else soft


def utimensat(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    p = pl[0]
    pathops.utimensat(p.dirfd, p.name, call.data[0], _flags(call.args[3], p))
    return Outcome(0)


def inotify_add_watch(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """inotify_add_watch(2) on the program's own inotify instance.

    Made on our copy of its inotify fd, which is the same open file
    description (pidfd_getfd(2)): the watch and its descriptor belong
    to the program's instance, and its events reach the program.
    """
    p, a = pl[0], call.args
    ours = acting.take(int_arg(a[0]))
    mask = a[2] & 0xFFFFFFFF
    mask = (mask & ~IN_DONT_FOLLOW) | (0 if p.follow else IN_DONT_FOLLOW)
    return Outcome(pathops.inotify_add_watch(ours, os.fsencode(p.proc_path), mask))


def _address_as_read(call: PathCall, p: Place, make: Callable[[int, bytes], None]) -> Outcome:
    """bind or connect to an address that names no file (abstract, IP...), from the
    copy read once; ``p.dirfd`` is then our copy of the program's socket."""
    address = call.data[0]
    assert address is not None
    make(p.dirfd, address)
    return Outcome(0)


def bind(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """bind(2) the program's own socket (our copy of it) where the decision put the path.

    The socket file is made in the directory ``p.dirfd`` pins, named
    ``/proc/self/fd/N/NAME`` (bind has no ``*at`` form). Its mode is the
    socket inode's, less the umask (unix_bind_bsd() in net/unix/af_unix.c):
    ours is 0, so the socket's mode is set to what the program's umask
    leaves for the bind, then put back.
    """
    p, a = pl[0], call.args
    if p.itself:
        return _address_as_read(call, p, pathops.bind)
    name = b"/proc/self/fd/%d/%s" % (p.dirfd, p.name)
    if len(name) >= SUN_PATH_MAX:
        # The program's own name fitted; ours does not.
        return Outcome(-errno.ENAMETOOLONG)
    sock = acting.take(int_arg(a[0]))
    mode = stat.S_IMODE(os.fstat(sock).st_mode)
    os.fchmod(sock, mode & ~acting.creds.umask)
    try:
        pathops.bind(sock, AF_UNIX.to_bytes(2, "little") + name + b"\0")
    finally:
        os.fchmod(sock, mode)
    return Outcome(0)


def ioctl(call: PathCall, pl: list[Place], _: Acting) -> Outcome:
    """The program's ``ioctl`` on our copy of its fd (the same open file), with
    the argument read once: flags set by the owner, ``CAP_FOWNER``, and
    ``CAP_LINUX_IMMUTABLE`` for the immutable and append-only ones, checked
    against the credentials we act with (fileattr_set_prepare in fs/ioctl.c)."""
    arg = call.data[0]
    if arg is None:
        return Outcome(-errno.EFAULT)
    fcntl.ioctl(pl[0].dirfd, call.args[1] & 0xFFFFFFFF, arg)
    return Outcome(0)


def connect(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """connect(2) the program's own socket (our copy of it, the same open file).

    A socket file is connected to through an ``O_PATH`` fd of it, opened
    where the decision put the path (``O_NOFOLLOW`` where a link must not
    be followed), then named ``/proc/self/fd/N``: the kernel follows that
    magic link to the very inode looked at (unix_find_bsd() in
    net/unix/af_unix.c checks write permission on it, as the program).
    Any other address (an abstract or IP one) is passed as the program gave
    it, from the copy read once.
    """
    p, a = pl[0], call.args
    if p.itself:
        return _address_as_read(
            call, p, lambda sock, address: until_interrupted(
                acting, sock, lambda: pathops.connect(sock, address)
            ),
        )  # fmt: skip
    sock = acting.take(int_arg(a[0]))
    fd = socket_file(p)
    try:
        name = f"/proc/self/fd/{fd}".encode()
        address = AF_UNIX.to_bytes(2, "little") + name + b"\0"
        until_interrupted(acting, sock, lambda: pathops.connect(sock, address))
    finally:
        os.close(fd)
    return Outcome(0)


def socket_file(p: Place) -> int:
    """An ``O_PATH`` fd of the socket file ``p`` names, to connect or send to
    by its ``/proc/self/fd/N`` name; the caller closes it. Raises OSError.

    Checked as unix_find_bsd() (net/unix/af_unix.c) checks, acting as the
    program, in its order: write permission on the file (EACCES), then that
    it is a socket (ECONNREFUSED). The permission is path_permission()'s,
    which a read-only *mount* never refuses (only a read-only file system,
    and never a socket): faccessat's EROFS is not the kernel's answer here.
    """
    nofollow = 0 if p.follow else os.O_NOFOLLOW
    fd = os.open(p.name, os.O_PATH | os.O_CLOEXEC | nofollow, dir_fd=p.dirfd)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, "a symlink where none may be followed")
        try:
            # AT_EACCESS: the effective ids we act with, as the kernel's check.
            pathops.faccessat2(abi.AT_FDCWD, b"/proc/self/fd/%d" % fd, os.W_OK, abi.AT_EACCESS)
        except OSError as e:
            if e.errno != errno.EROFS:
                raise
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.ECONNREFUSED, "no socket")
    except BaseException:
        os.close(fd)
        raise
    return fd
