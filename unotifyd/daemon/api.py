"""``unotifyd.Supervisor``: supervise sandboxed children from a trio program.

::

    import trio, unotifyd
    from unotifyd.policy import Policy, parse_redirect

    async def main():
        policy = Policy([parse_redirect("/etc/passwd=/etc/hostname", "example")])
        async with unotifyd.Supervisor() as sup:
            proc = await sup.launch(["cat", "/etc/passwd"], policy)
            print(await proc.wait(), proc.stats.notifications)

    trio.run(main)

Leaving the ``async with`` block waits until every program launched in it
*and all their descendants* are gone (their listeners hang up); if the block
raises, serving stops at once and later trapped calls of survivors fail
with ``ENOSYS``.

Each program is started by a small helper process (``spawn.py``), never by
forking the trio process itself, and goes through the same hand-over as
``launch --daemon``: the helper installs the filter, passes the listener
over a socket pair, waits for the acknowledgement and execs the program.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import IO, Any

import trio

from ..calls.registry import FilterSpec, filter_spec
from ..kernel import kick
from ..kernel.creds import forbid_inspection
from ..kernel.errors import Unsupported
from ..kernel.filter import check_support, install_failure
from ..kernel.listener import Listener, is_listener
from ..policy import Policy
from ..policy.backstop import backstop
from ..serve.served import Stats
from ..serve.trace import Tracer
from .programs import Program, ProgramTable, close_fds, recv_message
from .protocol import (
    MAX_REQUEST,
    Abort,
    Ack,
    Direction,
    FilterReply,
    HandOver,
    LaunchRequest,
    Message,
    ProtocolError,
    encode,
)
from .spawn import BOOTSTRAP

__all__ = ["LaunchError", "SandboxedProcess", "Supervisor"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LaunchError(Exception):
    """A program could not be started under supervision (the message says why)."""


class SandboxedProcess:
    """A program started by :meth:`Supervisor.launch`."""

    def __init__(self, process: trio.Process, program: Program) -> None:
        self.process = process
        self._program = program

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def name(self) -> str:
        """The name in traces: ``name`` as given to ``launch``, else ``PROG:PID``."""
        return self._program.name

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def stats(self) -> Stats:
        """This program's counters (notifications, decisions), live."""
        return self._program.stats

    async def wait(self) -> int:
        """Wait for the program itself to exit; its return code (``-N`` for signal N)."""
        return await self.process.wait()

    async def wait_released(self) -> None:
        """Wait until the program and every descendant are gone and its listener is closed."""
        await self._program.released.wait()


class Supervisor:
    """An async context manager that launches and supervises sandboxed programs.

    While it is entered the process umask is 0: emulated opens apply each
    program's own umask to the mode, and the kernel would apply ours on top
    (the previous umask is restored on exit). Raises :class:`LaunchError`
    on entry if this kernel cannot sandbox.
    """

    def __init__(
        self,
        *,
        trace: IO[str] | None = None,
        trace_json: IO[str] | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._table = ProgramTable(Tracer(trace, trace_json))
        self._timeout = handshake_timeout
        # Compiled filters, by what they trap, refuse and let through.
        self._filters: dict[FilterSpec, bytes] = {}
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._umask = 0

    async def __aenter__(self) -> Supervisor:
        try:
            check_support()
        except Unsupported as e:
            raise LaunchError(f"cannot sandbox: {e}") from None
        stack = AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        self._umask = os.umask(0)
        # The programs run as our uid: they must not reach into this process
        # (its listeners, its memory). It stays non-dumpable afterwards.
        forbid_inspection()
        # Lets a program's signal end a FIFO open we wait in for it; only
        # from the main thread, and never over a handler of the caller's.
        kick.install()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        try:
            if exc is not None:
                # Stop serving now (answering what is pending); otherwise
                # the nursery waits for every program to end.
                await self._table.stop()
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            # The trace's writer thread lags serving: the caller's streams
            # get every event before we return.
            self._table.tracer.close()
            os.umask(self._umask)
            self._stack = None
            self._nursery = None

    @property
    def running(self) -> int:
        """How many programs are being served."""
        return len(self._table.running)

    async def launch(
        self,
        argv: Sequence[str],
        policy: Policy,
        *,
        name: str | None = None,
        **process_options: Any,
    ) -> SandboxedProcess:
        """Start ``argv`` under ``policy`` and serve it; return once it runs.

        ``process_options`` go to :func:`trio.lowlevel.open_process`
        (``stdin``, ``stdout``, ``stderr``, ``cwd``, ``env``...). Rule paths
        are matched against resolved paths: pass a policy through
        ``policy.canonicalized(os.path.realpath)`` if it names symlinks.
        Raises :class:`LaunchError`; a program that is not found or cannot
        be executed still starts (its helper exits with 127 or 126, as
        ``launch`` does).
        """
        if self._nursery is None:
            raise RuntimeError("Supervisor.launch outside `async with Supervisor()`")
        if not argv:
            raise ValueError("argv is empty")
        bpf = await self._filter(filter_spec(policy))
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [
                sys.executable, "-S", "-c", BOOTSTRAP.format(root=_PACKAGE_ROOT),
                str(child.fileno()), *argv,
            ]
            try:
                proc = await trio.lowlevel.open_process(
                    cmd, pass_fds=(child.fileno(),), **process_options
                )
            except OSError as e:
                parent.close()
                raise LaunchError(f"cannot start the helper: {e}") from e
        finally:
            child.close()
        conn = trio.socket.from_stdlib_socket(parent)
        try:
            with conn, trio.fail_after(self._timeout):
                program = await self._hand_over(
                    conn, proc, bpf, policy, name=name, command=argv[0]
                )
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
            if isinstance(e, trio.TooSlowError):
                raise LaunchError("the helper did not hand its listener over in time") from e
            raise
        return SandboxedProcess(proc, program)

    async def _filter(self, spec: FilterSpec) -> bytes:
        if spec not in self._filters:
            self._filters[spec] = await trio.to_thread.run_sync(spec.compile)
        return self._filters[spec]

    async def _hand_over(
        self,
        conn: trio.socket.SocketType,
        proc: trio.Process,
        bpf: bytes,
        policy: Policy,
        *,
        name: str | None,
        command: str,
    ) -> Program:
        first = await self._recv(conn)
        if not isinstance(first[0], LaunchRequest):
            raise LaunchError(f"helper sent {first[0].TYPE!r}, not a launch request")
        name = name or f"{os.path.basename(command)}:{proc.pid}"
        wanted = backstop(policy)
        reply = FilterReply(
            name, bpf, wanted.exec_allowed, wanted.scope_signals,
            wanted.no_core_dumps,
        )
        await conn.send(encode(reply), socket.MSG_NOSIGNAL)
        msg, fds = await self._recv(conn)
        try:
            if isinstance(msg, Abort):
                raise LaunchError(f"cannot install the sandbox: {install_failure(msg.errno)}")
            if not isinstance(msg, HandOver) or len(fds) != 1 or not is_listener(fds[0]):
                raise LaunchError("the helper did not hand over a seccomp listener")
            listener = Listener(fds.pop())
        finally:
            close_fds(fds)
        assert self._nursery is not None
        program = self._table.start(
            self._nursery, listener, policy,
            name=name, profile="api", pid=proc.pid, uid=os.getuid(), command=command,
            root_pinned=True,  # our own helper installed the filter we sent
        )
        # The program is served whatever happens to the ack: if the helper
        # is gone, its listener hangs up and is released.
        with contextlib.suppress(OSError):
            await conn.send(encode(Ack(name)), socket.MSG_NOSIGNAL)
        return program

    @staticmethod
    async def _recv(conn: trio.socket.SocketType) -> tuple[Message, list[int]]:
        try:
            return await recv_message(conn, Direction.REQUEST, MAX_REQUEST)
        except ProtocolError as e:
            raise LaunchError(f"bad message from the helper: {e}") from None
        except EOFError:
            raise LaunchError("the helper exited before handing its listener over") from None
