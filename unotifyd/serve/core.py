"""The synchronous core of the supervisor: decide and answer one notification.

No trio here: :mod:`unotifyd.serve.bootstrap` serves a launched program's
first calls with it while trio is not imported yet, and the trio
:class:`~unotifyd.serve.supervisor.Supervisor` builds on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..kernel import abi
from ..kernel.errors import BadArgument, TargetGone
from ..kernel.listener import Listener, Notification
from ..kernel.opener import may_create, open_as
from ..kernel.sched import pin_to_our_cpu
from ..kernel.target import CredentialReader, Credentials, MemoryReader, PathResolver
from ..policy import (
    Continue,
    Decision,
    EmulateOpen,
    Fail,
    Found,
    OpenRequest,
    Policy,
    RefuseWrite,
    Return,
    decide_open,
    refuse_write_errno,
)
from .handlers import HANDLERS, OpenCall
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
    gone: int = 0
    internal_errors: int = 0


@dataclass
class Pending:
    """What a notification has become by the time it is answered (for the trace)."""

    notif: Notification
    call: OpenCall | None = None
    resolved: str | None = None
    decision: Decision | None = None
    own_root: bool = False  # the program has a root directory of its own (a container)
    policy: Policy | None = None  # the policy it was decided by (rule paths in its root)


def _refuse_errno(d: RefuseWrite, creds: Credentials, root_fd: int | None) -> int:
    """Look at what ``d.path`` is, as the program, and pick a read-only mount's errno."""
    found: Found
    try:
        fd = open_as(creds, d.path, os.O_PATH, 0, no_symlinks=True, root_fd=root_fd)
    except FileNotFoundError:
        parent = d.path.rsplit("/", 1)[0] or "/"
        flags = os.O_PATH | os.O_DIRECTORY
        try:
            os.close(open_as(creds, parent, flags, 0, no_symlinks=True, root_fd=root_fd))
        except FileNotFoundError:
            found = "no-parent"
        else:
            found = "missing"
    except OSError as e:
        # EACCES, ENOTDIR...: the path lookup fails before any write check.
        return e.errno or errno.EIO
    else:
        try:
            found = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        finally:
            os.close(fd)
    return refuse_write_errno(d.flags, found)


@dataclass(frozen=True, slots=True)
class Job:
    """An emulation to perform, with what it needs in a worker thread."""

    decision: EmulateOpen | RefuseWrite
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
        fd = open_as(creds, path, d.flags | extra, d.mode, no_symlinks=no_symlinks, root_fd=root)
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
    except BaseException:
        os.close(fd)
        raise
    return fd


class Handoff:
    """Hands a worker thread's result to its trio task, or disposes of it.

    With ``abandon_on_cancel`` trio forgets a thread whose task was
    cancelled, and drops whatever it returns later. An fd returned then would
    leak; whichever side comes second — the thread finishing, or the task
    abandoning it — closes it, under a lock so that it happens exactly once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._result: int | None = None
        self._done = False

    def run(self, fn: Callable[[], int | None]) -> int | None:
        result = fn()
        with self._lock:
            if self._abandoned:
                _dispose(result)
                return None
            self._done = True
            self._result = result
        return result

    def abandon(self) -> bool:
        """Give up on the result; True if the thread is still running."""
        with self._lock:
            self._abandoned = True
            if self._done:
                _dispose(self._result)
                self._result = None
            return not self._done


def _dispose(result: int | None) -> None:
    if result is not None and result >= 0:
        os.close(result)


def unblock_fifo(d: EmulateOpen | RefuseWrite, root_tid: int | None) -> None:
    """Let an abandoned open of a FIFO return, by opening its other end.

    Opening a FIFO blocks until the other end is opened too (fifo(7)); a
    non-blocking open of the other end never blocks and releases it. The
    released open's fd is closed by :class:`Handoff`. Only a FIFO can be
    released this way; a thread blocked in a device's open stays blocked.
    """
    if not isinstance(d, EmulateOpen):
        return
    path = _our_name(d.path, root_tid)
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return
        other = os.O_RDONLY if d.flags & os.O_ACCMODE == os.O_WRONLY else os.O_WRONLY
        os.close(os.open(path, other | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError:
        pass  # Gone, or already released (ENXIO: no reader left).


def _names_a_directory(path: bytes) -> bool:
    """True for ``dir/``, ``dir/.``, ``..``...: names whose last component must be a directory."""
    return path.endswith((b"/", b"/.", b"/..")) or path in (b".", b"..")


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

    def _decide(self, s: Served, p: Pending) -> Decision:
        n = p.notif
        decode = HANDLERS.get(n.nr)
        if decode is None or n.arch != abi.AUDIT_ARCH_X86_64:
            # Only syscalls we asked for are trapped; anything else is a bug
            # or a filter we did not write. Fail closed.
            return Fail(errno.ENOSYS, f"unexpected syscall {n.nr} (arch {n.arch:#x})")
        try:
            call = p.call = decode(self.mem, n)
            root = self.resolver.root_id(n.pid)
            p.own_root = root is not None
            p.resolved = self.resolver.resolve(
                n.pid,
                abi.AT_FDCWD if call.dirfd is None else call.dirfd,
                call.path,
                follow=call.follows_last_link,
                resolve_flags=call.resolve,
                own_root=p.own_root,
            )
            policy = p.policy = self._policy_in(s, root, n.pid)
        except BadArgument as e:
            return Fail(e.errno, str(e))
        except OSError as e:
            # The path cannot be resolved (ENOTDIR, ELOOP, EBADF...): the
            # kernel would fail the call the same way.
            return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
        flags = call.flags
        if _names_a_directory(call.path):
            # "name/" can only be a directory (path_resolution(7)). The kernel
            # refuses to create one with open: EISDIR (open_last_lookups() in
            # fs/namei.c); otherwise whatever is opened in its stead, a
            # redirect's target too, must be a directory.
            if flags & os.O_CREAT:
                return Fail(errno.EISDIR, "O_CREAT on a name that must be a directory")
            flags |= os.O_DIRECTORY
        return decide_open(policy, OpenRequest(call.syscall, p.resolved, flags, call.mode))

    def _perform_now_or_later(
        self, s: Served, p: Pending, d: EmulateOpen | RefuseWrite, defer: Defer
    ) -> int | None:
        """Perform ``d`` and answer; or hand it to ``defer`` (a worker thread) and return None.

        Inline only when it cannot block and needs no other credentials.
        """
        n = p.notif
        listener = s.listener
        creates = isinstance(d, EmulateOpen) and may_create(d.flags)
        creds = self.creds.read(n.pid, need_umask=creates)
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
        in_root = p.own_root and (isinstance(d, RefuseWrite) or d.in_program_root)
        root_tid = n.pid if in_root else None
        may_block = isinstance(d, EmulateOpen) and _may_block(_our_name(d.path, root_tid))
        recheck = p.policy if isinstance(d, EmulateOpen) and d.recheck else None
        job = Job(d, creds, root_tid, listener, n.id, may_block, recheck)
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
        root_fd = None
        if job.root_tid is not None:
            try:
                root_fd = os.open(
                    f"/proc/{job.root_tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
                )
            except (FileNotFoundError, ProcessLookupError):
                raise TargetGone("thread is gone") from None
        try:
            if root_fd is not None and not job.listener.id_valid(job.nid):
                # The root we hold might be a new process's that got the pid.
                raise TargetGone("notification no longer valid")
            return _perform_in(job.decision, job.creds, root_fd, nonblocking, job.policy)
        finally:
            if root_fd is not None:
                os.close(root_fd)

    def _answer(
        self, listener: Listener, n: Notification, d: EmulateOpen | RefuseWrite, result: int
    ) -> int:
        """Answer with ``-errno``, or inject the fd ``result`` and close our copy."""
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


def _decision_kind(d: Decision | None) -> str:
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
