"""The syscall surface: calls the filter itself refuses, with no notification.

Trapping path calls makes the rules hold only for calls that pass through the
filter with a path the supervisor can read. Some calls never do, or change
what a path means for every later call:

* **io_uring** performs opens, ``statx``, renames, links and unlinks from a
  ring in shared memory (``IORING_OP_OPENAT``...): the kernel runs them in
  io_uring's own context, and seccomp never sees them (seccomp(2) filters
  system calls; io_uring_setup(2) operations are not system calls);
* **new namespaces, roots and mounts** change what a path names: after
  ``unshare(CLONE_NEWUSER)`` an unprivileged program holds ``CAP_SYS_CHROOT``
  in its new user namespace (user_namespaces(7)), so it can ``chroot`` into a
  directory where the rule paths name nothing, or bind-mount a denied file
  somewhere no rule covers;
* **calls that reach files or processes without a path**: a file handle
  (``open_by_handle_at``), fanotify marks, ``acct`` and ``swapon`` (root),
  the paths of ``quotactl`` and ``uselib``, which the filter does not trap,
  and the calls that act on another process of
  the same uid outside the sandbox, which can then open anything for the
  program (``ptrace``, ``process_vm_writev``, ``pidfd_getfd``) or, the
  supervisor included, be killed (``prlimit64``'s ``RLIMIT_CPU``);
  ``userfaultfd`` (and ``/dev/userfaultfd``'s ``USERFAULTFD_IOC_NEW``)
  stalls the supervisor's reads of the program's memory; ``bpf`` programs
  (root) read and write any process's memory.

The filter answers these with an errno of their own (``SCMP_ACT_ERRNO``): the
kernel never notifies, so the supervisor has nothing to get wrong. The errno
is chosen as seccomp sandboxes choose it:

* ``EPERM`` in general: it is what the kernel answers a caller that lacks the
  capability (mount(2), chroot(2), ptrace(2)...), so programs already handle
  it, and it is the default errno of Docker's profile and of flatpak's list;
* ``ENOSYS`` where callers take it as "this kernel lacks the call" and fall
  back to one the filter can judge: ``clone3`` (glibc's ``pthread_create``
  and ``posix_spawn`` then use ``clone``, whose flags the filter reads; a
  ``clone3`` takes its flags in memory, which BPF cannot read: Docker and
  flatpak answer it ENOSYS for this reason), io_uring (a kernel built
  without it, ``CONFIG_IO_URING=n``, answers ENOSYS, so programs that use
  it where available already cope, with ordinary system calls, which are
  trapped), and the new mount
  API (``fsopen``, ``open_tree``, ``move_mount``...:
  flatpak answers them ENOSYS, and a caller that falls back lands on
  ``mount(2)``, refused with EPERM).

``clone`` and ``unshare`` are refused only when their flags ask for a new
namespace (any ``CLONE_NEW*`` bit): ``fork``, threads and
``unshare(CLONE_FILES)`` keep working. ``open_tree`` is refused whatever its
flags: with ``OPEN_TREE_CLONE`` it makes a detached copy of a mount tree, and
without it an ``O_PATH`` fd of a path the filter never shows us. Governing the
plain form as an open would serve only mount tools (its fd's use is
``move_mount``, refused here too), which fall back to ``mount(2)`` on ENOSYS.

Modes
-----
In **enforcing mode** the whole table is refused. In **virtualize mode**
(a view, not a boundary) only io_uring is, and only when the policy has a
rule: an io_uring open would silently show the real file where the rules
show another, which is a bug of the view, and ENOSYS makes the program use
the calls the view follows. The rest stays allowed there: a debugger, a
container tool or a build that makes a namespace does it on purpose, the
view promises nothing against it, and refusing would break such programs
for no guarantee in return.

A policy re-allows a call by name (``allow_syscalls = ["ptrace"]``,
``--allow-syscall ptrace``); :func:`warnings` gives the line printed at start
for each, saying which route it reopens.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..record import record

if TYPE_CHECKING:
    from .rules import Policy

__all__ = [
    "CLONE_NAMESPACES",
    "SURFACE",
    "UNSHARE_NAMESPACES",
    "ArgTest",
    "Refusal",
    "RefusedCall",
    "check_allowed",
    "refused",
    "refused_calls",
    "warnings",
]

# include/uapi/linux/sched.h. CLONE_NEWTIME (0x80) is only for unshare and
# clone3: in clone's flags the low byte is the exit signal (clone(2)), so
# 0x80 there is signal 128, not a namespace.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
#: Every namespace ``clone`` can create (Docker's mask for ``clone``, 0x7E020000).
CLONE_NAMESPACES: tuple[int, ...] = (
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
)  # fmt: skip
#: Every namespace ``unshare`` can create.
UNSHARE_NAMESPACES: tuple[int, ...] = (*CLONE_NAMESPACES, CLONE_NEWTIME)
# include/uapi/linux/mount.h

#: ``(argument index, mask, value)``: true when ``args[index] & mask == value``,
#: as libseccomp's ``SCMP_CMP_MASKED_EQ`` compares (seccomp_rule_add(3)).
ArgTest = tuple[int, int, int]
#: A call as :func:`unotifyd.kernel.filter.compile_filter` takes it:
#: ``(name, x86_64 number, errno, tests)``, refused when any of ``tests``
#: holds, or always when there is none.
RefusedCall = tuple[str, int, int, tuple[ArgTest, ...]]


@record(frozen=True, slots=True)
class Refusal:
    """One refused system call.

    ``number`` is its x86_64 number (arch/x86/entry/syscalls/syscall_64.tbl):
    the filter adds rules by number, so that calls newer than libseccomp's
    table are refused too. ``when`` empty: always refused; else refused when
    any of the tests holds. ``route`` says what the call lets a program do
    past the rules (the warning when a policy allows it), ``condition`` says
    ``when`` in words; ``virtualize``:
    refused in virtualize mode as well.
    """

    name: str
    number: int
    errno: int
    route: str
    when: tuple[ArgTest, ...] = ()
    condition: str = "always"
    virtualize: bool = False


def _flags(index: int, bits: Iterable[int]) -> tuple[ArgTest, ...]:
    # A filter can test bits only one MASKED_EQ at a time: "any of these bits
    # set" is one rule per bit (libseccomp ORs the rules of one call).
    return tuple((index, bit, bit) for bit in bits)


_IO_URING = "io_uring operations (IORING_OP_OPENAT, STATX, RENAMEAT, UNLINKAT...) never reach "
_IO_URING += "the filter: they open, stat, rename and unlink past every rule"
_NEW_ROOT = "a new user or mount namespace lets the program chroot or mount, and then paths "
_NEW_ROOT += "name other files than the rules do"
_MOUNT = "mounts change what paths name (a denied file bind-mounted where no rule covers it)"
_TREE = (
    "an fd of a path the rules never see (fstat on it tells a hidden file's size and "
    "inode), and with OPEN_TREE_CLONE a detached copy of a mount tree, whose files no "
    "rule path names"
)
_OTHER_PROCESS = "a process of the same uid outside the sandbox can be made to do anything, "
_OTHER_PROCESS += "opening denied files included"

_TABLE: tuple[Refusal, ...] = (
    Refusal("io_uring_setup", 425, errno.ENOSYS, _IO_URING, virtualize=True),
    Refusal("io_uring_enter", 426, errno.ENOSYS, _IO_URING, virtualize=True),
    Refusal("io_uring_register", 427, errno.ENOSYS, _IO_URING, virtualize=True),
    # clone(2) on x86_64: clone(flags, stack, parent_tid, child_tid, tls),
    # flags first (the argument order differs on s390 and CRIS, not here).
    Refusal(
        "clone",
        56,
        errno.EPERM,
        _NEW_ROOT,
        when=_flags(0, CLONE_NAMESPACES),
        condition="with a CLONE_NEW* flag",
    ),
    Refusal(
        "clone3",
        435,
        errno.ENOSYS,
        "clone3's flags are in memory the filter cannot read: it can create any namespace",
    ),
    Refusal(
        "unshare",
        272,
        errno.EPERM,
        _NEW_ROOT,
        when=_flags(0, UNSHARE_NAMESPACES),
        condition="with a CLONE_NEW* flag",
    ),
    Refusal("setns", 308, errno.EPERM, "joining another namespace changes what paths name"),
    Refusal("chroot", 161, errno.EPERM, "in a new root the rule paths name nothing"),
    Refusal("pivot_root", 155, errno.EPERM, "in a new root the rule paths name nothing"),
    Refusal("mount", 165, errno.EPERM, _MOUNT),
    Refusal("umount2", 166, errno.EPERM, "unmounting shows the files a mount covered"),
    Refusal("fsopen", 430, errno.ENOSYS, _MOUNT),
    Refusal("fsconfig", 431, errno.ENOSYS, _MOUNT),
    Refusal("fsmount", 432, errno.ENOSYS, _MOUNT),
    Refusal("fspick", 433, errno.ENOSYS, _MOUNT),
    Refusal("move_mount", 429, errno.ENOSYS, _MOUNT),
    Refusal("mount_setattr", 442, errno.ENOSYS, _MOUNT),
    Refusal("open_tree", 428, errno.ENOSYS, _TREE),
    Refusal("open_tree_attr", 467, errno.ENOSYS, _TREE),
    Refusal(
        "open_by_handle_at",
        304,
        errno.EPERM,
        "a file handle opens a file by inode, with no path to check",
    ),
    Refusal(
        "fanotify_init",
        300,
        errno.EPERM,
        "fanotify reports what happens to denied files, and hands out fds of them",
    ),
    Refusal("fanotify_mark", 301, errno.EPERM, "fanotify marks take paths the rules never see"),
    Refusal("acct", 163, errno.EPERM, "acct(path) opens and writes a file past the rules"),
    Refusal("swapon", 167, errno.EPERM, "swapon(path) opens a file past the rules"),
    Refusal("swapoff", 168, errno.EPERM, "swapoff(path) looks up a path past the rules"),
    Refusal("ptrace", 101, errno.EPERM, _OTHER_PROCESS),
    Refusal("process_vm_readv", 310, errno.EPERM, "reads the memory of processes outside"),
    Refusal("process_vm_writev", 311, errno.EPERM, _OTHER_PROCESS),
    Refusal("pidfd_getfd", 438, errno.EPERM, "copies fds from processes outside the sandbox"),
    Refusal(
        "userfaultfd",
        323,
        errno.EPERM,
        "a page fault the program answers can stall the supervisor's reads of its memory",
    ),
    # prlimit64(pid, resource, new, old): the kernel reads pid as a 32-bit
    # pid_t, so "any of its 32 bits set" is exactly "another process's, or
    # its own by number" (0 is the caller's: glibc's getrlimit and
    # setrlimit, a shell's ulimit). check_prlimit_permission()
    # (kernel/sys.c) lets the same uid and gid through with no capability
    # and no hook of commoncap's: a root program without capabilities
    # could set a root supervisor's RLIMIT_CPU to 1 s, and so kill it.
    Refusal(
        "prlimit64",
        302,
        errno.EPERM,
        "a process of the same uid and gid, the supervisor included, can have its limits "
        "lowered (RLIMIT_CPU kills it)",
        when=_flags(0, (1 << bit for bit in range(32))),
        condition="with a pid",
    ),
    # quotactl(cmd, special, id, addr) looks special up first (a block
    # device's name: ENOTBLK, ENOENT, ENOTDIR and EACCES tell what is
    # there), a path the filter never shows us; quotactl_fd takes an fd.
    # uselib(path) maps a library it looks up (Linux built with
    # CONFIG_USELIB, still offered by 6.12): ENOSYS, as a kernel without it.
    Refusal(
        "uselib",
        134,
        errno.ENOSYS,
        "uselib looks a path up and maps the file past the rules",
    ),
    Refusal(
        "quotactl",
        179,
        errno.EPERM,
        "quotactl looks a path up past the rules: its errno tells whether a hidden name exists",
    ),
    Refusal("bpf", 321, errno.EPERM, "BPF programs read and write any process's memory"),
    # ioctl(fd, cmd, arg): the kernel reads cmd as 32 bits. Linux 6.2 made
    # TIOCSTI need CAP_SYS_ADMIN unless dev.tty.legacy_tiocsti = 1, and 6.7
    # TIOCLINUX's paste: EPERM is what they answer then. USERFAULTFD_IOC_NEW
    # (_IO(0xAA, 0x00), include/uapi/linux/userfaultfd.h) on /dev/userfaultfd
    # makes what the userfaultfd call makes, for whoever may open the device
    # (root's, 0600: a root program without capabilities may).
    Refusal(
        "ioctl",
        16,
        errno.EPERM,
        "TIOCSTI and TIOCLINUX put keystrokes into the terminal's input, which the shell "
        "outside the sandbox then reads as typed; USERFAULTFD_IOC_NEW makes a userfaultfd, "
        "whose page faults can stall the supervisor's reads of the program's memory",
        when=((1, 0xFFFFFFFF, 0x5412), (1, 0xFFFFFFFF, 0x541C), (1, 0xFFFFFFFF, 0xAA00)),
        condition="TIOCSTI, TIOCLINUX, USERFAULTFD_IOC_NEW",
    ),
)

#: The refused calls by name, in the order of the table.
SURFACE: Mapping[str, Refusal] = {refusal.name: refusal for refusal in _TABLE}


def check_allowed(names: Iterable[str]) -> frozenset[str]:
    """``names`` as a frozenset, once each is known to be a refused call.

    Raises :class:`ValueError` naming the first unknown name, with the
    closest names of the table (difflib) when some are close.
    """
    allowed = frozenset(names)
    for name in sorted(allowed):
        if name in SURFACE:
            continue
        import difflib  # noqa: PLC0415 - for a mistake's hint only, not every launch

        close = difflib.get_close_matches(name.lower(), list(SURFACE), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(
            f"{name!r} is not a system call unotifyd refuses ({hint}it must be one of: "
            f"{', '.join(SURFACE)})"
        )
    return allowed


def _applies(refusal: Refusal, policy: Policy) -> bool:
    if policy.mode == "enforce":
        return True
    # Virtualize: only where the view would be bypassed, so a policy with
    # no rule (no view) changes nothing.
    return refusal.virtualize and bool(policy.rules)


def refused(policy: Policy) -> frozenset[str]:
    """The names of the calls the filter refuses for ``policy``."""
    return frozenset(
        name
        for name, refusal in SURFACE.items()
        if name not in policy.allow_syscalls and _applies(refusal, policy)
    )


def refused_calls(policy: Policy) -> tuple[RefusedCall, ...]:
    """What :func:`~unotifyd.kernel.filter.compile_filter` refuses for ``policy``.

    Sorted, hashable: it is part of the cache key of compiled filters.
    """
    return tuple(
        (name, SURFACE[name].number, SURFACE[name].errno, SURFACE[name].when)
        for name in sorted(refused(policy))
    )


def warnings(policy: Policy) -> list[str]:
    """One line per call ``policy`` re-allows: the route it reopens."""
    out = []
    for name in sorted(policy.allow_syscalls):
        refusal = SURFACE[name]
        if _applies(refusal, policy):
            out.append(f"warning: {name} is allowed by the policy: {refusal.route}")
        else:
            out.append(
                f"warning: {name} is allowed by the policy, but this policy does not refuse "
                "it (see the threat model): allowing it changes nothing"
            )
    return out
