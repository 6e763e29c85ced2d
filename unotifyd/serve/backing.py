"""What content and private rules stand on, for one sandbox.

A :class:`~unotifyd.policy.Content` rule puts a file of the policy's making at
a path, and a :class:`~unotifyd.policy.Private` rule an empty tree whose writes
stay within the sandbox. Both need something real for the supervisor to open
in the program's stead, made when a sandbox starts and destroyed when it ends:
:class:`Backing` makes them and binds the policy to them
(:meth:`~unotifyd.policy.Policy.bound`), so that decisions name them.

Content: a sealed memfd
-----------------------
Each content rule gets a memfd holding its bytes, sealed against every
change (``F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK``, then ``F_SEAL_SEAL``
so that nothing can lift them; memfd_create(2), "File sealing" in fcntl(2))
and made mode 0444. Its backing path is ``/proc/self/fd/N``: opening that
magic link gives a *new* open file description of the memfd, with its own
offset, as a program's own ``open`` of a file would, and the open is checked
against the memfd's mode with the credentials of whoever opens it (the
supervisor opens with the program's fs credentials: 0444 lets any uid read
and none write). The ptrace access check that guards ``/proc/PID/fd`` passes
without asking anything because the opener is in the same thread group as
the fd table's owner (``same_thread_group()`` in ``__ptrace_may_access()``,
kernel/ptrace.c), whatever the worker thread's fs credentials are.

Even root cannot write a sealed memfd: ``write(2)``, ``ftruncate(2)`` and a
shared writable ``mmap(2)`` fail with ``EPERM``, so a program given such an fd
(decisions refuse writes before that, with ``EROFS``) cannot change what other
programs of the sandbox read. Where the kernel knows ``MFD_NOEXEC_SEAL``
(6.3), the memfd is also sealed non-executable from its creation (it could
never be run anyway, at mode 0444); it is asked for because a kernel with
``vm.memfd_noexec`` set refuses or warns about memfds created without it.

The backing path names the supervisor's fd *number*. The number is only
meaningful until :meth:`Backing.close`, after which it may be reused for
anything the supervisor opens: close a backing only once no request of its
sandbox can be decided or performed any more.

Private: a scratch directory
----------------------------
Each private rule gets a fresh empty directory, mode 01777 and owned by the
supervisor, like the root of a newly mounted tmpfs: any uid may create files
there, and nobody may remove or rename another uid's. The directories of one
sandbox share a parent (mode 0711, a random name) under the *private root*,
a directory of the supervisor's, mode 0711 too: programs can walk through it
(the supervisor opens there with their credentials) but not list it, so no
program can learn the name of another sandbox's scratch directory. The root
is, in this order:

* ``$RUNTIME_DIRECTORY/private`` (systemd's ``RuntimeDirectory=``; the first
  if there are several);
* ``/run/unotifyd/private`` when running as root;
* ``unotifyd-private-UID`` in :func:`tempfile.gettempdir` otherwise.

It must be a directory of the supervisor's effective uid that nobody else
may write to: anything else (a symbolic link, a directory someone planted in
``/tmp`` beforehand) is refused with :class:`BackingError`, since the
supervisor removes trees below it.

When the sandbox ends, :meth:`Backing.close` removes the sandbox's directory
with :func:`shutil.rmtree`, which on Linux walks the tree with ``openat()``
and ``O_NOFOLLOW`` relative to directory fds (``rmtree.avoids_symlink_attacks``
is true): a symbolic link a program planted in its scratch directory is
removed, never followed, even if a program swaps a directory for a link
while the removal runs. A supervisor that never got to close (SIGKILL) leaves
its directory behind; the next sandbox made under the root removes it (its
name says which process made it, see :func:`_sweep_stale`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import sys
from types import TracebackType

from ..kernel.rawsys import memfd_create
from ..policy import Content, Deny, Pattern, Policy, Private, ReadOnly, Redirect, rule_pattern

__all__ = ["SEALS", "Backing", "BackingError", "default_private_root"]

#: The seals every content memfd carries.
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

# <linux/memfd.h>, Linux 6.3; Python's os module does not have it yet.
_MFD_NOEXEC_SEAL = 0x0008
# memfd_create(2): a name longer than this (249 bytes) is EINVAL.
_MFD_NAME_MAX = 249

_PRIVATE_ROOT_MODE = 0o711
_SANDBOX_DIR_MODE = 0o711
_SCRATCH_MODE = 0o1777  # as a new tmpfs: sticky, everyone may create


class BackingError(OSError):
    """The backing of a sandbox could not be made (an unusable private root)."""


def default_private_root() -> str:
    """The directory under which sandboxes' scratch directories are made (see the module doc)."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "")
    first = runtime.split(":")[0]
    if first.startswith("/"):
        return os.path.join(first, "private")
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/unotifyd/private"
    import tempfile  # noqa: PLC0415 - with random, ~4 ms off launches that need no scratch

    return os.path.join(tempfile.gettempdir(), f"unotifyd-private-{os.geteuid()}")


def _make_private_root(path: str) -> None:
    """Make ``path`` (and its parent) if need be, and check that it is safe to use.

    Raises :class:`BackingError` if it is not a directory of ours that only
    we may write to.
    """
    parent = os.path.dirname(path)
    for directory, mode in ((parent, 0o755), (path, _PRIVATE_ROOT_MODE)):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            pass
        except OSError as e:
            if directory == parent:
                continue  # it may exist under a name we cannot create; path tells
            raise BackingError(e.errno, f"cannot make the private root {path}: {e.strerror}") from e
    try:
        info = os.lstat(path)
    except OSError as e:
        raise BackingError(e.errno, f"cannot use the private root {path}: {e.strerror}") from e
    if not stat.S_ISDIR(info.st_mode):
        raise BackingError(errno.ENOTDIR, f"the private root {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise BackingError(
            errno.EPERM, f"the private root {path} belongs to uid {info.st_uid}, not to us"
        )
    if info.st_mode & 0o022:
        raise BackingError(
            errno.EPERM,
            f"the private root {path} may be written by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
        )
    if stat.S_IMODE(info.st_mode) != _PRIVATE_ROOT_MODE:
        # Ours and nobody else's: mkdir() was trimmed by the umask.
        os.chmod(path, _PRIVATE_ROOT_MODE)


def _remove_tree(path: str) -> OSError | None:
    """Remove the tree at ``path``, as much of it as can be; return the first error.

    Safe against symlinks a program planted: see the module doc.
    """
    import shutil  # noqa: PLC0415 - only private trees need it: ~4 ms off every launch

    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux has it
        raise RuntimeError("shutil.rmtree is not safe against symlink attacks here")
    errors: list[OSError] = []

    def note(_function: object, _path: object, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            errors.append(exc)
        else:  # not from the file system: a bug, not to be hidden
            raise exc

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: note(f, p, info[1]))
    return errors[0] if errors else None


# sandbox-PID-STARTTIME-RANDOM: the supervisor that made it, by pid and the
# start time that tells it from a later process with the same pid.
_SANDBOX_NAME = re.compile(r"sandbox-(\d+-\d+)-[0-9a-f]{16}")


def _process_id(pid: int) -> str | None:
    """``PID-STARTTIME`` of a running process (proc(5), /proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return f"{pid}-{int(fields[19])}"


def _sweep_stale(root: str) -> None:
    """Remove the sandbox directories of supervisors that are gone.

    A supervisor killed by SIGKILL (or the machine stopping under it) never
    removes its scratch directories; whichever supervisor next makes one
    under the same root does. Only directories named by a process that no
    longer runs are removed, so supervisors sharing the root (a daemon and
    standalone launches) never touch each other's live sandboxes.
    """
    for name in os.listdir(root):
        m = _SANDBOX_NAME.fullmatch(name)
        if m is None:
            continue
        owner = m.group(1)
        if _process_id(int(owner.split("-")[0])) == owner:
            continue
        # Errors (a file a program made immutable...) are for the next sweep.
        _remove_tree(os.path.join(root, name))


def _memfd_name(pattern: Pattern) -> str:
    # Shown to programs as /memfd:NAME (deleted) in /proc/PID/fd: the path
    # the file stands for is the most useful name there.
    name = os.fsencode(f"unotifyd:{pattern.path}")[:_MFD_NAME_MAX]
    return os.fsdecode(name)


def _sealed_memfd(pattern: Pattern, data: bytes) -> int:
    """A new memfd holding ``data``, sealed and mode 0444. The caller owns the fd."""
    name = _memfd_name(pattern)
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    fd = memfd_create(name, flags | _MFD_NOEXEC_SEAL, optional=_MFD_NOEXEC_SEAL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o444)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Backing:
    """The memfds and scratch directories behind one sandbox's policy.

    ``Backing(policy)`` makes them; :attr:`policy` is ``policy`` bound to them
    (``policy`` itself, and nothing made, when it has no content or private
    rule); :meth:`close` destroys them. A context manager. Not thread-safe:
    one owner makes and closes it.

    Raises :class:`OSError` (:class:`BackingError` for an unusable private
    root) if something cannot be made; whatever was made is destroyed first.
    """

    __slots__ = ("_closed", "_dir", "_fds", "policy")

    policy: Policy

    def __init__(self, policy: Policy, *, private_root: str | None = None) -> None:
        self._fds: list[int] = []
        self._dir: str | None = None
        self._closed = False
        if not any(isinstance(rule, Content | Private) for rule in policy.rules):
            self.policy = policy
            return
        paths: dict[Pattern, str] = {}
        try:
            scratch = 0
            for rule in policy.rules:
                if isinstance(rule, Content):
                    fd = _sealed_memfd(rule.pattern, rule.data)
                    self._fds.append(fd)
                    paths[rule.pattern] = f"/proc/self/fd/{fd}"
                elif isinstance(rule, Private):
                    if self._dir is None:
                        self._dir = self._make_sandbox_dir(private_root)
                    # Numbered in policy order: the names need not say more,
                    # and a pattern may be longer than NAME_MAX.
                    path = os.path.join(self._dir, str(scratch))
                    scratch += 1
                    os.mkdir(path, _SCRATCH_MODE)
                    # mkdir() applies the umask; chmod() by name is safe: only we
                    # write in the sandbox's directory, and no program runs yet.
                    os.chmod(path, _SCRATCH_MODE)
                    paths[rule.pattern] = path
        except BaseException:
            self._release()
            raise

        def bind(rule: Content | Private) -> str:
            return paths[rule_pattern(rule)]

        self.policy = policy.bound(bind)

    @staticmethod
    def _make_sandbox_dir(private_root: str | None) -> str:
        root = private_root if private_root is not None else default_private_root()
        _make_private_root(root)
        _sweep_stale(root)
        owner = _process_id(os.getpid())
        assert owner is not None  # we do run
        while True:
            # 64 random bits: the root cannot be listed, so guessing is the
            # only way to another sandbox's files, and a useless one. os.urandom
            # is what the secrets module reads, without its ~12 ms import.
            path = os.path.join(root, f"sandbox-{owner}-{os.urandom(8).hex()}")
            try:
                os.mkdir(path, _SANDBOX_DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(path, _SANDBOX_DIR_MODE)  # mkdir() applied the umask
            return path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def scratch_directory(self) -> str | None:
        """The directory holding this sandbox's private trees, if it has any."""
        return self._dir

    def _release(self) -> OSError | None:
        """Close every fd and remove the scratch directory; return the first error."""
        first: OSError | None = None
        while self._fds:
            fd = self._fds.pop()  # popped first: never closed twice, even if close fails
            try:
                os.close(fd)
            except OSError as e:
                first = first or e
        if self._dir is not None:
            path, self._dir = self._dir, None
            error = _remove_tree(path)
            first = first or error
        return first

    def close(self) -> None:
        """Close the memfds and remove the scratch directory. Idempotent.

        Everything is released even if one step fails; then the first
        :class:`OSError` met (such as a scratch directory that could not be
        removed entirely) is raised, once.
        """
        self._closed = True
        error = self._release()
        if error is not None:
            raise error

    def __enter__(self) -> Backing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._fds)} memfds, dir={self._dir!r}"
        return f"<Backing {state}>"


def target_warnings(policy: Policy) -> list[str]:
    """What to tell whoever starts ``policy`` about rule paths as they are on the disk:
    redirect targets that are not there, and directories that exact rules name.

    A redirect to a missing target is legal (the target may appear later),
    but at start-up it is far more often a typo, which otherwise shows only
    as the program's ``ENOENT``. One line per such rule, naming it and where
    it was written.
    """
    out = _exact_directory_warnings(policy)
    for rule in policy.rules:
        if isinstance(rule, Redirect) and not os.path.lexists(rule.target.path):
            what = "directory" if rule.target.tree else "file"
            opening = f"anything in {rule.source.path}" if rule.source.tree else rule.source.path
            out.append(
                f"warning: {rule}: the target {what} {rule.target.path} does not exist; "
                f"opening {opening} will fail with ENOENT until it does"
            )
    return out


def _exact_directory_warnings(policy: Policy) -> list[str]:
    """A line per deny or read-only rule whose exact path is a directory.

    An exact rule covers the directory alone (README, "Rules and paths"):
    what lies below it stays reachable by name, where a mode-000 directory
    or a read-only mount would cover it too. Legal, and meant for a
    directory's own entry (hiding it from a listing, say), but more often
    a missing ``/**``.
    """
    out = []
    for rule in policy.rules:
        pattern = rule_pattern(rule)
        if isinstance(rule, Deny | ReadOnly) and not pattern.tree and os.path.isdir(pattern.path):
            out.append(
                f"warning: {rule}: {pattern.path} is a directory, and an exact rule covers "
                f"the directory alone: what lies below it is not covered; write "
                f"{pattern.path.rstrip('/')}/** for the whole tree"
            )
    return out
