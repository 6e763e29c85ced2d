"""``unotifyd launch``: run one program under a policy, as if it ran alone.

Process layout::

    unotifyd (supervisor, trio)  ──fork──>  child: NO_NEW_PRIVS, load filter,
           ^                                       send listener fd, execve(prog)
           └──── socketpair, SCM_RIGHTS ──────────┘

The fork happens before trio is imported (trio must not be forked from
inside ``trio.run``, and a small parent forks faster). Between loading the
filter and handing over the listener the child makes no trapped syscall:
until the supervisor holds the listener, such a call would wait forever.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import IO

from .calls.registry import filter_spec
from .environ import program_environ
from .execute import exec_program
from .kernel import fdpass, landlock
from .kernel.coredump import forbid_core_dumps
from .kernel.errors import Unsupported
from .kernel.filter import (
    FdSender,
    PreparedFilter,
    UnfilteredSender,
    check_support,
    install_failure,
)
from .policy import Policy
from .policy.backstop import backstop

# Exit statuses of unotifyd's own failures, as env(1)/chroot(1) and shells use them.
EXIT_FAILURE = 125  # unotifyd itself failed

# Signals that, sent to unotifyd by another process, go on to the program.
FORWARDED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)
# si_code of a signal the kernel generated itself, such as the terminal's
# SIGINT on Ctrl-C (siginfo.h: SI_KERNEL). The terminal sends it to the whole
# foreground process group, which includes the program: forwarding it too
# would deliver it twice.
_SI_KERNEL = 0x80


class LaunchError(Exception):
    """unotifyd could not start the program (message is for the user)."""


def _child(
    prepared: PreparedFilter,
    sock: socket.socket,
    argv: Sequence[str],
    sigmask: set[int],
    no_cores: bool,
) -> None:
    """Runs in the forked child; never returns.

    No importing or file-opening Python between ``install`` and the
    hand-over: every name used is bound before the filter goes in, and the
    garbage collector, which could run any ``__del__``, is off (the process
    execs or exits, so it never comes back on).
    """
    from .kernel.creds import allow_inspection  # noqa: PLC0415 - imported by launch() already

    # Read before the filter: an open of /proc/self/environ made after it
    # would be judged by the program's own rules.
    environ = program_environ()
    senders = {True: FdSender(sock, b"L"), False: FdSender(sock, b"l")}
    def send(fd: int) -> None:
        # Which sender, install() tells: whether it got WAIT_KILLABLE_RECV.
        senders[prepared.killable_wait](fd)

    handover = UnfilteredSender(send)  # before the filter: see there
    close = os.close
    exit_ = os._exit
    gc.disable()
    try:
        if no_cores:
            forbid_core_dumps()  # enforcing mode: see unotifyd.kernel.coredump
        # The parent blocked the forwarded signals before forking; the
        # program gets the mask unotifyd was started with (exec keeps it).
        signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
        fd = prepared.install()
        if fd < 0:
            handover.cancel()
            sock.send(b"E%d" % -fd)
            exit_(EXIT_FAILURE)
        handover(fd)  # Says whether install() got WAIT_KILLABLE_RECV.
        close(fd)
        sock.close()
    except BaseException:
        exit_(EXIT_FAILURE)
    # From here on trapped calls are served: ordinary Python is fine again.
    try:
        allow_inspection()  # the exec is trapped too: see there
        exit_(exec_program(argv, environ))
    except BaseException:
        exit_(EXIT_FAILURE)


def _spawn(policy: Policy, argv: Sequence[str], sigmask: set[int]) -> tuple[int, int, bool]:
    """Fork the program with the policy's filter.

    Returns its pid, the listener fd (ours to close) and whether the filter
    has ``WAIT_KILLABLE_RECV``.
    """
    wanted = backstop(policy)
    try:
        ruleset = landlock.ruleset_for(wanted.exec_allowed, wanted.scope_signals)
    except OSError as e:
        raise LaunchError(f"cannot build the Landlock ruleset: {e.strerror}") from None
    try:
        prepared = PreparedFilter(filter_spec(policy).compile(), ruleset)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child execs or exits
                parent_sock.close()
                _child(prepared, child_sock, argv, sigmask, wanted.no_core_dumps)
            child_sock.close()
            data, fd = fdpass.recv_fd(parent_sock)
        finally:
            parent_sock.close()
            child_sock.close()
    finally:
        if ruleset >= 0:
            os.close(ruleset)
    if fd is None:
        os.waitpid(pid, 0)
        if data.startswith(b"E"):
            err = int(data[1:] or errno.EINVAL)
            raise LaunchError(f"cannot install the sandbox: {install_failure(err)}")
        raise LaunchError("the child exited before handing over the seccomp listener")
    return pid, fd, data == b"L"


def landlock_warnings(policy: Policy) -> list[str]:
    """One line for each part of the policy's backstop that will not be kept."""
    wanted = backstop(policy)
    lines = []
    if wanted.exec_unkept:
        lines.append(
            f"the exec allow-list has no kernel backstop: {wanted.exec_unkept}; a program "
            "that races its own exec can run a binary the list forbids"
        )
    if not wanted:
        return lines
    version = landlock.abi_version()
    lines += landlock.unavailable(wanted.exec_allowed is not None, wanted.scope_signals, version)
    if wanted.exec_allowed is not None and version >= 1:
        lines += [
            f"warning: exec is allowed for {pattern}, which names no such file now: the "
            "kernel's rules name files as they are at start, so nothing there may run"
            for pattern in landlock.missing(wanted.exec_allowed)
        ]
    return lines


class SignalForwarder:
    """Forwards the signals other processes send to unotifyd to the program.

    A thread of its own waits with :func:`signal.sigwaitinfo`, which tells who
    sent a signal (``si_code``), unlike a Python signal handler. The forwarded
    signals must be blocked in every thread before it starts. Signals go
    through a pidfd (pidfd_send_signal(2)), so that once the program is
    reaped its pid, perhaps reused, is never signalled.

    When the program has exited but orphans it left keep unotifyd serving,
    there is nobody to forward to: unotifyd is not their parent and cannot
    name them. A terminating signal (HUP, INT, QUIT, TERM) then calls
    :attr:`on_program_gone`, which stops serving; the orphans' trapped calls
    fail with ENOSYS from then on.
    """

    TERMINATING = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM})

    def __init__(self, pid: int) -> None:
        self._lock = threading.Lock()
        self._pidfd = os.pidfd_open(pid)
        self.on_program_gone: Callable[[], None] | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="unotifyd-signals", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._pidfd >= 0:
                fd, self._pidfd = self._pidfd, -1
                os.close(fd)

    def _run(self) -> None:
        wanted = set(FORWARDED_SIGNALS)
        while True:
            info = signal.sigwaitinfo(wanted)
            if info.si_code == _SI_KERNEL:
                continue
            with self._lock:
                if self._pidfd < 0:
                    return
                try:
                    signal.pidfd_send_signal(self._pidfd, info.si_signo)
                    continue
                except ProcessLookupError:
                    pass
            if info.si_signo in self.TERMINATING and self.on_program_gone is not None:
                self.on_program_gone()


def exit_code(status: int) -> int:
    """The shell's view of a wait status: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def launch(
    policy: Policy,
    argv: Sequence[str],
    *,
    trace: IO[str] | None = None,
    trace_json: IO[str] | None = None,
    stats: IO[str] | None = None,
    sync_wakeup: bool = True,
    colocate: bool = True,
) -> int:
    """Run ``argv`` under ``policy`` and return the exit code to exit with.

    ``stats``, if given, gets the trapped system calls at the start and
    the notification counts at the end.
    """
    try:
        check_support()
    except Unsupported as e:
        raise LaunchError(f"cannot sandbox: {e}") from None
    # Block the forwarded signals before forking: one that arrives before
    # the forwarding thread runs then waits for it, instead of killing
    # unotifyd and leaving the program with a listener nobody serves. Every
    # thread started later inherits the mask, so only the forwarder's
    # sigwaitinfo ever receives these signals.
    # Before the program exists: from its first instruction it must not
    # be able to reach into us (see forbid_inspection).
    from .kernel.creds import forbid_inspection  # noqa: PLC0415 - not on the client path

    forbid_inspection()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        pid, listener_fd, killable_wait = _spawn(policy, argv, old_mask)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    notes = []
    if not killable_wait:
        notes.append(
            "this kernel lacks WAIT_KILLABLE_RECV (5.19): "
            "signals may make the kernel repeat a trapped call"
        )
    forwarder = SignalForwarder(pid)
    forwarder.start()
    # Emulated opens apply the *program's* umask to the mode themselves.
    os.umask(0)
    from .serve.run import run_supervisor  # noqa: PLC0415 - trio only after fork

    try:
        status = run_supervisor(
            listener_fd,
            pid,
            policy,
            trace=trace,
            trace_json=trace_json,
            stats=stats,
            sync_wakeup=sync_wakeup,
            colocate=colocate,
            killable_wait=killable_wait,
            notes=notes,
            forwarder=forwarder,
        )
    finally:
        forwarder.close()
    return exit_code(status)
