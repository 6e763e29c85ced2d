"""Running a trapped thread on the supervisor's CPU while it takes an injected fd.

``SECCOMP_IOCTL_NOTIF_ADDFD`` is a round trip: it queues the fd, wakes the
trapped thread, which installs it in its own fd table, and waits for that
thread to complete it (kernel/seccomp.c, seccomp_notify_addfd). When the
thread is woken while the supervisor runs on its CPU, the scheduler puts it
on another, idle CPU; on this kind of machine (virtual CPUs) the two
cross-CPU wake-ups cost about 90 µs, most of a redirect.

Letting the thread run only on the supervisor's current CPU for the
duration of the ioctl keeps its wake-up on that CPU: 130 → 45 µs per
redirected open here, below the C reference without this (55 µs). The
supervisor's own thread is narrowed to that CPU too: the thread that
installs the fd wakes it with a plain ``complete()``
(``seccomp_handle_addfd``), and the scheduler wakes a task on an idle CPU
rather than on a busy one (``select_idle_sibling`` in kernel/sched/fair.c),
so that, its CPU busy with the thread, the supervisor was woken on the
other one. That second wake-up is rare in a tight loop of opens, where
the other CPU is seldom idle, and common in a program that computes
between its opens: under ``--enforce``, ``compileall`` of 237 files, the
pass-through lane's ADDFD took 33-45 µs with the thread narrowed alone,
3.9 µs with both (passthrough.c, ``pin_here``).

The program could see the narrowed mask only from another thread, during
those microseconds, through ``sched_getaffinity``; and the supervisor's
narrowed mask too, by its thread's id (no permission is needed to read an
affinity): which CPU serves it at that moment, nothing more (audit
helper-54: a thread polling for it saw one 21 233 times in 534 740). Its own choices win: a
CPU outside its mask is never imposed, and a mask it changes meanwhile is
left as it set it (unless it set that very one CPU: then it is given its
old mask back, an audit found, 4 times in 40 000 tries).

The fd is installed (ADDFD) and the call answered (SEND) in two steps, so
that the thread never runs with our mask: only where the listener's wait
is killable (``Served.killable_wait``), since elsewhere a signal in between
ends the wait with the fd installed. Elsewhere nothing is pinned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from .rawsys import libc

_sched_getcpu = libc.sched_getcpu
_sched_getcpu.argtypes = []
_sched_getcpu.restype = ctypes.c_int


class Pinned:
    """A thread's affinity, and ours, narrowed to one CPU, to be given back
    with :meth:`release`."""

    __slots__ = ("_cpu", "_old", "_ours", "_tid")

    def __init__(self, tid: int, cpu: int, old: set[int], ours: set[int] | None) -> None:
        self._tid = tid
        self._cpu = cpu
        self._old = old
        self._ours = ours

    def release(self) -> None:
        try:
            # Only if the mask is still ours: the program may have set one.
            if os.sched_getaffinity(self._tid) == {self._cpu}:
                os.sched_setaffinity(self._tid, self._old)
        except OSError:
            pass  # The thread is gone.
        if self._ours is not None:
            # It fails only where our cpuset changed meanwhile, which then set ours.
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self._ours)


def pin_to_our_cpu(tid: int) -> Pinned | None:
    """Narrow thread ``tid``'s affinity to the CPU we run on; None if not done.

    Not done when the thread may not run there (its own mask, its cpuset),
    when it may run only on one CPU anyway, or when we may not change it.
    """
    cpu = _sched_getcpu()
    if cpu < 0:
        return None
    try:
        old = os.sched_getaffinity(tid)
        if cpu not in old or len(old) == 1:
            return None
        os.sched_setaffinity(tid, {cpu})
    except OSError:
        return None
    # Ours too (see the module's docstring); a failure costs speed alone.
    ours: set[int] | None = None
    try:
        mask = os.sched_getaffinity(0)
        if cpu in mask and len(mask) > 1:
            os.sched_setaffinity(0, {cpu})
            ours = mask
    except OSError:
        pass
    return Pinned(tid, cpu, old, ours)
