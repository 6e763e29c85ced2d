"""The seccomp listener: receive notifications, answer them, inject fds.

All ioctls go through :func:`fcntl.ioctl`. RECV fills a buffer allocated
once per listener (only its one reader uses it); answers are packed into a
fresh ``bytes`` per call, so that a serving thread and a worker's answer
never share a buffer.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import threading
from collections.abc import Callable
from typing import NamedTuple

from . import abi
from .errors import KernelError, ProgramGone
from .rawsys import libc

_ZERO_NOTIF = bytes(abi.NOTIF_STRUCT.size)
_unpack_notif = abi.NOTIF_STRUCT.unpack
_pack_resp = abi.RESP_STRUCT.pack
# NamedTuple's generated __new__ is a Python function; tuple.__new__ is not.
_new_notification: Callable[[type[Notification], tuple[object, ...]], Notification]

_pthread_sigmask = libc.pthread_sigmask
_pthread_sigmask.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_pthread_sigmask.restype = ctypes.c_int
_SIG_BLOCK, _SIG_SETMASK = 0, 2  # asm-generic/signal-defs.h
_SIGSET_BYTES = 128  # glibc's sigset_t


class _SignalMask:
    """Blocks every signal in the calling thread and restores the mask after.

    Through libc with preallocated ``sigset_t`` buffers: Python's
    :func:`signal.pthread_sigmask` turns the old mask into a set of enums,
    about 75 µs a call here, twice per injected fd.
    """

    def __init__(self) -> None:
        self._all = ctypes.create_string_buffer(b"\xff" * _SIGSET_BYTES, _SIGSET_BYTES)
        self._old = ctypes.create_string_buffer(_SIGSET_BYTES)
        self._all_p = ctypes.addressof(self._all)
        self._old_p = ctypes.addressof(self._old)

    def block_all(self) -> None:
        # glibc leaves its own two internal signals (cancellation, setxid)
        # alone whatever the set says; every other one is blocked.
        err = _pthread_sigmask(_SIG_BLOCK, self._all_p, self._old_p)
        if err:
            raise OSError(err, os.strerror(err))

    def restore(self) -> None:
        _pthread_sigmask(_SIG_SETMASK, self._old_p, None)


# What /proc/self/fd/N links to for a seccomp listener: the kernel creates
# it with anon_inode_getfile("seccomp notify", ...) (kernel/seccomp.c).
_LISTENER_LINK = "anon_inode:seccomp notify"


def is_listener(fd: int) -> bool:
    """True if ``fd`` is a seccomp listener (and not, say, a pipe a client sent)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _LISTENER_LINK
    except OSError:
        return False


class Notification(NamedTuple):
    """One trapped system call, as ``SECCOMP_IOCTL_NOTIF_RECV`` delivered it.

    ``pid`` is the *thread* id in the supervisor's pid namespace. A named
    tuple, not a frozen dataclass: it is built once per notification, and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field)
    costs three times as much.
    """

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, int, int, int, int, int]


_new_notification = tuple.__new__


def notification_from(buf: bytes | bytearray) -> Notification:
    """A ``struct seccomp_notif`` as RECV fills it (the pass-through lane forwards those)."""
    t = _unpack_notif(buf)
    return _new_notification(Notification, (t[0], t[1], t[3], t[4], t[6:]))


class Listener:
    """Owner of one listener fd. The fd is closed exactly once, by :meth:`close`.

    Exactly one task may call :meth:`recv` on a listener, and only after
    ``poll`` reported ``POLLIN``: RECV ignores ``O_NONBLOCK`` and blocks until
    a notification arrives (kernel/seccomp.c, seccomp_notify_recv), so a
    second reader racing for the same notification could block forever.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._recv_buf = bytearray(abi.NOTIF_STRUCT.size)
        # Per thread: ADDFD may run in the serving thread and in trio's.
        self._sigmasks = threading.local()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        # One select.poll object may not poll in two threads at once
        # (RuntimeError "concurrent poll() invocation", Modules/selectmodule.c),
        # and the daemon's stop looks at every listener from trio's thread
        # while serving threads drain them (daemon/programs.py, stop).
        self._polling = threading.Lock()
        self._reader = threading.Lock()

    def claim_reader(self) -> None:
        """Become the listener's one reader (see the class doc), until :meth:`release_reader`.

        Raises RuntimeError if it has one already, as trio's
        ``ConflictDetector`` does for two tasks sending on one stream: a
        second serving loop is a bug that would otherwise show only as a
        call stalled forever.
        """
        if not self._reader.acquire(blocking=False):
            raise RuntimeError(f"seccomp listener {self.fd} is being served already")

    def release_reader(self) -> None:
        self._reader.release()

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        """Close the listener. Pending and future trapped calls of the
        programs that use it then fail with ``ENOSYS`` (seccomp_unotify(2))."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with self._polling:
                self._poll.unregister(fd)
            os.close(fd)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_sync_wakeup(self, on: bool = True) -> bool:
        """Ask the kernel to wake the target on the supervisor's CPU, or stop (6.6+).

        Returns False when the kernel does not know the flag (``EINVAL``).
        """
        flags = abi.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP if on else 0
        try:
            fcntl.ioctl(self.fd, abi.NOTIF_SET_FLAGS, flags)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOTTY):
                return False
            raise
        return True

    def poll(self) -> int:
        """Return the listener's ``poll`` events without blocking.

        ``POLLIN``: a notification is pending. ``POLLHUP`` without
        ``POLLIN``: every process using the filter is gone, and RECV would
        now fail with ``ENOENT`` at once, forever.
        """
        while True:
            try:
                with self._polling:  # poll(0) never blocks: held for microseconds
                    ready = self._poll.poll(0)
            except InterruptedError:
                continue
            return ready[0][1] if ready else 0

    def recv(self) -> Notification:
        """Receive one pending notification. Call only after ``POLLIN``.

        Raises :class:`ProgramGone` when the thread that made the call died
        or was killed between ``poll`` and here (ENOENT).
        """
        buf = self._recv_buf
        while True:
            # The kernel rejects a non-zeroed buffer with EINVAL (since 5.5).
            buf[:] = _ZERO_NOTIF
            try:
                fcntl.ioctl(self.fd, abi.NOTIF_RECV, buf, True)
            except InterruptedError:
                # fcntl.ioctl is not retried on EINTR (PEP 475 does not cover it).
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise ProgramGone("notification vanished before RECV") from None
                raise KernelError(f"SECCOMP_IOCTL_NOTIF_RECV: {e.strerror}") from e
            break
        return notification_from(buf)

    def id_valid(self, nid: int) -> bool:
        """True if notification ``nid`` is still pending.

        Checked after reading anything from the target (its memory, its
        ``/proc`` entries): if the thread died and its pid was reused, what
        we read belongs to another process (seccomp_unotify(2), NOTES).
        """
        try:
            fcntl.ioctl(self.fd, abi.NOTIF_ID_VALID, nid.to_bytes(8, "little"))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise KernelError(f"SECCOMP_IOCTL_NOTIF_ID_VALID: {e.strerror}") from e
        return True

    def _send(self, nid: int, val: int, error: int, flags: int) -> None:
        # An immutable argument: fcntl.ioctl copies it to a buffer of its own.
        resp = _pack_resp(nid, val, error, flags)
        while True:
            try:
                fcntl.ioctl(self.fd, abi.NOTIF_SEND, resp)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise ProgramGone("notification vanished before SEND") from None
                raise KernelError(f"SECCOMP_IOCTL_NOTIF_SEND: {e.strerror}") from e
            return

    def send_continue(self, nid: int) -> None:
        """Let the kernel run the call itself."""
        self._send(nid, 0, 0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def send_error(self, nid: int, err: int) -> None:
        """Fail the call with ``err`` (a positive errno)."""
        self._send(nid, 0, -err, 0)

    def send_value(self, nid: int, value: int) -> None:
        """Complete the call with return value ``value``."""
        self._send(nid, value, 0, 0)

    def add_fd(self, nid: int, srcfd: int, *, cloexec: bool) -> int:
        """Install a copy of ``srcfd`` in the target without answering the call.

        Returns the fd number in the target; the caller must then answer
        the call (:meth:`send_value` with that number). Used where something
        must happen between the two steps, while the target still waits.
        Errors as for :meth:`send_fd`.
        """
        return self._addfd(nid, srcfd, cloexec, 0)

    def send_fd(self, nid: int, srcfd: int, *, cloexec: bool) -> int:
        """Install a copy of ``srcfd`` in the target and make it the call's result.

        ``SECCOMP_ADDFD_FLAG_SEND`` injects and answers in one atomic step
        (5.14+), so the target never holds an fd for a call it was told
        failed. Returns the fd number in the target. Raises
        :class:`ProgramGone` (ENOENT) or :class:`OSError` with the errno the
        target should see (e.g. ``EMFILE`` when its fd table is full); in
        that case the notification is still pending and must be answered.

        Signals are blocked in this thread during the ioctl. ADDFD marks the
        notification answered, then waits *interruptibly* for the target to
        install the fd (kernel/seccomp.c, seccomp_notify_addfd). A signal
        handler interrupting that wait withdraws the fd but leaves the
        notification answered with nothing: the target's call returns 0, an
        fd number it never got, and a retry fails with EINPROGRESS. Seen
        here when SIGTERM reached the daemon mid-redirect.
        """
        return self._addfd(nid, srcfd, cloexec, abi.SECCOMP_ADDFD_FLAG_SEND)

    def _addfd(self, nid: int, srcfd: int, cloexec: bool, flags: int) -> int:
        newfd_flags = os.O_CLOEXEC if cloexec else 0
        buf = bytearray(abi.ADDFD_STRUCT.pack(nid, flags, srcfd, 0, newfd_flags))
        sigmask: _SignalMask | None = getattr(self._sigmasks, "mask", None)
        if sigmask is None:
            sigmask = self._sigmasks.mask = _SignalMask()
        sigmask.block_all()
        try:
            newfd: int = fcntl.ioctl(self.fd, abi.NOTIF_ADDFD, buf, True)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise ProgramGone("notification vanished before ADDFD") from None
            if e.errno in (errno.EINTR, errno.EINPROGRESS):
                # Only a fatal signal can interrupt us now; nothing left to answer.
                raise KernelError(f"SECCOMP_IOCTL_NOTIF_ADDFD: {e.strerror}") from e
            raise
        finally:
            sigmask.restore()
        return newfd
