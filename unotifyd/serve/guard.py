"""The guards on /proc: the supervisor's own entries, and processes beyond the program's reach."""

from __future__ import annotations

import os

from ..kernel.errors import ProgramGone
from ..kernel.program import read_ids, status_field

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
    entry = _proc_entry(path)
    guarded = _PTRACE_GUARDED if opening else _PTRACE_GUARDED_LOOKUPS
    if entry is None or entry[1] not in guarded:
        return False
    pid = entry[0]
    return pid == _OUR_PID or os.path.exists(f"/proc/{_OUR_PID}/task/{pid}")


def _proc_entry(path: str | None) -> tuple[int, str] | None:
    """``(PID, ENTRY)`` for ``/proc/PID/ENTRY...`` or ``/proc/PID/task/TID/ENTRY...``
    (a thread's entries are its process's); None for any other path."""
    parts = _proc_parts(path)
    return None if parts is None else (int(parts[0]), parts[1])


def _proc_parts(path: str | None) -> list[str] | None:
    """``[PID, ENTRY, ...]`` of a path as :func:`_proc_entry` reads it; None."""
    if path is None or not path.startswith("/proc/"):
        return None
    parts = path[6:].split("/")
    if len(parts) >= 4 and parts[1] == "task":
        parts = [parts[0], *parts[3:]]
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    return parts


def search_guarded(directory: str | None) -> bool:
    """Whether the kernel's ptrace check guards looking a name up in ``directory``.

    ``/proc/PID/fdinfo``'s (proc_fdinfo_permission() in fs/proc/fd.c) and
    ``map_files``' (proc_map_files_lookup(), whose check a thread of ours
    acting with the program's ids would pass on our permitted capabilities:
    refused for every program, root too, whom the kernel lets look: less
    than it allows, never more). The names in ``fd`` and ``ns`` are looked
    up by anyone who may search the directory (generic_permission()): only
    following or reading a link there is guarded. Measured on 6.18 in a
    Landlock domain, for a process outside it: ``lstat`` of ``fd/0`` and
    ``ns/mnt`` work, their ``stat`` and ``readlink`` are EACCES, and so is
    ``lstat`` of ``fdinfo/0``.
    """
    parts = _proc_parts(directory)
    return parts is not None and len(parts) == 2 and parts[1] in _SEARCH_GUARDED


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
_SEARCH_GUARDED = frozenset({"fdinfo", "map_files"})
# The guarded entries that are directories anyone who may search them may
# open and list too: what the check guards is the links in them (see
# search_guarded; proc_readfd_common() and proc_ns_dir_readdir() ask no
# ptrace check: measured in a Landlock domain, as above).
_OPEN_TO_ALL = frozenset({"fd", "ns", "map_files"})
# Those a program in a Landlock domain may not *open* for a process outside it,
# as measured on Linux 6.18 (a domain with signal scoping only): mem
# (PTRACE_MODE_ATTACH), timers and the fd links; stack, syscall, personality
# and io check when read, by the reader (the program, in its domain, reading
# the fd we gave it), so the kernel answers those itself.
_OUT_OF_DOMAIN = frozenset(
    {"mem", "timers", "fdinfo", "fd", "cwd", "root", "exe", "ns", "map_files"}
)
# And those whose open asks for the process's memory map in read mode, which
# perfmon_capable() grants past the ptrace check (may_access_mm() in
# kernel/fork.c): open to a program with CAP_PERFMON or CAP_SYS_ADMIN.
_OUT_OF_DOMAIN_READ = frozenset(
    {"environ", "maps", "smaps", "smaps_rollup", "numa_maps", "auxv", "pagemap"}
)
_CAP_SYS_ADMIN = 21
_CAP_PERFMON = 38


def _parent_of(pid: int) -> int | None:
    try:
        return int(status_field(pid, b"PPid"))
    except (ProgramGone, ValueError):
        return None


def beyond_reach(
    path: str | None, caller: int, *, opening: bool = True, capabilities: int = 0
) -> bool:
    """True for ``/proc/PID/...`` behind a ptrace check, of a process that is neither
    the calling thread's own nor one of its descendants.

    A program under enforcing mode is in a Landlock domain, where the kernel's
    ptrace access check (the one that guards ``/proc/PID/mem``, ``environ``,
    ``fd/N``...) refuses every process outside the domain (hook_ptrace_access_check
    in security/landlock/task.c). We act outside any domain, with the program's
    credentials only, so that check would pass for a process of the same uid
    outside the sandbox, and the program could write into its memory. Which
    processes share the program's domain cannot be asked; its descendants do
    (a domain is inherited), so those and the program itself are allowed, and
    any other process is refused, as the kernel refuses one outside the domain.
    A sandboxed sibling is refused too: less than the kernel would allow, never
    more. ``capabilities``: the program's effective set (see _OUT_OF_DOMAIN_READ).
    """
    parts = _proc_parts(path)
    if not opening:
        guarded = _PTRACE_GUARDED_LOOKUPS
    elif capabilities & (1 << _CAP_PERFMON | 1 << _CAP_SYS_ADMIN):
        guarded = _OUT_OF_DOMAIN
    else:
        guarded = _OUT_OF_DOMAIN | _OUT_OF_DOMAIN_READ
    if parts is None or parts[1] not in guarded:
        return False
    if opening and len(parts) == 2 and parts[1] in _OPEN_TO_ALL:
        return False  # the directory itself (see _OPEN_TO_ALL)
    target = int(parts[0])
    me, _ = read_ids(caller, innermost=False)  # ProgramGone: the call is abandoned
    pid: int | None = target
    for _ in range(4096):
        if pid == me:
            return False
        if pid is None or pid <= 1:
            break
        pid = _parent_of(pid)
    # Gone meanwhile: the kernel then says ENOENT, which the open will.
    return os.path.exists(f"/proc/{target}")
