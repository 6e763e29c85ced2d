"""The synchronous core of the supervisor: decide and answer one notification.

No trio here: :mod:`unotifyd.serve.bootstrap` serves a launched program's
first calls with it while trio is not imported yet, and the trio
:class:`~unotifyd.serve.supervisor.Supervisor` builds on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from ..kernel import abi
from ..kernel.creds import CredentialReader, Credentials, acting_as
from ..kernel.dirents import read_listing, take_fd
from ..kernel.errors import BadArgument, TargetGone
from ..kernel.listener import Listener, Notification
from ..kernel.opener import may_create, open_as, runnable_errno
from ..kernel.rawsys import syscall
from ..kernel.sched import pin_to_our_cpu
from ..kernel.target import (
    MemoryReader,
    PathResolver,
    status_field,
    write_memory,
)
from ..policy import (
    Continue,
    Decision,
    EmulateOpen,
    Fail,
    OpenRequest,
    Policy,
    Private,
    RefuseWrite,
    Return,
    decide_open,
    refuse_write_errno,
)
from ..policy.paths import (
    EXEC_NOT_ALLOWED,
    MapPath,
    PathDecision,
    PathRequest,
    RefuseChange,
    decide_path,
    hidden_names,
)
from ..policy.paths import combine as combine_paths
from .handlers import HANDLERS, OpenCall, int_arg
from .pathcalls import LISTINGS, PathArg, PathCall, decode_path_call, names_a_directory
from .pathwork import FdPlace, PathWork, Target, what_is
from .trace import TraceEvent, Tracer

if TYPE_CHECKING:
    import trio

# A handler that crashes fails the call: never CONTINUE on an error.
_INTERNAL_ERROR_ERRNO = errno.EPERM


@dataclass
class Stats:
    """Counters of one served program (or of the whole supervisor)."""

    notifications: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    syscalls: Counter[str] = field(default_factory=Counter)
    gone: int = 0
    internal_errors: int = 0


@dataclass
class Pending:
    """What a notification has become by the time it is answered (for the trace)."""

    notif: Notification
    call: OpenCall | None = None
    path_call: PathCall | None = None
    resolved: str | None = None
    decision: Decision | Rewrite | Listing | PathWork | None = None
    own_root: bool = False  # the program has a root directory of its own (a container)
    policy: Policy | None = None  # the policy it was decided by (rule paths in its root)
    # The calling thread's credentials, read once: every lookup and act made
    # for it uses them (kernel/creds.py).
    creds: Credentials | None = None


def _refuse_errno(d: RefuseWrite, creds: Credentials, root_fd: int | None) -> int:
    """Look at what ``d.path`` is, as the program, and pick a read-only mount's errno."""
    try:
        with acting_as(creds):
            found = what_is(d.path, root_fd)
    except OSError as e:
        # EACCES, ENOTDIR...: the path lookup fails before any write check.
        return e.errno or errno.EIO
    return refuse_write_errno(d.flags, found)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Let an ``execve`` or ``chdir`` through, after writing ``path`` over the program's.

    Neither call can be performed by the supervisor for the program: the
    kernel must run it. A redirect then puts its target's name in place of
    the program's path, in the program's memory, and answers CONTINUE.
    ``path`` None writes nothing. ``guard`` (enforcing mode, exec) allows
    the CONTINUE only if no other thread can rewrite the path after our
    check: see :func:`_alone_in_memory`.
    """

    arg: PathArg
    path: str | None
    reason: str = ""
    guard: bool = False
    # chdir only: the program's own name for the directory (resolved), and
    # whether to rather keep it when it exists (a private tree: the
    # scratch directory's name is ours, not the program's to see).
    source: str | None = None
    keep_source: bool = False
    directory: bool = False  # chdir: the target must be a directory


@dataclass(frozen=True, slots=True)
class Listing:
    """Answer a ``getdents64`` ourselves, leaving out the ``hidden`` names."""

    fd: int
    addr: int
    count: int
    hidden: frozenset[bytes]
    reason: str = ""


Work = EmulateOpen | RefuseWrite | PathWork


@dataclass(frozen=True, slots=True)
class Job:
    """An emulation to perform, with what it needs in a worker thread."""

    decision: Work
    creds: Credentials
    root_tid: int | None  # open the program's names in this thread's root
    listener: Listener
    nid: int
    may_block: bool  # a FIFO or a device, by a look before the open
    policy: Policy | None = None  # to decide again where a redirect really leads (recheck)


def _realpath(path: str) -> str | None:
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


def _perform_in(
    d: EmulateOpen | RefuseWrite,
    creds: Credentials,
    root_fd: int | None,
    nonblocking: bool,
    recheck: Policy | None = None,
) -> int | None:
    """The open (or look) of ``d``: an fd of ours, ``-errno``, or None if it would block.

    With ``recheck`` (enforcing mode, a redirect's target), the target is
    resolved first and the policy asked again about where it really leads: a
    symlink in a target tree may point at a denied file. What is then opened
    is that resolved path, refusing any symlink swapped in since (ELOOP).
    """
    if isinstance(d, RefuseWrite):
        return -_refuse_errno(d, creds, root_fd)
    path, no_symlinks = d.path, d.no_symlinks
    if recheck is not None:
        # As the program: following links where it may not look would tell
        # it (by the errno of the open that follows) what lies there.
        with acting_as(creds):
            resolved = _realpath(d.path)
        if resolved is None:
            return -errno.ELOOP
        path, no_symlinks = resolved, True
        flags = d.flags | (os.O_CLOEXEC if d.cloexec else 0)
        again = decide_open(recheck, OpenRequest("open", path, flags, d.mode))
        if isinstance(again, Fail):
            return -again.errno
        if isinstance(again, RefuseWrite):
            return -_refuse_errno(again, creds, None)
    # O_NONBLOCK guards against a regular file swapped for a FIFO after our
    # stat: the open then returns at once instead of stalling every program
    # (fifo(7)). It is cleared again before injection unless the program
    # asked for it, since the program can see it (F_GETFL).
    extra = 0
    if nonblocking and not d.flags & (os.O_NONBLOCK | os.O_PATH):
        extra = os.O_NONBLOCK
    root = root_fd if d.in_program_root else None
    try:
        fd = open_as(
            creds,
            path,
            d.flags | extra,
            d.mode,
            no_symlinks=no_symlinks,
            root_fd=root,
            beneath=d.confine,
        )
    except OSError as e:
        if e.errno == errno.ENOENT and d.create_errno:
            return -d.create_errno
        if e.errno == errno.ENXIO and extra:
            return None  # A FIFO without a reader, opened O_WRONLY|O_NONBLOCK.
        return -(e.errno or errno.EIO)
    try:
        if d.exclusive:
            os.close(fd)
            return -errno.EEXIST
        if extra:
            st_mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode)):
                os.close(fd)
                return None
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if d.flags & os.O_PATH:
            return _readable_instead(fd, creds)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _readable_instead(path_fd: int, creds: Credentials) -> int:
    """An fd to inject in place of the ``O_PATH`` fd ``path_fd`` (closed here); or ``-errno``.

    ``SECCOMP_IOCTL_NOTIF_ADDFD`` takes its source fd with ``fget()``,
    which refuses ``O_PATH`` files (EBADF): such an fd cannot be injected.
    A regular file or a directory is reopened for reading instead, as the
    program (through our ``/proc/self/fd`` name for the very same file):
    the program gets an fd that does all an ``O_PATH`` one does, though it
    needs read permission and ``F_GETFL`` shows ``O_RDONLY``. Anything
    else (a device, whose open may have effects) is refused.
    """
    try:
        mode = os.fstat(path_fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return -errno.EOPNOTSUPP
        flags = os.O_RDONLY | os.O_NOCTTY | (os.O_DIRECTORY if stat.S_ISDIR(mode) else 0)
        try:
            return open_as(creds, f"/proc/self/fd/{path_fd}", flags, 0)
        except OSError as e:
            return -(e.errno or errno.EACCES)
    finally:
        os.close(path_fd)


class Handoff:
    """Hands a worker thread's result to its trio task, or disposes of it.

    With ``abandon_on_cancel`` trio forgets a thread whose task was
    cancelled, and drops whatever it returns later. An fd returned then would
    leak; whichever side comes second — the thread finishing, or the task
    abandoning it — closes it, under a lock so that it happens exactly once.
    Only an emulated open returns an fd (``fds``); a path call returns the
    call's own result (a length, a watch descriptor), which is no fd of ours
    and must never be closed: closing "0" closed the daemon's stdin.
    """

    def __init__(self, *, fds: bool) -> None:
        self._fds = fds
        self._lock = threading.Lock()
        self._abandoned = False
        self._result: int | None = None
        self._done = False

    def run(self, fn: Callable[[], int | None]) -> int | None:
        result = fn()
        with self._lock:
            if self._abandoned:
                self._dispose(result)
                return None
            self._done = True
            self._result = result
        return result

    def abandon(self) -> bool:
        """Give up on the result; True if the thread is still running."""
        with self._lock:
            self._abandoned = True
            if self._done:
                self._dispose(self._result)
                self._result = None
            return not self._done

    def _dispose(self, result: int | None) -> None:
        if self._fds and result is not None and result >= 0:
            os.close(result)


def unblock_fifo(job: Job) -> None:
    """Let the abandoned open of ``job`` return, if it waits on a FIFO, by opening its other end.

    Opening a FIFO blocks until the other end is opened too (fifo(7)); a
    non-blocking open of the other end never blocks and releases it. The
    released open's fd is closed by :class:`Handoff`. Only a FIFO can be
    released this way; a thread blocked in a device's open stays blocked.

    Both opens are made as the program, as its own open was: the path is
    the program's to change meanwhile, and whatever it leads to now, we
    open nothing the program could not have opened itself. The other end
    is the very file looked at (a reopen of the ``O_PATH`` fd's
    ``/proc/self/fd`` name), so no swap between the look and the open can
    make us open a device.
    """
    d = job.decision
    if not isinstance(d, EmulateOpen):
        return
    try:
        # Job.root_tid is set only for a name in the program's own root.
        root_fd = _open_root(job.root_tid)
    except TargetGone:
        return  # Its root went with it; the open stays blocked (see above).
    try:
        pinned = open_as(
            job.creds, d.path, os.O_PATH, 0, no_symlinks=d.no_symlinks, root_fd=root_fd,
            beneath=d.confine,
        )  # fmt: skip
        try:
            if not stat.S_ISFIFO(os.fstat(pinned).st_mode):
                return
            other = os.O_RDONLY if d.flags & os.O_ACCMODE == os.O_WRONLY else os.O_WRONLY
            os.close(open_as(job.creds, f"/proc/self/fd/{pinned}", other | os.O_NONBLOCK, 0))
        finally:
            os.close(pinned)
    except OSError:
        pass  # Gone, or already released (ENXIO: no reader left).
    finally:
        if root_fd is not None:
            os.close(root_fd)


def _open_root(root_tid: int | None) -> int | None:
    """An ``O_PATH`` fd of the root directory of thread ``root_tid`` (None: ours, no fd).

    Opened as ourselves: with the program's credentials we might not be
    allowed to look at its ``/proc`` entry. Raises TargetGone.
    """
    if root_tid is None:
        return None
    try:
        return os.open(f"/proc/{root_tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone("thread is gone") from None


def _realpath_parent(path: str) -> str | None:
    """:func:`_realpath` of the directory of ``path``, with its last component kept."""
    parent, _, name = path.rpartition("/")
    real = _realpath(parent or "/")
    if real is None:
        return None
    return real.rstrip("/") + "/" + name if name else real


def _alone_in_memory(tid: int, *, vfork_ok: bool) -> bool:
    """True if no other running thread can write to ``tid``'s memory now.

    CONTINUE lets the kernel read the path again from the program's memory
    (seccomp_unotify(2), "Design goals"): safe only if no other thread of
    the program runs in that memory meanwhile. That holds for a process of
    one thread that shares its memory with nobody — or, with ``vfork_ok``,
    only with a vfork parent of one thread, which is suspended until the
    exec (vfork(2)). Threads made by clone(CLONE_VM) without CLONE_THREAD
    in another branch of the process tree are not seen: they are rare,
    and documented as a limit.
    """
    if status_field(tid, b"Threads") != b"1":
        return False
    try:
        parent = _parent_sharing_memory(tid)
    except (OSError, ValueError):
        return False  # No parent to compare with (reaped, other pid namespace): be strict.
    if parent is None:
        return True
    if not vfork_ok:
        return False
    try:
        return status_field(parent, b"Threads") == b"1"
    except TargetGone:
        return False


def _parent_sharing_memory(tid: int) -> int | None:
    """``tid``'s parent if the two share one address space (a vfork child's), else None.

    Raises OSError or ValueError when there is no parent to compare with.
    """
    ppid = int(status_field(tid, b"PPid"))
    # kcmp(2): 0 means the two share one address space.
    return ppid if syscall(abi.SYS_KCMP, tid, ppid, abi.KCMP_VM, 0, 0) == 0 else None


def _vfork_parent(tid: int) -> int | None:
    """The parent whose memory ``tid`` shares (a vfork child's), or None (also if unknown)."""
    try:
        return _parent_sharing_memory(tid)
    except (OSError, ValueError):
        return None


class _Restorer(threading.Thread):
    """Puts back what a path rewrite overwrote in a vfork parent's memory.

    A vfork child runs in its parent's memory until its exec replaces it
    (vfork(2)), so the path we rewrote for its exec is the parent's string.
    The parent stays suspended until then; once the child's memory is no
    longer the parent's (kcmp(2) KCMP_VM) — or the child is gone — the old
    bytes are written back. The parent resumes at that same moment, so
    there is a window of microseconds in which it could read the new
    path; shells and posix_spawn do not read that string again.
    """

    _POLL_S = 0.0002
    _GIVE_UP_S = 10.0

    def __init__(self, child: int, parent: int, addr: int, old: bytes, new: bytes) -> None:
        super().__init__(name=f"unotifyd-restore-{child}", daemon=True)
        self.child, self.parent, self.addr, self.old, self.new = child, parent, addr, old, new
        # Opened now, while the parent is suspended in vfork: bound to its memory.
        self.mem = os.open(f"/proc/{parent}/mem", os.O_RDWR | os.O_CLOEXEC)

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self._GIVE_UP_S
            while time.monotonic() < deadline:
                try:
                    same = syscall(abi.SYS_KCMP, self.child, self.parent, abi.KCMP_VM, 0, 0) == 0
                except OSError:
                    same = False  # One of them is gone.
                if not same:
                    break
                time.sleep(self._POLL_S)
            with contextlib.suppress(OSError):
                if os.pread(self.mem, len(self.new), self.addr) == self.new:
                    os.pwrite(self.mem, self.old, self.addr)
        finally:
            os.close(self.mem)


_OUR_PID = os.getpid()


def _fitting_name(d: Rewrite, tid: int, own_root: bool) -> bytes | None:
    """The shortest name of ``d.path`` that fits over the program's string, NUL included.

    The target's absolute name, or its name relative to the program's cwd
    (both name the same file: the cwd read from /proc is free of symlinks,
    so each ``..`` is its lexical parent), which may be the shorter even for
    an absolute path of the program's. Not relative to a dirfd, which
    another thread may close and reuse meanwhile. None if neither fits.
    A trailing ``/`` of the program's path is kept: the kernel then insists
    on a directory, as it would have.
    """
    assert d.path is not None
    slash = "/" if d.arg.path.endswith(b"/") and not d.path.endswith("/") else ""
    names = [d.path + slash]
    if d.arg.dirfd == abi.AT_FDCWD and not own_root:
        try:
            cwd = os.readlink(f"/proc/{tid}/cwd")
        except (FileNotFoundError, ProcessLookupError):
            raise TargetGone(f"thread {tid} is gone") from None
        if cwd.startswith("/"):  # not "... (deleted)" or unreachable
            names.append(os.path.relpath(d.path, cwd) + slash)
    fitting = [b for b in map(os.fsencode, names) if len(b) <= len(d.arg.path)]
    return min(fitting, key=len) + b"\0" if fitting else None


def _supervisors_own(path: str | None, *, opening: bool = True) -> bool:
    """True for ``/proc/PID/...`` of a thread of this very process (the supervisor).

    Opens and looks at /proc made *for* a program run in our threads, and
    the kernel's ptrace access check that guards /proc/PID/fd, cwd, root,
    mem... always passes within one thread group, whatever our thread's
    fsuid (__ptrace_may_access, kernel/ptrace.c). A program must never
    reach the supervisor's own fds or memory that way: refuse, as the
    kernel refuses a non-root program another user's process.

    Not ``opening`` (stat, access...): only the links and directories, whose
    lookup is what the kernel guards; ``stat`` of ``environ`` or ``mem``
    works for anyone, and only opening them needs the ptrace check.
    """
    if path is None or not path.startswith("/proc/"):
        return False
    parts = path[6:].split("/")
    if len(parts) >= 4 and parts[1] == "task":
        parts = parts[2:]  # /proc/PID/task/TID/...: the thread's own entries
    guarded = _PTRACE_GUARDED if opening else _PTRACE_GUARDED_LOOKUPS
    if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in guarded:
        return False
    pid = int(parts[0])
    return pid == _OUR_PID or os.path.exists(f"/proc/{_OUR_PID}/task/{pid}")


# The /proc/PID entries behind a ptrace access check (proc(5)); the others
# (cmdline, status, stat...) are open to everyone anyway.
_PTRACE_GUARDED = frozenset(
    {
        "fd", "fdinfo", "cwd", "root", "exe", "environ", "mem", "map_files", "auxv",
        "syscall", "stack", "pagemap", "maps", "smaps", "smaps_rollup", "numa_maps",
        "io", "personality", "timers", "ns",
    }
)  # fmt: skip
_PTRACE_GUARDED_LOOKUPS = frozenset({"fd", "fdinfo", "cwd", "root", "exe", "map_files", "ns"})


@dataclass(eq=False)
class Served:
    """One listener being served: its policy, its name in traces, its counters."""

    listener: Listener
    policy: Policy
    name: str = ""
    stats: Stats | None = None  # besides the supervisor's own totals
    # The policy with its rule paths resolved, per root directory of the
    # programs (None: the supervisor's own).
    policies: dict[tuple[int, int] | None, Policy] = field(default_factory=dict)
    # Its share of the threads for opens that may block (made in trio).
    blocking: trio.CapacityLimiter | None = None
    # Calls waiting in worker threads, by notification id: the scope to
    # cancel once the call is abandoned (see Supervisor._watch_abandoned).
    waiting: dict[int, trio.CancelScope] = field(default_factory=dict)
    watching: bool = False  # whether the task that watches them runs


def _our_name(path: str, root_tid: int | None) -> str:
    """A name of ours for the program's symlink-free ``path`` in the root of ``root_tid``.

    Good for a look (``stat``) only: opens go through ``RESOLVE_IN_ROOT``.
    """
    return path if root_tid is None else f"/proc/{root_tid}/root{path}"


def _may_block(path: str) -> bool:
    """True unless ``path`` is a regular file or a directory (opening those never waits)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # The open will fail at once, or create a regular file.
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


#: The path calls that apply the program's umask (the open family says so by its flags).
_USES_UMASK = frozenset({"mkdir", "mkdirat", "mknod", "mknodat"})

#: Hands an emulation that must wait (in a worker thread) to the serving loop.
Defer = Callable[["Served", "Pending", "Job"], None]


class Core:
    """Decides and answers notifications, synchronously; no trio.

    Shared by the trio :class:`~unotifyd.serve.supervisor.Supervisor` and the
    start-up loop of :mod:`unotifyd.serve.bootstrap`. Work that must wait (a
    FIFO, another program's credentials) is handed to a ``defer`` callback.
    ``colocate`` runs a program's thread on our CPU while it takes an
    injected fd (see :mod:`unotifyd.kernel.sched`).
    """

    def __init__(self, tracer: Tracer | None = None, *, colocate: bool = True) -> None:
        self.tracer = tracer or Tracer()
        self.colocate = colocate
        self.mem = MemoryReader()
        self.resolver = PathResolver()
        self.creds = CredentialReader()
        self.stats = Stats()

    def close(self) -> None:
        self.mem.close()

    def _count_gone(self, s: Served) -> None:
        self.stats.gone += 1
        if s.stats is not None:
            s.stats.gone += 1

    def _handle(self, s: Served, notif: Notification, defer: Defer) -> None:
        """Decide and answer one notification; never raises, never leaves it pending."""
        self.stats.notifications += 1
        if s.stats is not None:
            s.stats.notifications += 1
        listener = s.listener
        p = Pending(notif)
        try:
            p.decision = self._decide(s, p)
            d = p.decision
            if isinstance(d, Continue):
                listener.send_continue(notif.id)
                result = None
            elif isinstance(d, Fail):
                listener.send_error(notif.id, d.errno)
                result = -d.errno
            elif isinstance(d, Return):
                listener.send_value(notif.id, d.value)
                result = d.value
            elif isinstance(d, Rewrite):
                self._rewrite(s, p, d)
                result = None
            elif isinstance(d, Listing):
                result = self._list(s, p, d)
            else:
                result = self._perform_now_or_later(s, p, d, defer)
                if result is None:
                    return  # A worker thread answers and traces it.
        except TargetGone:
            self._count_gone(s)
            self._trace(s, p, "gone", None)
            return
        except Exception as e:
            self._internal_error(s, p, e)
            return
        self._trace(s, p, None, result)

    def _policy_in(self, s: Served, root: tuple[int, int] | None, tid: int) -> Policy:
        """``s.policy`` with its rule paths resolved in the root of ``tid``.

        Programs' paths are matched after resolving their symlinks, so rule
        paths must be resolved too, and in the same root: ``/etc/resolv.conf``
        may be a link on the host and a file in a container. Done once per
        root and kept. A rule path that cannot be resolved stays as written.
        """
        policy = s.policies.get(root)
        if policy is None:

            def in_root(path: str) -> str:
                try:
                    return self.resolver.resolve(
                        tid, abi.AT_FDCWD, os.fsencode(path), follow=True, own_root=True
                    )
                except OSError:
                    return path

            try:
                policy = s.policy.canonicalized(os.path.realpath if root is None else in_root)
            except ValueError as e:  # Two rules that name one file there.
                self.tracer.note(f"{s.name or 'program'}: rules kept as written: {e}")
                policy = s.policy
            s.policies[root] = policy
        return policy

    def _decide(self, s: Served, p: Pending) -> Decision | Rewrite | Listing | PathWork:
        n = p.notif
        name = abi.SYSCALL_NAMES.get(n.nr)
        decode = HANDLERS.get(n.nr)
        if name is None or n.arch != abi.AUDIT_ARCH_X86_64:
            # Only syscalls we asked for are trapped; anything else is a bug
            # or a filter we did not write. Fail closed.
            return Fail(errno.ENOSYS, f"unexpected syscall {n.nr} (arch {n.arch:#x})")
        self.stats.syscalls[name] += 1
        if s.stats is not None:
            s.stats.syscalls[name] += 1
        if decode is None:
            try:
                if name in LISTINGS:
                    return self._decide_listing(s, p, name)
                return self._decide_path_call(s, p, name)
            except BadArgument as e:
                return Fail(e.errno, str(e))
        try:
            call = p.call = decode(self.mem, n)
            root = self.resolver.root_id(n.pid)
            p.own_root = root is not None
            creds = p.creds = self.creds.read(n.pid, need_umask=may_create(call.flags))
            p.resolved = self.resolver.resolve(
                n.pid,
                abi.AT_FDCWD if call.dirfd is None else call.dirfd,
                call.path,
                follow=call.follows_last_link,
                resolve_flags=call.resolve,
                own_root=p.own_root,
                creds=creds,
            )
            policy = p.policy = self._policy_in(s, root, n.pid)
            if policy.has_private:
                seen = self._through_private(policy, p.resolved, p, call.follows_last_link)
                if seen != p.resolved:
                    # Where a link in a private tree leads: ours to open, never
                    # the kernel's (CONTINUE would look on the real disk).
                    p.resolved, policy = seen, policy.enforcing()
            if _supervisors_own(p.resolved) and not p.own_root:
                return Fail(errno.EACCES, "the supervisor's own /proc entries")
        except BadArgument as e:
            return Fail(e.errno, str(e))
        except OSError as e:
            # The path cannot be resolved (ENOTDIR, ELOOP, EBADF...): the
            # kernel would fail the call the same way.
            return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
        flags = call.flags
        if names_a_directory(call.path):
            # "name/" can only be a directory (path_resolution(7)). The kernel
            # refuses to create one with open: EISDIR (open_last_lookups() in
            # fs/namei.c); otherwise whatever is opened in its stead, a
            # redirect's target too, must be a directory.
            if flags & os.O_CREAT:
                return Fail(errno.EISDIR, "O_CREAT on a name that must be a directory")
            flags |= os.O_DIRECTORY
        return decide_open(policy, OpenRequest(call.syscall, p.resolved, flags, call.mode))

    def _through_private(self, policy: Policy, path: str, p: Pending, follow: bool) -> str:
        """``path`` with the symlinks in private trees followed as a tmpfs there would.

        A private tree lives in a scratch directory of ours, where the
        program may make symlinks; the kernel would read their text in the
        program's own view (absolute: from its root; relative: from the
        link's directory as the program names it) and go on from there,
        into other rules or out to the real disk. So does this, up to the
        kernel's 40 links (ELOOP). Raises OSError as the resolver does.
        Paths without such a link come back as they are (the same object).
        """
        for _ in range(40):
            match = policy.match(path)
            rule = match.rule if match is not None else None
            if not isinstance(rule, Private) or rule.backing is None or match is None:
                return path
            parts = [c for c in match.suffix.split("/") if c]
            mine = rule.backing  # a scratch directory of ours: no link on the way
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                here = f"{mine}/{name}"
                try:
                    info = os.lstat(here)
                except OSError:
                    return path  # missing, or no directory: the call itself will say
                if not stat.S_ISLNK(info.st_mode) or (last and not follow):
                    mine = here
                    continue
                text = os.readlink(here)
                at = rule.pattern.path.rstrip("/") + mine[len(rule.backing) :]
                start = text if text.startswith("/") else f"{at or '/'}/{text}"
                rest = "/".join(parts[i + 1 :])
                path = self.resolver.resolve(
                    p.notif.pid,
                    abi.AT_FDCWD,
                    os.fsencode(f"{start}/{rest}" if rest else start),
                    follow=follow,
                    own_root=p.own_root,
                    creds=p.creds,
                )
                break
            else:
                return path
        raise OSError(errno.ELOOP, "too many levels of symbolic links")

    def _program_policy(self, s: Served, p: Pending) -> Policy:
        root = self.resolver.root_id(p.notif.pid)
        p.own_root = root is not None
        policy = p.policy = self._policy_in(s, root, p.notif.pid)
        return policy

    def _fd_path(self, p: Pending, fd: int) -> str | None:
        """The program's name for the file its ``fd`` refers to, or None if it has none."""
        try:
            return self.resolver.resolve(p.notif.pid, fd, b".", follow=True, own_root=p.own_root)
        except OSError:
            pass
        try:
            text = os.readlink(f"/proc/{p.notif.pid}/fd/{fd}")
        except FileNotFoundError:
            return None  # Not open: the call fails with EBADF by itself.
        except ProcessLookupError:
            raise TargetGone("thread is gone") from None
        # Sockets, pipes, anonymous inodes, deleted files: no path rule applies.
        if not text.startswith("/") or text.endswith(" (deleted)"):
            return None
        return text

    def _decide_path_call(self, s: Served, p: Pending, name: str) -> Decision | Rewrite | PathWork:
        """Decide a path call other than an open (see :mod:`unotifyd.policy.paths`)."""
        n = p.notif
        call = p.path_call = decode_path_call(self.mem, n, name)
        policy = self._program_policy(s, p)
        creds = p.creds = self.creds.read(n.pid, need_umask=name in _USES_UMASK)
        enforce = policy.mode == "enforce"
        decisions: list[PathDecision] = []
        resolved: list[str | None] = []
        for arg in call.paths:
            where: str | None
            via_private = False
            if arg.itself:
                # The call is about a file the program has open: no name is
                # looked up, so only the rules on that file's own path apply.
                if arg.dirfd == abi.AT_FDCWD:
                    where = self.resolver.resolve(
                        n.pid, abi.AT_FDCWD, b".", follow=True, own_root=p.own_root
                    )
                else:
                    where = self._fd_path(p, arg.dirfd)
            else:
                try:
                    where = self.resolver.resolve(
                        n.pid,
                        arg.dirfd,
                        arg.path,
                        follow=arg.follow,
                        own_root=p.own_root,
                        creds=creds,
                    )
                    if policy.has_private:
                        seen = self._through_private(policy, where, p, arg.follow)
                        if seen != where:
                            where, via_private = seen, True
                except OSError as e:
                    # The kernel fails the call the same way (ENOTDIR, ELOOP, EBADF...).
                    return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
            if _supervisors_own(where, opening=False) and not p.own_root:
                return Fail(errno.EACCES, "the supervisor's own /proc entries")
            resolved.append(where)
            if where is None:
                decisions.append(Continue("no path"))
            else:
                # Where a link in a private tree leads: see _decide.
                deciding = policy.enforcing() if via_private else policy
                decisions.append(decide_path(deciding, PathRequest(name, arg.role, where)))
        p.resolved = next((r for r in resolved if r is not None), None)
        one = combine_paths(decisions)
        if name in ("chdir", "execve", "execveat"):
            first = decisions[0]
            if isinstance(first, Fail) and first.reason == EXEC_NOT_ALLOWED and p.resolved:
                try:
                    # As the program: whether it is there is not ours to tell.
                    with acting_as(creds):
                        os.stat(_our_name(p.resolved, n.pid if p.own_root else None))
                except OSError as e:
                    return Fail(e.errno or errno.ENOENT, f"{first.reason} (and it is not there)")
            if via_private and isinstance(first, MapPath) and first.in_program_root:
                # The kernel must be given where the link leads, not the
                # program's path, which names nothing on the real disk.
                first = MapPath(first.path, reason="a link in a private tree")
            return self._rewrite_decision(call, first, enforce, name != "chdir", p.resolved)
        if isinstance(one, Fail):
            return one
        if isinstance(one, RefuseChange):
            return PathWork(call, (), refuse=one, resolved=tuple(resolved))
        if isinstance(one, Continue):
            return one
        targets: list[Target] = []
        for arg, d, where in zip(call.paths, decisions, resolved, strict=True):
            own = isinstance(d, Continue) or (isinstance(d, MapPath) and d.in_program_root)
            if arg.itself and own:
                if arg.addr == 0:
                    # utimensat(fd, NULL): no path at all, nothing to re-read.
                    return Continue("no path")
                targets.append(FdPlace(arg.dirfd))
            elif isinstance(d, MapPath):
                targets.append(d)
            else:
                # One path of a two-path call that no rule covers: the
                # program's own, as resolved.
                assert where is not None
                targets.append(
                    MapPath(
                        where, "", in_program_root=True, no_symlinks=not where.startswith("/proc/")
                    )
                )
        recheck = self._rechecker(policy, name) if enforce else None
        return PathWork(call, tuple(targets), recheck=recheck)

    @staticmethod
    def _rechecker(policy: Policy, name: str) -> Callable[[PathArg, str], MapPath | int]:
        """Where a redirect's target really leads, decided again (enforcing mode).

        A symlink in a target tree may point at a denied file: resolve the
        target, ask the policy about the result, and use that resolved path,
        refusing any symlink swapped in since.
        """

        def recheck(arg: PathArg, path: str) -> MapPath | int:
            real = _realpath(path) if arg.follow else _realpath_parent(path)
            if real is None:
                return errno.ELOOP
            again = decide_path(policy, PathRequest(name, arg.role, real))
            if isinstance(again, Fail):
                return again.errno
            if isinstance(again, RefuseChange):
                return errno.EROFS
            # As for opens, a target is not redirected again: only what
            # would deny it counts.
            return MapPath(real, no_symlinks=True)

        return recheck

    @staticmethod
    def _rewrite_decision(
        call: PathCall, d: PathDecision, enforce: bool, is_exec: bool, source: str | None
    ) -> Decision | Rewrite:
        """``chdir`` and ``execve`` run in the kernel: CONTINUE, maybe with the path rewritten.

        A ``chdir`` is let through even in enforcing mode: the cwd it sets
        only ever serves as the start of later lookups, and every later
        trapped call is resolved and decided in full, whatever the cwd is.
        An exec, though, runs the file the kernel finds: see
        :func:`_alone_in_memory`.
        """
        arg = call.paths[0]
        if isinstance(d, Fail):
            return d
        if isinstance(d, RefuseChange):  # Not a changing role: cannot happen.
            return Fail(errno.EROFS, d.reason)
        guard = enforce and is_exec
        if isinstance(d, Continue) or d.in_program_root:
            return Rewrite(arg, None, d.reason, guard)
        if d.content:
            # A content rule's file is a memfd of ours: not the program's to run.
            return Fail(errno.EACCES, f"{d.reason}: content files are not executable")
        if arg.itself:
            return Fail(errno.EXDEV, f"{d.reason}: cannot redirect an exec of an open fd")
        if is_exec:
            return Rewrite(arg, d.path, d.reason, guard)
        return Rewrite(
            arg,
            d.path,
            d.reason,
            source=source,
            keep_source=d.confine is not None,
            directory=True,
        )

    def _rewrite(self, s: Served, p: Pending, d: Rewrite) -> None:
        """Answer ``d``: write the new path if any, then CONTINUE (see :class:`Rewrite`)."""
        n = p.notif
        listener = s.listener
        name = None if d.path is None else _fitting_name(d, n.pid, p.own_root)
        # chdir: when the program's own name is a directory, the kernel may
        # as well go there: every later lookup from that cwd is trapped and
        # mapped by the same rules. Preferred for a private tree; else the
        # fallback when the target's name does not fit.
        if (
            d.source is not None
            and d.path is not None
            and (d.keep_source or name is None)
            and os.path.isdir(_our_name(d.source, n.pid if p.own_root else None))
        ):
            d, name = Rewrite(d.arg, None, d.reason), None
        if d.guard and not _alone_in_memory(n.pid, vfork_ok=True):
            # Checked whether or not we write: another thread could put any
            # name there after us, or after our check of the program's own.
            listener.send_error(n.id, errno.EACCES)
            p.decision = Fail(
                errno.EACCES, f"{d.reason}; enforce: another thread could change the path"
            )
            return
        if d.path is not None:
            # What would make the call fail is answered before anything is
            # written: a failed exec returns to a program whose memory must
            # be as it left it (the shell prints that very path next).
            creds = p.creds or self.creds.read(n.pid, need_umask=False)
            err = None if p.own_root else runnable_errno(creds, d.path, directory=d.directory)
            if err is not None:
                listener.send_error(n.id, err)
                p.decision = Fail(err, f"{d.reason}: {os.strerror(err)}")
                return
            if name is None and not d.directory and not p.own_root:
                name = self._exec_through_fd(listener, p, d, creds)
            if name is None:
                # Writing past the program's string would overwrite whatever
                # follows it (often the next argv string, read after it).
                listener.send_error(n.id, errno.ENAMETOOLONG)
                p.decision = Fail(errno.ENAMETOOLONG, f"{d.reason}: target's name too long")
                return
            vfork_parent = _vfork_parent(n.pid)
            old = write_memory(n.pid, [(d.arg.addr, name)], partial(listener.id_valid, n.id))
            if vfork_parent is not None:
                # A vfork child writes into its parent's memory: put the
                # parent's bytes back once the exec is over (see _Restorer).
                _Restorer(n.pid, vfork_parent, d.arg.addr, old[0], name).start()
        listener.send_continue(n.id)

    def _exec_through_fd(
        self, listener: Listener, p: Pending, d: Rewrite, creds: Credentials
    ) -> bytes | None:
        """``/dev/fd/N`` for an exec whose target has no name short enough, or None.

        The target is opened as the program (it must be allowed to read it)
        and injected close-on-exec as fd N, which ``/dev/fd/N`` names for
        the program (a link to ``/proc/self/fd``): the kernel runs the file
        and the exec closes N. Not for scripts: their interpreter opens the
        script by that name after the exec, when N is closed already. A
        failed exec leaves N open in the program (close-on-exec).
        """
        assert d.path is not None
        n = p.notif
        if len(d.arg.path) < len("/dev/fd/999"):
            return None
        try:
            # O_NONBLOCK: a FIFO put there since must not stall the serving thread.
            fd = open_as(creds, d.path, os.O_RDONLY | os.O_NONBLOCK, 0)
        except OSError:
            return None  # Execute-only for the program: no fd to run it by.
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or os.pread(fd, 2, 0) == b"#!":
                return None
            if not listener.id_valid(n.id):
                raise TargetGone("notification no longer valid")
            number = listener.add_fd(n.id, fd, cloexec=True)
        except OSError:
            return None  # EMFILE and the like: the call fails ENAMETOOLONG.
        finally:
            os.close(fd)
        name = f"/dev/fd/{number}".encode()
        if len(name) > len(d.arg.path):
            return None  # fd 1000 and up: rare; N stays open (close-on-exec).
        return name + b"\0"

    def _decide_listing(self, s: Served, p: Pending, name: str) -> Decision | Listing:
        """A directory listing: answered by us only where the directory holds hidden names."""
        n = p.notif
        policy = self._program_policy(s, p)
        fd = int_arg(n.args[0])
        where = self._fd_path(p, fd) if fd >= 0 else None
        p.resolved = where
        hidden = hidden_names(policy, where) if where is not None else frozenset()
        if not hidden:
            return Continue("nothing hidden here")
        if name != "getdents64":
            # The legacy getdents has another record layout; glibc never uses it.
            return Fail(errno.ENOSYS, "getdents: use getdents64 (hidden names here)")
        return Listing(fd, n.args[1], n.args[2] & 0xFFFFFFFF, hidden, "hidden names left out")

    def _list(self, s: Served, p: Pending, d: Listing) -> int:
        """Answer a listing: our copy of the program's fd, read and filtered, written back."""
        n = p.notif
        listener = s.listener
        fd = take_fd(n.pid, d.fd)
        try:
            # The fd came from the thread the notification is about only if
            # the call is still pending: a pid is not reused while it is.
            if not listener.id_valid(n.id):
                raise TargetGone("notification no longer valid")
            try:
                data = read_listing(fd, d.count, d.hidden.__contains__)
            except OSError as e:
                err = e.errno or errno.EIO
                listener.send_error(n.id, err)
                return -err
            write_memory(n.pid, [(d.addr, data)], lambda: listener.id_valid(n.id))
        finally:
            os.close(fd)
        listener.send_value(n.id, len(data))
        return len(data)

    def _perform_now_or_later(self, s: Served, p: Pending, d: Work, defer: Defer) -> int | None:
        """Perform ``d`` and answer; or hand it to ``defer`` (a worker thread) and return None.

        Inline only when it cannot block and needs no other credentials.
        """
        n = p.notif
        listener = s.listener
        creates = isinstance(d, EmulateOpen) and may_create(d.flags)
        if isinstance(d, PathWork):
            creates = d.call.syscall in _USES_UMASK
        creds = p.creds
        if creds is None or (creates and creds.umask < 0):
            creds = p.creds = self.creds.read(n.pid, need_umask=creates)
        # Everything the decision rests on (path, cwd, credentials) was read
        # from a process that may since have died and had its pid reused. An
        # emulated open has effects of its own (O_CREAT, O_TRUNC), so make
        # sure the call is still pending before performing it
        # (seccomp_unotify(2), NOTES). CONTINUE and errno answers skip this
        # check: notification ids are never reused, so an answer to a dead
        # call fails with ENOENT and touches nothing.
        if not listener.id_valid(n.id):
            raise TargetGone("notification no longer valid")
        # The program's own names are opened in its root (a container's);
        # a redirect's target is a path of ours.
        if isinstance(d, PathWork):
            in_root = p.own_root
        else:
            in_root = p.own_root and (isinstance(d, RefuseWrite) or d.in_program_root)
        root_tid = n.pid if in_root else None
        may_block = isinstance(d, EmulateOpen) and _may_block(_our_name(d.path, root_tid))
        recheck = p.policy if isinstance(d, EmulateOpen) and d.recheck else None
        job = Job(d, creds, root_tid, listener, n.id, may_block, recheck)
        if isinstance(d, PathWork) and (
            d.call.syscall == "inotify_add_watch" or any(isinstance(t, FdPlace) for t in d.targets)
        ):
            d.tid = n.pid
            d.still_valid = partial(listener.id_valid, n.id)
        if creds.same_as_supervisor() and not may_block:
            result = self._perform(job, nonblocking=True)
            if result is not None:
                return self._answer(listener, n, d, result)
            # Raced into a FIFO or a device since our stat: redo it blocking.
        defer(s, p, job)
        return None

    @staticmethod
    def _perform(job: Job, nonblocking: bool) -> int | None:
        """Do the work of ``job``: an fd of ours (>= 0) to inject, or ``-errno`` to answer.

        With ``nonblocking``, returns None instead of waiting for a FIFO or a
        device. Runs in the trio thread or, to block or to take on the
        program's credentials, in a worker thread. Raises TargetGone.
        """
        root_fd = _open_root(job.root_tid)
        try:
            if root_fd is not None and not job.listener.id_valid(job.nid):
                # The root we hold might be a new process's that got the pid.
                raise TargetGone("notification no longer valid")
            if isinstance(job.decision, PathWork):
                job.decision.outcome = job.decision.run(job.creds, root_fd)
                return job.decision.outcome.value
            return _perform_in(job.decision, job.creds, root_fd, nonblocking, job.policy)
        finally:
            if root_fd is not None:
                os.close(root_fd)

    def _answer(self, listener: Listener, n: Notification, d: Work, result: int) -> int:
        """Answer with ``-errno``, or inject the fd ``result`` and close our copy.

        For a path call, ``result`` is the call's return value, and what
        it writes into the program's memory is written first.
        """
        if isinstance(d, PathWork):
            assert d.outcome is not None
            # Some failures write too: name_to_handle_at's EOVERFLOW tells
            # the handle size it needs.
            if d.outcome.writes:
                try:
                    write_memory(n.pid, d.outcome.writes, partial(listener.id_valid, n.id))
                except BadArgument as e:
                    listener.send_error(n.id, e.errno)
                    return -e.errno
            if result < 0:
                listener.send_error(n.id, -result)
            else:
                listener.send_value(n.id, result)
            return result
        if result < 0:
            listener.send_error(n.id, -result)
            return result
        assert isinstance(d, EmulateOpen)
        return self._inject(listener, n, result, d.cloexec)

    def _inject(self, listener: Listener, n: Notification, fd: int, cloexec: bool) -> int:
        """Inject our ``fd`` as the call's result and close our copy."""
        pinned = pin_to_our_cpu(n.pid) if self.colocate else None
        try:
            if pinned is None:
                return listener.send_fd(n.id, fd, cloexec=cloexec)
            # Install, give the thread its own affinity back while it still
            # waits for the answer (so it never runs with ours), then answer.
            # Two steps, not ADDFD|SEND: under WAIT_KILLABLE_RECV only a
            # fatal signal can end the wait in between, and then the fd
            # goes with the process.
            newfd = listener.add_fd(n.id, fd, cloexec=cloexec)
            pinned.release()
            pinned = None
            listener.send_value(n.id, newfd)
            return newfd
        except OSError as e:
            # EMFILE (the program's fd table is full) and the like: the call
            # is still pending and gets the error the kernel would give.
            err = e.errno or errno.EIO
            listener.send_error(n.id, err)
            return -err
        finally:
            if pinned is not None:
                pinned.release()
            os.close(fd)

    def _internal_error(self, s: Served, p: Pending, exc: BaseException) -> None:
        self.stats.internal_errors += 1
        if s.stats is not None:
            s.stats.internal_errors += 1
        print(f"unotifyd: internal error serving pid {p.notif.pid}:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        # Gone already, or the listener itself is broken: nothing more to do.
        with contextlib.suppress(Exception):
            s.listener.send_error(p.notif.id, _INTERNAL_ERROR_ERRNO)
        self._trace(s, p, "internal-error", -_INTERNAL_ERROR_ERRNO)

    def _trace(self, s: Served, p: Pending, outcome: str | None, result: int | None) -> None:
        d = p.decision
        kind = outcome or _decision_kind(d)
        if kind == "emulate" and isinstance(d, EmulateOpen) and d.path != p.resolved:
            kind = "redirect"
        self.stats.decisions[kind] += 1
        if s.stats is not None:
            s.stats.decisions[kind] += 1
        if not self.tracer.enabled:
            return
        call = p.call
        if p.path_call is not None:
            self._trace_path_call(s, p, kind, result)
            return
        self.tracer.emit(
            TraceEvent(
                program=s.name,
                pid=p.notif.pid,
                syscall=call.syscall if call else str(p.notif.nr),
                path=os.fsdecode(call.path) if call else "",
                dirfd=call.dirfd if call else None,
                flags=call.flags if call else 0,
                resolved=p.resolved,
                decision=kind,
                reason=getattr(d, "reason", "") if d is not None else "",
                target=d.path if isinstance(d, EmulateOpen) else None,
                result=result,
            )
        )

    def _trace_path_call(self, s: Served, p: Pending, kind: str, result: int | None) -> None:
        call = p.path_call
        assert call is not None
        d = p.decision
        target = None
        if isinstance(d, PathWork):
            maps = [t for t in d.targets if isinstance(t, MapPath) and not t.in_program_root]
            target = maps[0].path if maps else None
        elif isinstance(d, Rewrite):
            target = d.path
        names = ", ".join(json.dumps(os.fsdecode(a.path)) for a in call.paths)
        self.tracer.emit(
            TraceEvent(
                program=s.name,
                pid=p.notif.pid,
                syscall=call.syscall,
                path=os.fsdecode(call.paths[0].path) if call.paths else "",
                dirfd=None,
                flags=0,
                resolved=p.resolved,
                decision=kind,
                reason=_reason(d),
                target=target,
                result=result,
                detail=names,
            )
        )


def _reason(d: object) -> str:
    if isinstance(d, PathWork):
        if d.refuse is not None:
            return d.refuse.reason
        return next((t.reason for t in d.targets if isinstance(t, MapPath) and t.reason), "")
    reason = getattr(d, "reason", "")
    return reason if isinstance(reason, str) else ""


def _decision_kind(d: object) -> str:
    if isinstance(d, PathWork):
        if d.refuse is not None:
            return "refuse-write"
        mapped = any(isinstance(t, MapPath) and not t.in_program_root for t in d.targets)
        return "redirect" if mapped else "emulate"
    if isinstance(d, Rewrite):
        return "continue" if d.path is None else "redirect"
    if isinstance(d, Listing):
        return "filter"
    if isinstance(d, Continue):
        return "continue"
    if isinstance(d, Fail):
        return "fail"
    if isinstance(d, Return):
        return "return"
    if isinstance(d, EmulateOpen):
        return "emulate"
    if isinstance(d, RefuseWrite):
        return "refuse-write"
    return "none"
