"""Serving a launched program's first calls before trio is even imported.

Importing trio costs ~65 ms, and until a program's first trapped call is
answered it cannot even load its libraries. So ``unotifyd launch`` serves
with the synchronous :class:`~unotifyd.serve.core.Core` first, for a short
while: a short-lived program (``true``, ``cat``) often finishes within it,
and then trio is never imported. Otherwise, or as soon as a call must wait in
a worker thread, serving moves on to the trio supervisor, which picks up
what was left (:class:`Handover`).
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field

from ..kernel.errors import TargetGone
from .core import Core, Job, Pending, Served


@dataclass
class Handover:
    """Where the start-up loop stopped.

    ``status`` is the program's wait status once it was reaped; ``finished``
    says every process using the filter is gone too (nothing left to serve);
    ``deferred`` are received calls whose emulation waits for a worker thread.
    """

    status: int | None = None
    finished: bool = False
    deferred: list[tuple[Pending, Job]] = field(default_factory=list)


def serve_first(core: Core, s: Served, pid: int, budget: float) -> Handover:
    """Serve ``s`` for up to ``budget`` seconds, or until done or a call must wait."""
    out = Handover()
    listener = s.listener
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)

    def defer(s: Served, p: Pending, job: Job) -> None:
        out.deferred.append((p, job))

    deadline = time.monotonic() + budget
    hung_up = False
    try:
        while not out.deferred:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    # The pidfd is readable once the program exited
                    # (pidfd_open(2)); reap it, as the trio loop would.
                    _, out.status = os.waitpid(pid, 0)
                    poller.unregister(pidfd)
                    if hung_up:
                        out.finished = True
                        return out
                    continue
                while not out.deferred:
                    events = listener.poll()
                    if events & select.POLLIN:
                        try:
                            notif = listener.recv()
                        except TargetGone:
                            core._count_gone(s)
                            continue
                        core._handle(s, notif, defer)
                    elif events & (select.POLLHUP | select.POLLERR):
                        if out.status is not None:
                            out.finished = True
                            return out
                        # The program is not reaped yet: its pidfd wakes us.
                        poller.unregister(listener.fileno())
                        hung_up = True
                        break
                    else:
                        break
    finally:
        os.close(pidfd)
    return out
