"""Run the supervisor for one launched program until everything it started is gone.

trio is imported only when a call must wait in a worker thread
(:mod:`unotifyd.serve.bootstrap`): its ~65 ms would otherwise delay the
program's trapped calls, and most programs never need it.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Protocol

from ..calls.registry import trapped
from ..kernel.listener import Listener
from ..policy import Policy
from .backing import Backing
from .bootstrap import StartupEnd, StopServing, serve_first
from .dispatch import Dispatcher
from .served import Served, Stats
from .trace import Tracer

if TYPE_CHECKING:
    from .trioserve import TrioServer

class SignalForwarder(Protocol):
    """What forwards signals to the program (see :class:`unotifyd.launch.SignalForwarder`)."""

    on_program_gone: Callable[[], None] | None


async def _wait_pid(pid: int) -> int:
    """Wait for child ``pid`` without blocking the scheduler; return its wait status.

    A pidfd becomes readable when the process exits (pidfd_open(2)); then
    ``waitpid`` reaps it at once.
    """
    import trio  # noqa: PLC0415 - see the module docstring

    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return status


async def _serve_rest(
    server: TrioServer,
    s: Served,
    pid: int,
    first: StartupEnd,
    forwarder: SignalForwarder | None,
) -> int:
    """Serve with trio from where the start-up loop stopped, until everything is gone."""
    import trio  # noqa: PLC0415 - see the module docstring

    async with trio.open_nursery() as nursery:
        # Threads, forked children and orphans of the program stay under the
        # filter after it exits: serve until the listener hangs up, which
        # happens once the last of them is gone.
        nursery.start_soon(server.serve_served, s, first.deferred)
        if forwarder is not None:
            token = trio.lowlevel.current_trio_token()
            stop = nursery.cancel_scope.cancel

            def stop_serving() -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(stop, trio_token=token)

            forwarder.on_program_gone = stop_serving
        status = first.status if first.status is not None else await _wait_pid(pid)
    return status


def run_supervisor(
    listener_fd: int,
    pid: int,
    policy: Policy,
    *,
    trace: IO[str] | None = None,
    trace_json: IO[str] | None = None,
    stats: IO[str] | None = None,
    sync_wakeup: bool = True,
    colocate: bool = True,
    killable_wait: bool = False,
    notes: Sequence[str] = (),
    forwarder: SignalForwarder | None = None,
) -> int:
    """Serve the program's listener (closing it at the end); return the program's wait status.

    ``killable_wait``: its filter has WAIT_KILLABLE_RECV (see Served.killable_wait).
    """
    names = sorted(trapped(policy))
    traps = f"filter traps {len(names)} system calls: {', '.join(names) or 'none'}"
    if stats is not None:
        print(f"unotifyd: {traps}", file=stats, flush=True)
    tracer = Tracer(trace, trace_json)
    if stats is None:
        tracer.note(traps)
    for note in notes:
        tracer.note(note)
    with Listener(listener_fd) as listener:
        if sync_wakeup:
            # Measured here, one listener: 1 program 18 vs 32-54 µs per
            # pass-through open with it; 4 programs 75 vs 92 µs; 16
            # programs 35k vs 27k notifications/s. So launch keeps it on.
            on = listener.set_sync_wakeup()
            tracer.note(f"SYNC_WAKE_UP {'on' if on else 'not supported by this kernel (6.6+)'}")
        tracer.note(f"mode {policy.mode}, view {policy.view}")
        for line in policy.describe():
            tracer.note(f"rule {line}")
        dispatcher = Dispatcher(tracer, colocate=colocate)
        backing = Backing(policy)
        # Our filter, made from this policy: it traps or refuses every call
        # that changes a root (see Served.root_pinned).
        s = Served(listener, backing.policy, root_pinned=True, killable_wait=killable_wait)
        stop = StopServing()
        try:
            if forwarder is not None:
                forwarder.on_program_gone = stop
            first = serve_first(dispatcher, s, pid, stop_fd=stop.fd)
            if first.finished:
                assert first.status is not None
                return first.status
            import trio  # noqa: PLC0415 - see the module docstring

            from .trioserve import TrioServer  # noqa: PLC0415

            server = TrioServer(dispatcher=dispatcher)
            status: int = trio.run(_serve_rest, server, s, pid, first, forwarder)
            return status
        finally:
            if forwarder is not None:
                forwarder.on_program_gone = None
            stop.close()
            dispatcher.close()
            tracer.close()  # what is queued is written before we exit
            backing.close()
            if stats is not None:
                print_stats(dispatcher.stats, stats)


def print_stats(st: Stats, out: IO[str]) -> None:
    """The ``--stats`` lines: notifications by system call (all, and those the
    pass-through lane answered) and by decision."""

    def counts(c: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"

    passed = st.passed_through
    second = f" ({st.lane_second} by its second thread)" if st.lane_second else ""
    lane = f"; {passed} answered by the pass-through lane{second}" if passed else ""
    print(
        f"unotifyd: stats: {st.notifications} notifications "
        f"({st.gone} gone, {st.internal_errors} internal errors){lane}\n"
        f"unotifyd: stats: by system call: {counts(st.syscalls)}\n"
        + (f"unotifyd: stats: by the lane: {counts(st.lane_syscalls)}\n" if passed else "")
        + f"unotifyd: stats: by decision: {counts(st.decisions)}",
        file=out,
        flush=True,
    )
