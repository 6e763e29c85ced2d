"""Serving the listeners of many programs, and releasing them.

Shared by the daemon (``server.py``) and the library API (``api.py``). In
the library, one :class:`~unotifyd.serve.trioserve.TrioServer` serves
every program in the caller's trio loop (its worker threads and caches are
shared); the daemon serves the programs of each client in a lane of their
own (:mod:`.lanes`), so that no client can stall another. Each program is
counted in a :class:`~unotifyd.serve.served.Stats` of its own. Each
program's serve task owns its listener and closes it exactly once, when
``serve`` returns (every process using the filter is gone: ``POLLHUP``) or
is cancelled (the daemon stops).
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import os
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Hashable

import trio

from ..kernel.listener import Listener
from ..policy import Policy
from ..record import field, record
from ..serve.served import Gate, Stats
from ..serve.trace import Tracer
from ..serve.trioserve import TrioServer
from .lanes import Lanes
from .protocol import Direction, Message, ProtocolError, decode_record

__all__ = [
    "ProfileCounters",
    "Program",
    "ProgramObserver",
    "ProgramTable",
    "close_fds",
    "recv_message",
    "recv_record",
]

#: fds one message may carry: one listener (and a few more, which the
#: conversation refuses with a reason of its own); more is a bad message.
MAX_FDS = 4
#: The most fds one message can bring (SCM_MAX_FD, include/net/scm.h; unix(7)).
#: We make room for all of them: those that do not fit are dropped by the
#: kernel in the receiving thread, and dropping a file's last reference runs
#: its release there (task_work, fs/file_table.c: fput), which a client can
#: make block: a TCP socket lingering on close, a FUSE file's flush. Every
#: fd a client gives us is closed off the event loop instead (see
#: ``server.Daemon.discard``).
SCM_MAX_FD = 253


async def accept(
    listen: trio.socket.SocketType, log: Callable[[str], None]
) -> trio.socket.SocketType:
    """The next connection on ``listen``, riding out the errors accept(2) can pass.

    Out of fds or memory: wait for programs or clients to finish rather than
    spin (the backlog keeps the rest). A connection aborted before we took
    it: take the next one.
    """
    while True:
        try:
            conn, _ = await listen.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log(f"accept: {e.strerror}; retrying shortly")
                await trio.sleep(0.1)
                continue
            if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                continue
            raise
        return conn


def close_fds(fds: list[int]) -> None:
    """Close and forget every fd in ``fds``."""
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


async def recv_record(
    conn: trio.socket.SocketType, limit: int, fds: list[int]
) -> tuple[bytes, int]:
    """One record from a ``SOCK_SEQPACKET`` peer and its ``recvmsg`` flags;
    the fds that came with it are appended to ``fds`` (the caller's to close)."""
    data, ancdata, flags, _ = await conn.recvmsg(
        limit, socket.CMSG_SPACE(SCM_MAX_FD * 4), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % 4])
            fds.extend(got)
    return data, flags


async def recv_message(
    conn: trio.socket.SocketType,
    direction: Direction,
    limit: int,
    trash: list[int] | None = None,
) -> tuple[Message, list[int]]:
    """One message from a ``SOCK_SEQPACKET`` peer and the fds that came with it.

    The caller owns (and must close) the fds returned. Raises
    :class:`ProtocolError` for a bad, oversized or truncated message or one
    with more than :data:`MAX_FDS` fds, :class:`EOFError` when the peer
    closed the connection; the fds of such a message go to ``trash`` if
    given (the caller closes them where it may wait), else are closed here.
    """
    fds: list[int] = []
    try:
        data, flags = await recv_record(conn, limit, fds)
        if len(fds) > MAX_FDS or flags & socket.MSG_CTRUNC:
            raise ProtocolError(f"more than {MAX_FDS} fds in one message", "bad-fds")
        if flags & socket.MSG_TRUNC:
            raise ProtocolError(f"message larger than {limit} bytes", "too-large")
        if not data:
            raise EOFError
        return decode_record(data, direction, limit), fds
    except BaseException:
        if trash is None:
            close_fds(fds)
        else:
            trash.extend(fds)
        raise


class ProgramObserver:
    """Told when a program starts being served and when it is released."""

    def started(self, prog: Program) -> None:
        """Called before the program's first notification is served."""

    def released(self, prog: Program) -> None:
        """Called before its listener is closed."""


@record
class ProfileCounters:
    """Counters of every program that ran (or runs) under one profile."""

    started: int = 0
    running: int = 0
    notifications: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    gone: int = 0
    internal_errors: int = 0
    passed_through: int = 0

    def add(self, stats: Stats) -> None:
        self.notifications += stats.notifications
        self.decisions.update(stats.decisions)
        self.gone += stats.gone
        self.internal_errors += stats.internal_errors
        self.passed_through += stats.passed_through

    def to_json(self) -> dict[str, object]:
        return {
            "started": self.started,
            "running": self.running,
            "notifications": self.notifications,
            "decisions": dict(sorted(self.decisions.items())),
            "gone": self.gone,
            "internal_errors": self.internal_errors,
            "passed_through": self.passed_through,
        }


@record
class Program:
    """One sandboxed program (with its threads and children) being served."""

    serial: int
    name: str
    profile: str
    pid: int
    uid: int
    command: str
    policy: Policy
    listener: Listener
    stats: Stats = field(default_factory=Stats)
    #: Which lane serves it (see :mod:`.lanes`): programs of one client share one.
    lane: Hashable = None
    started: float = field(default_factory=time.monotonic)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    released: trio.Event = field(default_factory=trio.Event)
    #: Stops its serving from receiving, for a hand-over (see Gate).
    gate: Gate = field(default_factory=Gate)
    #: Its filter was made by this daemon (see Served.root_pinned); not one
    #: taken over from a predecessor, which may be another version.
    root_pinned: bool = False
    #: Why every call it traps is refused, or None (see Served.refuse_all).
    refuse_all: str | None = None
    #: What its filter and ruleset do (server.sandbox_id), or "" where that is not
    #: ours to know: a container's, which its runtime made; one taken back
    #: from a daemon that did not say.
    filter_id: str = ""
    #: Taken back after a restart under a profile that now needs another
    #: filter than its own (see Continuity.adopt).
    filter_behind: bool = False

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "name": self.name,
            "profile": self.profile,
            "pid": self.pid,
            "uid": self.uid,
            "command": self.command,
            "seconds": round(now - self.started, 3),
            "notifications": self.stats.notifications,
            "decisions": dict(sorted(self.stats.decisions.items())),
            # None: not known (no filter_id to compare).
            "filter_behind": self.filter_behind if self.filter_id else None,
        }


class ProgramTable:
    """Every program being served, and the counters of those that finished."""

    def __init__(self, tracer: Tracer | None = None, *, lanes: bool = False) -> None:
        self.tracer = tracer or Tracer()
        self.server = TrioServer(self.tracer)
        #: With ``lanes``, each client's programs are served in a thread of their own.
        self.lanes = Lanes(self.tracer) if lanes else None
        self.running: dict[int, Program] = {}
        #: How many of ``running`` each client uid started.
        self.running_of: Counter[int] = Counter()
        self.profiles: dict[str, ProfileCounters] = {}
        self.finished = 0
        #: Told of every program started and released (the daemon's fd store).
        self.observer = ProgramObserver()
        self._serials = itertools.count(1)
        self._idle = trio.Event()
        self._idle.set()

    def start(
        self,
        nursery: trio.Nursery,
        listener: Listener,
        policy: Policy,
        *,
        name: str,
        profile: str,
        pid: int,
        uid: int,
        command: str = "",
        lane: Hashable = None,
        root_pinned: bool = False,
        refuse_all: str | None = None,
        filter_id: str = "",
        filter_behind: bool = False,
    ) -> Program:
        """Serve ``listener`` in ``nursery`` from now on; the table owns it from here.

        The listener is closed (exactly once) when the program is released.
        ``lane`` names the client whose lane serves it (default: its uid).
        ``refuse_all``: see :attr:`Served.refuse_all`. ``filter_id`` and
        ``filter_behind``: see :class:`Program`.
        """
        prog = Program(
            next(self._serials), name, profile, pid, uid, command, policy,
            listener, lane=uid if lane is None else lane, root_pinned=root_pinned,
            refuse_all=refuse_all, filter_id=filter_id, filter_behind=filter_behind,
        )
        self.running[prog.serial] = prog
        self.running_of[uid] += 1
        try:
            self.observer.started(prog)
        except Exception as e:
            # Registered already: it is served (and its listener closed by
            # _release) whatever the observer's trouble.
            self.tracer.warn(f"{name}: {e!r} while registering it; served all the same")
        counters = self.profiles.setdefault(profile, ProfileCounters())
        counters.started += 1
        counters.running += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        nursery.start_soon(self._serve, prog, name=f"unotifyd program {name}")
        return prog

    async def _serve(self, prog: Program) -> None:
        try:
            with prog.scope:
                if self.lanes is None:
                    await self.server.serve(
                        prog.listener, prog.policy, name=prog.name, stats=prog.stats,
                        gate=prog.gate, root_pinned=prog.root_pinned,
                        refuse_all=prog.refuse_all,
                    )
                else:
                    await self.lanes.run(
                        prog.lane,
                        lambda sup: sup.serve(
                            prog.listener, prog.policy, name=prog.name, stats=prog.stats,
                            gate=prog.gate, root_pinned=prog.root_pinned,
                            refuse_all=prog.refuse_all,
                        ),
                    )
        finally:
            self._release(prog)

    def _release(self, prog: Program) -> None:
        # Closing the listener makes any later trapped call of a process
        # still using the filter fail with ENOSYS (seccomp_unotify(2)); on
        # the normal path none is left (POLLHUP).
        try:
            self.observer.released(prog)
        finally:
            prog.listener.close()
        del self.running[prog.serial]
        self.running_of[prog.uid] -= 1
        if not self.running_of[prog.uid]:
            del self.running_of[prog.uid]
        counters = self.profiles[prog.profile]
        counters.running -= 1
        counters.add(prog.stats)
        self.finished += 1
        prog.released.set()
        if not self.running:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no program is being served."""
        while self.running:
            await self._idle.wait()

    def profile_counters(self) -> dict[str, ProfileCounters]:
        """Per-profile counters, finished and running programs together."""
        out: dict[str, ProfileCounters] = {}
        for name, done in self.profiles.items():
            total = ProfileCounters(done.started, done.running)
            total.notifications = done.notifications
            total.decisions = Counter(done.decisions)
            total.gone = done.gone
            total.internal_errors = done.internal_errors
            total.passed_through = done.passed_through
            out[name] = total
        for prog in self.running.values():
            out[prog.profile].add(prog.stats)
        return out

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Answer what is pending on every listener, then stop serving them all.

        Serve tasks answer every notification they receive inline before
        their next checkpoint, so cancelling one while the kernel shows no
        pending notification leaves none of those unanswered. An emulation
        still blocked in a worker thread (a FIFO nobody opens) is abandoned;
        it, and any call that arrives later, gets ``ENOSYS`` from the kernel
        once the listener closes.
        """
        def pending(p: Program) -> bool:
            # A paused listener receives nothing more: what waits is the next reader's.
            return not p.gate.paused and bool(p.listener.poll() & select.POLLIN)

        with trio.move_on_after(drain_timeout):
            while any(pending(p) for p in self.running.values()):
                await trio.sleep(0.001)
        for prog in list(self.running.values()):
            prog.scope.cancel()
        await self.wait_idle()

    async def close(self) -> None:
        """End the lanes' threads, once no program is served."""
        if self.lanes is not None:
            await trio.to_thread.run_sync(self.lanes.stop)
