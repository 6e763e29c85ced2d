"""Serving threads of their own for the programs of each client uid.

Whatever the supervisor does for a program can wait on something the
program controls: a file lease it holds makes our ``open`` or ``truncate``
of the file wait for the lease-break time (fcntl(2), "Leases"); a page of
its path buffer registered with ``userfaultfd``, or backed by a FUSE file
system it serves, makes our read of its memory wait until it answers
(userfaultfd(2); ``process_vm_readv`` faults the page in); a lookup in its
FUSE mount waits for its server. None of these waits can be cut short: the
kernel sleeps killably, and only the death of the whole supervisor ends it.

So no program may share a serving thread with a program of another user.
The daemon gives each client uid (and each container of the OCI agent,
whose runtime is one client for many tenants) a *lane*: an OS thread running a trio
loop of its own with a :class:`~unotifyd.serve.trioserve.TrioServer` of
its own, hence its own worker-thread pools (bounded per lane). A program
that stalls its lane stalls its own user's programs, never another's: a
thread waiting in a system call has released the GIL (ctypes and ``os``
calls release it). Lanes that are busy computing do share the GIL and the
CPUs; that costs others time in proportion to the work, not a stall.

The daemon's own trio loop keeps everything else (control socket, program
table, hand-over); it talks to a lane only through the lane's
:class:`trio.lowlevel.TrioToken`, and the lane answers through the
daemon's. A lane with no program left ends after :data:`LINGER` seconds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Hashable

import trio

from ..serve.trace import Tracer
from ..serve.trioserve import TrioServer

#: How long a lane with no program waits for the next one before its thread
#: ends (a burst of short launches by one user reuses it; a new lane costs
#: under a millisecond).
LINGER = 1.0
#: How long stopping waits for a lane's thread to end: one stuck in an
#: uninterruptible wait for its program cannot be joined, and must not keep
#: the daemon from exiting (it is a daemon thread).
JOIN_TIMEOUT = 2.0


class Lane:
    """One serving thread (and trio loop) for the programs of one client."""

    def __init__(self, key: Hashable, tracer: Tracer, registry: Lanes) -> None:
        self.key = key
        self.server = TrioServer(tracer)
        self._registry = registry
        #: Programs handed to this lane and not finished; guarded by the registry's lock.
        self.assigned = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), name=f"unotifyd lane {key}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            # Idle between LINGER and twice that after its last program.
            while True:
                await trio.sleep(LINGER)
                if self._registry.retire_if_idle(self):
                    break
            nursery.cancel_scope.cancel()

    async def run(self, serve: Callable[[TrioServer], Awaitable[None]]) -> None:
        """Run ``serve(server)`` in this lane; return (or raise) when it does.

        Cancelling the caller cancels the lane's task, and waits for it to
        end: what the caller does next (closing the listener) must not
        overlap with the lane still serving it.
        """
        assert self._token is not None
        home = trio.lowlevel.current_trio_token()
        done = trio.Event()
        scope = trio.CancelScope()
        failure: list[BaseException] = []

        async def task() -> None:
            try:
                with scope:
                    await serve(self.server)
            except BaseException as e:  # handed back to the caller, raised there
                failure.append(e)
            finally:
                self._registry.finished(self)
                with contextlib.suppress(trio.RunFinishedError):
                    home.run_sync_soon(done.set)

        def begin() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(task)

        self._token.run_sync_soon(begin)
        try:
            await done.wait()
        except trio.Cancelled:
            self._token.run_sync_soon(scope.cancel)
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """End the lane's loop (its tasks are cancelled) and wait a moment for its thread."""
        if self._token is not None and self._nursery is not None:
            nursery = self._nursery
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(nursery.cancel_scope.cancel)
        self._thread.join(JOIN_TIMEOUT)


class Lanes:
    """The lanes of a daemon, one per client (a uid, a container), made on demand.

    :meth:`run` is called from the daemon's own trio loop only; the lanes
    call :meth:`finished` and :meth:`retire_if_idle` from theirs, hence the lock.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, Lane] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    async def run(self, key: Hashable, serve: Callable[[TrioServer], Awaitable[None]]) -> None:
        """Run ``serve`` in the lane of ``key`` (see :meth:`Lane.run`)."""
        await self._take(key).run(serve)

    def _take(self, key: Hashable) -> Lane:
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.assigned += 1
                return lane
            lane = self._lanes[key] = Lane(key, self._tracer, self)
            lane.assigned = 1
        # Outside the lock: a lane retiring meanwhile takes it too.
        lane.start()
        return lane

    def finished(self, lane: Lane) -> None:
        with self._lock:
            lane.assigned -= 1

    def retire_if_idle(self, lane: Lane) -> bool:
        """Called by an idle lane: True (and it is forgotten) if nothing was handed to it."""
        with self._lock:
            if lane.assigned:
                return False
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            return True

    def stop(self) -> None:
        """Stop every lane (their programs must have been released first)."""
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.stop()

