"""Decoding the path-taking system calls other than the open family.

Each call is described once, in :data:`SPECS`: where its paths are among
the syscall arguments, the role each path plays (see
:data:`unotifyd.policy.paths.Role`) and whether its last symbolic link is
followed. Decoding reads the paths from the program's memory and nothing
else; the syscall's other arguments stay raw in :attr:`PathCall.args`, for
the code that performs the call (:mod:`unotifyd.serve.pathwork`).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from ..kernel import abi
from ..kernel.errors import BadArgument
from ..kernel.listener import Notification
from ..kernel.target import MemoryReader
from ..policy.paths import Role
from .handlers import extensible_struct, int_arg


@dataclass(frozen=True, slots=True)
class Follow:
    """Whether a path's last symbolic link is followed.

    ``always``/``never``, or decided by a flag argument: followed unless
    ``args[flag_arg]`` has ``AT_SYMLINK_NOFOLLOW`` (``unless_nofollow``),
    or only if it has ``AT_SYMLINK_FOLLOW`` (linkat).
    """

    default: bool
    flag_arg: int | None = None
    flag: int = 0

    def __call__(self, args: tuple[int, ...]) -> bool:
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


@dataclass(frozen=True, slots=True)
class PathSpec:
    """Where one path of a call is: ``args[path_arg]``, relative to ``args[dirfd_arg]``."""

    dirfd_arg: int | None
    path_arg: int
    role: Role
    follow: Follow
    # The argument with AT_EMPTY_PATH, for calls that accept it: then an
    # empty path means the file dirfd refers to.
    empty_flag_arg: int | None = None
    # readlinkat(2) takes an empty path without any flag (since 2.6.39).
    empty_always: bool = False
    # utimensat(2) takes a NULL path: the call is about dirfd (futimens).
    null_ok: bool = False


def _s(role: Role, follow: Follow, path: int = 0) -> PathSpec:
    """A path with no dirfd (relative to the cwd), at ``args[path]``."""
    return PathSpec(None, path, role, follow)


def _at(
    role: Role,
    follow: Follow,
    dirfd: int = 0,
    *,
    empty_flag_arg: int | None = None,
    empty_always: bool = False,
    null_ok: bool = False,
) -> PathSpec:
    """A path at ``args[dirfd + 1]`` relative to the dirfd ``args[dirfd]``."""
    return PathSpec(dirfd, dirfd + 1, role, follow, empty_flag_arg, empty_always, null_ok)


#: Every trapped path call but the open family: its paths, in the order the
#: kernel looks them up.
SPECS: dict[str, tuple[PathSpec, ...]] = {
    # metadata
    "stat": (_s("read", ALWAYS),),
    "lstat": (_s("read", NEVER),),
    "newfstatat": (_at("read", unless_nofollow(3), empty_flag_arg=3),),
    "statx": (_at("read", unless_nofollow(2), empty_flag_arg=2),),
    "access": (_s("read", ALWAYS),),
    "faccessat": (_at("read", ALWAYS),),
    "faccessat2": (_at("read", unless_nofollow(3), empty_flag_arg=3),),
    "readlink": (_s("read", NEVER),),
    "readlinkat": (_at("read", NEVER, empty_always=True),),
    "getxattr": (_s("read", ALWAYS),),
    "lgetxattr": (_s("read", NEVER),),
    "listxattr": (_s("read", ALWAYS),),
    "llistxattr": (_s("read", NEVER),),
    "getxattrat": (_at("read", unless_nofollow(2), empty_flag_arg=2),),
    "listxattrat": (_at("read", unless_nofollow(2), empty_flag_arg=2),),
    "file_getattr": (_at("read", unless_nofollow(4), empty_flag_arg=4),),
    "name_to_handle_at": (_at("read", only_if_follow(4), empty_flag_arg=4),),
    "statfs": (_s("probe", ALWAYS),),
    # inotify_add_watch(fd, path, mask): IN_DONT_FOLLOW in the mask (inotify(7)).
    "inotify_add_watch": (PathSpec(None, 1, "read", Follow(True, 2, IN_DONT_FOLLOW)),),
    # changes
    "setxattr": (_s("modify", ALWAYS),),
    "lsetxattr": (_s("modify", NEVER),),
    "removexattr": (_s("modify", ALWAYS),),
    "lremovexattr": (_s("modify", NEVER),),
    "setxattrat": (_at("modify", unless_nofollow(2), empty_flag_arg=2),),
    "removexattrat": (_at("modify", unless_nofollow(2), empty_flag_arg=2),),
    "file_setattr": (_at("modify", unless_nofollow(4), empty_flag_arg=4),),
    "unlink": (_s("remove", NEVER),),
    "rmdir": (_s("remove", NEVER),),
    "unlinkat": (_at("remove", NEVER),),
    "mkdir": (_s("create", NEVER),),
    "mkdirat": (_at("create", NEVER),),
    "mknod": (_s("create", NEVER),),
    "mknodat": (_at("create", NEVER),),
    "rename": (_s("remove", NEVER), _s("replace", NEVER, path=1)),
    "renameat": (_at("remove", NEVER), _at("replace", NEVER, dirfd=2)),
    "renameat2": (_at("remove", NEVER), _at("replace", NEVER, dirfd=2)),
    "link": (_s("read", NEVER), _s("create", NEVER, path=1)),
    "linkat": (_at("read", only_if_follow(4), empty_flag_arg=4), _at("create", NEVER, dirfd=2)),
    "symlink": (_s("create", NEVER, path=1),),
    "symlinkat": (_at("create", NEVER, dirfd=1),),
    "chmod": (_s("modify", ALWAYS),),
    "fchmodat": (_at("modify", ALWAYS),),
    "fchmodat2": (_at("modify", unless_nofollow(3), empty_flag_arg=3),),
    "chown": (_s("modify", ALWAYS),),
    "lchown": (_s("modify", NEVER),),
    "fchownat": (_at("modify", unless_nofollow(4), empty_flag_arg=4),),
    "truncate": (_s("modify", ALWAYS),),
    "utimensat": (_at("modify", unless_nofollow(3), empty_flag_arg=3, null_ok=True),),
    "utime": (_s("modify", ALWAYS),),
    "utimes": (_s("modify", ALWAYS),),
    "futimesat": (_at("modify", ALWAYS, null_ok=True),),
    # the rest
    "chdir": (_s("chdir", ALWAYS),),
    "execve": (_s("exec", ALWAYS),),
    "execveat": (_at("exec", unless_nofollow(4), empty_flag_arg=4),),
}

#: Directory listings: no path, a directory fd.
LISTINGS: frozenset[str] = frozenset({"getdents64", "getdents"})


def names_a_directory(path: bytes) -> bool:
    """True for ``dir/``, ``dir/.``, ``..``...: names whose last component must be a directory."""
    return path.endswith((b"/", b"/.", b"/..")) or path in (b".", b"..")


@dataclass(frozen=True, slots=True)
class PathArg:
    """One path of a call, as the program gave it.

    ``dirfd`` is ``AT_FDCWD`` for the calls that take none. ``itself``: the
    call is about the file ``dirfd`` refers to (an empty path with
    ``AT_EMPTY_PATH``, or a NULL one for ``utimensat``); there is no name
    to resolve or to decide on beyond that file.
    """

    dirfd: int
    addr: int
    path: bytes
    role: Role
    follow: bool
    itself: bool = False


@dataclass(frozen=True, slots=True)
class PathCall:
    """A trapped path call, decoded: its name, its paths and its raw arguments.

    ``data`` holds what else the call reads from the program's memory,
    read once here (see :func:`_inputs`): the call is performed from it,
    never from the program's memory again.
    """

    syscall: str
    paths: tuple[PathArg, ...]
    args: tuple[int, ...]
    data: tuple[bytes | None, ...] = ()


# Limits the kernel puts on xattr names and values (include/uapi/linux/limits.h).
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_ARGS_SIZE = 16  # struct xattr_args (include/uapi/linux/xattr.h)
FILE_ATTR_SIZE = 24  # struct file_attr, FILE_ATTR_SIZE_VER0 (include/uapi/linux/fs.h)
MAX_HANDLE_SZ = 128  # include/linux/exportfs.h
_W_OK = 2
#: Where each access call has its mode.
_ACCESS_MODE_ARG = {"access": 1, "faccessat": 2, "faccessat2": 2}


def _xattr_name(mem: MemoryReader, n: Notification, arg: int) -> bytes:
    name = mem.read_path(n.pid, n.args[arg])
    # setxattr(2): ERANGE for a name that is empty or too long.
    if not name or len(name) > XATTR_NAME_MAX:
        raise BadArgument(errno.ERANGE, "bad xattr name")
    return name


def _optional(mem: MemoryReader, n: Notification, arg: int, size: int) -> bytes | None:
    addr = n.args[arg]
    return None if addr == 0 else mem.read(n.pid, addr, size)


def _inputs(mem: MemoryReader, n: Notification, name: str) -> tuple[bytes | None, ...]:
    """What call ``name`` reads from memory besides its paths."""
    a = n.args
    if name in ("getxattrat", "setxattrat"):
        xargs = extensible_struct(mem, n, 4, 5, XATTR_ARGS_SIZE)
        value = None
        if name == "setxattrat":
            addr, size = struct.unpack_from("<QI", xargs)
            if size > XATTR_SIZE_MAX:
                raise BadArgument(errno.E2BIG, "xattr value too large")
            value = mem.read(n.pid, addr, size) if size else b""
        return (_xattr_name(mem, n, 3), xargs, value)
    if name == "removexattrat":
        return (_xattr_name(mem, n, 3),)
    if name == "file_setattr":
        return (extensible_struct(mem, n, 2, 3, FILE_ATTR_SIZE),)
    if name == "name_to_handle_at":
        (handle_bytes,) = struct.unpack("<I", mem.read(n.pid, a[2], 4))
        if handle_bytes > MAX_HANDLE_SZ:
            raise BadArgument(errno.EINVAL, "handle_bytes above MAX_HANDLE_SZ")
        return (struct.pack("<I", handle_bytes),)
    if name in ("symlink", "symlinkat"):
        return (mem.read_path(n.pid, a[0]),)
    if name in ("getxattr", "lgetxattr", "removexattr", "lremovexattr"):
        return (_xattr_name(mem, n, 1),)
    if name in ("setxattr", "lsetxattr"):
        if a[3] > XATTR_SIZE_MAX:
            raise BadArgument(errno.E2BIG, "xattr value too large")
        return (_xattr_name(mem, n, 1), mem.read(n.pid, a[2], a[3]) if a[3] else b"")
    if name == "utimensat":
        return (_optional(mem, n, 2, 32),)  # struct timespec[2]
    if name == "utime":
        return (_optional(mem, n, 1, 16),)  # struct utimbuf
    if name == "utimes":
        return (_optional(mem, n, 1, 32),)  # struct timeval[2]
    if name == "futimesat":
        return (_optional(mem, n, 2, 32),)
    return ()


def decode_path_call(mem: MemoryReader, n: Notification, name: str) -> PathCall:
    """Read the paths of call ``name`` (a key of :data:`SPECS`) from the program.

    Raises :class:`~unotifyd.kernel.errors.BadArgument` with the errno the
    kernel would give a path it cannot read (``EFAULT``, ``ENAMETOOLONG``).
    """
    args = n.args
    paths = []
    for spec in SPECS[name]:
        dirfd = abi.AT_FDCWD if spec.dirfd_arg is None else int_arg(args[spec.dirfd_arg])
        addr = args[spec.path_arg]
        if addr == 0 and spec.null_ok:
            path, itself = b"", True
        else:
            path = mem.read_path(n.pid, addr)
            itself = not path and (
                spec.empty_always
                or (
                    spec.empty_flag_arg is not None
                    and bool(args[spec.empty_flag_arg] & abi.AT_EMPTY_PATH)
                )
            )
        role = spec.role
        mode_arg = _ACCESS_MODE_ARG.get(name)
        if mode_arg is not None and args[mode_arg] & _W_OK:
            role = "probe"
        paths.append(PathArg(dirfd, addr, path, role, spec.follow(args), itself))
    return PathCall(name, tuple(paths), args, _inputs(mem, n, name))
