"""Decisions: what the supervisor does with one trapped system call.

A decision is a plain value computed by the pure policy layer. The kernel layer
applies it; nothing here touches the kernel or the file system.
"""

from __future__ import annotations

import errno
import os
from typing import Literal

from ..record import record
from .rules import Content, Deny, Policy, Private, Redirect


@record(frozen=True, slots=True)
class Continue:
    """Let the kernel run the call as if it had not been trapped.

    Only ever chosen for paths that no rule mentions: CONTINUE re-reads the
    arguments from the program's memory after our check, so it is subject to
    TOCTOU (seccomp_unotify(2), "Design goals; use of SECCOMP_USER_NOTIF_FLAG_CONTINUE").
    """

    reason: str = "no rule"


@record(frozen=True, slots=True)
class Fail:
    """Fail the call with ``errno`` without running it."""

    errno: int
    reason: str = ""


@record(frozen=True, slots=True)
class Return:
    """Complete the call with ``value`` without running it."""

    value: int
    reason: str = ""


@record(frozen=True, slots=True)
class EmulateOpen:
    """Open ``path`` in the supervisor and inject the fd into the program.

    ``flags`` are the open flags to use *without* ``O_CLOEXEC`` (the supervisor
    always opens its own copy close-on-exec); ``cloexec`` says whether the
    program's fd gets ``FD_CLOEXEC`` (``SECCOMP_ADDFD`` ``newfd_flags``).
    ``create_errno`` is returned instead of creating the file when the open
    would have to create it (a read-only path opened with ``O_CREAT``).
    ``exclusive`` says the program asked for ``O_CREAT | O_EXCL``: those flags
    are not in ``flags`` (the supervisor must not create the file), so when the
    file exists the kernel layer fails the call with ``EEXIST`` itself.
    ``no_symlinks`` asks for the open to refuse every symbolic link
    (``RESOLVE_NO_SYMLINKS``): ``path`` was resolved before the decision, and a
    link swapped in since must not lead the open somewhere no rule allowed.
    ``recheck`` (enforcing mode, a redirect's target) asks the kernel layer
    to resolve ``path`` and decide again on where it really leads, so that a
    symlink in a target tree cannot lead to a denied file.
    ``in_program_root`` says ``path`` is the program's own name for a file,
    to be opened in the program's root directory (a container's), rather
    than a path of the supervisor's, such as a redirect's target.
    ``confine`` is a directory the open must not leave (a private tree's
    scratch directory, where the program may have planted symlinks).
    ``judge_opened`` (enforcing mode, a ``/proc`` path): the open may follow
    a magic link (``/proc/PID/fd/N``), which leads to whatever the process
    holds there by then, so the rules are asked again about the file the
    open gave, by its name.
    ``directory_added``: ``O_DIRECTORY`` is in ``flags`` because the name
    ends in ``/`` (path_resolution(7)), not because the program asked; its
    file must not show it (``F_GETFL``). ``last_dot``: the name's last
    component is ``.``, which the program's lookup searched the directory
    for (may_lookup() in fs/namei.c checks every component): such a
    directory may be opened again as ``.`` in it.
    """

    path: str
    flags: int
    mode: int
    cloexec: bool
    reason: str = ""
    no_symlinks: bool = False
    create_errno: int = 0
    exclusive: bool = False
    in_program_root: bool = False
    recheck: bool = False
    confine: str | None = None
    judge_opened: bool = False
    directory_added: bool = False
    last_dot: bool = False


@record(frozen=True, slots=True)
class RefuseWrite:
    """An open for writing of a read-only path: answer it as a read-only mount would.

    A read-only mount does not answer every such open with EROFS. It
    refuses writes to the *file system*, not I/O to special files: do_open()
    in fs/namei.c takes mnt_want_write() only to truncate a regular file, and
    do_dentry_open() only for a file opened for writing that is no special
    file (special_file()); creating (lookup_open()) and O_TMPFILE
    (do_tmpfile()) need it too. So a FIFO, a socket or a device opened for
    writing is opened, as on any mount, and the kernel reports first a
    missing file (ENOENT), an existing file under O_CREAT|O_EXCL (EEXIST),
    a directory (EISDIR) or a file that is not one under O_DIRECTORY
    (ENOTDIR). What exists is I/O, so the kernel layer looks at ``path``
    and asks :func:`refuse_write_errno` for the errno; where it is 0, it
    opens the very file it looked at with the program's ``flags`` (and
    ``mode``), and injects it as an :class:`EmulateOpen`'s, with
    ``cloexec``.
    """

    path: str
    flags: int
    reason: str = ""
    mode: int = 0
    cloexec: bool = False


#: What a path is, as the kernel layer found it: a regular ``file`` (or a
#: symbolic link), a ``dir``, a ``special`` file (a FIFO, a socket, a
#: device), ``missing`` in an existing directory, or under a directory
#: that is missing too (``no-parent``).
Found = Literal["file", "dir", "special", "missing", "no-parent"]


def refuse_write_errno(flags: int, found: Found) -> int:
    """The errno a read-only mount gives an open with ``flags`` of what was ``found``;
    0 where it lets the open through (the file's own open then decides).

    The kernel's order (fs/namei.c, Linux 6.18; checked against a
    read-only bind mount and a read-only tmpfs): the path is looked up
    first (``no-parent``, ``missing``: ENOENT). O_TMPFILE then needs a
    directory (ENOTDIR) and mnt_want_write() (EROFS, before any permission
    check: do_tmpfile()). Creating a missing file is EROFS (lookup_open()).
    do_open() then checks O_CREAT on what exists, "if ((open_flag & O_EXCL)
    && !(file->f_mode & FMODE_CREATED)) return -EEXIST; if
    (d_is_dir(nd->path.dentry)) return -EISDIR;", and O_DIRECTORY (ENOTDIR).
    Only then does it take mnt_want_write() for O_TRUNC of a regular file;
    may_open() refuses a directory opened for writing (EISDIR) and drops
    O_TRUNC for special files, which do_dentry_open() opens for writing
    without mnt_want_write(): 0. A regular file opened for writing is EROFS.
    """
    create = bool(flags & os.O_CREAT)
    if found == "no-parent":
        return errno.ENOENT
    if flags & _O_TMPFILE_ONLY:
        if found == "missing":
            return errno.ENOENT
        return errno.EROFS if found == "dir" else errno.ENOTDIR
    if found == "missing":
        return errno.EROFS if create else errno.ENOENT
    if create and flags & os.O_EXCL:
        return errno.EEXIST
    if found == "dir":
        return errno.EISDIR if create or writes(flags) else 0
    if flags & os.O_DIRECTORY:
        return errno.ENOTDIR
    if found == "special":
        return 0
    return errno.EROFS if writes(flags) else 0


@record(frozen=True, slots=True)
class Rewrite:
    """Let an ``execve`` or ``chdir`` through, after writing ``path`` over the program's.

    Neither call can be performed by the supervisor for the program: the
    kernel must run it. A redirect then puts its target's name in place of
    the program's path, in the program's memory, and answers CONTINUE.
    ``path`` None writes nothing. ``guard`` (an exec under enforce with an
    exec allow-list) allows the CONTINUE only if no other thread can
    rewrite the path after our check (see :mod:`unotifyd.serve.rewrite`).
    """

    path: str | None
    reason: str = ""
    guard: bool = False
    # chdir only: the program's own name for the directory (resolved), and
    # whether to rather keep it when it exists (a private tree: the
    # scratch directory's name is ours, not the program's to see).
    source: str | None = None
    keep_source: bool = False
    directory: bool = False  # chdir: the target must be a directory


@record(frozen=True, slots=True)
class Listing:
    """Answer a ``getdents64`` ourselves, leaving out the ``hidden`` names."""

    hidden: frozenset[bytes]
    reason: str = ""


#: What becomes of an open.
Decision = Continue | Fail | Return | EmulateOpen | RefuseWrite


@record(frozen=True, slots=True)
class OpenRequest:
    """One trapped ``open``, ``openat``, ``openat2`` or ``creat``, decoded.

    ``path`` is absolute and already resolved by the kernel layer (relative to
    the program's cwd or ``dirfd``, symbolic links followed). ``flags`` are the
    program's open flags (``creat`` arrives as ``O_CREAT|O_WRONLY|O_TRUNC``) and
    ``mode`` its mode argument exactly as found in the register or in
    ``struct open_how``: for ``open`` it is garbage unless a file is created.
    """

    syscall: str
    path: str
    flags: int
    mode: int


# The kernel's O_LARGEFILE on x86_64: os.O_LARGEFILE is 0 on 64-bit builds.
_O_LARGEFILE = 0o100000
#: The kernel's VALID_OPEN_FLAGS (include/linux/fcntl.h): open(2) drops any
#: other bit, openat2(2) refuses it with EINVAL (build_open_flags, fs/open.c).
VALID_OPEN_FLAGS = (
    os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC | os.O_APPEND
    | os.O_NONBLOCK | os.O_SYNC | os.O_DSYNC | os.O_ASYNC | os.O_DIRECT
    | _O_LARGEFILE | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME | os.O_CLOEXEC
    | os.O_PATH | os.O_TMPFILE
)  # fmt: skip
# With O_PATH the kernel keeps only these (O_PATH_FLAGS in fs/open.c).
_O_PATH_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_PATH | os.O_CLOEXEC
# os.O_TMPFILE includes O_DIRECTORY; the bit that means "create" is the rest.
_O_TMPFILE_ONLY = os.O_TMPFILE & ~os.O_DIRECTORY
_S_IALLUGO = 0o7777


def _creates(flags: int) -> bool:
    return bool(flags & (os.O_CREAT | _O_TMPFILE_ONLY))


def open_how(syscall: str, flags: int, mode: int) -> tuple[int, int] | str:
    """Return the (flags, mode) the kernel would really use, or why it says EINVAL.

    An emulated open must behave as the program's own would have, whichever
    system call the supervisor uses to perform it. The legacy calls silently
    drop what they do not understand (build_open_how() in fs/open.c); openat2
    refuses it instead. Doing both here keeps a stray mode register from
    becoming an EINVAL in the supervisor's openat2, and a bad openat2 from
    succeeding through the supervisor's open.
    """
    if syscall == "openat2":
        if flags & os.O_PATH and flags & ~_O_PATH_FLAGS:
            return "O_PATH combined with flags it does not allow"
        if _creates(flags):
            if mode & ~_S_IALLUGO:
                return f"mode {mode:#o} has bits outside 07777"
        elif mode:
            return "mode given without O_CREAT or O_TMPFILE"
        return _flags_refused(flags) or (flags, mode)
    flags &= VALID_OPEN_FLAGS
    if flags & os.O_PATH:
        flags &= _O_PATH_FLAGS
    return _flags_refused(flags) or (flags, (mode & _S_IALLUGO if _creates(flags) else 0))


def _flags_refused(flags: int) -> str:
    """Why build_open_flags() (fs/open.c) refuses ``flags`` with EINVAL
    whatever the path is, or "" (after the legacy calls dropped what they
    drop): O_CREAT with O_DIRECTORY (since Linux 6.4), and an O_TMPFILE
    without O_DIRECTORY, with O_CREAT or without write access ("if
    ((flags & O_TMPFILE_MASK) != O_TMPFILE) return -EINVAL; if (!(acc_mode
    & MAY_WRITE)) return -EINVAL;"; O_ACCMODE 3 counts as a write)."""
    if flags & os.O_CREAT and flags & os.O_DIRECTORY:
        return "O_CREAT with O_DIRECTORY"
    if flags & _O_TMPFILE_ONLY and (
        flags & (os.O_TMPFILE | os.O_CREAT) != os.O_TMPFILE
        or flags & os.O_ACCMODE == os.O_RDONLY
    ):
        return "O_TMPFILE without O_DIRECTORY or write access, or with O_CREAT"
    return ""


def writes(flags: int) -> bool:
    # O_ACCMODE == 3 is no typo in a program: Linux treats it as read+write
    # for permission checks, so it counts as a write too.
    return (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)


# Decisions are immutable, and most calls match no rule: share one.
_CONTINUE = Continue()


#: What configures the whole system, and is no program's to change in
#: enforcing mode: sysctl (binfmt_misc included, which systemd mounts at
#: /proc/sys/fs/binfmt_misc), sysfs (cgroup2 at /sys/fs/cgroup included),
#: and the other /proc files of the whole machine (interrupt affinities,
#: PCI config space, the SysRq trigger, ACPI wake-ups, MTRRs, drivers',
#: file systems' settings).
SYSTEM_SETTINGS = (
    "/proc/sys", "/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/acpi",
    "/proc/mtrr", "/proc/driver", "/proc/fs",
)  # fmt: skip
SYSTEM_SETTINGS_REFUSED = (
    "enforce: /proc/sys, /sys and the machine's /proc files configure the whole system "
    "(core_pattern, modprobe, binfmt_misc run programs as root with every capability), "
    "which uid 0 may write without any"
)


def is_system_setting(path: str) -> bool:
    """Whether ``path`` is or lies below one of SYSTEM_SETTINGS.

    The kernel asks only for write permission on such a file (test_perm()
    in fs/proc/proc_sysctl.c, kernfs_iop_permission()), which uid 0 has as
    the owner with no capability at all, and some run a program of the
    kernel's choosing as root with every capability, outside any sandbox: a
    ``core_pattern`` of ``|/path`` at each crash (core(5), whatever the
    crashing program's RLIMIT_CORE), ``modprobe`` at a module request,
    ``/sys/kernel/uevent_helper`` at each uevent, a binfmt_misc interpreter
    for every file it matches (binfmt_misc.rst); ``/proc/sysrq-trigger``
    reboots. So enforcing mode refuses to open them for writing (EACCES, as
    for an unprivileged user) and to change them (EPERM), in
    :func:`decide_open` and :func:`~unotifyd.policy.paths.decide_path`, which
    judge every name the supervisor opens or acts on, the file found again
    once opened included (a name that was a pipe when checked and a setting
    when opened, through a swapped /proc/self/fd/N, or a redirect's target
    that is a symlink to one: audit helper-59). Decided on the kernel's name
    for the file: enforcing mode refuses the mounts that would put these
    file systems elsewhere.
    """
    return any(path == tree or path.startswith(tree + "/") for tree in SYSTEM_SETTINGS)


def decide_open(policy: Policy, req: OpenRequest) -> Decision:
    """Decide one open-like system call.

    * no rule covers ``req.path``: :class:`Continue`;
    * invalid flags or mode (as the kernel would judge them): ``Fail(EINVAL)``,
      which the kernel checks before it looks at the path;
    * deny: ``Fail(errno)``;
    * redirect: :class:`EmulateOpen` of the target with the program's flags;
    * read-only, opened for writing (``O_WRONLY``, ``O_RDWR``, ``O_TRUNC``,
      ``O_TMPFILE``): :class:`RefuseWrite`, answered as a read-only mount
      answers (a special file is opened); opened for reading:
      :class:`EmulateOpen` of the path itself without ``O_CREAT``/``O_EXCL``,
      refusing symbolic links, with ``create_errno=EROFS`` if the program
      asked ``O_CREAT`` (looked at first: see :func:`refuse_write_errno`).

    Every decision's ``reason`` names the rule and where it was written.
    """
    match = policy.match(req.path)
    enforce = policy.mode == "enforce"
    if match is None and not enforce:
        return _CONTINUE
    reason = str(match.rule) if match is not None else "enforce: no rule"
    how = open_how(req.syscall, req.flags, req.mode)
    if isinstance(how, str):
        return Fail(errno.EINVAL, reason=f"{req.syscall}: {how}; {reason}")
    flags, mode = how
    if (
        enforce
        and ((flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC)
        and is_system_setting(req.path)
        and not (match is not None and isinstance(match.rule, Deny))  # a deny's errno first
    ):
        return Fail(errno.EACCES, reason=SYSTEM_SETTINGS_REFUSED)
    cloexec = bool(flags & os.O_CLOEXEC)
    flags &= ~os.O_CLOEXEC
    if match is None:
        # Enforcing: open the very path that was checked, as the program,
        # instead of letting the kernel re-read its memory (CONTINUE). No
        # symlink may appear on it since (it was resolved), except in /proc,
        # whose magic links (/proc/PID/fd/N) are how such paths work: what
        # one of those gives is judged once opened.
        in_proc = req.path.startswith("/proc/")
        return EmulateOpen(
            path=req.path,
            flags=flags,
            mode=mode,
            cloexec=cloexec,
            reason=reason,
            no_symlinks=not in_proc,
            in_program_root=True,
            judge_opened=in_proc,
        )
    rule = match.rule

    if isinstance(rule, Deny):
        return Fail(rule.errno, reason=reason)

    if isinstance(rule, Redirect):
        target = rule.target.join(match.suffix) if rule.target.tree else rule.target.path
        return EmulateOpen(
            path=target, flags=flags, mode=mode, cloexec=cloexec, reason=reason, recheck=enforce
        )

    if isinstance(rule, Content | Private):
        if rule.backing is None:
            # Never bound to a sandbox (see Policy.bound): fail closed.
            return Fail(errno.EIO, reason=f"{reason}: no backing file in this sandbox")
        if isinstance(rule, Private):
            return EmulateOpen(
                path=rule.backing + match.suffix,
                flags=flags,
                mode=mode,
                cloexec=cloexec,
                reason=reason,
                confine=rule.backing,
            )
        # Content: a read-only file that always exists.
        if flags & os.O_CREAT and flags & os.O_EXCL:
            return Fail(errno.EEXIST, reason=reason)
        if writes(flags) or flags & os.O_TMPFILE == os.O_TMPFILE:
            return Fail(errno.EROFS, reason=reason)
        if flags & os.O_DIRECTORY:
            return Fail(errno.ENOTDIR, reason=reason)
        return EmulateOpen(
            path=rule.backing,
            flags=flags & ~(os.O_CREAT | os.O_NOFOLLOW),
            mode=0,
            cloexec=cloexec,
            reason=reason,
        )

    # Read-only. What a read-only mount answers to an open for writing
    # depends on what is there (a FIFO or a device is opened, a missing
    # file is ENOENT): the kernel layer looks (see RefuseWrite).
    create = bool(flags & os.O_CREAT)
    exclusive = create and bool(flags & os.O_EXCL)
    if writes(flags):
        return RefuseWrite(path=req.path, flags=flags, reason=reason, mode=mode, cloexec=cloexec)
    if create:
        # An existing file is opened without O_CREAT; the kernel layer looks
        # first for what do_open() refuses before any permission check (a
        # directory: EISDIR; O_EXCL: EEXIST; see refuse_write_errno).
        # O_EXCL is only dropped along with O_CREAT: alone it keeps its meaning
        # for block devices (EBUSY if mounted).
        flags &= ~(os.O_CREAT | os.O_EXCL)
    return EmulateOpen(
        path=req.path,
        flags=flags,
        mode=mode if _creates(flags) else 0,
        cloexec=cloexec,
        reason=reason,
        # The path was checked, not yet opened: see EmulateOpen.no_symlinks.
        no_symlinks=True,
        in_program_root=True,
        create_errno=errno.EROFS if create else 0,
        exclusive=exclusive,
    )
