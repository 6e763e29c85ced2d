"""No core dump files for programs in enforcing mode.

A core dump is written by the kernel, not by a system call of the program's:
the filter never sees it. With a ``core_pattern`` that is a file name
(Debian's default is ``core``), ``do_coredump()`` (fs/coredump.c) unlinks
what is there and creates the file itself, with the crashing task's
credentials, in its cwd or where the pattern says: a program that raises its
own soft ``RLIMIT_CORE`` and crashes writes a file, and removes one, in a
read-only tree, or in a denied one it made its cwd (core(5); audit
helper-56). So the programs of enforcing mode start with a hard
``RLIMIT_CORE`` of 0, which a process may always set for itself
(setrlimit(2)): ``do_coredump()`` writes no file below the limit, and
raising a hard limit takes ``CAP_SYS_RESOURCE``, which a program without
capabilities lacks (a root program that keeps its capabilities is not
contained: README, "Threat model"). A pattern that pipes to a helper
(``|/usr/lib/systemd/systemd-coredump``) is run whatever the limit (but 1),
as root, and the helper decides where the dump goes (apport honours the
limit, systemd-coredump its own configuration): the system's choice, which
enforcing mode keeps a program from making (policy.decision.is_system_setting
refuses writes to ``core_pattern``).
"""

from __future__ import annotations

import resource

__all__ = ["forbid_core_dumps"]


def forbid_core_dumps() -> None:
    """Set our ``RLIMIT_CORE`` to 0, soft and hard (before an exec). Raises OSError."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
