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

Runs in the serving thread, or in a worker thread where it may block,
acting with the program's credentials (:func:`~unotifyd.kernel.creds.acting_as`), so the
kernel checks permissions as for the program: a root supervisor never
stats, changes or lists for a program what it could not itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from collections.abc import Callable

from ..calls.decode import PathArg, PathCall, names_a_directory
from ..calls.ops import Outcome, Place
from ..calls.registry import OPERATIONS
from ..kernel import abi
from ..kernel.creds import Credentials, acting_as, as_ourselves
from ..kernel.dirents import take_fd
from ..kernel.errors import BadArgument, ProgramGone
from ..kernel.kick import Stop
from ..kernel.opener import Start, parent_from
from ..kernel.program import is_magic_link, openat2, opened_names, read_ids
from ..policy import Policy
from ..policy.decision import Fail, Found
from ..policy.paths import (
    MapPath,
    OnFd,
    PathRequest,
    PerformPath,
    RefuseChange,
    Role,
    Target,
    decide_path,
    judge_too_deep,
    link_out_of_read_only,
    moves_a_rule,
    refuse_change_errno,
)
from ..record import replace


class _Acting:
    """What an operation may ask for while it runs: the credentials, and program fds.

    ``still_valid`` is the call's ``ID_VALID`` check: our copy of a program's
    fd is of the trapped thread's only while its call is pending (a tid is
    not reused while it waits for us).
    """

    def __init__(
        self,
        creds: Credentials,
        tid: int,
        still_valid: Callable[[], bool],
        stack: contextlib.ExitStack,
        stop: threading.Event | None = None,
    ) -> None:
        self.creds, self.tid, self._still_valid, self._stack = creds, tid, still_valid, stack
        self._stop = stop

    def interrupted(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def abandoned(self) -> bool:
        return isinstance(self._stop, Stop) and self._stop.ended

    def start_of(self, arg: PathArg) -> Start | None:
        """Where ``arg``'s name began, if it is a relative one (see Start)."""
        return Start.of(self.tid, arg.dirfd, arg.path, self._still_valid)

    def take(self, fd: int) -> int:
        """Our copy of the trapped thread's ``fd`` (closed with the stack)."""
        with as_ourselves():  # see there: pidfd_getfd checks our real uid
            ours = take_fd(self.tid, fd)
        self._stack.callback(os.close, ours)
        if not self._still_valid():
            raise ProgramGone("notification no longer valid")
        return ours


_ACCESS_OPS = frozenset({"faccessat2"})


def perform_path(
    call: PathCall,
    d: PerformPath,
    creds: Credentials,
    root_fd: int | None,
    *,
    policy: Policy | None,
    tid: int,
    still_valid: Callable[[], bool],
    stop: threading.Event | None = None,
) -> Outcome:
    """Perform ``call`` as ``d`` says, with ``creds``; OSErrors become ``-errno`` outcomes.

    ``policy`` is what a redirect's target is decided again by (``d.recheck``);
    once ``stop`` is set, a wait interrupted ends the call (ops.until_interrupted).
    """
    if call.op == "truncate" and call.args[2] >= 1 << 63:
        # A negative length, refused before the lookup (do_sys_truncate() in
        # fs/open.c: "if (length < 0) return -EINVAL;"), read-only or not.
        return Outcome(-errno.EINVAL)
    # access(2) checks with the real ids unless asked for AT_EACCESS: the
    # acting thread's fs ids become the real ones (see creds.real()).
    real = call.op in _ACCESS_OPS and not call.args[3] & abi.AT_EACCESS and creds.ruid >= 0
    with acting_as(creds.real() if real else creds):
        try:
            if d.refuse is not None:
                starts = tuple(Start.of(tid, a.dirfd, a.path, still_valid) for a in call.paths)
                return Outcome(-_refuse_errno(call, d.refuse, d.resolved, root_fd, starts))
            with contextlib.ExitStack() as stack:
                acting = _Acting(creds, tid, still_valid, stack, stop)
                recheck = policy if d.recheck else None
                # A link's new name, for the judgement of a source reached
                # through a magic link (see _judge).
                link_to = _program_name(d.targets[1]) if call.op == "linkat" else None
                places = [
                    _place(
                        call.op,
                        arg,
                        t,
                        root_fd,
                        recheck=recheck,
                        acting=acting,
                        stack=stack,
                        link_to=link_to if i == 0 else None,
                    )
                    for i, (arg, t) in enumerate(zip(call.paths, d.targets, strict=True))
                ]
                perform = OPERATIONS[call.op].perform
                assert perform is not None
                if _in_own_fd_directory(call, d, tid, root_fd):
                    with as_ourselves():
                        return perform(call, places, acting)
                return perform(call, places, acting)
        except OSError as e:
            return Outcome(-(e.errno or errno.EIO))
        except BadArgument as e:  # an fd the program does not have
            return Outcome(-e.errno)


def _place(
    op: str,
    arg: PathArg,
    target: Target,
    root_fd: int | None,
    *,
    recheck: Policy | None,
    acting: _Acting,
    stack: contextlib.ExitStack,
    link_to: str | None = None,
) -> Place:
    if isinstance(target, OnFd):
        return Place(acting.take(target.fd), b"", arg.follow, itself=True)
    if recheck is not None and target.recheck:
        target = replace(_recheck(recheck, op, arg, target.path), link_text=target.link_text)
    dirfd, name = _open_parent(target, root_fd, acting.start_of(arg))
    stack.callback(os.close, dirfd)
    if not name:
        # The directory itself, reached from the program's start ("." or
        # ".." there): acted on through our fd, never by a name looked up
        # again (see parent_from). readlink would read our magic link: a
        # directory is no symbolic link (EINVAL, readlink(2)).
        if op == "readlinkat":
            raise OSError(errno.EINVAL, "not a symbolic link")
        return _through_our_fd(dirfd, stack, read_only=target.read_only)
    if recheck is not None and (arg.follow or arg.itself) and is_magic_link(target.path):
        # Through a magic link (/proc/PID/fd/N, a removed cwd's
        # /proc/PID/cwd): what it leads to now is judged, not the name
        # decided on (see _judge). Nothing below one is ever acted on: see
        # Decider._below_a_nameless_link.
        pinned = openat2(dirfd, name, os.O_PATH | os.O_CLOEXEC, 0, 0)
        stack.callback(os.close, pinned)
        _judge(recheck, op, arg.role, pinned, root_fd=root_fd, link_to=link_to)
        if not arg.itself:
            return Place(pinned, b"", True, itself=True)
        # The cwd itself (AT_FDCWD and an empty name) where it has no name
        # any more (removed): the kernel looks the empty name up from the
        # cwd, following nothing and refusing nothing whatever the call's
        # follow flag, where for a dirfd of 0 or more some calls take the
        # fd instead (fdget(), which refuses an O_PATH fd: EBADF from
        # path_getxattrat() in fs/xattr.c, file_getattr in fs/file_attr.c).
        # So the call is made by a name that leads to the same file, never
        # on the fd (see _through_our_fd).
        return _through_our_fd(pinned, stack)
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
    return Place(
        dirfd,
        name,
        follow or target.content,
        content=target.content,
        link_text=text,
        read_only=target.read_only or target.content,
    )


def _through_our_fd(fd: int, stack: contextlib.ExitStack, *, read_only: bool = False) -> Place:
    """A place for the file our ``fd`` refers to, by a name that leads to it:
    "N" in our /proc/self/fd, followed. Not the fd itself with an empty
    name: for a dirfd of 0 or more some calls take the fd (fdget(), which
    refuses an O_PATH fd: EBADF from path_getxattrat() in fs/xattr.c,
    file_getattr in fs/file_attr.c), where the kernel looks up a name."""
    fds = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack.callback(os.close, fds)
    return Place(fds, str(fd).encode(), True, read_only=read_only)


def _judge(
    policy: Policy,
    op: str,
    role: Role,
    fd: int,
    *,
    root_fd: int | None,
    link_to: str | None,
) -> None:
    """Raise OSError with the rules' errno unless they let call ``op`` act
    on the file ``fd`` (ours) by the names it has now (enforcing mode).

    The path was decided on as a magic link: the file had no name (a
    pipe, a deleted file, a removed cwd). But what the link
    leads to is the program's to change before we follow it (a ``dup2``
    onto N, an ``fchdir``): a file of a read-only tree would then be
    changed through its own fd's link. So what we opened is asked about,
    as a whole call: a link's source (``link_to`` its new name) may not
    leave a read-only tree, nor a rename carry a rule's path along.
    """
    try:
        names = opened_names(fd, root_fd)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        deep = judge_too_deep(policy, role, link_out=link_to is not None)
        if deep is not None:
            raise OSError(deep.errno, os.strerror(deep.errno)) from None
        return
    for now in names:
        again = decide_path(policy, PathRequest(op, role, now))
        if isinstance(again, Fail):
            raise OSError(again.errno, os.strerror(again.errno))
        if isinstance(again, RefuseChange):
            err = refuse_change_errno(op, again.role, found_of(os.fstat(fd).st_mode))
            raise OSError(err, os.strerror(err))
        if isinstance(again, MapPath) and again.path != now:
            # A rule sends that name elsewhere: not the file the link gives.
            raise OSError(errno.EACCES, "a file the rules send elsewhere")
        refused = (
            link_out_of_read_only(policy, now, link_to) if link_to is not None else None
        ) or (moves_a_rule(policy, now) if op == "renameat2" else None)
        if refused is not None:
            raise OSError(refused.errno, os.strerror(refused.errno))


_FD_ENTRY = re.compile(r"^/proc/(\d+)(?:/task/\d+)?/fd/[^/]+$")


def _in_own_fd_directory(call: PathCall, d: PerformPath, tid: int, root_fd: int | None) -> bool:
    """Whether ``call`` makes, removes or renames an entry of the program's
    own ``/proc/PID/fd`` directory: then it is made as ourselves.

    The kernel lets a process write there as the directory's owner
    (proc_fd_permission() in fs/proc/fd.c: its own thread group), which a
    thread of ours acting with its credentials is not; the call would fail
    with EACCES where the program's own fails later, EPERM or ENOTDIR. No
    credentials can change anything there: the directory has no create,
    unlink, rename, link or mkdir operations at all.
    """
    changing = any(a.role in ("create", "remove", "replace") for a in call.paths)
    if root_fd is not None or not changing:
        return False
    pids = set()
    for t in d.targets:
        match = _FD_ENTRY.match(t.path) if isinstance(t, MapPath) and t.in_program_root else None
        if match is None:
            return False
        pids.add(int(match.group(1)))
    # The thread group is read (/proc/TID/status, ~15 µs) only for such a
    # call: most calls that change a name are not, and need not pay for it.
    return pids == {read_ids(tid, innermost=False)[0]}


def _program_name(target: Target) -> str | None:
    """The program's name for what ``target`` acts on, if it is one of its own."""
    if isinstance(target, MapPath) and target.in_program_root:
        return target.path
    return None


def _recheck(policy: Policy, op: str, arg: PathArg, path: str) -> MapPath:
    """Where a redirect's target really leads, decided again (enforcing mode).

    A symlink in a target tree may point at a denied file: resolve the
    target (as the program: this runs acting as it), ask the policy about
    the result, and use that resolved path, refusing any symlink swapped in
    since. Raises OSError with the errno to answer.
    """
    real = realpath(path) if arg.follow else realpath_parent(path)
    if real is None:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    again = decide_path(policy, PathRequest(op, arg.role, real))
    if isinstance(again, Fail):
        raise OSError(again.errno, os.strerror(again.errno))
    if isinstance(again, RefuseChange):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    # As for opens, a target is not redirected again: only what would
    # deny it counts.
    return MapPath(real, no_symlinks=True)


def _split(path: str) -> tuple[str, bytes]:
    parent, _, name = path.rpartition("/")
    return parent or "/", os.fsencode(name) or b"."


def _open_parent(
    target: MapPath, root_fd: int | None, start: Start | None = None
) -> tuple[int, bytes]:
    """Open ``target``'s parent directory (``O_PATH``); return it and the last component.

    ``start``: where the program's relative name for ``target`` began, to
    walk from where the walk from the root is refused (see parent_from);
    then the name is empty where the directory given is ``target`` itself.
    """
    try:
        return _open_parent_by_name(target, root_fd)
    except PermissionError:
        ours = target.in_program_root and root_fd is None and target.confine is None
        if start is None or not ours:
            raise
        resolve = abi.RESOLVE_NO_SYMLINKS | abi.RESOLVE_NO_MAGICLINKS if target.no_symlinks else 0
        return parent_from(start, target.path, resolve)


def _open_parent_by_name(target: MapPath, root_fd: int | None) -> tuple[int, bytes]:
    parent, name = _split(target.path)
    if parent != "/proc" and not parent.startswith("/proc/"):
        # "parent/.": the lookup of "." checks search permission on the
        # parent (may_lookup() in link_path_walk(), fs/namei.c), as the
        # call's own lookup of ``name`` there will, acting as the program;
        # an O_PATH open of the parent itself checks none. So a parent the
        # program may not search is refused here, where _open_parent can
        # walk from the program's start instead. Not in /proc, where a
        # process's own directories let in its own thread group whoever it
        # is (proc_fd_permission() in fs/proc/fd.c), which we acting as it
        # are not: a call there may be made as ourselves
        # (_in_own_fd_directory), and the kernel checks its own way then.
        parent = parent.rstrip("/") + "/."
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


def what_is(path: str, root_fd: int | None, start: Start | None = None) -> Found:
    """What the program's resolved ``path`` is (see :data:`~unotifyd.policy.Found`).

    Looked up as the calling thread's credentials allow (run it acting as
    the program), in the program's root with ``root_fd``, refusing symlinks
    on the way (the path was resolved already); a final one counts as a
    file. Raises OSError for whatever else fails the lookup first (EACCES,
    ENOTDIR for a file on the way...), the errno the kernel gives then.
    ``start``: where the program's relative name for ``path`` began (see
    _open_parent).
    """
    target = MapPath(path, in_program_root=True, no_symlinks=True)
    try:
        dirfd, name = _open_parent(target, root_fd, start)
    except FileNotFoundError:
        return "no-parent"
    try:
        # No name: the directory itself (see _open_parent).
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False) if name else os.fstat(dirfd)
    except FileNotFoundError:
        return "missing"
    finally:
        os.close(dirfd)
    return found_of(st.st_mode)


def found_of(st_mode: int) -> Found:
    """What a file of mode ``st_mode`` is to a read-only mount (see Found):
    a directory, a regular file or symbolic link, or a special file."""
    if stat.S_ISDIR(st_mode):
        return "dir"
    if stat.S_ISREG(st_mode) or stat.S_ISLNK(st_mode):
        return "file"
    return "special"


def _refuse_errno(
    call: PathCall,
    d: RefuseChange,
    resolved: tuple[str | None, ...],
    root_fd: int | None,
    starts: tuple[Start | None, ...],
) -> int:
    """Look at the call's paths and pick the errno a read-only mount gives
    (see RefuseChange); ``starts``: where each path's name began (see what_is)."""
    others = tuple(
        what_is(p, root_fd, start) if p is not None and p != d.path else "file"
        for p, start in zip(resolved, starts, strict=True)
    )
    start = starts[resolved.index(d.path)] if d.path in resolved else None
    found: Found = "file" if d.exists else what_is(d.path, root_fd, start)
    return refuse_change_errno(call.op, d.role, found, others)


def realpath(path: str) -> str | None:
    """``os.path.realpath``, or None if links keep changing under it.

    A link replaced by a directory between its ``lstat`` and its
    ``readlink`` makes ``realpath`` fail (EINVAL); tried again, it sees a
    settled tree, unless somebody is swapping on purpose.
    """
    for _ in range(3):
        try:
            return os.path.realpath(path, strict=False)
        except OSError:
            continue
    return None


def realpath_parent(path: str) -> str | None:
    """:func:`_realpath` of the directory of ``path``, with its last component kept."""
    parent, _, name = path.rpartition("/")
    real = realpath(parent or "/")
    if real is None:
        return None
    return real.rstrip("/") + "/" + name if name else real
