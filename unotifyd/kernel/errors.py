"""Typed errors of the kernel layer: the one place where errno is interpreted."""

from __future__ import annotations


class KernelError(Exception):
    """Base class for errors raised by :mod:`unotifyd.kernel`."""


class Unsupported(KernelError):
    """The running kernel lacks a feature unotifyd needs (named in the message)."""


class ProgramGone(KernelError):
    """The program behind a notification died, or its call was interrupted.

    Normal, not a failure: ``SECCOMP_IOCTL_NOTIF_RECV``, ``SEND``, ``ADDFD`` and
    ``ID_VALID`` all report ``ENOENT`` once the notification is no longer
    pending (seccomp_unotify(2)), and ``/proc/PID`` may vanish under us.
    """


class WouldBlock(KernelError):
    """An open the supervisor made non-blocking would have waited: a FIFO with no
    reader, opened ``O_WRONLY|O_NONBLOCK``, is ENXIO (fifo(7)); a file on which
    another holds a conflicting lease is EWOULDBLOCK (fcntl(2), "Leases")."""


class BadArgument(KernelError):
    """A syscall argument the kernel itself would reject.

    ``errno`` is what the kernel would answer: ``EFAULT`` for memory that
    cannot be read, ``ENAMETOOLONG``, ``EINVAL``, ``E2BIG``.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class MemoryDenied(KernelError):
    """The kernel refused us a program's memory (``process_vm_readv``: EPERM).

    An unprivileged supervisor passes the ptrace check only for a dumpable
    program: one that made itself non-dumpable (``PR_SET_DUMPABLE 0``, as
    ssh-agent and gpg-agent do) needs ``CAP_SYS_PTRACE`` to be read
    (__ptrace_may_access() in kernel/ptrace.c). Not an OSError: no handler
    of a path error may take it for the kernel's answer to the call; the
    dispatcher answers EPERM and tells the user once.
    """

    def __init__(self, tid: int) -> None:
        super().__init__(f"process_vm_readv({tid}): Operation not permitted")
        self.tid = tid
