"""Opening files on behalf of a program, with the program's credentials.

The supervisor usually runs as root. An emulated open done with root's
credentials would let a program read, through a rule, files it could never
open itself (a confused deputy). So an emulated open runs with the
program's whole credentials (:mod:`unotifyd.kernel.creds`) and its umask.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable

from ..record import record
from . import abi
from .creds import CredentialError, Credentials, acting_as, as_ourselves
from .dirents import take_fd
from .errors import BadArgument, ProgramGone, WouldBlock
from .program import long_name, openat2
from .rawsys import syscall

_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@record(frozen=True, slots=True)
class Start:
    """Where a program's relative name began: its cwd (``dirfd`` is
    ``AT_FDCWD``) or the directory its ``dirfd`` refers to.

    The supervisor acts on the name it decided on, walked from the root as
    the program. The program walked from here instead, and never searched
    the directories above here that its name does not go up through
    (path_resolution(7): search permission is checked on each directory a
    lookup passes): a cwd below another user's 0700 directory works
    natively. Where the walk from the root is refused, :func:`parent_from`
    reaches the same file from here. ``still_valid`` is the call's
    ``ID_VALID`` check: the thread is the program's while its call is
    pending.
    """

    tid: int
    dirfd: int
    still_valid: Callable[[], bool]

    @staticmethod
    def of(tid: int, dirfd: int, path: bytes, still_valid: Callable[[], bool]) -> Start | None:
        """Where the program's ``path`` (given with ``dirfd``) began; None for
        an absolute one, which began at the root."""
        return None if path.startswith(b"/") else Start(tid, dirfd, still_valid)

    def pin(self) -> int:
        """Our ``O_PATH`` fd of the directory; the caller closes it. Raises
        ProgramGone, BadArgument (no such fd), OSError."""
        # Taken as ourselves: a process's /proc links pass the ptrace check
        # only within its own thread group, and pidfd_getfd checks our real
        # uid (see as_ourselves).
        with as_ourselves():
            if self.dirfd != abi.AT_FDCWD:
                fd = take_fd(self.tid, self.dirfd)
            else:
                try:
                    fd = os.open(f"/proc/{self.tid}/cwd", _DIRECTORY)
                except (FileNotFoundError, ProcessLookupError):
                    raise ProgramGone("thread is gone") from None
        try:
            if not self.still_valid():
                raise ProgramGone("notification no longer valid")
        except BaseException:
            os.close(fd)
            raise
        return fd


def parent_from(start: Start, path: str, resolve: int) -> tuple[int, bytes]:
    """A directory (our ``O_PATH`` fd, the caller closes it) and a name in
    it that lead to the program's absolute, resolved ``path``, reached from
    ``start`` as the calling thread's credentials allow: ``path``'s parent
    and last component; or, for ``path`` the start itself or a directory
    above it (``.``, ``..``), that very directory and ``b""``, to be acted
    on through the fd, never by a name looked up again.

    For a walk from the root that the program's credentials were refused
    (EACCES). The way from the start's name to ``path`` is walked from the
    start, with ``resolve``, as the kernel walks it: a final ``..`` needs
    search permission only on the directory it leaves (may_lookup() for
    each component in link_path_walk(), fs/namei.c), and ``O_PATH`` asks
    none of the directory it opens. The way is the program's to walk: it
    may ``openat`` its cwd or dirfd by that very name, so the walk's own
    failure (ENOENT, ENOTDIR, EACCES) is the native answer, and is raised.
    What the walk reaches must be what its name in ``path`` leads to now,
    looked up as ourselves: the same file *on the same mount*, so that a
    name the call then looks up there meets the mounts the decision met.
    The start's name is only what ``/proc`` prints, and the start may have
    moved since the decision (a ``chdir`` in another thread, a ``rename``),
    or sit in another mount of the same directory (another mount
    namespace's, handed over by ``SCM_RIGHTS``), where other files are
    mounted below it. A directory reached by ``..`` is not looked up again
    by the call: the start may be renamed into another directory after our
    check, and ``..`` from it would then be that one (audit helper-48).
    Raises OSError: EACCES where the two differ or the start has no name
    of ours.
    """
    try:
        pin = start.pin()
    except BadArgument:  # its dirfd is closed by now: no start to walk from
        raise OSError(errno.EACCES, "the program's dirfd is closed") from None
    try:
        here = _name_of(pin)
        way = os.path.relpath(path, here)
        last = way.rpartition("/")[2]
        if last in (".", ".."):
            last, named = "", path
        else:
            way, named = os.path.dirname(way) or ".", os.path.dirname(path)
        reached = openat2(pin, way, _DIRECTORY, 0, resolve)
    finally:
        os.close(pin)
    try:
        with as_ourselves():
            same = _same_place(reached, named, resolve)
        if not same:
            raise OSError(errno.EACCES, f"{named} is not where the program's name leads")
    except BaseException:
        os.close(reached)
        raise
    return reached, os.fsencode(last)


def _name_of(directory: int) -> str:
    """Our name for our ``directory`` fd, as ``/proc`` prints it (what it
    says of a directory no longer below our root, or removed, the check
    of :func:`parent_from` refuses). Raises EACCES where it cannot be read."""
    with as_ourselves():
        try:
            try:
                name = os.readlink(f"/proc/self/fd/{directory}")
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                # Deeper than PATH_MAX: found as getcwd(3) finds such a cwd.
                name = long_name(directory)
        except OSError as e:
            raise OSError(errno.EACCES, f"the start directory has no name: {e}") from None
    if not name.startswith("/"):
        raise OSError(errno.EACCES, "the start directory has no name of ours")
    return name


def _same_place(reached: int, named: str, resolve: int) -> bool:
    """Whether ``named``, looked up now, is ``reached``, on the same mount."""
    try:
        by_name = openat2(abi.AT_FDCWD, named, _DIRECTORY, 0, resolve)
    except OSError:
        return False
    try:
        return _identity(by_name) == _identity(reached)
    finally:
        os.close(by_name)


def _identity(fd: int) -> tuple[int, int, int]:
    """The file and the mount of our ``fd``: ``st_dev``, ``st_ino``, and the
    ``mnt_id`` of ``/proc/self/fdinfo`` (proc(5)), unique among the mounts
    that exist at a time."""
    st = os.fstat(fd)
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"mnt_id:"):
                return st.st_dev, st.st_ino, int(line.split()[1])
    raise OSError(errno.EACCES, "no mount id in fdinfo")


def may_create(flags: int) -> bool:
    """True if an open with ``flags`` may create a file (and so uses mode and umask).

    ``O_TMPFILE`` includes the ``O_DIRECTORY`` bit, so test for all of it.
    """
    return bool(flags & os.O_CREAT) or flags & os.O_TMPFILE == os.O_TMPFILE


_DEFAULT_ACL = "system.posix_acl_default"


def umask_applies(directory: str) -> bool:
    """Whether a file made in ``directory`` gets the creator's umask.

    Not where the directory has a default ACL: the new file's mode is then
    the requested mode masked by that ACL, and the umask is ignored
    (posix_acl_create() in fs/posix_acl.c; acl(5)). Our own umask is 0, so
    with the program's left out of the mode the kernel does exactly that.
    ``directory`` may be a ``/proc/self/fd/N`` name of a directory fd.
    """
    try:
        return not os.getxattr(directory, _DEFAULT_ACL)
    except OSError:
        return True  # ENODATA: no default ACL; ENOTSUP: no ACLs on this file system


def open_as(
    creds: Credentials | None,
    path: str,
    flags: int,
    mode: int,
    *,
    no_symlinks: bool = False,
    root_fd: int | None = None,
    beneath: str | None = None,
    probing: bool = False,
    stop: threading.Event | None = None,
    start: Start | None = None,
) -> int:
    """Open ``path`` as the program with ``creds`` would; return our own fd.

    The fd is always close-on-exec in the supervisor. ``mode`` is masked
    with the program's umask when the open may create a file, since our own
    umask is 0 (see :func:`unotifyd.launch.launch`). With ``no_symlinks``
    the path must be free of symlinks (it was resolved already), so a
    symlink swapped in since then fails with ``ELOOP`` instead of leading
    elsewhere. With ``root_fd`` (an fd of the program's ``/proc/TID/root``,
    opened beforehand: with the program's credentials we might not be
    allowed to) ``path`` is the program's name for the file, looked up in
    its root (``RESOLVE_IN_ROOT``). ``creds=None`` or credentials equal to
    ours open directly; otherwise the calling thread alone takes them on for
    the duration of the open (:func:`~unotifyd.kernel.creds.acting_as`).
    ``probing`` says the ``O_NONBLOCK`` in ``flags`` is ours, not the
    program's: an open that would have waited raises :class:`WouldBlock`.
    With ``stop``, the open may be kicked out of its wait (kernel/kick.py):
    it then raises InterruptedError once ``stop`` is set, and is made again
    after any other signal. ``start``: where the program's relative name
    for ``path`` (ours, absolute) began, to walk from where the walk from
    the root is refused (see :func:`parent_from`).
    """
    if creds is not None and may_create(flags):
        if creds.umask < 0:
            # A caller's bug; never create with a mode the program did not ask for.
            raise CredentialError(errno.EPERM, "creating without the program's umask")
        if umask_applies(_parent(path, root_fd, beneath)):
            mode &= ~creds.umask
    flags |= os.O_CLOEXEC
    if not flags & os.O_PATH:
        # Never a terminal of ours: a supervisor that leads a session without
        # one would take a terminal it opens for a program (a device swapped
        # in after our look) as its controlling terminal (open(2), O_NOCTTY).
        # The file does not keep the flag (F_GETFL never shows it); openat2
        # refuses it beside O_PATH.
        flags |= os.O_NOCTTY
    resolve = abi.RESOLVE_NO_SYMLINKS | abi.RESOLVE_NO_MAGICLINKS if no_symlinks else 0
    dirfd = abi.AT_FDCWD
    if root_fd is not None:
        dirfd = root_fd
        path = path.lstrip("/") or "."
        resolve |= abi.RESOLVE_IN_ROOT
    elif beneath is not None:
        # ``path`` lies in a directory whose contents the program controls
        # (a private tree's scratch directory): no symlink or ".." of its
        # may lead out of it (RESOLVE_BENEATH fails those with EXDEV).
        path = os.path.relpath(path, beneath)
        if path.startswith(".."):
            raise OSError(errno.EXDEV, f"{path} is not beneath {beneath}")
        resolve |= abi.RESOLVE_BENEATH
    with acting_as(creds):
        if beneath is not None and root_fd is None:
            dirfd = os.open(beneath, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return _openat2_until(stop, dirfd, path, flags, mode, resolve=resolve)
            finally:
                os.close(dirfd)
        try:
            try:
                if resolve or stop is not None or len(path) >= _SHORT:
                    return _openat2_until(stop, dirfd, path, flags, mode, resolve=resolve)
                return os.open(path, flags, mode)
            except PermissionError:
                if start is None or root_fd is not None:
                    raise
                dirfd, last = parent_from(start, path, resolve)
                try:
                    if not last:
                        return _open_itself(stop, dirfd, flags, mode, resolve)
                    return _openat2_until(stop, dirfd, last, flags, mode, resolve=resolve)
                finally:
                    os.close(dirfd)
        except OSError as e:
            if probing and e.errno == errno.ENXIO:
                raise WouldBlock(f"{path}: a FIFO with no reader") from None
            if probing and e.errno == errno.EWOULDBLOCK:
                # A lease another holds: a blocking open waits for its break
                # (open(2), EWOULDBLOCK; fcntl(2), "Leases").
                raise WouldBlock(f"{path}: a lease is held on it") from None
            raise


def _open_itself(
    stop: threading.Event | None, directory: int, flags: int, mode: int, resolve: int
) -> int:
    """Open our O_PATH ``directory`` itself with the program's ``flags`` (see
    parent_from): as ``.`` in it, which keeps every flag the program gave
    (F_GETFL shows O_NOFOLLOW); where the directory refuses the program a
    search, which a final ``..`` does not need, through its magic link,
    which O_NOFOLLOW would refuse (the program's file then lacks it)."""
    try:
        return _openat2_until(stop, directory, ".", flags, mode, resolve=resolve)
    except PermissionError:
        itself = f"/proc/self/fd/{directory}"
        flags &= ~os.O_NOFOLLOW
        return _openat2_until(stop, abi.AT_FDCWD, itself, flags, mode, resolve=0)


#: Paths at least this long may be longer than the kernel takes in one
#: string: openat2() opens them in pieces.
_SHORT = 1024


def _openat2_until(
    stop: threading.Event | None,
    dirfd: int,
    path: str | bytes,
    flags: int,
    mode: int,
    *,
    resolve: int,
) -> int:
    """``openat2``, made again after EINTR unless ``stop`` is set.

    A raw call: ``os.open`` would retry EINTR itself (PEP 475), and a kick
    (kernel/kick.py) could never end its wait. Other signals that reach
    the thread (the supervisor's own) only make it try again.
    """
    if not may_create(flags):
        mode = 0  # openat2 refuses a mode it would not use (EINVAL), unlike open
    while True:
        try:
            return openat2(dirfd, path, flags, mode, resolve)
        except InterruptedError:
            if stop is not None and stop.is_set():
                raise


def _parent(path: str, root_fd: int | None, beneath: str | None) -> str:
    """The directory an open of ``path`` (see :func:`open_as`) makes its file in."""
    if root_fd is not None:
        return f"/proc/self/fd/{root_fd}/{os.path.dirname(path.lstrip('/'))}"
    if beneath is not None and not path.startswith("/"):
        return os.path.join(beneath, os.path.dirname(path))
    return os.path.dirname(path) or "."


def runnable_errno(creds: Credentials, path: str, *, directory: bool) -> int | None:
    """The errno an ``execve`` (or, with ``directory``, a ``chdir``) of our
    ``path`` would fail with for the program with ``creds``, or None.

    Checked as the kernel checks (fs/exec.c, do_open_execat; fs/open.c,
    chdir): the lookup (ENOENT, ENOTDIR, EACCES on a directory on the way),
    then a regular file that the program may execute, on a mount without
    ``noexec`` (EACCES), or a directory it may search. A program could not
    tell these from the kernel's own answers; what only the exec itself
    finds (ENOEXEC, ETXTBSY, E2BIG) is left to it.
    """
    with acting_as(creds):
        try:
            mode = os.stat(path).st_mode
            if directory and not stat.S_ISDIR(mode):
                return errno.ENOTDIR
            if not directory and not stat.S_ISREG(mode):
                return errno.EACCES
            # AT_EACCESS: the fs ids just set are the ones the kernel uses.
            syscall(
                abi.SYSCALL_NUMBERS["faccessat2"],
                abi.AT_FDCWD,
                os.fsencode(path),
                os.X_OK,
                abi.AT_EACCESS,
            )
            if not directory and os.statvfs(path).f_flag & os.ST_NOEXEC:
                return errno.EACCES
        except OSError as e:
            return e.errno or errno.EACCES
    return None
