"""Run the supervisor for one launched program until everything it started is gone."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, Protocol

import trio

from ..kernel.listener import Listener
from ..policy import Policy
from .supervisor import Supervisor
from .trace import Tracer


class SignalForwarder(Protocol):
    """What forwards signals to the program (see :class:`unotifyd.launch.SignalForwarder`)."""

    on_program_gone: Callable[[], None] | None


async def _wait_pid(pid: int) -> int:
    """Wait for child ``pid`` without blocking the scheduler; return its wait status.

    A pidfd becomes readable when the process exits (pidfd_open(2)); then
    ``waitpid`` reaps it at once.
    """
    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return status


async def _serve_program(
    listener: Listener,
    pid: int,
    policy: Policy,
    *,
    tracer: Tracer,
    sync_wakeup: bool,
    colocate: bool,
    notes: Sequence[str],
    forwarder: SignalForwarder | None,
) -> int:
    sup = Supervisor(tracer, colocate=colocate)
    try:
        for note in notes:
            tracer.note(note)
        if sync_wakeup:
            # Measured here, one listener: 1 program 18 vs 32-54 µs per
            # pass-through open with it; 4 programs 75 vs 92 µs; 16
            # programs 35k vs 27k notifications/s. So launch keeps it on.
            on = listener.set_sync_wakeup()
            tracer.note(f"SYNC_WAKE_UP {'on' if on else 'not supported by this kernel (6.6+)'}")
        tracer.note(f"mode {policy.mode}")
        for line in policy.describe():
            tracer.note(f"rule {line}")
        status = 0
        async with trio.open_nursery() as nursery:
            # Threads, forked children and orphans of the program stay under
            # the filter after it exits: serve until the listener hangs up,
            # which happens once the last of them is gone.
            nursery.start_soon(sup.serve, listener, policy)
            if forwarder is not None:
                token = trio.lowlevel.current_trio_token()
                stop = nursery.cancel_scope.cancel

                def stop_serving() -> None:
                    with contextlib.suppress(trio.RunFinishedError):
                        trio.from_thread.run_sync(stop, trio_token=token)

                forwarder.on_program_gone = stop_serving
            status = await _wait_pid(pid)
        return status
    finally:
        sup.close()


def run_supervisor(
    listener_fd: int,
    pid: int,
    policy: Policy,
    *,
    trace: IO[str] | None = None,
    trace_json: IO[str] | None = None,
    sync_wakeup: bool = True,
    colocate: bool = True,
    notes: Sequence[str] = (),
    forwarder: SignalForwarder | None = None,
) -> int:
    """Serve the program's listener (closing it at the end); return the program's wait status."""
    tracer = Tracer(trace, trace_json)
    with Listener(listener_fd) as listener:
        status: int = trio.run(
            partial(
                _serve_program,
                listener,
                pid,
                policy,
                tracer=tracer,
                sync_wakeup=sync_wakeup,
                colocate=colocate,
                notes=notes,
                forwarder=forwarder,
            )
        )
        return status
