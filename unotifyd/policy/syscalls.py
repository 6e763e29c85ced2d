"""Which system calls a policy needs trapped, by family.

Every trapped call costs a notification (tens of µs) even when no rule
covers its path, so the filter traps a family only when some rule of the
policy can change what a call of that family does. A seccomp filter cannot
look at path strings (they live in the program's memory), so the choice is
per system call, never per path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .rules import Content, Deny, Exec, Private, ReadOnly, Redirect, hides

if TYPE_CHECKING:
    from .rules import Policy

#: What a trapped call does, as far as the rules care; each call of the
#: registry (:mod:`unotifyd.calls.registry`) belongs to one family.
Family = Literal[
    "open",  # open, openat, openat2, creat
    "metadata",  # reads what a path is without opening it: stat, readlink, getxattr...
    "probe",  # reads whose answer a read-only mount changes: access (EROFS), statfs (ST_RDONLY)
    "change",  # changes the file system at a path: unlink, rename, chmod, utimes...
    # changes through an fd the program holds (fchmod, fchown, fsetxattr,
    # fremovexattr, the chattr ioctls): about the file, not a name, so only a
    # rule about the file refuses them, a read-only tree or a content file
    # (EROFS: decide_on_fd); under any other rule each would be let through.
    "change_fd",
    "chdir",
    "exec",  # execve, execveat
    "list",  # getdents: trapped to leave hidden names out of listings
    "socket",  # connect, bind: an AF_UNIX socket is a file named by a path
    "root",  # chroot, pivot_root, setns: noted, so that roots may be cached until one
    "sendto",  # sendto with an address: a datagram to a socket file named by a path
    "sendmsg",  # sendmsg, sendmmsg: the same, with the address in memory (enforcing mode)
]

def needed_families(policy: Policy) -> frozenset[Family]:
    """The families of system calls the filter must trap for ``policy``.

    * any rule: the open family;
    * a rule that changes what a path *is* (redirect, deny, content,
      private): metadata, probes, changes and ``chdir`` too, so that ``stat``,
      ``ls -l``, ``rm``... agree with ``open``;
    * read-only trees: changes, and the probes; other reads are left alone;
    * changes through an fd (``change_fd``: ``fchmod``...): only for a
      read-only tree or a content file, the rules about a file rather than
      a name (``decide_on_fd``); a redirect, a deny or a private tree
      concerns names, and a program's own fd is no name;
    * a deny with ``ENOENT`` (a hidden path): directory listings, so the
      name is absent from ``ls`` of its parent as well;
    * a rule that changes what a path is also traps ``sendto`` with an
      address (the filter looks whether there is one), and in enforcing
      mode ``sendmsg`` and ``sendmmsg``: a datagram may name a socket file
      (calls/sends.py); a read-only tree changes nothing of a send;
    * in enforcing mode, whatever the rules, the open family and changes
      (by name and through an fd): no program writes or chmods a system
      setting there (``/proc/sys``, ``/sys``: policy.decision.is_system_setting);
    * ``execve`` and ``execveat``: for exec rules, and in the full view for
      a rule that changes what a path is, since running a path is one more
      way to use it (a denied binary must not run, a redirected one runs
      its target). A policy of read-only trees alone never slows ``exec``.

    With ``view = "opens"`` only the open family (and exec, for exec rules).
    Whatever is trapped, the calls that give a program another root or
    move a thread to another user or mount namespace too (``root``: chroot,
    pivot_root, setns, unshare; enforcing mode refuses them instead): each
    trapped call resolves its paths in the program's root, which the
    serving layer looks up once and keeps until one of them is seen
    (Served.root_pinned), and the lane looks at a thread's namespaces once
    on the same terms (Served.namespaces_pinned).
    """
    needed: set[Family] = set()
    if policy.has_exec_rules:
        needed.add("exec")
    if policy.view == "opens":
        # Only the open family follows the rules (see VIEWS).
        if any(not isinstance(rule, Exec) for rule in policy.rules):
            needed.add("open")
        return frozenset(needed | ({"root"} if needed else set()))
    for rule in policy.rules:
        if isinstance(rule, Redirect | Deny | Content | Private):
            needed |= {
                "open", "metadata", "probe", "change", "chdir", "socket", "sendto", "exec"
            }  # fmt: skip
            if isinstance(rule, Content):
                needed.add("change_fd")
            if policy.mode == "enforce":
                # The address of a sendmsg is in memory, where BPF cannot see
                # whether there is one: every send is made by us (calls/sends.py).
                needed.add("sendmsg")
        elif isinstance(rule, ReadOnly):
            # "socket": bind makes a socket file (EROFS in a read-only tree).
            needed |= {"open", "change", "change_fd", "probe", "socket"}
        if hides(rule):
            needed.add("list")
    if policy.mode == "enforce" and needed:
        # The system's settings (/proc/sys, /sys...) are no program's to
        # change in enforcing mode, whatever its rules (policy.decision's
        # is_system_setting): their writes are opens, their chmods changes,
        # by name or on an fd.
        needed |= {"open", "change", "change_fd"}
    return frozenset(needed | ({"root"} if needed else set()))
