"""Serving a launched program without trio for as long as no call must wait.

Importing trio costs ~65 ms, and until a program's first trapped call is
answered it cannot even load its libraries. So ``unotifyd launch`` serves
with the synchronous :class:`~unotifyd.serve.dispatch.Dispatcher`, which
answers every call that cannot block inline: most programs never need
more, and then trio is never imported. As soon as a call must wait in a
worker thread (a FIFO, a device, a connect), serving moves on to
the :class:`~unotifyd.serve.trioserve.TrioServer`, which picks up what was
left (:class:`StartupEnd`).

There used to be a time budget (0.2 s) after which trio took over anyway:
the import then stalled every trapped call of a running program for ~65 ms,
5 us per call of a 0.3 s benchmark run, for no service trio gave it.
"""

from __future__ import annotations

import os
import select
import threading

from ..kernel.listener import Notification
from ..kernel.passthrough import Lane
from ..record import field, record
from .dispatch import Dispatcher
from .drain import drain
from .handoff import Job
from .served import InFlight, Served


@record
class StartupEnd:
    """Where the start-up loop stopped.

    ``status`` is the program's wait status once it was reaped; ``finished``
    says every process using the filter is gone too, or serving was told to
    stop (nothing left to serve); ``deferred`` are received calls whose
    emulation waits for a worker thread.
    """

    status: int | None = None
    finished: bool = False
    deferred: list[tuple[InFlight, Job]] = field(default_factory=list)


def serve_first(dispatcher: Dispatcher, s: Served, pid: int, stop_fd: int = -1) -> StartupEnd:
    """Serve ``s`` until done or a call must wait.

    ``stop_fd`` (an eventfd, say) becoming readable means: the program is
    gone, stop serving what it left behind (see :class:`StopServing`).
    """
    out = StartupEnd()
    listener = s.listener
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if stop_fd >= 0:
        poller.register(stop_fd, select.POLLIN)

    def defer(s: Served, p: InFlight, job: Job) -> None:
        out.deferred.append((p, job))

    def serve(notif: Notification) -> None:
        dispatcher.handle(s, notif, defer)

    def gone() -> None:
        dispatcher.gone(s)

    def must_wait() -> bool:
        # Or a lane is due: a busy program keeps the listener readable, and
        # draining would go on for as long as it runs.
        return bool(out.deferred) or dispatcher.lane_due(s)

    hung_up = False
    lane: Lane | None = None
    listener.claim_reader()
    try:
        while not out.deferred:
            if lane is None and not hung_up:
                # The compiled lane, once due, answers what no rule concerns
                # (see .passthrough) and forwards the rest through its
                # socket, which is watched instead of the listener while it
                # runs.
                lane = dispatcher.pass_through(s)
                if lane is not None and lane.start():
                    poller.unregister(listener.fileno())
                    poller.register(lane.fileno(), select.POLLIN)
                elif lane is not None:
                    lane.finish(serve)  # it never ran: tried again later (lane_ended)
                    dispatcher.lane_ended(s, lane)
                    lane = None
            # While a lane runs, look at it now and then even if it says
            # nothing: one that ended without a word is then seen (take()).
            for fd, _ in poller.poll(None if lane is None else _LANE_LOOK_MS) or [(-1, 0)]:
                if fd == stop_fd:
                    # Only sent once the program is gone (ESRCH from its
                    # pidfd): a zombie, so waitpid returns at once.
                    if out.status is None:
                        _, out.status = os.waitpid(pid, 0)
                    out.finished = True
                    return out
                if fd == pidfd:
                    # The pidfd is readable once the program exited
                    # (pidfd_open(2)); reap it, as the trio loop would.
                    _, out.status = os.waitpid(pid, 0)
                    poller.unregister(pidfd)
                    if hung_up:
                        out.finished = True
                        return out
                    continue
                if lane is not None and fd in (lane.fileno(), -1):
                    ended = lane.take(serve, limit=_LANE_BATCH)
                    if ended is None:
                        continue
                    poller.unregister(lane.fileno())  # fd is -1 after a silent second
                    lane.finish(serve)
                    dispatcher.lane_ended(s, lane)
                    lane = None
                    if ended != "hangup":  # Idle, or failed: served here again.
                        poller.register(listener.fileno(), select.POLLIN)
                        continue
                    if out.status is not None:
                        out.finished = True
                        return out
                    hung_up = True
                    continue
                if drain(listener, serve, gone, stop=must_wait) == "hangup":
                    if out.status is not None:
                        out.finished = True
                        return out
                    # The program is not reaped yet: its pidfd wakes us.
                    poller.unregister(listener.fileno())
                    hung_up = True
    finally:
        if lane is not None:
            # What it forwarded until it stopped is served too (work that
            # must wait goes to trio with the rest of out.deferred).
            lane.finish(serve)
            dispatcher.lane_ended(s, lane)
        listener.release_reader()
        os.close(pidfd)
    return out


#: While a lane runs: how long the loop waits for its word before it looks
#: whether it still runs, and how many forwarded calls it serves before it
#: looks whether one must wait (and trio take over).
_LANE_LOOK_MS = 1000
_LANE_BATCH = 64


class StopServing:
    """Tells :func:`serve_first` to stop, from another thread, through an eventfd.

    Callable (the signal forwarder's ``on_program_gone``); :meth:`close`
    makes later calls do nothing, under a lock, so that a call racing with
    it can never write to the fd number after it was closed and reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def __call__(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                os.close(fd)
