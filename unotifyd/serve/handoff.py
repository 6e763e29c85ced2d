"""Work performed for a program, inline or in a worker thread, and its answer.

A :class:`Job` is an emulated open or a path call, with everything needed
to perform it away from the serving thread. :func:`perform` does it;
:func:`answer` gives the program its result (an injected fd, a value and
the memory the call writes, or an errno). When a worker thread outlives
its call, :class:`WorkerResult` closes the fd it returns.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable
from functools import partial

from ..calls.decode import OpenCall, PathCall
from ..calls.ops import Outcome
from ..kernel.creds import Credentials
from ..kernel.errors import BadArgument, ProgramGone
from ..kernel.kick import KICK, Stop, installed, kick
from ..kernel.listener import Listener, Notification
from ..kernel.opener import Start
from ..kernel.program import fd_table_full, write_memory
from ..kernel.sched import pin_to_our_cpu
from ..policy import EmulateOpen, Policy, RefuseWrite
from ..policy.decision import open_how
from ..policy.paths import PerformPath
from ..record import record
from .opens import open_root, perform_open
from .pathwork import perform_path

#: The decisions that are work: performed here rather than answered at once.
Work = EmulateOpen | RefuseWrite | PerformPath

#: What performing gives: an fd of ours (>= 0) to inject, or ``-errno``
#: (opens); the call's outcome (path calls); None: it would block.
Result = int | Outcome | None


@record(frozen=True, slots=True)
class Job:
    """A decision to perform, with what it needs in a worker thread."""

    decision: Work
    call: PathCall | None  # a path call's arguments (None for an open)
    creds: Credentials
    root_tid: int | None  # open the program's names in this thread's root
    listener: Listener
    notif: Notification
    may_block: bool  # its open may wait or act (opens.may_block), by a look before it
    policy: Policy | None = None  # to decide again where a redirect really leads (recheck)
    # Run the thread on our CPU while it takes an injected fd (see _inject):
    # asked for, and the listener's wait is killable (Served.killable_wait).
    colocate: bool = False
    # An open's: where the program's relative name began; None for an
    # absolute name (see kernel/opener.Start).
    start: Start | None = None


def perform(job: Job, nonblocking: bool, stop: threading.Event | None = None) -> Result:
    """Do the work of ``job``; see :data:`Result`.

    With ``nonblocking``, returns None instead of waiting for a FIFO or a
    device; else ``stop`` may end the wait of an open (see
    :class:`WorkerResult`). Runs in the serving thread, or in a worker
    thread where it may block; either takes on the program's credentials
    for the work (kernel/creds.acting_as). Raises ProgramGone.
    """
    root_fd = open_root(job.root_tid)
    n, listener = job.notif, job.listener
    try:
        if root_fd is not None and not listener.id_valid(n.id):
            # The root we hold might be a new process's that got the pid.
            raise ProgramGone("notification no longer valid")
        d = job.decision
        if isinstance(d, PerformPath):
            assert job.call is not None
            still_valid = partial(listener.id_valid, n.id)
            return perform_path(
                job.call, d, job.creds, root_fd, policy=job.policy, tid=n.pid,
                still_valid=still_valid, stop=stop,
            )  # fmt: skip
        # An open that makes or truncates a file, or opens a FIFO or a
        # device but a quiet one (whose open acts: a FIFO's releases a
        # writer waiting), would act and then fail to give the fd: as
        # natively, EMFILE first (see fd_table_full).
        acts = d.flags & (os.O_CREAT | os.O_TRUNC) or job.may_block
        if acts and fd_table_full(n.pid):
            return -errno.EMFILE
        judging = isinstance(d, EmulateOpen) and (d.recheck or d.judge_opened)
        recheck = job.policy if judging else None
        fd = perform_open(d, job.creds, root_fd, nonblocking, recheck, stop=stop, start=job.start)
        # One that acts was looked at before; one that may wait (a FIFO's)
        # and was interrupted keeps its errno whatever the table holds now.
        if fd is not None and fd < 0 and not acts:
            return -open_errno(n.pid, -fd)
        return fd
    finally:
        if root_fd is not None:
            os.close(root_fd)


def past_its_fd(call: OpenCall) -> bool:
    """Whether an open decoded into ``call`` fails, if it fails, only after
    it took its fd: do_sys_openat2() in fs/open.c checks the flags
    (build_open_flags(): EINVAL, and EAGAIN for RESOLVE_CACHED) and reads
    the name (getname(): EFAULT, ENAMETOOLONG, an empty name's ENOENT)
    first. Decoding answers all of those but for the flags that legacy
    calls pass on, which :func:`~unotifyd.policy.decision.open_how` judges,
    and the empty name.
    """
    return bool(call.path) and not isinstance(open_how(call.syscall, call.flags, call.mode), str)


def open_errno(tid: int, err: int) -> int:
    """What an open of thread ``tid`` fails with, past its fd, where its
    lookup, its rules or the open we made for it said ``err``: EMFILE
    instead where the thread's fd table is full, as natively, where an open
    takes its fd before it looks its path up (do_sys_openat2() in
    fs/open.c). Looked at only for an open that fails. Raises ProgramGone.
    """
    return errno.EMFILE if err != errno.EMFILE and fd_table_full(tid) else err


def answer(
    listener: Listener, n: Notification, d: Work, result: int | Outcome, colocate: bool
) -> int:
    """Answer the call with ``result``; return what the program gets (for the trace).

    A path call's outcome: what it writes into the program's memory is
    written first (failures may write too: name_to_handle_at's EOVERFLOW
    tells the handle size it needs). An open's fd is injected and our copy
    closed.
    """
    if isinstance(result, Outcome):
        if result.writes:
            try:
                write_memory(n.pid, result.writes, partial(listener.id_valid, n.id))
            except BadArgument as e:
                listener.send_error(n.id, e.errno)
                return -e.errno
        result = result.value
        if result < 0:
            listener.send_error(n.id, -result)
        else:
            listener.send_value(n.id, result)
        return result
    if result < 0:
        listener.send_error(n.id, -result)
        return result
    assert isinstance(d, EmulateOpen | RefuseWrite)  # RefuseWrite: a special file opened
    return _inject(listener, n, result, d.cloexec, colocate)


def _inject(listener: Listener, n: Notification, fd: int, cloexec: bool, colocate: bool) -> int:
    """Inject our ``fd`` as the call's result and close our copy.

    ``colocate`` runs the program's thread on our CPU while it takes the
    fd (see :mod:`unotifyd.kernel.sched`).
    """
    pinned = pin_to_our_cpu(n.pid) if colocate else None
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


#: Per worker thread: whether it lets a kick through (see WorkerResult.run).
_THREAD = threading.local()

#: How often :meth:`WorkerResult.end` kicks a thread that is not out yet, and
#: for how long at most (a thread still in its wait then is a bug's).
_KICK_AGAIN_S = 0.1
_KICK_FOR_S = 30.0


class WorkerResult:
    """Hands a worker thread's result to its trio task, or disposes of it.

    With ``abandon_on_cancel`` trio forgets a thread whose task was
    cancelled, and drops whatever it returns later. An fd returned then would
    leak; whichever side comes second — the thread finishing, or the task
    abandoning it — closes it, under a lock so that it happens exactly once.
    Only an open's result is an fd (an ``int``); a path call's is an
    :class:`~unotifyd.calls.ops.Outcome`, whose value (a length, a watch
    descriptor) is no fd of ours and is never closed.

    :meth:`interrupt` ends the wait of a blocking open in the thread (given
    ``stop``): the open then gives ``-EINTR``, unless it got its file first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._result: Result = None
        self._done = False
        self.stop = Stop()
        self._tid = 0  # the worker thread's, once it runs
        self._started = False
        self._finished = threading.Event()

    def run(self, fn: Callable[[], Result]) -> Result:
        if installed() and not getattr(_THREAD, "kickable", False):
            # A worker made before the kick's handler was installed (a library
            # Supervisor's trio caches threads) may block it (see kick.install).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {KICK})
            _THREAD.kickable = True
        self._started = True
        self._tid = threading.get_native_id()
        try:
            result = fn()
        finally:
            self._tid = 0
            self._finished.set()
        with self._lock:
            if self._abandoned:
                self._dispose(result)
                return None
            self._done = True
            self._result = result
        return result

    def interrupt(self) -> None:
        """Kick the thread out of its wait (again: a kick may land before it
        waits, and is then lost)."""
        self.stop.set()
        tid = self._tid
        if tid:
            kick(tid)

    def end(self) -> None:
        """Stop the work for good (its call is abandoned): kick the thread
        out of its wait until it is out. A connect or a send made for a
        program that is gone must not go on when the receiver makes room:
        the program would have sent or connected nothing (ops.until_interrupted).
        Kicked again and again, from a thread of its own, since a kick may
        land before the wait and be lost; the watcher that does so for a
        waiting call no longer looks at an abandoned one.
        """
        self.stop.ended = True
        self.stop.set()
        if not installed() or not self._started:
            # No kick to give (the wait goes on: kernel/kick.py); or no thread
            # yet, and one that comes finds the call ended before it waits.
            return

        def again() -> None:
            waited = 0.0
            while not self._finished.wait(_KICK_AGAIN_S) and waited < _KICK_FOR_S:
                waited += _KICK_AGAIN_S
                tid = self._tid
                if tid:
                    kick(tid)
                # Not given a thread (yet): one that comes later finds
                # ``stop`` ended before it waits; one cancelled never comes.

        threading.Thread(target=again, name="unotifyd-end-work", daemon=True).start()

    def abandon(self) -> bool:
        """Give up on the result; True if the thread is still running."""
        with self._lock:
            self._abandoned = True
            if self._done:
                self._dispose(self._result)
                self._result = None
            return not self._done

    @staticmethod
    def _dispose(result: Result) -> None:
        if isinstance(result, int) and result >= 0:
            os.close(result)
