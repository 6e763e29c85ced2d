"""Draining a listener: receive and answer every pending notification.

One loop for both ways of serving: the start-up loop of :mod:`.bootstrap`
and the trio :class:`~.trioserve.TrioServer` call :func:`drain` whenever
the listener is readable, and each decides what to do when it returns.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Literal

from ..kernel.errors import ProgramGone
from ..kernel.listener import Listener, Notification

#: Why :func:`drain` returned: nothing pending; the last process using the
#: filter is gone (POLLHUP: RECV would fail at once forever); ``limit``
#: notifications were answered; ``stop()`` said so.
Drained = Literal["empty", "hangup", "limit", "stopped"]


def drain(
    listener: Listener,
    serve: Callable[[Notification], None],
    gone: Callable[[], None],
    *,
    limit: int = 0,
    stop: Callable[[], bool] | None = None,
) -> Drained:
    """Receive and ``serve`` pending notifications until there are none (see :data:`Drained`).

    A notification whose program died between POLLIN and RECV makes RECV
    fail with ENOENT (ProgramGone): counted with ``gone``, and draining
    goes on. ``stop`` is asked before each RECV; ``limit`` (0: none) bounds
    how many are answered in one go.
    """
    served = 0
    while True:
        if stop is not None and stop():
            return "stopped"
        events = listener.poll()
        if events & select.POLLIN:
            try:
                notif = listener.recv()
            except ProgramGone:
                gone()
                continue
            serve(notif)
            served += 1
            if served == limit:
                return "limit"
        elif events & (select.POLLHUP | select.POLLERR):
            return "hangup"
        else:
            return "empty"
