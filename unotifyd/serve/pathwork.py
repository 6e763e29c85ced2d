"""Performing a path call in the supervisor, as the program would have.

The call is made again by the supervisor — the same system call, with the
program's flags and modes — on the file the decision put at each path, and
its result is handed back: a return value, or ``-errno``, plus what the
kernel would have written into the program's memory (a ``struct stat``,
the text of a link), written by the serving layer after ``ID_VALID``.

Paths are never passed whole. Each one's parent directory is opened first
(``O_PATH``; in the program's root directory for the program's own names,
refusing every symlink where the path was resolved already), and the call
is made on the last component relative to it: the ``*at`` form of every
call. A symbolic link swapped in after the decision then fails the call
(``ELOOP``) or is acted on itself, never followed somewhere no rule allowed.

Runs in the serving thread, or in a worker thread that has taken on the
program's credentials (:func:`~unotifyd.kernel.opener.acting_as`), so the
kernel checks permissions as for the program: a root supervisor never
stats, changes or lists for a program what it could not itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..kernel import abi
from ..kernel.creds import Credentials, acting_as, as_ourselves
from ..kernel.dirents import take_fd
from ..kernel.errors import BadArgument, TargetGone
from ..kernel.rawsys import syscall
from ..kernel.target import openat2
from ..policy.paths import Found, MapPath, RefuseChange, refuse_change_errno
from .handlers import int_arg
from .pathcalls import IN_DONT_FOLLOW, XATTR_SIZE_MAX, PathArg, PathCall, names_a_directory

_N = abi.SYSCALL_NUMBERS
_STAT_SIZE = 144  # struct stat on x86_64 (arch/x86/include/uapi/asm/stat.h)
_STAT_MODE = struct.Struct("<I")
_STAT_MODE_AT = 24
_STATX_SIZE = 256  # struct statx (include/uapi/linux/stat.h)
_STATX_MODE = struct.Struct("<H")
_STATX_MODE_AT = 28
# A content rule's file reads as a plain read-only file, not as the memfd.
_CONTENT_MODE = stat.S_IFREG | 0o444
_STATFS_SIZE = 120  # struct statfs on x86_64 (include/uapi/asm-generic/statfs.h)
_STATFS_FLAGS = struct.Struct("<q")
_STATFS_FLAGS_AT = 80  # f_flags
_ST_RDONLY = 1
_XATTR_ARGS = struct.Struct("<QII")  # struct xattr_args: value, size, flags
_AT_HANDLE_MNT_ID_UNIQUE = 0x001
_AT_PLACE_FLAGS = abi.AT_SYMLINK_NOFOLLOW | abi.AT_EMPTY_PATH


@dataclass(frozen=True, slots=True)
class FdPlace:
    """The call is about a file the program has open: ``fd`` is our copy of it."""

    fd: int


Target = MapPath | FdPlace


@dataclass(slots=True)
class Outcome:
    """What a performed call gives the program: ``value`` (or ``-errno``) and memory to write."""

    value: int
    writes: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Place:
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


@dataclass(slots=True)
class PathWork:
    """One path call to perform: the decoded call and where each of its paths leads.

    ``recheck`` (enforcing mode) re-decides a redirect's target once it is
    resolved; see :func:`unotifyd.serve.core._perform_in`. ``refuse`` is a
    read-only refusal whose errno needs a look at the path first.
    """

    call: PathCall
    targets: tuple[Target, ...]
    refuse: RefuseChange | None = None
    recheck: Callable[[PathArg, str], MapPath | int] | None = None
    # For FdPlace targets: the thread whose fds they are, and its ID_VALID.
    tid: int = 0
    still_valid: Callable[[], bool] | None = None
    outcome: Outcome | None = None  # set by the serving layer once performed
    resolved: tuple[str | None, ...] = ()  # each path as resolved (for refuse)

    def run(self, creds: Credentials, root_fd: int | None) -> Outcome:
        """Perform the call with ``creds``; OSErrors become ``-errno`` outcomes."""
        access = self.call.syscall in ("access", "faccessat", "faccessat2")
        eaccess = self.call.syscall == "faccessat2" and self.call.args[3] & abi.AT_EACCESS
        as_whom = creds.real() if access and not eaccess and creds.ruid >= 0 else creds
        with acting_as(as_whom):
            try:
                if self.refuse is not None:
                    return Outcome(-_refuse_errno(self, self.refuse, root_fd))
                with contextlib.ExitStack() as stack:
                    places = [
                        self._place(arg, t, root_fd, stack)
                        for arg, t in zip(self.call.paths, self.targets, strict=True)
                    ]
                    if self.call.syscall == "inotify_add_watch":
                        return self._add_watch(places[0], stack)
                    return _OPS[self.call.syscall](self.call, places, creds)
            except OSError as e:
                return Outcome(-(e.errno or errno.EIO))
            except BadArgument as e:  # an fd the program does not have
                return Outcome(-e.errno)

    def _take(self, fd: int, stack: contextlib.ExitStack) -> int:
        """Our copy of the trapped thread's ``fd`` (closed with ``stack``)."""
        with as_ourselves():  # see there: pidfd_getfd checks our real uid
            ours = take_fd(self.tid, fd)
        stack.callback(os.close, ours)
        # Our copy is of the trapped thread's fd only if its call is
        # still pending: a tid is not reused while it waits for us.
        if self.still_valid is None or not self.still_valid():
            raise TargetGone("notification no longer valid")
        return ours

    def _add_watch(self, p: _Place, stack: contextlib.ExitStack) -> Outcome:
        """inotify_add_watch(2) on the program's own inotify instance.

        Made on our copy of its inotify fd, which is the same open file
        description (pidfd_getfd(2)): the watch and its descriptor belong
        to the program's instance, and its events reach the program.
        """
        ours = self._take(int_arg(self.call.args[0]), stack)
        mask = self.call.args[2] & 0xFFFFFFFF
        mask = (mask & ~IN_DONT_FOLLOW) | (0 if p.follow else IN_DONT_FOLLOW)
        return Outcome(syscall(_N["inotify_add_watch"], ours, os.fsencode(p.proc_path), mask))

    def _place(
        self, arg: PathArg, target: Target, root_fd: int | None, stack: contextlib.ExitStack
    ) -> _Place:
        if isinstance(target, FdPlace):
            return _Place(self._take(target.fd, stack), b"", arg.follow, itself=True)
        if self.recheck is not None and target.recheck:
            again = self.recheck(arg, target.path)
            if isinstance(again, int):
                raise OSError(again, os.strerror(again))
            target = replace(again, link_text=target.link_text)
        dirfd, name = _open_parent(target, root_fd)
        stack.callback(os.close, dirfd)
        # A resolved path's last component is no link (it was followed, or
        # the call acts on the link): one found now was swapped in since.
        follow = arg.follow and not target.no_symlinks
        text = None if target.link_text is None else os.fsencode(target.link_text)
        if names_a_directory(arg.path):
            # "name/" is the directory a link there leads to, never the link
            # (path_resolution(7)), so it reads as no link at all; and the
            # kernel checks the file there is a directory (ENOTDIR), follows
            # a final link and fails on a dangling one, as for the program.
            text = None
            name = name.rstrip(b"/") + b"/"
        return _Place(
            dirfd,
            name,
            follow or target.content,
            content=target.content,
            link_text=text,
            read_only=target.read_only or target.content,
        )


def _split(path: str) -> tuple[str, bytes]:
    parent, _, name = path.rpartition("/")
    return parent or "/", os.fsencode(name) or b"."


def _open_parent(target: MapPath, root_fd: int | None) -> tuple[int, bytes]:
    """Open ``target``'s parent directory (``O_PATH``); return it and the last component."""
    parent, name = _split(target.path)
    resolve = abi.RESOLVE_NO_SYMLINKS | abi.RESOLVE_NO_MAGICLINKS if target.no_symlinks else 0
    dirfd = abi.AT_FDCWD
    if target.in_program_root and root_fd is not None:
        dirfd, parent = root_fd, parent.lstrip("/") or "."
        resolve |= abi.RESOLVE_IN_ROOT
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    if target.confine is not None and target.path != target.confine:
        # See EmulateOpen.confine: nothing the program planted there may
        # lead out of the scratch directory.
        rel = os.path.relpath(parent, target.confine)
        if rel.startswith(".."):
            raise OSError(errno.EXDEV, f"{target.path} is not beneath {target.confine}")
        base = os.open(target.confine, flags)
        try:
            return openat2(base, rel, flags, 0, resolve | abi.RESOLVE_BENEATH), name
        finally:
            os.close(base)
    return openat2(dirfd, parent, flags, 0, resolve), name


def what_is(path: str, root_fd: int | None) -> Found:
    """What the program's resolved ``path`` is: a file, a dir, missing, or without a parent.

    Looked up as the calling thread's credentials allow (run it acting as
    the program), in the program's root with ``root_fd``, refusing symlinks
    on the way (the path was resolved already); a final one counts as a
    file. Raises OSError for whatever else fails the lookup first (EACCES,
    ENOTDIR for a file on the way...), the errno the kernel gives then.
    """
    try:
        dirfd, name = _open_parent(MapPath(path, in_program_root=True, no_symlinks=True), root_fd)
    except FileNotFoundError:
        return "no-parent"
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    finally:
        os.close(dirfd)
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def _refuse_errno(work: PathWork, d: RefuseChange, root_fd: int | None) -> int:
    """Look at the call's paths and pick the errno a read-only mount gives (see RefuseChange)."""
    others = tuple(
        what_is(p, root_fd) if p is not None and p != d.path else "file" for p in work.resolved
    )
    found: Found = "file" if d.exists else what_is(d.path, root_fd)
    return refuse_change_errno(work.call.syscall, d.role, found, others)


# --- the calls -----------------------------------------------------------------------

Op = Callable[[PathCall, list[_Place], Credentials], Outcome]


def _flags(call_flags: int, p: _Place) -> int:
    """The program's ``*at`` flags, with ours for following and AT_EMPTY_PATH."""
    return (call_flags & ~_AT_PLACE_FLAGS) | p.at_flags


def _stat(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    at = call.syscall == "newfstatat"
    buf = ctypes.create_string_buffer(_STAT_SIZE)
    syscall(_N["newfstatat"], p.dirfd, p.name, buf, _flags(call.args[3] if at else 0, p))
    data = bytearray(buf.raw)
    if p.content:
        _STAT_MODE.pack_into(data, _STAT_MODE_AT, _CONTENT_MODE)
    return Outcome(0, [(call.args[2] if at else call.args[1], bytes(data))])


def _statx(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    syscall(_N["statx"], p.dirfd, p.name, _flags(call.args[2], p), call.args[3] & 0xFFFFFFFF, buf)
    data = bytearray(buf.raw)
    if p.content:
        _STATX_MODE.pack_into(data, _STATX_MODE_AT, _CONTENT_MODE)
    return Outcome(0, [(call.args[4], bytes(data))])


def _access(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    mode = call.args[1] if call.syscall == "access" else call.args[2]
    flags = _flags(call.args[3], p) if call.syscall == "faccessat2" else _flags(0, p)
    # Always AT_EACCESS: the thread's fs ids are already the ids to check
    # with (the real ones unless the program asked for AT_EACCESS).
    syscall(_N["faccessat2"], p.dirfd, p.name, mode & 0xFFFFFFFF, flags | abi.AT_EACCESS)
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


def _special(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _statfs(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
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
        buf = ctypes.create_string_buffer(_STATFS_SIZE)
        syscall(abi.SYS_FSTATFS, fd, buf)
    finally:
        if fd != p.dirfd:
            os.close(fd)
    data = bytearray(buf.raw)
    if p.read_only:
        (flags,) = _STATFS_FLAGS.unpack_from(data, _STATFS_FLAGS_AT)
        _STATFS_FLAGS.pack_into(data, _STATFS_FLAGS_AT, flags | _ST_RDONLY)
    return Outcome(0, [(call.args[1], bytes(data))])


def _readlink(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    at = call.syscall == "readlinkat"
    addr, size = (call.args[2], call.args[3]) if at else (call.args[1], call.args[2])
    size = int_arg(size)
    if size <= 0:
        return Outcome(-errno.EINVAL)  # readlink(2), checked before the lookup
    text = p.link_text
    if text is None:
        buf = ctypes.create_string_buffer(abi.PATH_MAX)
        n = syscall(_N["readlinkat"], p.dirfd, p.name, buf, abi.PATH_MAX)
        text = buf.raw[:n]
    data = text[:size]
    return Outcome(len(data), [(addr, data)])


def _getxattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    name = call.data[0]
    assert name is not None
    value = os.getxattr(p.proc_path, name, follow_symlinks=p.follow)
    return _sized(value, call.args[2], call.args[3])


def _listxattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    names = os.listxattr(p.proc_path, follow_symlinks=p.follow)
    value = b"".join(os.fsencode(n) + b"\0" for n in names)
    return _sized(value, call.args[1], call.args[2])


def _sized(value: bytes, addr: int, size: int) -> Outcome:
    """getxattr(2)'s answer: the size alone for size 0, ERANGE if it does not fit."""
    if size == 0:
        return Outcome(len(value))
    if len(value) > size:
        return Outcome(-errno.ERANGE)
    return Outcome(len(value), [(addr, value)])


def _getxattrat(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    # Made again with our own struct xattr_args pointing into our buffer:
    # the kernel then checks flags and sizes as for the program.
    p = pl[0]
    name, xargs, _value = call.data
    assert name is not None and xargs is not None
    addr, size, flags = _XATTR_ARGS.unpack(xargs)
    size = min(size, XATTR_SIZE_MAX)  # getxattr clamps it so (fs/xattr.c)
    buf = ctypes.create_string_buffer(max(size, 1))
    ours = ctypes.create_string_buffer(_XATTR_ARGS.pack(ctypes.addressof(buf), size, flags))
    at = _flags(call.args[2], p)
    n = syscall(_N["getxattrat"], p.dirfd, p.name, at, name, ours, _XATTR_ARGS.size)
    return Outcome(n, [(addr, buf.raw[:n])] if size else [])


def _setxattrat(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    name, xargs, value = call.data
    assert name is not None and xargs is not None and value is not None
    _addr, _size, flags = _XATTR_ARGS.unpack(xargs)
    buf = ctypes.create_string_buffer(value, max(len(value), 1))
    ours = ctypes.create_string_buffer(_XATTR_ARGS.pack(ctypes.addressof(buf), len(value), flags))
    at = _flags(call.args[2], p)
    syscall(_N["setxattrat"], p.dirfd, p.name, at, name, ours, _XATTR_ARGS.size)
    return Outcome(0)


def _listxattrat(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    addr, size = call.args[3], min(call.args[4], XATTR_SIZE_MAX)  # XATTR_LIST_MAX, the same
    buf = ctypes.create_string_buffer(max(size, 1))
    n = syscall(_N["listxattrat"], p.dirfd, p.name, _flags(call.args[2], p), buf, size)
    return Outcome(n, [(addr, buf.raw[:n])] if size else [])


def _removexattrat(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    name = call.data[0]
    assert name is not None
    syscall(_N["removexattrat"], p.dirfd, p.name, _flags(call.args[2], p), name)
    return Outcome(0)


def _file_getattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    addr, usize = call.args[2], call.args[3]
    if usize > abi.PAGE_SIZE:
        return Outcome(-errno.E2BIG)  # fs/file_attr.c, before the lookup
    buf = ctypes.create_string_buffer(max(usize, 1))
    syscall(_N["file_getattr"], p.dirfd, p.name, buf, usize, _flags(call.args[4], p))
    # The kernel writes usize bytes: what it knows, zeros after.
    return Outcome(0, [(addr, buf.raw[:usize])])


def _file_setattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    attr = call.data[0]
    assert attr is not None
    buf = ctypes.create_string_buffer(attr, len(attr))
    syscall(_N["file_setattr"], p.dirfd, p.name, buf, len(attr), _flags(call.args[4], p))
    return Outcome(0)


def _name_to_handle(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    header = call.data[0]
    assert header is not None
    (handle_bytes,) = struct.unpack("<I", header)
    handle_addr, mount_addr = call.args[2], call.args[3]
    flags = call.args[4] & 0xFFFFFFFF & ~(abi.AT_SYMLINK_FOLLOW | abi.AT_EMPTY_PATH)
    flags |= (abi.AT_SYMLINK_FOLLOW if p.follow else 0) | (abi.AT_EMPTY_PATH if p.itself else 0)
    handle = ctypes.create_string_buffer(header + bytes(4 + handle_bytes), 8 + handle_bytes)
    mount_id = ctypes.create_string_buffer(8)
    try:
        syscall(_N["name_to_handle_at"], p.dirfd, p.name, handle, mount_id, flags)
    except OSError as e:
        if e.errno != errno.EOVERFLOW:
            raise
        # The handle does not fit: the kernel still tells the size it needs
        # (name_to_handle_at(2)), in handle_bytes.
        return Outcome(-errno.EOVERFLOW, [(handle_addr, handle.raw[:4])])
    (used,) = struct.unpack_from("<I", handle.raw)
    # AT_HANDLE_MNT_ID_UNIQUE (6.12) asks for a u64 mount id, else an int.
    id_size = 8 if flags & _AT_HANDLE_MNT_ID_UNIQUE else 4
    return Outcome(0, [(handle_addr, handle.raw[: 8 + used]), (mount_addr, mount_id.raw[:id_size])])


def _setxattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    name, value = call.data
    assert name is not None and value is not None
    os.setxattr(p.proc_path, name, value, call.args[4] & 0xFFFFFFFF, follow_symlinks=p.follow)
    return Outcome(0)


def _removexattr(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    name = call.data[0]
    assert name is not None
    os.removexattr(p.proc_path, name, follow_symlinks=p.follow)
    return Outcome(0)


def _unlink(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    flags = {"unlink": 0, "rmdir": abi.AT_REMOVEDIR}.get(call.syscall)
    if flags is None:
        flags = call.args[2] & 0xFFFFFFFF
    syscall(_N["unlinkat"], p.dirfd, p.name, flags)
    return Outcome(0)


def _mkdir(call: PathCall, pl: list[_Place], creds: Credentials) -> Outcome:
    p = pl[0]
    mode = call.args[1] if call.syscall == "mkdir" else call.args[2]
    # Our umask is 0 (see launch): the program's is applied here, as the
    # kernel would apply it (mkdir(2)).
    syscall(_N["mkdirat"], p.dirfd, p.name, mode & 0o7777 & ~creds.umask)
    return Outcome(0)


def _mknod(call: PathCall, pl: list[_Place], creds: Credentials) -> Outcome:
    p = pl[0]
    mode, dev = (call.args[1], call.args[2]) if call.syscall == "mknod" else call.args[2:4]
    mode &= 0xFFFFFFFF
    mode = (mode & ~0o7777) | (mode & 0o7777 & ~creds.umask)
    syscall(_N["mknodat"], p.dirfd, p.name, mode, dev & 0xFFFFFFFF)
    return Outcome(0)


def _rename(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    old, new = pl
    flags = call.args[4] & 0xFFFFFFFF if call.syscall == "renameat2" else 0
    syscall(_N["renameat2"], old.dirfd, old.name, new.dirfd, new.name, flags)
    return Outcome(0)


def _link(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    old, new = pl
    flags = abi.AT_SYMLINK_FOLLOW if old.follow else 0
    if old.itself:
        flags |= abi.AT_EMPTY_PATH
    syscall(_N["linkat"], old.dirfd, old.name, new.dirfd, new.name, flags)
    return Outcome(0)


def _symlink(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    text = call.data[0]
    assert text is not None
    syscall(_N["symlinkat"], text, p.dirfd, p.name)
    return Outcome(0)


def _chmod(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    if call.syscall == "chmod":
        mode, flags = call.args[1], 0
    else:
        mode = call.args[2]
        flags = call.args[3] if call.syscall == "fchmodat2" else 0
    syscall(_N["fchmodat2"], p.dirfd, p.name, mode & 0o7777, _flags(flags, p))
    return Outcome(0)


def _chown(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    if call.syscall == "fchownat":
        uid, gid, flags = call.args[2], call.args[3], call.args[4]
    else:
        uid, gid, flags = call.args[1], call.args[2], 0
    syscall(_N["fchownat"], p.dirfd, p.name, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, _flags(flags, p))
    return Outcome(0)


def _truncate(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    length = call.args[1] - (1 << 64) if call.args[1] >= 1 << 63 else call.args[1]
    if length < 0:
        return Outcome(-errno.EINVAL)
    # There is no truncateat: look at what is there through an O_PATH fd
    # (which opens nothing: a device's open may have side effects), then
    # reopen that very file for writing through its /proc/self/fd name.
    nofollow = 0 if p.follow else os.O_NOFOLLOW
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
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    return Outcome(0)


_TIMESPEC2 = struct.Struct("<qqqq")


def _times(call: PathCall) -> bytes | None:
    """The times to set as ``struct timespec[2]``, from whichever form the call takes."""
    raw = call.data[0]
    if raw is None or call.syscall == "utimensat":
        return raw
    if call.syscall == "utime":
        atime, mtime = struct.unpack("<qq", raw)
        return _TIMESPEC2.pack(atime, 0, mtime, 0)
    a_sec, a_usec, m_sec, m_usec = struct.unpack("<qqqq", raw)
    if not (0 <= a_usec < 1_000_000 and 0 <= m_usec < 1_000_000):
        raise OSError(errno.EINVAL, "bad timeval")  # utimes(2)
    return _TIMESPEC2.pack(a_sec, a_usec * 1000, m_sec, m_usec * 1000)


def _utimens(call: PathCall, pl: list[_Place], _: Credentials) -> Outcome:
    p = pl[0]
    flags = call.args[3] if call.syscall == "utimensat" else 0
    syscall(_N["utimensat"], p.dirfd, p.name, _times(call), _flags(flags, p))
    return Outcome(0)


_OPS: dict[str, Op] = {
    "stat": _stat, "lstat": _stat, "newfstatat": _stat, "statx": _statx,
    "access": _access, "faccessat": _access, "faccessat2": _access,
    "readlink": _readlink, "readlinkat": _readlink,
    "getxattr": _getxattr, "lgetxattr": _getxattr,
    "listxattr": _listxattr, "llistxattr": _listxattr,
    "setxattr": _setxattr, "lsetxattr": _setxattr,
    "removexattr": _removexattr, "lremovexattr": _removexattr,
    "unlink": _unlink, "rmdir": _unlink, "unlinkat": _unlink,
    "mkdir": _mkdir, "mkdirat": _mkdir, "mknod": _mknod, "mknodat": _mknod,
    "rename": _rename, "renameat": _rename, "renameat2": _rename,
    "link": _link, "linkat": _link, "symlink": _symlink, "symlinkat": _symlink,
    "chmod": _chmod, "fchmodat": _chmod, "fchmodat2": _chmod,
    "chown": _chown, "lchown": _chown, "fchownat": _chown,
    "truncate": _truncate,
    "utimensat": _utimens, "utime": _utimens, "utimes": _utimens, "futimesat": _utimens,
    "statfs": _statfs,
    "getxattrat": _getxattrat, "setxattrat": _setxattrat,
    "listxattrat": _listxattrat, "removexattrat": _removexattrat,
    "file_getattr": _file_getattr, "file_setattr": _file_setattr,
    "name_to_handle_at": _name_to_handle,
}  # fmt: skip
