"""Decoding a trapped call: its arguments, in the layout of its ``*at`` form, and its paths.

Every legacy call is rewritten into the ``*at`` call the kernel itself
turns it into (``stat`` is ``newfstatat(AT_FDCWD, path, buf, 0)``, ``rmdir``
is ``unlinkat(AT_FDCWD, path, AT_REMOVEDIR)``...: see each ``SYSCALL_DEFINE``
in fs/stat.c, fs/namei.c, fs/open.c), so each operation sees one layout
(:mod:`unotifyd.calls.registry`). Decoding reads from the program's memory
what the call reads — its paths, and the structs and strings it takes —
once: the call is performed from that copy, never from the program's
memory again.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from typing import Literal, Protocol

from ..kernel import abi
from ..kernel.errors import BadArgument
from ..kernel.listener import Notification
from ..policy.decision import VALID_OPEN_FLAGS
from ..policy.paths import Role
from ..record import record

Args = tuple[int, ...]


class Memory(Protocol):
    """Reads a program's memory (:class:`~unotifyd.kernel.program.MemoryReader`).

    Both raise :class:`~unotifyd.kernel.errors.BadArgument` with the
    kernel's errno for memory it could not read (EFAULT, ENAMETOOLONG).
    """

    def read(self, tid: int, addr: int, size: int, /) -> bytes: ...

    def read_path(self, tid: int, addr: int, /) -> bytes: ...


_VALID_RESOLVE = 0x3F  # RESOLVE_* of openat2(2), up to RESOLVE_CACHED
_O_TMPFILE_BIT = os.O_TMPFILE & ~os.O_DIRECTORY  # the kernel's __O_TMPFILE
_OPEN_HOW_SIZE_VER0 = 24


def int_arg(x: int) -> int:
    """An ``int`` syscall argument: the low 32 bits, sign-extended."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def extensible_struct(mem: Memory, pid: int, addr: int, usize: int, known: int) -> bytes:
    """The struct of ``usize`` bytes at ``addr``, read as the kernel reads it.

    ``copy_struct_from_user`` (include/linux/uaccess.h), for extensible
    structs (``open_how``, ``xattr_args``, ``file_attr``): smaller than
    version 0 (``known`` bytes here) is EINVAL, larger than a page E2BIG,
    and bytes beyond what we know must be zero (E2BIG). Returns the
    ``known`` bytes.
    """
    if usize < known:
        raise BadArgument(errno.EINVAL, "struct argument too small")
    if usize > abi.PAGE_SIZE:
        raise BadArgument(errno.E2BIG, "struct argument too large")
    data = mem.read(pid, addr, usize)
    if any(data[known:]):
        raise BadArgument(errno.E2BIG, "unknown fields set in a struct argument")
    return data[:known]


# --- the open family ---------------------------------------------------------------


@record(frozen=True, slots=True)
class OpenCall:
    """An open-family call, decoded into ``openat2``'s terms.

    ``syscall`` is the name the program called (the flags and mode are
    judged by it: the legacy calls drop what openat2 refuses).
    """

    syscall: str
    dirfd: int
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


def _mode(flags: int, mode: int) -> int:
    # The mode argument is only read when a file may be created (open(2)).
    return mode & 0o7777 if flags & (os.O_CREAT | os.O_TMPFILE) else 0


def decode_open(mem: Memory, n: Notification, name: str, a: Args) -> OpenCall:
    """An open, openat or creat, in ``openat(dirfd, path, flags, mode)`` layout."""
    flags = a[2] & 0xFFFFFFFF
    path = mem.read_path(n.pid, a[1])
    return OpenCall(name, int_arg(a[0]), path, flags, _mode(flags, a[3]))


def decode_openat2(mem: Memory, n: Notification, name: str, a: Args) -> OpenCall:
    """Decode ``openat2(dirfd, path, how, size)``, validating ``how`` as the kernel does.

    Unknown flag or resolve bits are EINVAL, and so is a mode without
    O_CREAT/O_TMPFILE (build_open_flags in fs/open.c).
    """
    raw = extensible_struct(mem, n.pid, a[2], a[3], _OPEN_HOW_SIZE_VER0)
    flags, mode, resolve = abi.OPEN_HOW_STRUCT.unpack_from(raw)
    if flags & ~VALID_OPEN_FLAGS or resolve & ~_VALID_RESOLVE or flags > 0xFFFFFFFF:
        raise BadArgument(errno.EINVAL, "unknown open_how flags")
    if (mode and not flags & (os.O_CREAT | os.O_TMPFILE)) or mode & ~0o7777:
        raise BadArgument(errno.EINVAL, "open_how mode without O_CREAT")
    # The two scopes exclude each other, and a cached lookup is not even
    # tried for an open that would create or truncate (build_open_flags()
    # in fs/open.c): the kernel answers both before it reads the path.
    if resolve & abi.RESOLVE_BENEATH and resolve & abi.RESOLVE_IN_ROOT:
        raise BadArgument(errno.EINVAL, "RESOLVE_BENEATH with RESOLVE_IN_ROOT")
    if resolve & abi.RESOLVE_CACHED and flags & (os.O_TRUNC | os.O_CREAT | _O_TMPFILE_BIT):
        raise BadArgument(errno.EAGAIN, "RESOLVE_CACHED with O_CREAT, O_TRUNC or O_TMPFILE")
    path = mem.read_path(n.pid, a[1])
    return OpenCall(name, int_arg(a[0]), path, flags, mode, resolve)


# --- the other path calls -------------------------------------------------------------


@record(frozen=True, slots=True)
class Follow:
    """Whether a path's last symbolic link is followed.

    ``always``/``never``, or decided by a flag argument: followed unless
    ``args[flag_arg]`` has ``AT_SYMLINK_NOFOLLOW`` (``unless_nofollow``),
    or only if it has ``AT_SYMLINK_FOLLOW`` (linkat).
    """

    default: bool
    flag_arg: int | None = None
    flag: int = 0

    def __call__(self, args: Args) -> bool:
        if self.flag_arg is None:
            return self.default
        has = bool(args[self.flag_arg] & self.flag)
        return not has if self.default else has


IN_DONT_FOLLOW = 0x02000000  # include/uapi/linux/inotify.h
ALWAYS = Follow(True)
NEVER = Follow(False)


def unless_nofollow(arg: int) -> Follow:
    return Follow(True, arg, abi.AT_SYMLINK_NOFOLLOW)


def only_if_follow(arg: int) -> Follow:
    return Follow(False, arg, abi.AT_SYMLINK_FOLLOW)


@record(frozen=True, slots=True)
class PathSpec:
    """Where one path of a call is: ``args[path_arg]``, relative to ``args[dirfd_arg]``.

    ``role`` may depend on the arguments (``access(W_OK)`` probes what a
    read-only mount would refuse).
    """

    dirfd_arg: int | None
    path_arg: int
    role: Role | Callable[[Args], Role]
    follow: Follow
    # The argument with AT_EMPTY_PATH, for calls that accept it: then an
    # empty path means the file dirfd refers to.
    empty_flag_arg: int | None = None
    # readlinkat(2) takes an empty path without any flag (since 2.6.39).
    empty_always: bool = False
    # utimensat(2) takes a NULL path: the call is about dirfd (futimens).
    null_ok: bool = False
    # A NULL path with AT_EMPTY_PATH is the empty path (Linux 6.11 and later):
    # getname_maybe_null() (include/linux/fs.h) gives no name for NULL when
    # the flags have AT_EMPTY_PATH, and the callers of it (vfs_fstatat() and
    # statx in fs/stat.c, path_*xattrat() in fs/xattr.c, file_getattr and
    # file_setattr in fs/file_attr.c) then act on dirfd's file, or look ""
    # up from the cwd for AT_FDCWD. Every other call copies the path with
    # getname() and fails on NULL with EFAULT.
    null_if_empty: bool = False
    # listxattrat and removexattrat take no name for the empty path at all
    # (NULL or "" with AT_EMPTY_PATH): only a real fd, else EBADF
    # (path_listxattrat(), path_removexattrat() in fs/xattr.c: "if
    # (!filename) { CLASS(fd, f)(dfd); if (fd_empty(f)) return -EBADF;").
    empty_needs_fd: bool = False
    # No path at all: the call is about the file args[dirfd_arg] refers to
    # (fchmod, fchown, fsetxattr); path_arg is then not read.
    fd_only: bool = False
    # The path is in a struct sockaddr_un at args[path_arg] of args[this]
    # bytes (connect); args[dirfd_arg] is then the socket.
    sockaddr_len_arg: int | None = None


def the_fd(role: Role, fd_arg: int = 0) -> PathSpec:
    """No path: the call is about the file the fd ``args[fd_arg]`` refers to."""
    return PathSpec(fd_arg, fd_arg, role, ALWAYS, fd_only=True)


def socket_address(role: Role, follow: Follow) -> PathSpec:
    """``(sockfd, struct sockaddr *addr, socklen_t addrlen)``: an AF_UNIX path in ``addr``."""
    return PathSpec(0, 1, role, follow, sockaddr_len_arg=2)


#: struct sockaddr_un (include/uapi/linux/un.h): sa_family_t, then 108 bytes of path.
AF_UNIX = 1
SUN_PATH_MAX = 108
_SUN_PATH_AT = 2


def unix_path(address: bytes) -> bytes | None:
    """The file an address names: the path of an AF_UNIX one; None for anything else.

    An abstract address (a NUL first byte) or an unnamed one (the family
    alone), and every other family, name no file (unix(7)). The path ends
    at its first NUL, or at the end of the address (the kernel adds one).
    """
    if len(address) <= _SUN_PATH_AT or int.from_bytes(address[:2], "little") != AF_UNIX:
        return None
    path = address[_SUN_PATH_AT:].split(b"\0", 1)[0]
    return path or None


def sockaddr_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """The address a socket call takes, read once (at most a ``sockaddr_storage``)."""
    size = a[2] & 0xFFFFFFFF
    if size > 128:
        raise BadArgument(errno.EINVAL, "address too long")  # move_addr_to_kernel()
    return (mem.read(pid, a[1], size) if size else b"",)


def at(
    role: Role | Callable[[Args], Role],
    follow: Follow,
    dirfd: int = 0,
    *,
    empty_flag_arg: int | None = None,
    empty_always: bool = False,
    null_ok: bool = False,
    null_if_empty: bool = False,
    empty_needs_fd: bool = False,
) -> PathSpec:
    """A path at ``args[dirfd + 1]`` relative to the dirfd ``args[dirfd]``."""
    return PathSpec(
        dirfd, dirfd + 1, role, follow, empty_flag_arg, empty_always, null_ok, null_if_empty,
        empty_needs_fd,
    )  # fmt: skip


def names_a_directory(path: bytes) -> bool:
    """True for ``dir/``, ``dir/.``, ``..``...: names whose last component must be a directory."""
    return path.endswith((b"/", b"/.", b"/..")) or path in (b".", b"..")


@record(frozen=True, slots=True)
class PathArg:
    """One path of a call, as the program gave it.

    ``dirfd`` is ``AT_FDCWD`` for the calls that take none. ``itself``: the
    call is about the file ``dirfd`` refers to (an empty path with
    ``AT_EMPTY_PATH``, or a NULL one for ``utimensat``); there is no name
    to resolve or to decide on beyond that file; a NULL path with
    ``AT_EMPTY_PATH``, where the kernel takes it, see PathSpec.null_if_empty).
    """

    dirfd: int
    addr: int
    path: bytes
    role: Role
    follow: bool
    itself: bool = False


@record(frozen=True, slots=True)
class PathCall:
    """A trapped path call, decoded.

    ``syscall`` is the name the program called (for traces), ``op`` the
    ``*at`` call it is performed as, ``args`` its arguments in ``op``'s
    layout, ``data`` what else it reads from memory (see :data:`Inputs`).
    """

    syscall: str
    op: str
    paths: tuple[PathArg, ...]
    args: Args
    data: tuple[bytes | None, ...] = ()


#: Reads what a call takes from memory besides its paths, from its ``*at``
#: arguments. Raises BadArgument with the errno the kernel gives first.
Inputs = Callable[[Memory, int, Args], tuple[bytes | None, ...]]


def decode_path_call(
    mem: Memory,
    n: Notification,
    name: str,
    op: str,
    a: Args,
    *,
    specs: tuple[PathSpec, ...],
    inputs: Inputs | None,
) -> PathCall:
    """Read the paths of ``name`` (performed as ``op`` with arguments ``a``) from the program.

    Raises :class:`~unotifyd.kernel.errors.BadArgument` with the errno the
    kernel would give a path it cannot read (``EFAULT``, ``ENAMETOOLONG``).
    """
    paths = []
    # What the call reads besides its paths comes first: a socket call's path
    # is in the address it reads.
    data = inputs(mem, n.pid, a) if inputs is not None else ()
    for spec in specs:
        dirfd = abi.AT_FDCWD if spec.dirfd_arg is None else int_arg(a[spec.dirfd_arg])
        addr = a[spec.path_arg]
        # A NULL path (utimensat) or an empty one without AT_EMPTY_PATH
        # (readlinkat) means the file dirfd refers to only for a real fd:
        # with AT_FDCWD the kernel looks the name up and fails, EFAULT or
        # ENOENT (do_utimes() in fs/utimes.c, do_readlinkat() in fs/stat.c).
        on_fd = dirfd != abi.AT_FDCWD
        role = spec.role if isinstance(spec.role, str) else spec.role(a)
        if spec.sockaddr_len_arg is not None:
            address = data[0] if data else None
            named = unix_path(address) if address is not None else None
            if named is None:
                # No file: the call is about the socket alone (see PathArg.itself).
                # The address's own pointer, not NULL: the enforce mode makes the
                # call from the copy read once, and CONTINUE would read it again.
                paths.append(PathArg(dirfd, a[spec.path_arg], b"", role, False, itself=True))
            else:
                paths.append(PathArg(abi.AT_FDCWD, a[spec.path_arg], named, role, spec.follow(a)))
            continue
        if spec.fd_only:
            if dirfd < 0:
                raise BadArgument(errno.EBADF, "not an fd")  # fchmod(2) and the like
            paths.append(PathArg(dirfd, 0, b"", role, False, itself=True))
            continue
        empty_flag = spec.empty_flag_arg is not None and bool(
            a[spec.empty_flag_arg] & abi.AT_EMPTY_PATH
        )
        if addr == 0 and ((spec.null_ok and on_fd) or (spec.null_if_empty and empty_flag)):
            path, itself = b"", True
        else:
            path = mem.read_path(n.pid, addr)
            itself = not path and ((spec.empty_always and on_fd) or empty_flag)
        if itself and spec.empty_needs_fd and not on_fd:
            raise BadArgument(errno.EBADF, "no name, and AT_FDCWD is no file")
        paths.append(PathArg(dirfd, addr, path, role, spec.follow(a), itself))
    return PathCall(name, op, tuple(paths), a, data)


# --- what calls read besides their paths ---------------------------------------------

# Limits the kernel puts on xattr names and values (include/uapi/linux/limits.h).
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_ARGS_SIZE = 16  # struct xattr_args (include/uapi/linux/xattr.h)
FILE_ATTR_SIZE = 24  # struct file_attr, FILE_ATTR_SIZE_VER0 (include/uapi/linux/fs.h)
MAX_HANDLE_SZ = 128  # include/linux/exportfs.h
_TIMESPEC2 = struct.Struct("<qqqq")


def xattr_name(mem: Memory, pid: int, addr: int) -> bytes:
    name = mem.read_path(pid, addr)
    # setxattr(2): ERANGE for a name that is empty or too long.
    if not name or len(name) > XATTR_NAME_MAX:
        raise BadArgument(errno.ERANGE, "bad xattr name")
    return name


def _optional(mem: Memory, pid: int, addr: int, size: int) -> bytes | None:
    return None if addr == 0 else mem.read(pid, addr, size)


def name_at(arg: int) -> Inputs:
    """An xattr name at ``args[arg]``."""
    return lambda mem, pid, a: (xattr_name(mem, pid, a[arg]),)


def flags_first(arg: int, valid: int, then: Inputs | None = None) -> Inputs:
    """The flags at ``args[arg]`` checked before anything is read, then ``then``.

    The calls we perform with the program's flags would have the kernel
    refuse an unknown bit (EINVAL) only after we looked their paths up: a
    path that is missing or unreadable would answer first. The kernel
    checks them before it reads anything: do_linkat(), do_fchownat(),
    do_fchmodat(), do_unlinkat(), do_renameat2() (fs/namei.c, fs/open.c),
    path_setxattrat() and the other *xattrat (fs/xattr.c), file_getattr
    (fs/file_attr.c), do_sys_name_to_handle() (fs/fhandle.c). ``valid``:
    the bits the call knows (the flag argument is an ``int``: its low 32
    bits).
    """

    def check(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
        if a[arg] & 0xFFFFFFFF & ~valid:
            raise BadArgument(errno.EINVAL, "flags the kernel does not know")
        return then(mem, pid, a) if then is not None else ()

    return check


#: Flags of the calls that know only these two (fchownat, fchmodat2, the
#: *xattrat calls, file_getattr, file_setattr).
AT_FLAGS = abi.AT_SYMLINK_NOFOLLOW | abi.AT_EMPTY_PATH
#: linkat(2): AT_SYMLINK_FOLLOW and AT_EMPTY_PATH (do_linkat()).
LINK_FLAGS = abi.AT_SYMLINK_FOLLOW | abi.AT_EMPTY_PATH
#: name_to_handle_at(2): AT_HANDLE_MNT_ID_UNIQUE (6.12), AT_HANDLE_CONNECTABLE
#: (6.13), AT_HANDLE_FID, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH (include/uapi/linux/fcntl.h).
HANDLE_FLAGS = 0x001 | 0x002 | 0x200 | abi.AT_SYMLINK_FOLLOW | abi.AT_EMPTY_PATH
#: renameat2(2): RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT.
RENAME_NOREPLACE = 0x1
RENAME_FLAGS = RENAME_NOREPLACE | 0x2 | 0x4


def rename_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """Nothing to read; ``renameat2``'s flags are checked first (do_renameat2() in
    fs/namei.c): an unknown one, or RENAME_EXCHANGE with RENAME_NOREPLACE or
    RENAME_WHITEOUT, is EINVAL before either name is looked at."""
    flags = a[4] & 0xFFFFFFFF
    if flags & ~RENAME_FLAGS or (flags & 0x2 and flags & 0x5):
        raise BadArgument(errno.EINVAL, "renameat2: flags the kernel refuses")
    return ()


#: Every bit inotify_add_watch(2) knows (ALL_INOTIFY_BITS, include/linux/inotify.h):
#: the events, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR,
#: IN_DONT_FOLLOW, IN_EXCL_UNLINK, IN_MASK_CREATE, IN_MASK_ADD, IN_ISDIR,
#: IN_ONESHOT.
ALL_INOTIFY_BITS = 0x00000FFF | 0x0000E000 | 0x01000000 | IN_DONT_FOLLOW | 0x04000000
ALL_INOTIFY_BITS |= 0x10000000 | 0x20000000 | 0x40000000 | 0x80000000


def inotify_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """Nothing to read; a mask with no bit inotify knows (0 among others) is
    EINVAL before the fd or the path is looked at (inotify_add_watch in
    fs/notify/inotify/inotify_user.c: "Without _something_ set, we would have
    no events to watch for"). Checked here because the call we make adds
    IN_DONT_FOLLOW, which would make such a mask one the kernel takes."""
    if not a[2] & ALL_INOTIFY_BITS:
        raise BadArgument(errno.EINVAL, "inotify_add_watch: an empty mask")
    return ()


_ACCESS_FLAGS = abi.AT_EACCESS | abi.AT_SYMLINK_NOFOLLOW | abi.AT_EMPTY_PATH


def access_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """Nothing to read; ``faccessat2``'s mode and flags are checked first:
    do_faccessat() (fs/open.c) answers EINVAL for a mode beyond ``S_IRWXO``
    or an unknown flag before it looks the path up."""
    if a[2] & 0xFFFFFFFF & ~0o7 or a[3] & 0xFFFFFFFF & ~_ACCESS_FLAGS:
        raise BadArgument(errno.EINVAL, "access: mode or flags the kernel refuses")
    return ()


def setxattr_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``setxattr``'s name and value (``*at`` layout: dirfd, path, flags, name, value, size)."""
    if a[5] > XATTR_SIZE_MAX:
        raise BadArgument(errno.E2BIG, "xattr value too large")
    return (xattr_name(mem, pid, a[3]), mem.read(pid, a[4], a[5]) if a[5] else b"")


def xattrat_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``getxattrat``'s name and ``struct xattr_args`` (the struct is checked first, as
    the kernel checks it)."""
    xargs = extensible_struct(mem, pid, a[4], a[5], XATTR_ARGS_SIZE)
    return (xattr_name(mem, pid, a[3]), xargs)


def setxattrat_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``setxattrat``'s name, ``struct xattr_args`` and the value it points at."""
    name, xargs = xattrat_inputs(mem, pid, a)
    assert xargs is not None
    addr, size = struct.unpack_from("<QI", xargs)
    if size > XATTR_SIZE_MAX:
        raise BadArgument(errno.E2BIG, "xattr value too large")
    return (name, xargs, mem.read(pid, addr, size) if size else b"")


def file_attr_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    return (extensible_struct(mem, pid, a[2], a[3], FILE_ATTR_SIZE),)


def handle_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``name_to_handle_at``'s ``handle_bytes``, checked as the kernel checks it."""
    (handle_bytes,) = struct.unpack("<I", mem.read(pid, a[2], 4))
    if handle_bytes > MAX_HANDLE_SZ:
        raise BadArgument(errno.EINVAL, "handle_bytes above MAX_HANDLE_SZ")
    return (struct.pack("<I", handle_bytes),)


def symlink_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """The text of the link ``symlinkat(target, newdirfd, linkpath)`` makes."""
    return (mem.read_path(pid, a[0]),)


def ioctl_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """What ``ioctl(fd, cmd, arg)`` reads at ``arg``: an ``int`` of flags, or a
    ``struct fsxattr``; None where it cannot be read (EFAULT, once the fd is
    known good: the kernel looks at the fd first)."""
    size = abi.FSXATTR_SIZE if a[1] & 0xFFFFFFFF == abi.FS_IOC_FSSETXATTR else 4
    try:
        return (mem.read(pid, a[2], size),)
    except BadArgument:
        return (None,)


def timespecs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``utimensat``'s ``struct timespec[2]`` (NULL: now)."""
    return (_optional(mem, pid, a[2], _TIMESPEC2.size),)


#: utimensat(2): a tv_nsec that leaves the time as it is.
UTIME_OMIT = (1 << 30) - 2


def omits_both_times(mem: Memory, pid: int, a: Args) -> bool:
    """Whether ``utimensat``'s times are both UTIME_OMIT: the kernel then
    answers 0 before it looks at the flags, the dirfd or the path
    (SYSCALL_DEFINE4(utimensat) in fs/utimes.c, "Nothing to do")."""
    try:
        (times,) = timespecs(mem, pid, a)
    except BadArgument:
        return False  # EFAULT, the kernel's first answer, comes from the decoding
    if times is None:
        return False  # NULL: now
    _, atime_ns, _, mtime_ns = _TIMESPEC2.unpack(times)
    return bool(atime_ns == mtime_ns == UTIME_OMIT)


def utimensat_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``utimensat``'s times, then its flags: do_utimes() (fs/utimes.c) refuses
    an unknown flag (EINVAL) after the times were copied in and before the
    path is read; with no path at all, on a dirfd, any flag (do_utimes_fd()),
    before a read-only mount is asked (EROFS)."""
    times = timespecs(mem, pid, a)
    flags = a[3] & 0xFFFFFFFF
    if flags & ~AT_FLAGS:
        raise BadArgument(errno.EINVAL, "utimensat: flags the kernel does not know")
    if flags and a[1] == 0 and int_arg(a[0]) != abi.AT_FDCWD:
        raise BadArgument(errno.EINVAL, "utimensat: flags on an fd (no path)")
    return times


def utimbuf(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``utime``'s ``struct utimbuf``, as ``struct timespec[2]``."""
    raw = _optional(mem, pid, a[2], 16)
    if raw is None:
        return (None,)
    atime, mtime = struct.unpack("<qq", raw)
    return (_TIMESPEC2.pack(atime, 0, mtime, 0),)


def timevals(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``utimes``'s and ``futimesat``'s ``struct timeval[2]``, as ``struct timespec[2]``.

    A microsecond count out of range is EINVAL before the path is looked up
    (do_futimesat in fs/utimes.c).
    """
    raw = _optional(mem, pid, a[2], 32)
    if raw is None:
        return (None,)
    a_sec, a_usec, m_sec, m_usec = struct.unpack("<qqqq", raw)
    if not (0 <= a_usec < 1_000_000 and 0 <= m_usec < 1_000_000):
        raise BadArgument(errno.EINVAL, "bad timeval")
    return (_TIMESPEC2.pack(a_sec, a_usec * 1000, m_sec, m_usec * 1000),)


# --- the last component of a path that a call creates, removes or renames ------------

LastKind = Literal["name", "dot", "dotdot", "root"]


def last_component(path: bytes) -> tuple[LastKind, bool]:
    """What the last component of ``path`` is, as filename_parentat() (fs/namei.c) sees
    it: a name, ``.``, ``..`` or none (``/``); and whether a ``/`` follows it."""
    stripped = path.rstrip(b"/")
    if not stripped:
        return "root", False
    last = stripped.rpartition(b"/")[2]
    slash = len(stripped) != len(path)
    if last == b".":
        return "dot", slash
    if last == b"..":
        return "dotdot", slash
    return "name", slash


def not_a_name_errno(op: str, args: Args, kind: LastKind, new_name: bool = False) -> int:
    """The kernel's answer to a change of ``.``, ``..`` or ``/`` (a ``kind`` other than a name).

    do_rmdir(): EINVAL for ``.``, ENOTEMPTY for ``..``, EBUSY for ``/``;
    do_unlinkat(): EISDIR; do_renameat2(): EBUSY, either name, but EEXIST
    for the new one (``new_name``) with RENAME_NOREPLACE, which it sets
    before it looks at that name's type;
    filename_create() (mkdir, mknod, symlink, link's new name): EEXIST,
    which bind(2) answers as EADDRINUSE (unix_bind_bsd() in net/unix/af_unix.c).
    """
    if op == "bind":
        return errno.EADDRINUSE
    if op == "unlinkat":
        if args[2] & abi.AT_REMOVEDIR:
            return {"dot": errno.EINVAL, "dotdot": errno.ENOTEMPTY}.get(kind, errno.EBUSY)
        return errno.EISDIR
    if op == "renameat2":
        return errno.EEXIST if new_name and args[4] & RENAME_NOREPLACE else errno.EBUSY
    return errno.EEXIST
