"""The trio supervisor: serve every notification of one or more listeners.

One task reads each listener. When the listener is readable it *drains*
it: every pending notification is received and answered inline, without a
trip through the scheduler, as long as answering cannot block. Anything
that may block (an open of a FIFO or a device, an open that must run with
another program's credentials) goes to a worker thread, so one slow call
never stalls the others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import stat
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field

import trio

from ..kernel import abi
from ..kernel.errors import BadArgument, TargetGone
from ..kernel.listener import Listener, Notification
from ..kernel.opener import open_as
from ..kernel.target import Credentials, MemoryReader, PathResolver, read_credentials
from ..policy import Continue, Decision, EmulateOpen, Fail, OpenRequest, Policy, Return, decide_open
from .handlers import HANDLERS, OpenCall
from .trace import TraceEvent, Tracer

# How many notifications one listener may answer before yielding to the
# scheduler, so that one busy program cannot starve the others.
_DRAIN_BATCH = 64
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
class _Pending:
    """What a notification has become by the time it is answered (for the trace)."""

    notif: Notification
    call: OpenCall | None = None
    resolved: str | None = None
    decision: Decision | None = None


def _may_block(path: str) -> bool:
    """True unless ``path`` is a regular file or a directory (opening those never waits)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # The open will fail at once, or create a regular file.
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


class Supervisor:
    """Serves listeners, each with its own policy; shares caches between them."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer or Tracer()
        self.mem = MemoryReader()
        self.resolver = PathResolver()
        self.stats = Stats()

    def close(self) -> None:
        self.mem.close()

    async def serve(self, listener: Listener, policy: Policy, *, name: str = "") -> None:
        """Serve ``listener`` until every process using its filter is gone.

        Returns on ``POLLHUP`` without ``POLLIN``: after that RECV fails with
        ``ENOENT`` at once forever, so waiting for more would spin. The
        listener stays open; its owner closes it.
        """
        fd = listener.fileno()
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(fd)
                served = 0
                while True:
                    events = listener.poll()
                    if events & select.POLLIN:
                        try:
                            notif = listener.recv()
                        except TargetGone:
                            self.stats.gone += 1
                            continue
                        self._handle(listener, policy, name, notif, nursery)
                        served += 1
                        if served >= _DRAIN_BATCH:
                            await trio.sleep(0)
                            served = 0
                    elif events & (select.POLLHUP | select.POLLERR):
                        return
                    else:
                        break

    def _handle(
        self,
        listener: Listener,
        policy: Policy,
        name: str,
        notif: Notification,
        nursery: trio.Nursery,
    ) -> None:
        """Decide and answer one notification; never raises, never leaves it pending."""
        self.stats.notifications += 1
        p = _Pending(notif)
        try:
            p.decision = self._decide(policy, p)
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
                creds = read_credentials(notif.pid)
                # Everything the decision rests on (path, cwd, credentials)
                # was read from a process that may since have died and had
                # its pid reused. An emulated open has effects of its own
                # (O_CREAT, O_TRUNC), so make sure the call is still pending
                # before performing it (seccomp_unotify(2), NOTES).
                if not listener.id_valid(notif.id):
                    raise TargetGone("notification no longer valid")
                if creds.same_as_supervisor() and not _may_block(d.path):
                    result = self._emulate_inline(listener, notif, d, creds)
                    if result is None:  # Raced into a FIFO or device: retry blocking.
                        nursery.start_soon(self._emulate_in_thread, listener, p, d, creds, name)
                        return
                else:
                    nursery.start_soon(self._emulate_in_thread, listener, p, d, creds, name)
                    return
        except TargetGone:
            self.stats.gone += 1
            self._trace(p, name, "gone", None)
            return
        except Exception:
            self._internal_error(listener, p, name)
            return
        self._trace(p, name, None, result)

    def _decide(self, policy: Policy, p: _Pending) -> Decision:
        n = p.notif
        decode = HANDLERS.get(n.nr)
        if decode is None or n.arch != abi.AUDIT_ARCH_X86_64:
            # Only syscalls we asked for are trapped; anything else is a bug
            # or a filter we did not write. Fail closed.
            return Fail(errno.ENOSYS, f"unexpected syscall {n.nr} (arch {n.arch:#x})")
        try:
            call = p.call = decode(self.mem, n)
            p.resolved = self.resolver.resolve(
                n.pid,
                abi.AT_FDCWD if call.dirfd is None else call.dirfd,
                call.path,
                follow=call.follows_last_link,
                resolve_flags=call.resolve,
            )
        except BadArgument as e:
            return Fail(e.errno, str(e))
        except OSError as e:
            # The path cannot be resolved (ENOTDIR, ELOOP, EBADF...): the
            # kernel would fail the call the same way.
            return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
        return decide_open(policy, OpenRequest(call.syscall, p.resolved, call.flags, call.mode))

    def _open(self, d: EmulateOpen, creds: Credentials, flags: int) -> int:
        """Perform an emulated open; raise OSError with the program's errno."""
        try:
            fd = open_as(creds, d.path, flags, d.mode, no_symlinks=d.no_symlinks)
        except FileNotFoundError:
            if d.create_errno:
                raise OSError(d.create_errno, os.strerror(d.create_errno)) from None
            raise
        if d.exclusive:
            os.close(fd)
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        return fd

    def _emulate_inline(
        self, listener: Listener, n: Notification, d: EmulateOpen, creds: Credentials
    ) -> int | None:
        """Open without blocking and inject; None if the file turned out to be one that may block.

        ``O_NONBLOCK`` guards against a regular file swapped for a FIFO after
        our ``stat``: such an open then returns at once instead of stalling
        every program (fifo(7)). It is cleared again before injection unless
        the program asked for it, since it is a file status flag the program
        can see (``F_GETFL``).
        """
        extra = 0 if d.flags & (os.O_NONBLOCK | os.O_PATH) else os.O_NONBLOCK
        try:
            fd = self._open(d, creds, d.flags | extra)
        except OSError as e:
            if e.errno == errno.ENXIO:  # A FIFO without reader, opened O_WRONLY|O_NONBLOCK.
                return None
            return self._fail(listener, n, e)
        if extra:
            try:
                st_mode = os.fstat(fd).st_mode
                if not (stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode)):
                    os.close(fd)
                    return None
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            except BaseException:
                os.close(fd)
                raise
        return self._inject(listener, n, fd, d.cloexec)

    async def _emulate_in_thread(
        self, listener: Listener, p: _Pending, d: EmulateOpen, creds: Credentials, name: str
    ) -> None:
        n = p.notif
        try:
            try:
                fd = await trio.to_thread.run_sync(self._open, d, creds, d.flags)
            except OSError as e:
                result = self._fail(listener, n, e)
            else:
                result = self._inject(listener, n, fd, d.cloexec)
        except TargetGone:
            self.stats.gone += 1
            self._trace(p, name, "gone", None)
            return
        except Exception:
            self._internal_error(listener, p, name)
            return
        self._trace(p, name, None, result)

    @staticmethod
    def _fail(listener: Listener, n: Notification, e: OSError) -> int:
        """Answer with the errno of ``e``, the error our own attempt got."""
        err = e.errno or errno.EIO
        listener.send_error(n.id, err)
        return -err

    @staticmethod
    def _inject(listener: Listener, n: Notification, fd: int, cloexec: bool) -> int:
        """Inject our ``fd`` as the call's result and close our copy."""
        try:
            return listener.send_fd(n.id, fd, cloexec=cloexec)
        except OSError as e:
            # EMFILE (the program's fd table is full) and the like: the call
            # is still pending and gets the error the kernel would give.
            return Supervisor._fail(listener, n, e)
        finally:
            os.close(fd)

    def _internal_error(self, listener: Listener, p: _Pending, name: str) -> None:
        self.stats.internal_errors += 1
        print(f"unotifyd: internal error serving pid {p.notif.pid}:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        # Gone already, or the listener itself is broken: nothing more to do.
        with contextlib.suppress(Exception):
            listener.send_error(p.notif.id, _INTERNAL_ERROR_ERRNO)
        self._trace(p, name, "internal-error", -_INTERNAL_ERROR_ERRNO)

    def _trace(self, p: _Pending, name: str, outcome: str | None, result: int | None) -> None:
        d = p.decision
        kind = outcome or _decision_kind(d)
        self.stats.decisions[kind] += 1
        if not self.tracer.enabled:
            return
        call = p.call
        self.tracer.emit(
            TraceEvent(
                program=name,
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
    return "none"
