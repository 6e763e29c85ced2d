"""Run the supervisor for one launched program until everything it started is gone."""

from __future__ import annotations

import os
from typing import IO

import trio

from ..kernel.listener import Listener
from ..policy import Policy
from .supervisor import Supervisor
from .trace import Tracer


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
    listener: Listener, pid: int, policy: Policy, tracer: Tracer, sync_wakeup: bool
) -> int:
    sup = Supervisor(tracer)
    try:
        if sync_wakeup:
            on = listener.set_sync_wakeup()
            tracer.note(f"SYNC_WAKE_UP {'on' if on else 'not supported by this kernel'}")
        tracer.note(f"mode {policy.mode}")
        for line in policy.describe():
            tracer.note(f"rule {line}")
        status = 0
        async with trio.open_nursery() as nursery:
            # Threads, forked children and orphans of the program stay under
            # the filter after it exits: serve until the listener hangs up,
            # which happens once the last of them is gone.
            nursery.start_soon(sup.serve, listener, policy)
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
) -> int:
    """Serve the program's listener; return the program's wait status."""
    tracer = Tracer(trace, trace_json)
    with Listener(listener_fd) as listener:
        status: int = trio.run(_serve_program, listener, pid, policy, tracer, sync_wakeup)
        return status
