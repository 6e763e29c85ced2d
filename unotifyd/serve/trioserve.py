"""Serving with trio: every notification of one or more listeners.

One task reads each listener. When the listener is readable it *drains*
it (:func:`~.drain.drain`): every pending notification is received and
answered inline by the :class:`~.dispatch.Dispatcher`, without a trip
through the scheduler, as long as answering cannot block. Anything
that may block (an open of a FIFO or a device, a connect, a truncate that
may break a lease) goes to a worker thread, so one slow call never stalls
the others.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ..calls.ops import Outcome
from ..calls.registry import OPERATIONS
from ..kernel import abi, kick
from ..kernel.errors import ProgramGone
from ..kernel.listener import Listener, Notification
from ..kernel.program import signal_ends_wait
from ..policy import EmulateOpen, Policy, RefuseWrite
from .backing import Backing
from .dispatch import Dispatcher
from .drain import drain
from .handoff import Job, WorkerResult, perform
from .opens import unblock_fifo
from .served import Gate, InFlight, Served, Stats, Waiting
from .trace import Tracer

# How many notifications one listener may answer before yielding to the
# scheduler, so that one busy program cannot starve the others.
_DRAIN_BATCH = 64
# How often a paused listener looks whether it may receive again.
_PAUSED_POLL_S = 0.005
# How often what the lane answered is added to the counters while it runs.
_LANE_COUNT_S = 1.0
#: The pass-through lane in a Gate's count of calls in flight (notification
#: ids are unsigned: none is negative).
_LANE_IN_FLIGHT = -1
# Worker threads for emulated opens (see Supervisor._run_job): for opens
# that cannot block, for opens that may, and how many of those one program
# may hold.
_MAX_QUICK_THREADS = 64
_MAX_BLOCKING_THREADS = 1024
_MAX_BLOCKED_PER_PROGRAM = 256
#: How many waiting calls' signals the watcher of a listener reads per round
#: (five rounds a second): a signal reaches one of 64 waiting opens within
#: 0.2 s, one of a thousand within 3 s.
_SIGNAL_LOOKS = 64


class TrioServer:
    """Serves listeners with trio, each with its own policy; shares caches between them.

    One task reads each listener and has its :attr:`dispatcher` answer
    inline; work that must wait goes to worker threads. Given a dispatcher,
    it goes on where that one served without trio (same caches, counters).
    """

    def __init__(
        self,
        tracer: Tracer | None = None,
        *,
        colocate: bool = True,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.dispatcher = dispatcher or Dispatcher(tracer, colocate=colocate)
        self._limiters: tuple[trio.CapacityLimiter, trio.CapacityLimiter] | None = None
        # Made in the main thread (launch, the library's caller), this
        # installs the kick; a daemon installs it at start (daemon/cli.py).
        kick.install()

    @property
    def stats(self) -> Stats:
        """The totals of every listener served."""
        return self.dispatcher.stats

    def close(self) -> None:
        self.dispatcher.close()

    async def serve(
        self,
        listener: Listener,
        policy: Policy,
        *,
        name: str = "",
        stats: Stats | None = None,
        sync_wakeup: bool = True,
        gate: Gate | None = None,
        root_pinned: bool = False,
        refuse_all: str | None = None,
    ) -> None:
        """Serve ``listener`` until every process using its filter is gone.

        ``name`` tags its trace events; ``stats``, if given, counts its
        notifications besides :attr:`stats`, the supervisor's totals.
        ``root_pinned``: the listener's filter is one this version made
        (see :attr:`Served.root_pinned`). ``refuse_all``: why every call
        it traps is refused (see :attr:`Served.refuse_all`).
        Returns on ``POLLHUP`` without ``POLLIN``: after that RECV fails with
        ``ENOENT`` at once forever, so waiting for more would spin. The
        listener stays open; its owner closes it.

        ``sync_wakeup`` sets ``SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`` on the
        listener (6.6+; nothing happens on older kernels): an answer then
        wakes the program on our CPU (``complete_on_current_cpu`` in
        seccomp_notify_send, kernel/seccomp.c) and its next trapped call
        wakes us on its own (``wake_up_poll_on_current_cpu``), instead of
        cross-CPU wake-ups, which are slow on virtual CPUs. Measured here (2 vCPUs)
        for programs of the daemon, each with its own listener: one program,
        108 -> 21 us per pass-through open; 8 programs at once, 350 -> 155 us
        per open each (23k -> 52k notifications/s), and their redirects 15%
        faster. One listener shared by 64 programs is faster with it too
        (benchmarks, section 3). So it stays on however many programs are
        busy; the option is there for machines where that does not hold.
        """
        if sync_wakeup:
            listener.set_sync_wakeup()
        try:
            backing = Backing(policy)
        except OSError as e:
            # Fail closed for this program only: its listener is closed by
            # its owner, and its trapped calls then fail (ENOSYS).
            print(f"unotifyd: {name or 'program'}: cannot prepare its files: {e}", file=sys.stderr)
            return
        with backing:
            served = Served(
                listener, backing.policy, name, stats, root_pinned=root_pinned,
                refuse_all=refuse_all,
            )  # fmt: skip
            if gate is not None:
                served.gate = gate
            try:
                await self.serve_served(served)
            finally:
                # The pidfds kept of its threads go with it (kernel/creds.py):
                # a daemon must hold nothing of a program it no longer serves.
                self.dispatcher.decider.forget_threads()

    async def serve_served(self, s: Served, deferred: Sequence[tuple[InFlight, Job]] = ()) -> None:
        """Serve ``s`` (see :meth:`serve`), first starting ``deferred`` work."""
        listener = s.listener
        fd = listener.fileno()
        dispatcher = self.dispatcher
        listener.claim_reader()
        try:
            async with trio.open_nursery() as nursery:

                def defer(s: Served, p: InFlight, job: Job) -> None:
                    nursery.start_soon(self._perform_in_thread, s, p, job, nursery)

                def serve(notif: Notification) -> None:
                    dispatcher.handle(s, notif, defer)

                def gone() -> None:
                    dispatcher.gone(s)

                for p, job in deferred:
                    defer(s, p, job)
                gate = s.gate

                def paused() -> bool:
                    # Or a lane is due: a busy program keeps the listener
                    # readable, and draining would never end.
                    return gate.paused or dispatcher.lane_due(s)

                while True:
                    if gate.paused:
                        # Receiving nothing until resumed (see Gate); a
                        # listener that stays readable must not spin us.
                        await trio.sleep(_PAUSED_POLL_S)
                        continue
                    if await self._serve_with_lane(s, serve):
                        # Nobody is left to answer (as below).
                        nursery.cancel_scope.cancel()
                        return
                    await trio.lowlevel.wait_readable(fd)
                    drained = drain(listener, serve, gone, limit=_DRAIN_BATCH, stop=paused)
                    while drained == "limit":
                        await trio.sleep(0)
                        drained = drain(listener, serve, gone, limit=_DRAIN_BATCH, stop=paused)
                    if drained == "hangup":
                        # Nobody is left to answer: give up on opens still
                        # blocked in worker threads (a FIFO without a peer).
                        nursery.cancel_scope.cancel()
                        return
        finally:
            listener.release_reader()

    async def _serve_with_lane(self, s: Served, serve: Callable[[Notification], None]) -> bool:
        """Serve ``s`` through the compiled pass-through lane while it runs, if
        one is due (see :mod:`.passthrough`); True once every process using
        the filter is gone, False when serving goes on here.

        A lane holds a notification between its RECV and its answer that
        nobody else can see, so it counts as one call in flight
        (:data:`_LANE_IN_FLIGHT`) from before it starts, before the gate is
        looked at, to after it ended: a hand-over's pause waits for it, and
        stops it at once (``Gate.on_pause``).
        """
        dispatcher = self.dispatcher
        gate = s.gate
        if not dispatcher.lane_due(s):
            return False  # most wake-ups: nothing to take or give back
        gate.received(_LANE_IN_FLIGHT)
        lane = None
        try:
            lane = dispatcher.pass_through(s)
            if lane is None:
                return False
            # In this order: a pause before received() is seen below (and a
            # hand-over that read no call in flight may already be under
            # way: no RECV of ours may come); one after on_pause() stops
            # the lane, before its first poll if need be (the eventfd is
            # then made readable: see Lane.start).
            gate.on_pause(lane.stop_soon)
            if gate.paused:
                return False
            if not lane.start():
                return False  # tried again later (lane_ended, below)
            counted_at = trio.current_time()
            while True:
                with trio.move_on_after(_LANE_COUNT_S):
                    await trio.lowlevel.wait_readable(lane.fileno())
                ended = lane.take(serve, limit=_DRAIN_BATCH)
                if ended is not None:
                    return ended == "hangup"
                if trio.current_time() >= counted_at + _LANE_COUNT_S:
                    # A daemon's status shows them while the program runs.
                    dispatcher.lane_counted(s, lane)
                    counted_at = trio.current_time()
        finally:
            gate.on_pause(None)
            if lane is not None:
                # What the lane forwarded until it stopped is served as the
                # loop would have (on cancellation, work that must wait is
                # abandoned with the nursery, and fails with ENOSYS once
                # the listener closes).
                lane.finish(serve)
                dispatcher.lane_ended(s, lane)
            gate.settled(_LANE_IN_FLIGHT)

    async def _perform_in_thread(
        self, s: Served, p: InFlight, job: Job, nursery: trio.Nursery
    ) -> None:
        """Perform ``job`` in a worker thread and answer, unless the call is abandoned first.

        A blocking open (a FIFO waiting for its other end) may outlive the
        call: the program can be killed, or interrupted by a signal, while
        we wait. The thread is then abandoned, and the open unblocked if it
        is a FIFO (:func:`unblock_fifo`); :class:`WorkerResult` closes the fd it
        returns late, since no one will inject it. An interrupted call is
        answered ``-ERESTARTSYS``, as the kernel ends the program's own wait
        (see :func:`_watch_waiting`).
        """
        n = p.notif
        dispatcher = self.dispatcher
        handoffs: list[WorkerResult] = []
        outcome: int | BaseException | None = None
        waiting: Waiting | None = None
        # A connect or a send (an open is ended by unblock_fifo, below).
        interruptible_call = job.call is not None and OPERATIONS[job.call.op].interruptible
        try:
            with trio.CancelScope() as scope:
                interruptible = job.may_block and (
                    isinstance(job.decision, EmulateOpen | RefuseWrite) or interruptible_call
                )
                waiting = s.waiting[n.id] = Waiting(
                    scope, n.pid, interruptible and kick.installed(), handoffs
                )
                if not s.watching:
                    s.watching = True
                    nursery.start_soon(_watch_waiting, s)
                try:
                    raw = await self._run_job(s, job, handoffs)
                except Exception as e:
                    outcome = e
                else:
                    if waiting.interrupted and raw == -errno.EINTR:
                        # Kicked out of its open: a signal for the program.
                        # (A connect or a send says how it ends itself:
                        # calls/ops.until_interrupted.)
                        raw = -abi.ERESTARTSYS
                    # No checkpoint between receiving the fd and handing it
                    # over: a cancellation here would leak it.
                    try:
                        outcome = dispatcher.answer(job, p, raw)
                    except Exception as e:
                        outcome = e
        finally:
            s.waiting.pop(n.id, None)
            s.gate.settled(n.id)
            # Also when the serving task is cancelled (the last process of
            # the listener exited just after our answer): the call was
            # answered and must be counted and traced all the same.
            abandoned = outcome is None and handoffs and handoffs[-1].abandon()
            if abandoned and isinstance(job.decision, EmulateOpen | RefuseWrite):
                unblock_fifo(job.decision, job.creds, job.root_tid)
            elif abandoned and interruptible_call:
                handoffs[-1].end()
            if outcome is None or isinstance(outcome, ProgramGone):
                # Abandoned, or cancelled because nobody is left to answer.
                dispatcher.gone(s, p)
            elif isinstance(outcome, int):
                dispatcher.record(s, p, None, outcome)
            else:
                dispatcher.internal_error(s, p, outcome)

    async def _run_job(self, s: Served, job: Job, handoffs: list[WorkerResult]) -> int | Outcome:
        """Run ``job`` in a worker thread of the right pool; what it gave (see handoff.Result).

        Two pools, so that opens blocked on FIFOs can never starve the
        others: work that should not block (an open that raced into a FIFO
        after our look, which is tried without waiting first) has threads
        of its own, and blocking work is also capped per program. A
        "regular" file that turns out to be a FIFO moves on to the
        blocking pool.
        """
        quick, blocking = self._thread_limiters()
        if not job.may_block:
            handoffs.append(WorkerResult())
            raw = await trio.to_thread.run_sync(
                handoffs[-1].run,
                partial(perform, job, True),
                abandon_on_cancel=True,
                limiter=quick,
            )
            if raw is not None:
                return raw
            waiting = s.waiting.get(job.notif.id)
            if waiting is not None and isinstance(job.decision, EmulateOpen | RefuseWrite):
                # A FIFO took the file's place since our look: the open may
                # wait now, and a signal must end that wait as it would the
                # program's own (see _watch_waiting).
                waiting.interruptible = kick.installed()
        if s.blocking is None:
            s.blocking = trio.CapacityLimiter(_MAX_BLOCKED_PER_PROGRAM)
        handoffs.append(WorkerResult())
        async with s.blocking:
            raw = await trio.to_thread.run_sync(
                handoffs[-1].run,
                partial(perform, job, False, handoffs[-1].stop),
                abandon_on_cancel=True,
                limiter=blocking,
            )
        assert raw is not None  # Only non-blocking attempts give up.
        return raw

    def _thread_limiters(self) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
        """The worker-thread pools: (opens that cannot block, opens that may).

        trio's default limiter (40 threads for everything) would let 40
        programs blocked on FIFOs stall every other program's emulated opens.
        """
        if self._limiters is None:
            self._limiters = (
                trio.CapacityLimiter(_MAX_QUICK_THREADS),
                trio.CapacityLimiter(_MAX_BLOCKING_THREADS),
            )
        return self._limiters

async def _watch_waiting(s: Served) -> None:
    """Cancel the wait of every call of ``s`` in a worker thread once it is
    abandoned, or interrupted by a signal.

    The kernel sends nothing when a waiting program is killed, so poll
    ``ID_VALID``; a few times a second is plenty for a call that is blocked
    anyway. Nor does it end the program's wait for a signal that would have
    interrupted the call natively: ``WAIT_KILLABLE_RECV`` (kernel/filter.py)
    makes that wait end only for a fatal one once we received the call. So
    for an open that may block (a FIFO's, waiting for its other end) the
    thread's pending signals are looked at too (:func:`signal_ends_wait`):
    the worker is then kicked out of its open (kernel/kick.py), and the
    call answered ``-ERESTARTSYS`` as the kernel ends the program's own
    wait: the signal code on its way out makes that EINTR, or a restart
    under ``SA_RESTART`` or after a stop. An open that got its file first
    is answered with it. A connect or a send waiting (for the listener's
    backlog, the receiver's queue) is ended the same way: made on our copy
    of the program's socket, the same open file, it has done nothing when
    interrupted (calls/ops.until_interrupted), and a restart goes on from
    the socket's state as the program's own restart would.
    One task per listener, not one per call: a
    program with a thousand opens blocked on FIFOs would otherwise keep a
    thousand tasks waking five times a second, taking CPU (and the GIL) from
    every other program. Ends once no call waits; started again by the next.
    """
    listener = s.listener
    turn = 0
    try:
        while s.waiting:
            await trio.sleep(0.2)
            waits = list(s.waiting.items())
            if not waits:
                break
            # Reading a thread's signals costs ~30 us: a program with a
            # thousand opens waiting would hold the GIL for 30 ms a round.
            # So at most _SIGNAL_LOOKS a round, taking turns.
            turn %= len(waits)
            waits = waits[turn:] + waits[:turn]
            looks = 0
            for nid, w in waits:
                try:
                    valid = listener.fd >= 0 and listener.id_valid(nid)
                    if valid and w.interruptible and w.handoffs and not w.interrupted and (
                        looks < _SIGNAL_LOOKS
                    ):
                        looks += 1
                        w.interrupted = signal_ends_wait(w.tid)
                except Exception:
                    valid = False
                if not valid:
                    w.scope.cancel()
                elif w.interrupted:
                    w.handoffs[-1].interrupt()  # again: see WorkerResult.interrupt
            turn += looks
    finally:
        s.watching = False
