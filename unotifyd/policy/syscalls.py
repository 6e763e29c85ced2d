"""Which system calls a policy needs trapped, by family.

Every trapped call costs a notification (tens of µs) even when no rule
covers its path, so the filter traps a family only when some rule of the
policy can change what a call of that family does. A seccomp filter cannot
look at path strings (they live in the program's memory), so the choice is
per system call, never per path.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .rules import Content, Deny, Exec, Private, ReadOnly, Redirect

if TYPE_CHECKING:
    from .rules import Policy

OPEN: frozenset[str] = frozenset({"open", "openat", "openat2", "creat"})
#: Calls that read what a path is, without opening it.
METADATA: frozenset[str] = frozenset(
    {
        "stat", "lstat", "newfstatat", "statx",
        "access", "faccessat", "faccessat2",
        "readlink", "readlinkat",
        "getxattr", "lgetxattr", "listxattr", "llistxattr", "getxattrat", "listxattrat",
        "statfs", "file_getattr", "name_to_handle_at", "inotify_add_watch",
    }
)  # fmt: skip
#: The calls whose answer a read-only mount changes without being asked
#: for a change: ``access(W_OK)`` says EROFS, ``statfs`` has ``ST_RDONLY``.
READ_ONLY_SHOWS: frozenset[str] = frozenset({"access", "faccessat", "faccessat2", "statfs"})
#: Calls that change the file system at a path.
CHANGE: frozenset[str] = frozenset(
    {
        "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "mknod", "mknodat",
        "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
        "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat",
        "truncate", "utimensat", "utime", "utimes", "futimesat",
        "setxattr", "lsetxattr", "removexattr", "lremovexattr",
        "setxattrat", "removexattrat", "file_setattr",
    }
)  # fmt: skip
CHDIR: frozenset[str] = frozenset({"chdir"})
EXEC: frozenset[str] = frozenset({"execve", "execveat"})
#: Directory listing: trapped to leave hidden names out of it.
LIST: frozenset[str] = frozenset({"getdents64", "getdents"})


def hides(rule: object) -> bool:
    """True for a rule that makes its path look absent: a deny with ``ENOENT``."""
    return isinstance(rule, Deny) and rule.errno == errno.ENOENT


def needed_syscalls(policy: Policy) -> frozenset[str]:
    """The system calls the filter must trap for ``policy``.

    * any rule: the open family;
    * a rule that changes what a path *is* (redirect, deny, content,
      private): metadata, changes and ``chdir`` too, so that ``stat``,
      ``ls -l``, ``rm``... agree with ``open``;
    * read-only trees: changes, and the few reads whose answer a read-only
      mount changes (``access``, ``statfs``); other reads are left alone;
    * a deny with ``ENOENT`` (a hidden path): directory listings, so the
      name is absent from ``ls`` of its parent as well;
    * exec rules: ``execve`` and ``execveat``. Only exec rules turn them on,
      so a policy without one never slows ``exec``; with them, redirect and
      deny rules apply to exec as well.

    With ``view = "opens"`` only the open family (and exec, for exec rules).
    """
    needed: set[str] = set()
    if policy.view == "opens":
        # Only the open family follows the rules (see VIEWS).
        if any(not isinstance(rule, Exec) for rule in policy.rules):
            needed |= OPEN
        if policy.has_exec_rules:
            needed |= EXEC
        return frozenset(needed)
    for rule in policy.rules:
        if isinstance(rule, Redirect | Deny | Content | Private):
            needed |= OPEN | METADATA | CHANGE | CHDIR
        elif isinstance(rule, ReadOnly):
            needed |= OPEN | CHANGE | READ_ONLY_SHOWS
        if hides(rule):
            needed |= LIST
    if policy.has_exec_rules:
        needed |= EXEC
    return frozenset(needed)
