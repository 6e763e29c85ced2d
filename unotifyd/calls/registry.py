"""The registry: every system call unotifyd may trap, one entry each.

An entry (:class:`Syscall`) says the call's *family* (which
rules need it trapped: :mod:`unotifyd.policy.syscalls`), the ``*at``
operation it is performed as, and how its arguments become that
operation's (``at_form``: ``stat(path, buf)`` is
``newfstatat(AT_FDCWD, path, buf, 0)``, as the kernel itself defines it).
An operation (:class:`Operation`) says how the serving layer answers it
(``kind``), where its paths are and what role each plays, what else it
reads from memory, whether it applies the umask, and the function that
performs it (:mod:`unotifyd.calls.ops`).

Adding a trapped call is adding its entry here (and, for a new kind of
call, its operation); ``tests/unit/test_registry.py`` checks that the
entries, the families the filter traps and the operations cover each
other exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from ..kernel import abi
from ..kernel.filter import compile_filter
from ..kernel.listener import Notification
from ..policy import surface
from ..policy.paths import Role
from ..policy.surface import RefusedCall
from ..policy.syscalls import Family, needed_families
from ..record import record
from . import ops, sends
from .decode import (
    ALWAYS,
    AT_FLAGS,
    HANDLE_FLAGS,
    IN_DONT_FOLLOW,
    LINK_FLAGS,
    NEVER,
    Args,
    Follow,
    Inputs,
    Memory,
    OpenCall,
    PathSpec,
    access_inputs,
    at,
    decode_open,
    decode_openat2,
    file_attr_inputs,
    flags_first,
    handle_inputs,
    inotify_inputs,
    ioctl_inputs,
    name_at,
    only_if_follow,
    rename_inputs,
    setxattr_inputs,
    setxattrat_inputs,
    sockaddr_inputs,
    socket_address,
    symlink_inputs,
    the_fd,
    timevals,
    unless_nofollow,
    utimbuf,
    utimensat_inputs,
    xattrat_inputs,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..policy import Policy

#: How the serving layer answers a call: an emulated ``open``; a path call
#: performed on the places the rules chose; an ``execve``/``chdir``, which
#: only the kernel can make (CONTINUE, maybe with the path rewritten); a
#: directory listing filtered of hidden names; a call that may give the
#: program another root directory, only noted (see Served.root_pinned); one
#: that may move a thread to another namespace, only noted too (see
#: Served.namespaces_pinned); an fchdir, which moves the cwd to a file the
#: program holds, only noted (see MOVES_A_CWD).
Kind = Literal["open", "path", "rewrite", "listing", "root", "namespace", "cwd"]


@record(frozen=True, slots=True)
class Operation:
    """One ``*at`` call, as the serving layer performs or answers it."""

    kind: Kind
    paths: tuple[PathSpec, ...] = ()
    perform: ops.Op | None = None
    inputs: Inputs | None = None
    uses_umask: bool = False  # the open family says so by its flags
    may_block: bool = False  # performed in a worker thread (the open family: by a look)
    # A wait in it ends for a signal to the program, with nothing done (see
    # ops.until_interrupted): a connect's, a send's.
    interruptible: bool = False
    open_decoder: Callable[[Memory, Notification, str, Args], OpenCall] | None = None


@record(frozen=True, slots=True)
class Syscall:
    """One trapped system call: how it is recognised, and what it is performed as."""

    name: str
    family: Family
    op: str  # a key of OPERATIONS
    at_form: Callable[[Args], Args] | None = None  # None: already the op's layout
    inputs: Inputs | None = None  # instead of the op's (utime reads a struct utimbuf)
    paths: tuple[PathSpec, ...] | None = None  # instead of the op's (fchmod names no path)

    @property
    def nr(self) -> int:
        """Its number (the kernel layer's table, which the filter uses too)."""
        return abi.SYSCALL_NUMBERS[self.name]

    @property
    def operation(self) -> Operation:
        return OPERATIONS[self.op]

    def args_of(self, args: Args) -> Args:
        """The call's arguments ``args`` in the layout of :attr:`op`."""
        return args if self.at_form is None else self.at_form(args)


_W_OK = os.W_OK


def _access_role(a: Args) -> Role:
    # access(W_OK) is answered as a read-only mount would (EROFS): a probe.
    return "probe" if a[2] & _W_OK else "read"


_ST = abi.AT_SYMLINK_NOFOLLOW
_EMPTY = abi.AT_EMPTY_PATH
_FD = (the_fd("modify"),)
_CWD = abi.AT_FDCWD
_CREAT_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_TRUNC

OPERATIONS: dict[str, Operation] = {
    # opens: openat(dirfd, path, flags, mode) and openat2(dirfd, path, how, size)
    "openat": Operation("open", open_decoder=decode_open),
    "openat2": Operation("open", open_decoder=decode_openat2),
    # metadata
    # The stat calls check their flags only after the path was read, and
    # not at all on an fd (vfs_fstatat(), statx in fs/stat.c): the kernel
    # judges them when we make the call.
    "newfstatat": Operation(
        "path", (at("read", unless_nofollow(3), empty_flag_arg=3, null_if_empty=True),),
        ops.newfstatat,
    ),
    "statx": Operation(
        "path", (at("read", unless_nofollow(2), empty_flag_arg=2, null_if_empty=True),), ops.statx
    ),
    "faccessat2": Operation(
        "path", (at(_access_role, unless_nofollow(3), empty_flag_arg=3),), ops.faccessat2,
        access_inputs,
    ),
    "readlinkat": Operation("path", (at("read", NEVER, empty_always=True),), ops.readlinkat),
    # statfs(path, buf) has no *at form: (AT_FDCWD, path, buf)
    "statfs": Operation("path", (at("probe", ALWAYS),), ops.statfs),
    # The legacy xattr calls, as (AT_FDCWD, path, at_flags, <their arguments>).
    "getxattr": Operation("path", (at("read", unless_nofollow(2)),), ops.getxattr, name_at(3)),
    "listxattr": Operation("path", (at("read", unless_nofollow(2)),), ops.listxattr),
    "setxattr": Operation(
        "path", (at("modify", unless_nofollow(2)),), ops.setxattr, setxattr_inputs
    ),
    "removexattr": Operation(
        "path", (at("modify", unless_nofollow(2)),), ops.removexattr, name_at(3)
    ),
    "getxattrat": Operation(
        "path", (at("read", unless_nofollow(2), empty_flag_arg=2, null_if_empty=True),),
        ops.getxattrat, flags_first(2, AT_FLAGS, xattrat_inputs),
    ),
    "listxattrat": Operation(
        "path",
        (at("read", unless_nofollow(2), empty_flag_arg=2, null_if_empty=True,
            empty_needs_fd=True),),
        ops.listxattrat, flags_first(2, AT_FLAGS),
    ),
    "setxattrat": Operation(
        "path", (at("modify", unless_nofollow(2), empty_flag_arg=2, null_if_empty=True),),
        ops.setxattrat, flags_first(2, AT_FLAGS, setxattrat_inputs),
    ),
    "removexattrat": Operation(
        "path",
        (at("modify", unless_nofollow(2), empty_flag_arg=2, null_if_empty=True,
            empty_needs_fd=True),),
        ops.removexattrat, flags_first(2, AT_FLAGS, name_at(3)),
    ),
    "file_getattr": Operation(
        "path", (at("read", unless_nofollow(4), empty_flag_arg=4, null_if_empty=True),),
        ops.file_getattr, flags_first(4, AT_FLAGS),
    ),
    "file_setattr": Operation(
        "path", (at("modify", unless_nofollow(4), empty_flag_arg=4, null_if_empty=True),),
        ops.file_setattr, flags_first(4, AT_FLAGS, file_attr_inputs),
    ),
    "name_to_handle_at": Operation(
        "path", (at("read", only_if_follow(4), empty_flag_arg=4),), ops.name_to_handle_at,
        flags_first(4, HANDLE_FLAGS, handle_inputs),
    ),
    # inotify_add_watch(fd, path, mask): IN_DONT_FOLLOW in the mask (inotify(7)).
    "inotify_add_watch": Operation(
        "path", (PathSpec(None, 1, "read", Follow(True, 2, IN_DONT_FOLLOW)),),
        ops.inotify_add_watch, inotify_inputs,
    ),
    # changes
    "unlinkat": Operation(
        "path", (at("remove", NEVER),), ops.unlinkat, flags_first(2, abi.AT_REMOVEDIR)
    ),
    "mkdirat": Operation("path", (at("create", NEVER),), ops.mkdirat, uses_umask=True),
    "mknodat": Operation("path", (at("create", NEVER),), ops.mknodat, uses_umask=True),
    "renameat2": Operation(
        "path", (at("remove", NEVER), at("replace", NEVER, dirfd=2)), ops.renameat2,
        rename_inputs,
    ),
    "linkat": Operation(
        "path",
        (at("read", only_if_follow(4), empty_flag_arg=4), at("create", NEVER, dirfd=2)),
        ops.linkat, flags_first(4, LINK_FLAGS),
    ),
    "symlinkat": Operation("path", (at("create", NEVER, dirfd=1),), ops.symlinkat, symlink_inputs),
    "fchmodat2": Operation(
        "path", (at("modify", unless_nofollow(3), empty_flag_arg=3),), ops.fchmodat2,
        flags_first(3, AT_FLAGS),
    ),
    "fchownat": Operation(
        "path", (at("modify", unless_nofollow(4), empty_flag_arg=4),), ops.fchownat,
        flags_first(4, AT_FLAGS),
    ),
    # truncate(path, length) has no *at form: (AT_FDCWD, path, length)
    # A worker's: opening the file for writing breaks a lease on it, which
    # waits up to lease-break-time (fcntl(2)) for a holder who may be any
    # user, never the program's lane.
    "truncate": Operation("path", (at("modify", ALWAYS),), ops.truncate, may_block=True),
    "utimensat": Operation(
        "path", (at("modify", unless_nofollow(3), empty_flag_arg=3, null_ok=True),),
        ops.utimensat, utimensat_inputs,
    ),
    # run by the kernel: chdir as (AT_FDCWD, path); execveat(dirfd, path, argv, envp, flags)
    "chdir": Operation("rewrite", (at("chdir", ALWAYS),)),
    "execveat": Operation("rewrite", (at("exec", unless_nofollow(4), empty_flag_arg=4),)),
    # getdents64(fd, buf, count)
    "getdents64": Operation("listing"),
    # sendto(fd, buf, len, flags, addr, addrlen), sendmsg(fd, msg, flags),
    # sendmmsg(fd, msgvec, vlen, flags): a datagram's address may name a socket
    # file (calls/sends.py); a send may wait for room at the receiver.
    "sendto": Operation(
        "path", (PathSpec(0, 4, "read", ALWAYS, sockaddr_len_arg=5),), sends.sendto,
        sends.sendto_inputs, may_block=True, interruptible=True,
    ),
    "sendmsg": Operation(
        "path", (PathSpec(0, 1, "read", ALWAYS, sockaddr_len_arg=1),), sends.sendmsg,
        sends.sendmsg_inputs, may_block=True, interruptible=True,
    ),
    "sendmmsg": Operation(
        "path", (PathSpec(0, 1, "read", ALWAYS, sockaddr_len_arg=1),), sends.sendmmsg,
        sends.sendmmsg_inputs, may_block=True, interruptible=True,
    ),
    # chroot(path), pivot_root(new, old), setns(fd, nstype): let through as
    # they are; seeing one tells the serving layer roots (and, for setns,
    # namespaces) may differ now.
    "rootchange": Operation("root"),
    # unshare(flags) of a new user or mount namespace: let through; seeing
    # one tells the serving layer namespaces may differ now (not roots: the
    # new mount namespace's root is a copy of the same directory).
    "nschange": Operation("namespace"),
    "cwdchange": Operation("cwd"),
    # bind(sockfd, addr, addrlen): makes the socket file an AF_UNIX path names
    "bind": Operation(
        "path", (socket_address("create", NEVER),), ops.bind, sockaddr_inputs, uses_umask=True
    ),
    # ioctl(fd, cmd, arg) that sets a file's flags (chattr): about the fd's file
    "ioctl": Operation("path", (the_fd("modify"),), ops.ioctl, ioctl_inputs),
    # connect(sockfd, addr, addrlen): a socket file's path in an AF_UNIX
    # address; a stream connect waits for the listener's backlog.
    "connect": Operation(
        "path", (socket_address("read", ALWAYS),), ops.connect, sockaddr_inputs, may_block=True,
        interruptible=True,
    ),
}  # fmt: skip


def _entries(*entries: Syscall) -> dict[str, Syscall]:
    return {e.name: e for e in entries}


S = Syscall
#: Every trapped call, by name.
BY_NAME: dict[str, Syscall] = _entries(
    # the open family
    S("open", "open", "openat", lambda a: (_CWD, a[0], a[1], a[2])),
    S("creat", "open", "openat", lambda a: (_CWD, a[0], _CREAT_FLAGS, a[1])),
    S("openat", "open", "openat"),
    S("openat2", "open", "openat2"),
    # metadata
    S("stat", "metadata", "newfstatat", lambda a: (_CWD, a[0], a[1], 0)),
    S("lstat", "metadata", "newfstatat", lambda a: (_CWD, a[0], a[1], _ST)),
    S("newfstatat", "metadata", "newfstatat"),
    S("statx", "metadata", "statx"),
    S("readlink", "metadata", "readlinkat", lambda a: (_CWD, a[0], a[1], a[2])),
    S("readlinkat", "metadata", "readlinkat"),
    S("getxattr", "metadata", "getxattr", lambda a: (_CWD, a[0], 0, a[1], a[2], a[3])),
    S("lgetxattr", "metadata", "getxattr", lambda a: (_CWD, a[0], _ST, a[1], a[2], a[3])),
    S("listxattr", "metadata", "listxattr", lambda a: (_CWD, a[0], 0, a[1], a[2])),
    S("llistxattr", "metadata", "listxattr", lambda a: (_CWD, a[0], _ST, a[1], a[2])),
    S("getxattrat", "metadata", "getxattrat"),
    S("listxattrat", "metadata", "listxattrat"),
    S("file_getattr", "metadata", "file_getattr"),
    S("name_to_handle_at", "metadata", "name_to_handle_at"),
    S("inotify_add_watch", "metadata", "inotify_add_watch"),
    # reads whose answer a read-only tree changes (EROFS, ST_RDONLY)
    S("access", "probe", "faccessat2", lambda a: (_CWD, a[0], a[1], 0)),
    S("faccessat", "probe", "faccessat2", lambda a: (a[0], a[1], a[2], 0)),
    S("faccessat2", "probe", "faccessat2"),
    S("statfs", "probe", "statfs", lambda a: (_CWD, a[0], a[1])),
    # changes
    S("unlink", "change", "unlinkat", lambda a: (_CWD, a[0], 0)),
    S("rmdir", "change", "unlinkat", lambda a: (_CWD, a[0], abi.AT_REMOVEDIR)),
    S("unlinkat", "change", "unlinkat"),
    S("mkdir", "change", "mkdirat", lambda a: (_CWD, a[0], a[1])),
    S("mkdirat", "change", "mkdirat"),
    S("mknod", "change", "mknodat", lambda a: (_CWD, a[0], a[1], a[2])),
    S("mknodat", "change", "mknodat"),
    S("rename", "change", "renameat2", lambda a: (_CWD, a[0], _CWD, a[1], 0)),
    S("renameat", "change", "renameat2", lambda a: (a[0], a[1], a[2], a[3], 0)),
    S("renameat2", "change", "renameat2"),
    S("link", "change", "linkat", lambda a: (_CWD, a[0], _CWD, a[1], 0)),
    S("linkat", "change", "linkat"),
    S("symlink", "change", "symlinkat", lambda a: (a[0], _CWD, a[1])),
    S("symlinkat", "change", "symlinkat"),
    S("chmod", "change", "fchmodat2", lambda a: (_CWD, a[0], a[1], 0)),
    S("fchmodat", "change", "fchmodat2", lambda a: (a[0], a[1], a[2], 0)),
    S("fchmodat2", "change", "fchmodat2"),
    S("chown", "change", "fchownat", lambda a: (_CWD, a[0], a[1], a[2], 0)),
    S("lchown", "change", "fchownat", lambda a: (_CWD, a[0], a[1], a[2], _ST)),
    S("fchownat", "change", "fchownat"),
    S("truncate", "change", "truncate", lambda a: (_CWD, a[0], a[1])),
    S("utimensat", "change", "utimensat"),
    S("utime", "change", "utimensat", lambda a: (_CWD, a[0], a[1], 0), utimbuf),
    S("utimes", "change", "utimensat", lambda a: (_CWD, a[0], a[1], 0), timevals),
    S("futimesat", "change", "utimensat", lambda a: (a[0], a[1], a[2], 0), timevals),
    S("setxattr", "change", "setxattr",
      lambda a: (_CWD, a[0], 0, a[1], a[2], a[3], a[4])),
    S("lsetxattr", "change", "setxattr",
      lambda a: (_CWD, a[0], _ST, a[1], a[2], a[3], a[4])),
    S("removexattr", "change", "removexattr", lambda a: (_CWD, a[0], 0, a[1])),
    S("lremovexattr", "change", "removexattr", lambda a: (_CWD, a[0], _ST, a[1])),
    S("setxattrat", "change", "setxattrat"),
    S("removexattrat", "change", "removexattrat"),
    S("file_setattr", "change", "file_setattr"),
    # changes through an fd, made as their *at forms on that fd (AT_EMPTY_PATH):
    # rules about names do not apply, a read-only tree does (decide_on_fd), so
    # they are a family of their own, trapped only where one can refuse them
    S("fchmod", "change_fd", "fchmodat2", lambda a: (a[0], 0, a[1], _EMPTY), paths=_FD),
    S("fchown", "change_fd", "fchownat", lambda a: (a[0], 0, a[1], a[2], _EMPTY), paths=_FD),
    S("fsetxattr", "change_fd", "setxattr", lambda a: (a[0], 0, 0, a[1], a[2], a[3], a[4]),
      paths=_FD),
    S("fremovexattr", "change_fd", "removexattr", lambda a: (a[0], 0, 0, a[1]), paths=_FD),
    # ioctl(fd, cmd, arg): trapped only for FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR (ONLY_WHEN)
    S("ioctl", "change_fd", "ioctl"),
    # run by the kernel
    S("chdir", "chdir", "chdir", lambda a: (_CWD, a[0])),
    # fchdir(fd): about a directory the program holds (no name, no rule), and
    # trapped only so that the lane sees every cwd move (MOVES_A_CWD)
    S("fchdir", "chdir", "cwdchange"),
    S("execve", "exec", "execveat", lambda a: (_CWD, a[0], a[1], a[2], 0)),
    S("execveat", "exec", "execveat"),
    # listings (the legacy getdents has another record layout: see serve/listing.py)
    S("getdents64", "list", "getdents64"),
    S("getdents", "list", "getdents64"),
    # sockets named by a path
    S("connect", "socket", "connect"),
    S("bind", "socket", "bind"),
    # datagrams to an address: sendto only with one (ONLY_IF_SET)
    S("sendto", "sendto", "sendto"),
    S("sendmsg", "sendmsg", "sendmsg"),
    S("sendmmsg", "sendmsg", "sendmmsg"),
    # calls that give the program another root directory, or move a thread
    # to another user or mount namespace (where not refused): unshare only
    # for a new user or mount namespace (ONLY_WHEN)
    S("chroot", "root", "rootchange"),
    S("pivot_root", "root", "rootchange"),
    S("setns", "root", "rootchange"),
    S("unshare", "root", "nschange"),
)  # fmt: skip
del S

#: Calls trapped only when an argument says so, as ``(name, (index, mask, value))``:
#: of all ioctls, those that change a file's attributes through an fd (the
#: kernel reads the command as 32 bits, so only those are compared); of all
#: unshares, those that move the thread to a new user or mount namespace
#: (Served.namespaces_pinned: the others change nothing a lookup sees).
ONLY_WHEN: tuple[tuple[str, tuple[int, int, int]], ...] = (
    *(
        ("ioctl", (1, 0xFFFFFFFF, cmd))
        for cmd in (abi.FS_IOC_SETFLAGS, abi.FS_IOC32_SETFLAGS, abi.FS_IOC_FSSETXATTR)
    ),
    *(("unshare", (0, flag, flag)) for flag in (surface.CLONE_NEWUSER, surface.CLONE_NEWNS)),
)

#: Calls trapped only when an argument is not 0, as ``(name, index)``: sendto
#: with an address (with NULL it is send(2), which names no file).
ONLY_IF_SET: tuple[tuple[str, int], ...] = (("sendto", 4),)

#: Calls that with a NULL path are a change through their fd: utimensat(fd,
#: NULL, ...) is futimens(fd), and so is futimesat(fd, NULL, ...)
#: (do_utimes() in fs/utimes.c; with AT_FDCWD, EFAULT). Trapped with a path
#: only, as ONLY_IF_SET, where the filter traps no ``change_fd`` (nothing
#: refuses a change through an fd).
FD_FORM_IF_NULL: tuple[tuple[str, int], ...] = (("utimensat", 1), ("futimesat", 1))

#: Every trapped call, by number.
BY_NR: dict[int, Syscall] = {e.nr: e for e in BY_NAME.values()}


def trapped(policy: Policy) -> frozenset[str]:
    """The system calls the filter must trap for ``policy`` (see :func:`needed_families`).

    Not those the filter refuses whatever their arguments (enforcing mode
    refuses ``chroot``...): the kernel never notifies them.
    """
    families = needed_families(policy)
    refused = {
        name
        for name, _, _, when in surface.refused_calls(policy)
        # Refused whatever its arguments, or for every argument it would be
        # trapped for (unshare for a new namespace, in enforcing mode).
        if not when or (_only_when(name) and set(when) >= _only_when(name))
    }
    return frozenset(
        name for name, e in BY_NAME.items() if e.family in families and name not in refused
    )


#: The calls by which a thread moves itself to another user or mount
#: namespace.
MOVES_A_THREAD = ("setns", "unshare")


#: The calls by which a thread's cwd may move (see ``struct cwds`` in
#: kernel/passthrough.c): chdir and fchdir; setns and unshare of a mount
#: namespace, which set the cwd in the new one; pivot_root, which moves
#: every cwd at the old root; execve and execveat, by which a thread of a
#: group takes its leader's tid (de_thread() in fs/exec.c).
MOVES_A_CWD = ("chdir", "fchdir", "setns", "unshare", "pivot_root", "execve", "execveat")


def cwds_seen(policy: Policy) -> bool:
    """Whether the filter of ``policy`` refuses or traps every call that may
    move a thread's cwd (:data:`MOVES_A_CWD`, unshare for a new mount
    namespace): the lane may then keep each thread's cwd open between its
    calls, looked up afresh after each such call it receives."""
    return _all_seen(policy, MOVES_A_CWD, surface.refused(policy))


def _all_seen(policy: Policy, calls: tuple[str, ...], refused: frozenset[str]) -> bool:
    """Whether the filter of ``policy`` traps or refuses (``refused``) each of ``calls``."""
    trap = trapped(policy)
    return all(name in trap or name in refused for name in calls)


def namespaces_seen(policy: Policy) -> bool:
    """Whether the filter of ``policy`` refuses or traps every call that moves
    a thread to another user or mount namespace (:data:`MOVES_A_THREAD`,
    unshare for those flags): then none moves unseen, and one seen unpins
    the namespaces (Served.namespaces_pinned, Decider.decide).

    A thread made in a new namespace (clone, clone3) is one the lane looks
    at afresh: its tid is no tid of a thread it has looked at that still
    runs (an entry of a thread gone answers ESRCH). But for one case: a
    thread of the group (CLONE_THREAD) made in a new mount namespace (legal
    without CLONE_FS) that calls execve takes the leader's struct pid
    (de_thread() in fs/exec.c), and with it the lane's entry for the
    leader (audit helper-34). Only enforcing mode compares mount
    namespaces, so there clone and clone3 must be refused too; a thread
    group never spans user namespaces (CLONE_THREAD with CLONE_NEWUSER,
    and unshare or setns of one in a process of several threads, are
    EINVAL), which is all virtualizing mode compares.

    A program's filter stacked on ours cannot answer such a call in our
    place: a filter of its own that returns ``SECCOMP_RET_ERRNO`` or kills
    makes sure the call is not made, and one that notifies would need a
    listener, which the kernel refuses while ours exists (``EBUSY``: no two
    filters of one thread's chain may have one, has_duplicate_listener() in
    kernel/seccomp.c)."""
    refused = surface.refused(policy)
    if policy.mode == "enforce" and not {"clone", "clone3"} <= refused:
        return False
    return _all_seen(policy, MOVES_A_THREAD, refused)


def _only_when(name: str) -> set[tuple[int, int, int]]:
    return {test for n, test in ONLY_WHEN if n == name}


def names(family: Family) -> frozenset[str]:
    """The calls of one family."""
    return frozenset(name for name, e in BY_NAME.items() if e.family == family)


def reads_of_open_files(policy: Policy) -> tuple[tuple[str, int, int, int], ...]:
    """The trapped reads to let through in the filter when they are about an open file.

    ``fstat(fd)`` is ``newfstatat(fd, "", AT_EMPTY_PATH)`` in glibc (2.33 and
    later) and ``statx(fd, "", AT_EMPTY_PATH)`` elsewhere: a third of what
    programs make trapped, and no rule is about an open file
    (:func:`~unotifyd.policy.paths.decide_on_fd`), so in virtualize mode a
    read with ``AT_EMPTY_PATH`` is not notified at all, unless its dirfd is
    ``AT_FDCWD``: that one is about the cwd, which is no open file of the
    program's and which the rules judge by its name, as enforcing mode does
    (a program started in a denied directory). ``(name, flag argument,
    AT_EMPTY_PATH, dirfd argument)`` for
    :func:`~unotifyd.kernel.filter.compile_filter`.

    What this relies on: BPF cannot read the path, so a read that has
    ``AT_EMPTY_PATH`` *and* a non-empty path (which the kernel then looks
    up) passes untrapped too where dirfd is a real fd, and sees the real
    file where a rule would show another. Nothing enforces a view in
    virtualize mode (CONTINUE lets a racing thread swap a path just as
    well); enforcing mode traps every such read, and answers it from our
    copy of the fd.
    """
    if policy.mode == "enforce":
        return ()
    out = []
    for name, entry in BY_NAME.items():
        operation = entry.operation
        if entry.at_form is not None or operation.kind != "path" or len(operation.paths) != 1:
            continue
        spec = operation.paths[0]
        if spec.role == "read" and spec.empty_flag_arg is not None:
            assert spec.dirfd_arg is not None, name  # AT_EMPTY_PATH is about a dirfd
            out.append((name, spec.empty_flag_arg, abi.AT_EMPTY_PATH, spec.dirfd_arg))
    return tuple(out)


def short_digest(what: object) -> str:
    """16 hex digits naming ``what`` (made of JSON's types): of SHA-256 over
    its compact JSON, the same in every run and every daemon."""
    # Not at import: launch never needs them (hashlib ~1 ms).
    import hashlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    return hashlib.sha256(json.dumps(what, separators=(",", ":")).encode()).hexdigest()[:16]


#: Part of every FilterSpec.digest: one more whenever compile_filter comes to
#: make another filter of the same spec (a fix in how it is compiled), so
#: that a program whose filter was made before is told from one made after.
DIGEST_FORMAT = 1


@record(frozen=True, slots=True)
class FilterSpec:
    """What the seccomp filter of a policy does with each call (hashable: filters are cached)."""

    trapped: frozenset[str]
    refused: tuple[RefusedCall, ...]
    unless: tuple[tuple[str, int, int, int], ...]
    only: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    only_if_set: tuple[tuple[str, int], ...] = ()

    def compile(self) -> bytes:
        return compile_filter(
            self.trapped, self.refused, self.unless, self.only, self.only_if_set
        )

    def digest(self) -> str:
        """What this filter does, as 16 hex digits: the calls it traps, refuses
        and lets through after all, not how it is compiled.

        A daemon stores it with each program's listener (daemon/server.py,
        sandbox_id), so that the daemon that takes the listener back after a
        restart can tell whether the program's filter is still the one its
        profile needs.
        """
        return short_digest([DIGEST_FORMAT, sorted(self.trapped), sorted(self.refused),
                             sorted(self.unless), sorted(self.only), sorted(self.only_if_set)])


def filter_spec(policy: Policy, *, policy_may_change: bool = False) -> FilterSpec:
    """The filter ``policy`` needs: what it traps, refuses, and lets through after all.

    ``policy_may_change``: the program may be served later under another
    policy than the one its filter is made for (a daemon's profile, which a
    restart reloads: daemon/handover.py). A change through an fd is then
    trapped wherever anything is, so that a read-only tree or a content file
    added to the profile refuses it too (audit helper-54: a fchmod through
    an fd went through a read-only tree added so). The other families are
    the policy's own, as they were before ``change_fd`` was one.
    """
    trap = trapped(policy)
    if policy_may_change and trap:
        trap = trap | names("change_fd")
    unless = tuple(u for u in reads_of_open_files(policy) if u[0] in trap)
    only = tuple((name, test) for name, test in ONLY_WHEN if name in trap)
    only_if_set = tuple((name, index) for name, index in ONLY_IF_SET if name in trap)
    if not trap & names("change_fd"):
        only_if_set += tuple((name, i) for name, i in FD_FORM_IF_NULL if name in trap)
    return FilterSpec(trap, surface.refused_calls(policy), unless, only, only_if_set)
