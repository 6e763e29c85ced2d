"""Decisions for the path-taking system calls other than the open family.

A call such as ``stat``, ``rename`` or ``execve`` names one or two paths.
The kernel layer resolves each one the way the kernel would for the program
and asks :func:`decide_path` what becomes of it, given the *role* the path
plays in the call; the serving layer then combines the answers of a call's
paths (:func:`combine`) and performs the call.

The same rules as for ``open`` apply, so the view is consistent:

* a redirect, a content rule or a private tree puts another file at the
  path: the call is performed by the supervisor on that file (its
  metadata, its changes); ``readlink`` of the redirected path itself
  answers the target, so that ``readlink -f`` and ``realpath`` name the
  file really served, while ``stat`` and ``lstat`` describe that file;
* a deny fails every call with its errno (``ENOENT`` hides the path);
* a read-only tree refuses every change as a read-only mount would;
* in enforcing mode a path no rule covers is emulated too (never
  CONTINUE), on the path resolved once, refusing symlinks swapped in since.
"""

from __future__ import annotations

import errno
import os
from typing import Literal

from ..record import record
from .decision import SYSTEM_SETTINGS_REFUSED, Continue, Fail, Found, is_system_setting
from .rules import Content, Deny, Exec, Match, Policy, Private, ReadOnly, Redirect, rule_pattern

Role = Literal[
    "read",  # stat, access, readlink, getxattr: looks at the path
    "probe",  # access(W_OK), statfs: a read whose answer a read-only mount changes
    "exec",  # execve: runs the file
    "chdir",  # becomes the cwd
    "list",  # getdents: lists the directory
    "create",  # mkdir, mknod, symlink, link's new name: must not exist yet
    "replace",  # rename's new name: created or replaced
    "remove",  # unlink, rmdir, rename's old name
    "modify",  # chmod, chown, truncate, utimes, setxattr: changes what exists
]

#: Roles that change the file system.
CHANGING: frozenset[Role] = frozenset({"create", "replace", "remove", "modify"})

#: The name given to a file the program holds whose name cannot be read
#: back (deeper than PATH_MAX: ``/proc`` fails with ENAMETOOLONG, and a
#: file, unlike a directory, has no ``..`` to climb). Under ``/`` but no
#: other rule's path (a NUL is in no path): see decide_on_fd.
TOO_DEEP = "/\0a file too deep to name"


@record(frozen=True, slots=True)
class PathRequest:
    """One path of a trapped call: its role and its resolved, absolute name."""

    syscall: str
    role: Role
    path: str


@record(frozen=True, slots=True)
class MapPath:
    """Perform the call on ``path`` instead (or on the path itself, in enforcing mode).

    ``in_program_root`` says ``path`` is the program's own name (looked up
    in its root directory, a container's) rather than one of the
    supervisor's (a redirect's target, a memfd, a scratch directory).
    ``no_symlinks``: the path was resolved already; a symlink found on it
    now was swapped in since and must not be followed (``ELOOP``).
    ``recheck`` (enforcing, a redirect's target): resolve ``path`` and ask
    the policy again where it really leads. ``link_text`` is what
    ``readlink`` of the path answers (a redirected path reads as a link to
    its target). ``content`` marks a content rule's memfd, shown read-only.
    ``read_only``: answer a probe (``access(W_OK)``, ``statfs``) as a
    read-only mount would.
    """

    path: str
    reason: str = ""
    in_program_root: bool = False
    no_symlinks: bool = False
    recheck: bool = False
    link_text: str | None = None
    content: bool = False
    confine: str | None = None  # see EmulateOpen.confine
    read_only: bool = False


@record(frozen=True, slots=True)
class RefuseChange:
    """A change in a read-only place: fail it as a read-only mount would.

    The kernel looks the path up before it checks the mount (filename_create(),
    do_unlinkat()... in fs/namei.c), so a missing file gives ``ENOENT`` and an
    existing one under ``create`` gives ``EEXIST``: the kernel layer looks at
    ``path`` and asks :func:`refuse_change_errno`. ``exists`` is set when the
    policy knows already (a content rule's file always exists).
    """

    path: str
    role: Role
    reason: str = ""
    exists: bool | None = None


PathDecision = Continue | Fail | MapPath | RefuseChange


@record(frozen=True, slots=True)
class OnFd:
    """The call is about a file the program has open, its ``fd``: made on our copy of it."""

    fd: int


Target = MapPath | OnFd


@record(frozen=True, slots=True)
class PerformPath:
    """Perform a path call here, each of its paths at its ``targets`` entry.

    ``refuse``: rather fail it as a read-only mount would, once its paths
    (``resolved``) are looked at. ``recheck`` (enforcing mode): where a
    redirect's target really leads is decided again once it is resolved.
    """

    targets: tuple[Target, ...]
    refuse: RefuseChange | None = None
    resolved: tuple[str | None, ...] = ()
    recheck: bool = False

#: The reason of an exec that no exec rule allows. Like a ``noexec`` mount,
#: this is ``EACCES`` only for a file that exists: the kernel layer turns it
#: into the lookup's own error (``ENOENT``...) otherwise, which ``execvp``'s
#: search of ``PATH`` relies on.
EXEC_NOT_ALLOWED = "exec: no exec rule allows it"

_CONTINUE = Continue()




def refuse_change_errno(
    syscall: str, role: Role, found: Found, others: tuple[Found, ...] = ()
) -> int:
    """The errno a read-only mount gives call ``syscall`` changing what was ``found``.

    ``others`` is what the call's other paths are. Measured against a real
    read-only mount: every path's parent is looked up first (ENOENT), then
    link(2)'s existing name; then the mount is checked before the last
    component is looked up (EROFS for a missing name to remove or rename),
    except where the call needs the file itself first: chmod and the like
    of a missing file say ENOENT, truncate of a directory EISDIR (of a FIFO,
    a socket or a device EINVAL), and creating what exists EEXIST.
    """
    if found == "no-parent" or "no-parent" in others:
        return errno.ENOENT
    if syscall in ("link", "linkat") and others and others[0] == "missing":
        return errno.ENOENT
    if role == "create":
        if found == "missing":
            return errno.EROFS
        # bind(2) answers filename_create()'s EEXIST as EADDRINUSE
        # (unix_bind_bsd() in net/unix/af_unix.c).
        return errno.EADDRINUSE if syscall == "bind" else errno.EEXIST
    if role == "modify":
        if found == "missing":
            return errno.ENOENT
        if syscall == "truncate" and found != "file":
            # vfs_truncate() (fs/open.c) before it takes mnt_want_write():
            # "For directories it's -EISDIR, for other non-regulars - -EINVAL".
            return errno.EISDIR if found == "dir" else errno.EINVAL
    return errno.EROFS


def _target(match: Match) -> tuple[str, bool]:
    """Where a redirect, content or private rule puts ``match``'s path; and if read-only."""
    rule = match.rule
    if isinstance(rule, Redirect):
        if rule.target.tree:
            return rule.target.join(match.suffix), False
        return rule.target.path, False
    assert isinstance(rule, Content | Private)
    if rule.backing is None:
        # A policy that was never bound to a sandbox (a bug, or a content
        # rule used outside one): fail closed rather than reach the disk.
        raise LookupError(f"{rule} has no backing file in this sandbox")
    if isinstance(rule, Content):
        return rule.backing, True
    return rule.backing + match.suffix, False


def decide_path(policy: Policy, req: PathRequest) -> PathDecision:
    """Decide what becomes of one path of a trapped call (see the module doc)."""
    match = policy.match(req.path)
    enforce = policy.mode == "enforce"
    role = req.role
    if role == "exec" and policy.has_exec_rules and policy.exec_match(req.path) is None:
        return Fail(errno.EACCES, reason=EXEC_NOT_ALLOWED)
    denied = match is not None and isinstance(match.rule, Deny)  # its errno first
    if enforce and role in CHANGING and is_system_setting(req.path) and not denied:
        # chmod 0666 of /sys/kernel/uevent_helper by its owner would let
        # anyone outside set it (see is_system_setting).
        return Fail(errno.EPERM, reason=SYSTEM_SETTINGS_REFUSED)
    if match is None:
        if not enforce:
            return _CONTINUE
        # See decide_open: the checked path itself, no symlink swapped in,
        # except /proc's magic links, which are how those names work.
        return MapPath(
            req.path,
            reason="enforce: no rule",
            in_program_root=True,
            no_symlinks=not req.path.startswith("/proc/"),
        )
    rule = match.rule
    reason = str(rule)
    if isinstance(rule, Deny):
        return Fail(rule.errno, reason=reason)
    if isinstance(rule, ReadOnly):
        if role in CHANGING:
            return RefuseChange(req.path, role, reason=reason)
        if role == "probe":
            # Performed, even in virtualize mode, to be answered as a
            # read-only mount answers (EROFS, ST_RDONLY).
            return MapPath(
                req.path,
                reason=reason,
                in_program_root=True,
                no_symlinks=not req.path.startswith("/proc/"),
                read_only=True,
            )
        if not enforce:
            return Continue(reason=reason)
        return MapPath(req.path, reason=reason, in_program_root=True, no_symlinks=True)
    assert isinstance(rule, Redirect | Content | Private)
    try:
        target, read_only = _target(match)
    except LookupError as e:
        return Fail(errno.EIO, reason=str(e))
    if not match.suffix and role in ("remove", "replace"):
        # The path is where another file is put, like a mount point:
        # rename(2) and unlink(2) say EBUSY for those.
        return Fail(errno.EBUSY, reason=f"{reason}: the path itself cannot be removed")
    if read_only and role in CHANGING:
        return RefuseChange(req.path, role, reason=reason, exists=True)
    content = isinstance(rule, Content)
    if content and role in ("chdir", "list"):
        return Fail(errno.ENOTDIR, reason=reason)
    return MapPath(
        target,
        reason=reason,
        confine=rule.backing if isinstance(rule, Private) else None,
        recheck=enforce and isinstance(rule, Redirect),
        link_text=target if isinstance(rule, Redirect) and not match.suffix else None,
        content=content,
        read_only=read_only,
    )


def judge_too_deep(policy: Policy, role: Role, *, link_out: bool = False) -> Fail | None:
    """The rules' answer for a file reached through a magic link (``/proc/PID/fd/N``)
    whose name is too deep to read back (:data:`TOO_DEEP`); None: no rule can object.

    Unlike a call on the program's own fd (:func:`decide_on_fd`), such an
    open or call gets at the file anew, maybe another process's and with
    more access than any fd the program holds, and the rules about names
    cannot be asked which one governs it. So it fails closed where any
    could: EACCES if the policy denies, redirects or makes private any
    name, EROFS for a change (EXDEV for a link to ``link_out``, as a
    ``ro`` mount says) if it has read-only or content rules.
    """
    if any(isinstance(r, Deny | Redirect | Private) for r in policy.rules):
        return Fail(errno.EACCES, reason="a file too deep to name: a rule might name it")
    if (role in CHANGING or link_out) and any(
        isinstance(r, ReadOnly | Content) for r in policy.rules
    ):
        err = errno.EXDEV if link_out else errno.EROFS
        return Fail(err, reason="a file too deep to name: it might be read-only")
    return None


def decide_on_fd(policy: Policy, role: Role, path: str | None) -> Continue | Fail:
    """Decide a call about a file the program has open (``AT_EMPTY_PATH``), named ``path``.

    No name is looked up, so no rule about names applies: the program holds
    the file already (it opened it through the rules, or was given it), and
    the kernel acts on that very file. ``fstat(fd)`` of a file opened before
    a deny, or of a file in a private tree's scratch directory, describes
    the file, as natively. Two things are about the file, not its name, and
    stay:

    * a read-only tree refuses changes through an fd as a read-only mount
      does (``fchmod``, ``fchown``, ``futimens``, ``fsetxattr`` on a file of
      a ``ro`` mount are EROFS: mnt_want_write_file() in fs/namespace.c);
    * exec rules say which files may run: an fd whose file has no name (a
      memfd, a deleted file) matches none.

    ``path`` is None for a file without a name, :data:`TOO_DEEP` for one
    whose name we cannot tell: a change through its fd is refused where a
    read-only tree might hold it (fail closed). Continue means: the call is
    made on the program's own fd (in enforcing mode, on our copy of it).
    """
    if role in CHANGING and policy.mode == "enforce" and path and is_system_setting(path):
        return Fail(errno.EPERM, reason=SYSTEM_SETTINGS_REFUSED)  # see decide_path
    if role == "exec":
        if not policy.has_exec_rules:
            return _CONTINUE
        if path is None:
            return Fail(errno.EACCES, reason="exec of a file with no name: no exec rule allows it")
        if policy.exec_match(path) is None:
            return Fail(errno.EACCES, reason=EXEC_NOT_ALLOWED)
        return Continue(reason="an exec rule allows it")
    if (
        role in CHANGING
        and path == TOO_DEEP
        and any(isinstance(r, ReadOnly | Content) for r in policy.rules)
    ):
        return Fail(errno.EROFS, reason="a change through an fd of a file too deep to name")
    if role in CHANGING and path is not None:
        match = policy.match(path)
        if match is not None and isinstance(match.rule, ReadOnly | Content):
            return Fail(errno.EROFS, reason=f"{match.rule}: a change through an fd")
    return Continue(reason="a call on an open file")


def moves_a_rule(policy: Policy, path: str | None) -> Fail | None:
    """A rename of ``path`` (either name) that would carry a rule's path along: EXDEV.

    Rules name paths, so moving a directory above one would leave the rule
    naming nothing while its files live on under the new name (a denied file
    readable, a read-only tree writable). EXDEV is what rename(2) says when
    it cannot move something there (Landlock answers reparenting so too),
    and ``mv`` then copies and removes, file by file, through the rules.
    """
    if path is None:
        return None
    below = "/" if path == "/" else path.rstrip("/") + "/"
    for rule in policy.rules:
        if isinstance(rule, Exec):
            continue
        if rule_pattern(rule).path.startswith(below):
            return Fail(errno.EXDEV, reason=f"{rule}: the rename would move it")
    return None


def link_out_of_read_only(policy: Policy, old: str | None, new: str | None) -> Fail | None:
    """``link(old, new)`` that would give a file of a read-only tree a name outside it.

    Writing through that name would change the read-only file. A read-only
    mount cannot be linked out of either: link(2) across mounts is EXDEV
    (do_linkat() in fs/namei.c), so that is the answer, whatever ``new`` is.
    Within the tree the new name is a change there, refused as such.
    """
    if old is None or new is None:
        return None
    match = policy.match(old)
    if match is None or not isinstance(match.rule, ReadOnly):
        return None
    there = policy.match(new)
    if there is not None and there.rule == match.rule:
        return None
    return Fail(errno.EXDEV, reason=f"{match.rule}: a link out of the read-only tree")


def combine(decisions: list[PathDecision]) -> PathDecision | None:
    """One answer for a call whose paths were decided one by one, or None.

    A failure of any path fails the call (the first, as the kernel looks
    the paths up in order); all CONTINUE lets the call through; anything
    else (None) means the supervisor performs the call with each path
    mapped.
    """
    for d in decisions:
        if isinstance(d, Fail | RefuseChange):
            return d
    if all(isinstance(d, Continue) for d in decisions):
        return decisions[0] if decisions else _CONTINUE
    return None


def hidden_names(policy: Policy, directory: str) -> frozenset[bytes]:
    """The names in ``directory`` that the policy hides (a deny with ``ENOENT``)."""
    names = set()
    for rule in policy.rules:
        if isinstance(rule, Deny) and rule.errno == errno.ENOENT:
            parent, _, name = rule.pattern.path.rpartition("/")
            if (parent or "/") == directory and name:
                names.add(os.fsencode(name))
    return frozenset(names)
