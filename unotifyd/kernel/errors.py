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
    reader, opened ``O_WRONLY|O_NONBLOCK``, is ENXIO (fifo(7))."""


class BadArgument(KernelError):
    """A syscall argument the kernel itself would reject.

    ``errno`` is what the kernel would answer: ``EFAULT`` for memory that
    cannot be read, ``ENAMETOOLONG``, ``EINVAL``, ``E2BIG``.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
