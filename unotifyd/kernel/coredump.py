"""No core dump files for programs in enforcing mode.

A core dump is written by the kernel, not by a system call of the program's:
the filter never sees it. With a ``core_pattern`` that is a file name
(Debian's default is ``core``), ``do_coredump()`` (fs/coredump.c) unlinks
what is there and creates the file itself, with the crashing task's
credentials, in its cwd or where the pattern says: a program that raises its
own soft ``RLIMIT_CORE`` and crashes writes a file, and removes one, in a
read-only tree, or in a denied one it made its cwd (core(5)). So the
programs of enforcing mode start with a hard ``RLIMIT_CORE`` of 0, as
setrlimit(2) lets any process lower its own or, with ``CAP_SYS_RESOURCE``
or the same ids, another's: ``do_coredump()`` writes no file below the
limit, and raising a hard limit takes ``CAP_SYS_RESOURCE``, which the
programs enforcing mode holds against lack (README, "Threat model"). A
pattern that pipes to a helper (``|/usr/lib/systemd/systemd-coredump``)
gives the dump to that helper, which writes where its own configuration
says, not where the program chose.
"""

from __future__ import annotations

import resource

__all__ = ["forbid_core_dumps"]


def forbid_core_dumps(pid: int = 0) -> None:
    """Set process ``pid``'s ``RLIMIT_CORE`` (0: ours) to 0, soft and hard.

    Raises OSError (ProcessLookupError: it is gone; PermissionError: it is
    not ours to limit, prlimit(2)).
    """
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
