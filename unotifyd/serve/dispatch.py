"""Dispatch: one notification from its receipt to its answer, synchronously; no trio.

:class:`Dispatcher` looks the call up in the registry, has it decided
(:mod:`.decide`) and answers the decision with the function the table
:data:`_ANSWERS` has for its type. Work that may wait (a FIFO, a device, a
connect) is handed to a ``defer`` callback: the start-up
loop of :mod:`.bootstrap` and the trio :class:`~.trioserve.TrioServer`
each bring theirs.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import sys
from collections.abc import Callable
from functools import partial

from ..calls.decode import OpenCall
from ..calls.ops import Outcome
from ..calls.registry import BY_NR
from ..kernel import abi
from ..kernel.errors import MemoryDenied, ProgramGone
from ..kernel.listener import Notification
from ..kernel.opener import Start, may_create
from ..kernel.passthrough import Lane
from ..policy import Continue, EmulateOpen, Fail, Listing, RefuseWrite, Return, Rewrite
from ..policy.paths import PerformPath
from .decide import Decider
from .handoff import Job, Work, answer, open_errno, past_its_fd, perform
from .listing import answer_listing
from .opens import may_block, our_name
from .passthrough import count, lane_due, open_lane
from .rewrite import answer_rewrite
from .served import AnyDecision, InFlight, Served, Stats
from .trace import Tracer, record

# A handler that crashes fails the call: never CONTINUE on an error.
_INTERNAL_ERROR_ERRNO = errno.EPERM

#: Hands work that must wait (in a worker thread) to the serving loop.
Defer = Callable[[Served, InFlight, Job], None]


class Deferred(enum.Enum):
    """An answer left to a worker thread, which traces it then."""

    DEFERRED = enum.auto()


#: What answering gives: the call's result as the program sees it (for the
#: trace), None where the kernel runs the call (CONTINUE), or DEFERRED.
Answered = int | None | Deferred


class Dispatcher:
    """Decides and answers notifications of any number of listeners.

    ``colocate`` runs a program's thread on our CPU while it takes an
    injected fd (see :mod:`unotifyd.kernel.sched`), where the listener's
    wait is killable (:attr:`Served.killable_wait`).
    """

    def __init__(
        self, tracer: Tracer | None = None, *, colocate: bool = True, decider: Decider | None = None
    ) -> None:
        self.tracer = tracer or Tracer()
        self.colocate = colocate
        self.decider = decider or Decider(self.tracer)
        self.stats = Stats()

    def close(self) -> None:
        self.decider.close()

    @staticmethod
    def lane_due(s: Served) -> bool:
        """Whether a serving loop should stop draining and try a lane for ``s``:
        :data:`~.passthrough.START_AFTER` calls answered here since the last
        (more after fruitless runs: :func:`.passthrough.lane_due`)."""
        return lane_due(s)

    def pass_through(self, s: Served) -> Lane | None:
        """A compiled lane for ``s``'s calls no rule concerns, not started, if
        one is due and may run (see :mod:`.passthrough`); else None, and the
        count starts again (a lane that could not start is tried later)."""
        if not self.lane_due(s):
            return None
        lane = open_lane(s, self.tracer.enabled, colocate=self.colocates(s))
        if lane is None:
            s.python_served = 0
        return lane

    def lane_counted(self, s: Served, lane: Lane) -> None:
        """Count what ``lane`` answered by itself so far."""
        count(lane, (self.stats, s.stats))

    def lane_ended(self, s: Served, lane: Lane) -> None:
        """Count what ``lane`` answered; say why if it failed (serving goes on here,
        alone for good after a failure; for longer after a fruitless run)."""
        count(lane, (self.stats, s.stats))
        s.python_served = 0
        s.lane_fruitless = s.lane_fruitless + 1 if lane.ended == "fruitless" else 0
        if lane.ended == "failed":
            s.lane_refused = True
            err = -(lane.result or 0)
            self.tracer.warn(
                f"{s.name or 'the program'}: the pass-through lane stopped "
                f"({os.strerror(err) if err > 0 else 'no reason given'}); "
                "every call is decided in Python from now on"
            )

    def handle(self, s: Served, notif: Notification, defer: Defer) -> None:
        """Decide and answer one notification; never raises, never leaves it pending."""
        self.stats.notifications += 1
        s.python_served += 1
        if s.stats is not None:
            s.stats.notifications += 1
        p = InFlight(notif)
        s.gate.received(notif.id)
        result: Answered = None
        try:
            p.decision = d = self._decide(s, p)
            result = _ANSWERS[type(d)](self, s, p, d, defer)
        except ProgramGone:
            self.gone(s, p)
            return
        except Exception as e:
            self.internal_error(s, p, e)
            return
        finally:
            if result is not Deferred.DEFERRED:
                s.gate.settled(notif.id)  # else the worker's answer settles it
        if result is not Deferred.DEFERRED:
            self.record(s, p, None, result)

    def _decide(self, s: Served, p: InFlight) -> AnyDecision:
        n = p.notif
        entry = BY_NR.get(n.nr)
        if entry is None or n.arch != abi.AUDIT_ARCH_X86_64:
            # Only syscalls we asked for are trapped; anything else is a bug
            # or a filter we did not write. Fail closed.
            return Fail(errno.ENOSYS, f"unexpected syscall {n.nr} (arch {n.arch:#x})")
        p.syscall = entry
        self.stats.syscalls[entry.name] += 1
        if s.stats is not None:
            s.stats.syscalls[entry.name] += 1
        try:
            return self.decider.decide(s, p)
        except MemoryDenied as e:
            return self._memory_denied(s, e)

    def _memory_denied(self, s: Served, e: MemoryDenied) -> Fail:
        """EPERM for a call whose arguments we may not read; said once per program."""
        if not s.told_undumpable:
            s.told_undumpable = True
            self.tracer.warn(
                f"{s.name or 'the program'} (pid {e.tid}) made itself non-dumpable "
                "(PR_SET_DUMPABLE 0, as ssh-agent and gpg-agent do): a supervisor without "
                "CAP_SYS_PTRACE may not read its memory, so its trapped calls fail with "
                "EPERM; run unotifyd as root to serve it"
            )
        return Fail(errno.EPERM, f"{e}: the program is not dumpable")

    # --- answers, one per decision type --------------------------------------------

    def _continue(self, s: Served, p: InFlight, d: Continue, defer: Defer) -> Answered:
        s.listener.send_continue(p.notif.id)
        return None

    def _fail(self, s: Served, p: InFlight, d: Fail, defer: Defer) -> Answered:
        err = d.errno
        call = p.call
        if isinstance(call, OpenCall) and past_its_fd(call):
            err = open_errno(p.notif.pid, err)
        s.listener.send_error(p.notif.id, err)
        return -err

    def _return(self, s: Served, p: InFlight, d: Return, defer: Defer) -> Answered:
        s.listener.send_value(p.notif.id, d.value)
        return d.value

    def _rewrite(self, s: Served, p: InFlight, d: Rewrite, defer: Defer) -> Answered:
        pid = p.notif.pid
        answer_rewrite(s.listener, p, d, lambda: self.decider.creds.read(pid, need_umask=False))
        return None

    def _listing(self, s: Served, p: InFlight, d: Listing, defer: Defer) -> Answered:
        return answer_listing(s.listener, p.notif, p.notif.args, d)

    def _work(self, s: Served, p: InFlight, d: Work, defer: Defer) -> Answered:
        """Perform ``d`` and answer; or hand it to ``defer`` (a worker thread).

        Inline when it cannot block, acting as the program where its
        credentials are not ours (kernel/creds.acting_as switches this
        thread alone, with raw calls, and the work makes no checkpoint): a
        hop to a worker thread and back costs ~170 us here, four times the
        work itself (an open under --enforce: 758 us as nobody, 150 as root).
        """
        n = p.notif
        listener = s.listener
        # A path call's operation says whether it applies the umask and may
        # wait; an open's flags and a look at its file say it. The program's
        # own names are opened in its root (a container's); a redirect's
        # target is a path of ours.
        if isinstance(d, PerformPath):
            assert p.syscall is not None
            creates, in_root = p.syscall.operation.uses_umask, p.own_root
        else:
            creates = isinstance(d, EmulateOpen) and may_create(d.flags)
            in_root = p.own_root and (isinstance(d, RefuseWrite) or d.in_program_root)
        root_tid = n.pid if in_root else None
        creds = self.decider.program_creds(p, need_umask=creates)
        # Everything the decision rests on (path, cwd, credentials) was read
        # from a process that may since have died and had its pid reused. An
        # emulated open has effects of its own (O_CREAT, O_TRUNC), so make
        # sure the call is still pending before performing it
        # (seccomp_unotify(2), NOTES). CONTINUE and errno answers skip this
        # check: notification ids are never reused, so an answer to a dead
        # call fails with ENOENT and touches nothing.
        if not listener.id_valid(n.id):
            raise ProgramGone("notification no longer valid")
        start = None
        if isinstance(d, PerformPath):
            assert p.syscall is not None
            call, blocks = p.path_call, p.syscall.operation.may_block
        else:
            call = None
            # A special file's open in a read-only tree is made too (RefuseWrite).
            blocks = may_block(our_name(d.path, root_tid))
            opened = p.call
            if isinstance(opened, OpenCall):
                valid = partial(listener.id_valid, n.id)
                start = Start.of(n.pid, opened.dirfd, opened.path, valid)
        job = Job(
            d, call, creds, root_tid, listener, n, blocks, p.policy, self.colocates(s), start
        )
        if not blocks:
            result = perform(job, nonblocking=True)
            if result is not None:
                return self.answer(job, p, result)
            # Raced into a FIFO or a device since our stat: redo it blocking.
        defer(s, p, job)
        return Deferred.DEFERRED

    def colocates(self, s: Served) -> bool:
        """Whether a thread of ``s`` takes an injected fd on our CPU (see the class doc)."""
        return self.colocate and s.killable_wait

    def answer(self, job: Job, p: InFlight, result: int | Outcome) -> int:
        """Answer ``job``'s call with what performing it gave (see handoff.Result)."""
        if isinstance(result, Outcome):
            p.outcome = result
        return answer(job.listener, job.notif, job.decision, result, job.colocate)

    # --- the end of a call ---------------------------------------------------------

    def gone(self, s: Served, p: InFlight | None = None) -> None:
        """Count a call whose program (or call) went away before its answer."""
        self.stats.gone += 1
        if s.stats is not None:
            s.stats.gone += 1
        if p is not None:
            self.record(s, p, "gone", None)

    def internal_error(self, s: Served, p: InFlight, exc: BaseException) -> None:
        self.stats.internal_errors += 1
        if s.stats is not None:
            s.stats.internal_errors += 1
        # Gone already, or the listener itself is broken: nothing more to do.
        with contextlib.suppress(Exception):
            s.listener.send_error(p.notif.id, _INTERNAL_ERROR_ERRNO)
        self.record(s, p, "internal-error", -_INTERNAL_ERROR_ERRNO)
        # Said once the call is answered: traceback is imported only now
        # (with linecache and tokenize it cost every launch ~3 ms), and an
        # import can fail where the error came from (EMFILE, ENOMEM).
        print(f"unotifyd: internal error serving pid {p.notif.pid}:", file=sys.stderr)
        try:
            import traceback  # noqa: PLC0415

            traceback.print_exception(exc, file=sys.stderr)
        except Exception:  # the error is said, if not in full
            print(f"unotifyd: {exc!r}", file=sys.stderr)

    def record(self, s: Served, p: InFlight, outcome: str | None, result: int | None) -> None:
        """Count the call's decision and trace it."""
        record(self.tracer, (self.stats, s.stats), s.name, p, outcome=outcome, result=result)


#: How each type of decision is answered: (dispatcher, served, call, decision, defer).
_ANSWERS: dict[type, Callable[..., Answered]] = {
    Continue: Dispatcher._continue,
    Fail: Dispatcher._fail,
    Return: Dispatcher._return,
    Rewrite: Dispatcher._rewrite,
    Listing: Dispatcher._listing,
    EmulateOpen: Dispatcher._work,
    RefuseWrite: Dispatcher._work,
    PerformPath: Dispatcher._work,
}
