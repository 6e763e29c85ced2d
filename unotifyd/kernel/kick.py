"""Ending a worker thread's blocking open with a signal of our own.

A worker thread may wait in an open made for a program (a FIFO's, for its
other end: fifo(7)) that a signal to the program should end
(serve/trioserve._watch_waiting). Opening the FIFO's other end would end
it, but it would also release every other process waiting on that FIFO,
which are none of ours. So the thread itself is sent :data:`KICK`, whose
handler does nothing and is installed without ``SA_RESTART``: the open
returns EINTR (signal(7), "Interruption of system calls and library
functions by signal handlers"). Only a raw call sees that EINTR, since
Python's ``os`` functions retry it (PEP 475): the opens that may be kicked
are made with ctypes and retried unless a kick was meant
(kernel/opener.open_as, ``stop``).

The handler can only be installed from the main thread: where it is not
(a library user's program that serves from another thread, or that uses
the signal itself), :func:`installed` is False and such opens wait on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType

from . import abi
from .rawsys import syscall

#: The signal that kicks a worker thread out of a blocking open. The last
#: real-time one: glibc keeps the first ones for itself (signal(7)).
KICK = signal.SIGRTMAX

_INSTALLED: list[bool] = []


def _nothing(signum: int, frame: FrameType | None) -> None:
    """The kick's Python-level handler: the interruption was the point."""


def install() -> bool:
    """Install :data:`KICK`'s handler, once; whether it is installed."""
    if _INSTALLED:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(KICK) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False  # Someone else's signal (ignored is nobody's: inherited).
    signal.signal(KICK, _nothing)
    signal.siginterrupt(KICK, True)
    # An inherited mask may block it: threads made from now on (the
    # workers) inherit this thread's mask, and a blocked kick never lands.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {KICK})
    _INSTALLED.append(True)
    return True


class Stop(threading.Event):
    """Set to end a worker's wait along with a kick: a signal for the
    program interrupts it; ``ended``, its call was abandoned (the program is
    gone), and nothing more is to be done for it (calls/ops.until_interrupted)."""

    ended = False


def installed() -> bool:
    return bool(_INSTALLED)


def kick(tid: int) -> None:
    """Send :data:`KICK` to our thread ``tid`` (nothing if it has ended).

    Nothing either where the handler is not installed: the signal's default
    action would end the supervisor (signal(7)), and the wait goes on as it
    would have (see the module doc).
    """
    if not _INSTALLED:
        return
    with contextlib.suppress(ProcessLookupError):
        syscall(abi.SYSCALL_NUMBERS["tgkill"], os.getpid(), tid, KICK)
