"""The guard on the supervisor's own ``/proc`` entries."""

from __future__ import annotations

import os

_OUR_PID = os.getpid()


def supervisors_own(path: str | None, *, opening: bool = True) -> bool:
    """True for ``/proc/PID/...`` of a thread of this very process (the supervisor).

    Opens and looks at /proc made *for* a program run in our threads, and
    the kernel's ptrace access check that guards /proc/PID/fd, cwd, root,
    mem... always passes within one thread group, whatever our thread's
    fsuid (__ptrace_may_access, kernel/ptrace.c). A program must never
    reach the supervisor's own fds or memory that way: refuse, as the
    kernel refuses a non-root program another user's process.

    Not ``opening`` (stat, access...): only the links and directories, whose
    lookup is what the kernel guards; ``stat`` of ``environ`` or ``mem``
    works for anyone, and only opening them needs the ptrace check.
    """
    if path is None or not path.startswith("/proc/"):
        return False
    parts = path[6:].split("/")
    if len(parts) >= 4 and parts[1] == "task":
        parts = parts[2:]  # /proc/PID/task/TID/...: the thread's own entries
    guarded = _PTRACE_GUARDED if opening else _PTRACE_GUARDED_LOOKUPS
    if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in guarded:
        return False
    pid = int(parts[0])
    return pid == _OUR_PID or os.path.exists(f"/proc/{_OUR_PID}/task/{pid}")


# The /proc/PID entries behind a ptrace access check (proc(5)); the others
# (cmdline, status, stat...) are open to everyone anyway.
_PTRACE_GUARDED = frozenset(
    {
        "fd", "fdinfo", "cwd", "root", "exe", "environ", "mem", "map_files", "auxv",
        "syscall", "stack", "pagemap", "maps", "smaps", "smaps_rollup", "numa_maps",
        "io", "personality", "timers", "ns",
    }
)  # fmt: skip
_PTRACE_GUARDED_LOOKUPS = frozenset({"fd", "fdinfo", "cwd", "root", "exe", "map_files", "ns"})
