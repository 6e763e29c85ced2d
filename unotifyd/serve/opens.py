"""Emulated opens: the open a decision asked for, made as the program.

An :class:`~unotifyd.policy.EmulateOpen` is opened here, with the
program's credentials, on the path that was checked (``RESOLVE_*`` flags,
in the program's root); the serving layer injects the fd. A
:class:`~unotifyd.policy.RefuseWrite` is answered with the errno a
read-only mount gives, after a look at what is there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading

from ..kernel import abi
from ..kernel.creds import Credentials, acting_as
from ..kernel.errors import ProgramGone, WouldBlock
from ..kernel.opener import Start, open_as
from ..kernel.pathops import faccessat2
from ..kernel.program import opened_names
from ..policy import EmulateOpen, Fail, OpenRequest, Policy, RefuseWrite, decide_open
from ..policy.decision import refuse_write_errno, writes
from ..policy.paths import judge_too_deep
from .pathwork import found_of, realpath, what_is


def refuse_write_errno_as(
    flags: int, path: str, creds: Credentials, root_fd: int | None, start: Start | None = None
) -> int:
    """Look at what ``path`` is, as the program, and pick a read-only mount's errno
    for an open with ``flags`` (0: the mount lets it through; see refuse_write_errno);
    ``start``: where the program's relative name began (see what_is)."""
    try:
        with acting_as(creds):
            found = what_is(path, root_fd, start)
    except OSError as e:
        # EACCES, ENOTDIR...: the path lookup fails before any write check.
        return e.errno or errno.EIO
    return refuse_write_errno(flags, found)


def open_in_read_only(
    flags: int,
    path: str,
    creds: Credentials,
    root_fd: int | None,
    *,
    nonblocking: bool,
    stop: threading.Event | None = None,
    start: Start | None = None,
) -> int | None:
    """An open for writing (``flags``) of ``path`` in a read-only tree, as a
    read-only mount answers it: ``-errno``, an fd of ours, or None if it
    would block. ``start``: where the program's relative name began (see
    :func:`~unotifyd.kernel.opener.open_as`).

    A read-only mount refuses writes to the file system, not I/O to special
    files (see RefuseWrite): a FIFO, a socket or a device is opened for
    writing, and its own open decides (fifo_open() waits for a reader, or
    ENXIO under O_NONBLOCK; a socket's inode has no open: ENXIO; a device's
    driver). So such a file is opened as the program, with its flags: the
    very file looked at (an ``O_PATH`` fd of it, reopened through its
    ``/proc/self/fd`` name), so that a regular file swapped in after our
    look is never opened for writing nor truncated. may_open() (fs/namei.c)
    then checks as the kernel would, in its order: the device's mount
    (nodev), the program's permission (EACCES), O_NOATIME. O_TRUNC is
    dropped, as may_open() drops it for special files, and O_CREAT and
    O_EXCL, which create nothing where a file exists. Nothing is
    written to the file system, but for the times a write to a FIFO sets
    on its inode, which a read-only mount would leave as they were.
    """
    err = refuse_write_errno_as(flags, path, creds, root_fd, start)
    if err:
        return -err
    try:
        pinned = open_as(
            creds, path, os.O_PATH | os.O_NOFOLLOW, 0, no_symlinks=True, root_fd=root_fd,
            start=start,
        )  # fmt: skip
    except OSError as e:
        return -(e.errno or errno.EIO)
    try:
        # Again on the very file, which may have been swapped since the look.
        st = os.fstat(pinned)
        err = refuse_write_errno(flags, found_of(st.st_mode))
        if err:
            return -err
        if nonblocking and not opens_at_once(st):
            return None  # A FIFO's or a device's open may wait: in a worker thread.
        if flags & os.O_TRUNC:
            # Dropped from the reopen below, O_TRUNC still asks for write
            # permission whatever the access mode (build_open_flags() adds
            # MAY_WRITE; may_open() checks it before O_NOATIME's EPERM):
            # O_RDONLY|O_TRUNC of a device the program may only read is
            # EACCES (audit helper-52). Asked as the program, on the file.
            try:
                with acting_as(creds):
                    faccessat2(pinned, b"", os.W_OK, abi.AT_EMPTY_PATH | abi.AT_EACCESS)
            except OSError as e:
                return -(e.errno or errno.EIO)
        # O_NOFOLLOW would refuse the magic link (ELOOP); the look refused
        # every symlink already. (Only F_GETFL can tell: it shows the flag.)
        reopen = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            return open_as(creds, f"/proc/self/fd/{pinned}", reopen, 0, stop=stop)
        except OSError as e:
            return -(e.errno or errno.EIO)
    finally:
        os.close(pinned)


def perform_open(
    d: EmulateOpen | RefuseWrite,
    creds: Credentials,
    root_fd: int | None,
    nonblocking: bool,
    recheck: Policy | None = None,
    *,
    stop: threading.Event | None = None,
    start: Start | None = None,
) -> int | None:
    """The open (or look) of ``d``: an fd of ours, ``-errno``, or None if it would block.

    With ``recheck`` (enforcing mode, a redirect's target), the target is
    resolved first and the policy asked again about where it really leads: a
    symlink in a target tree may point at a denied file. What is then opened
    is that resolved path, refusing any symlink swapped in since (ELOOP).
    With ``recheck`` and ``d.judge_opened``, the file the open gave is judged
    by that policy (see :func:`_judge_opened`). ``stop`` (a blocking open):
    see :func:`~unotifyd.kernel.opener.open_as`; the open then answers
    ``-EINTR`` once kicked. ``start``: where the program's relative name
    began, for a walk from there where the walk from the root is refused
    (see :func:`~unotifyd.kernel.opener.parent_from`).
    """
    if isinstance(d, RefuseWrite):
        return open_in_read_only(
            d.flags, d.path, creds, root_fd, nonblocking=nonblocking, stop=stop, start=start
        )
    if not d.in_program_root:
        start = None  # A path of ours: the program's name began nowhere in it.
    path, no_symlinks = d.path, d.no_symlinks
    if recheck is not None and d.recheck:
        # As the program: following links where it may not look would tell
        # it (by the errno of the open that follows) what lies there.
        with acting_as(creds):
            resolved = realpath(d.path)
        if resolved is None:
            return -errno.ELOOP
        path, no_symlinks = resolved, True
        flags = d.flags | (os.O_CLOEXEC if d.cloexec else 0)
        again = decide_open(recheck, OpenRequest("open", path, flags, d.mode))
        if isinstance(again, Fail):
            return -again.errno
        if isinstance(again, RefuseWrite):
            return open_in_read_only(
                again.flags, path, creds, None, nonblocking=nonblocking, stop=stop
            )
    # O_NONBLOCK guards against a regular file swapped for a FIFO after our
    # stat: the open then returns at once instead of stalling every program
    # (fifo(7)). It is cleared again before injection unless the program
    # asked for it, since the program can see it (F_GETFL).
    if d.create_errno:
        # O_CREAT in a read-only tree, taken out of d.flags: do_open() checks
        # what exists before any permission check (EEXIST, EISDIR; see
        # refuse_write_errno), and creating is EROFS.
        asked = d.flags | os.O_CREAT | (os.O_EXCL if d.exclusive else 0)
        err = refuse_write_errno_as(
            asked, path, creds, root_fd if d.in_program_root else None, start
        )
        if err:
            return -err
    extra = 0
    if nonblocking and not d.flags & (os.O_NONBLOCK | os.O_PATH):
        extra = os.O_NONBLOCK
    root = root_fd if d.in_program_root else None
    # A file to be judged once opened is not truncated by the open: that
    # would be done before the judgement (see _judge_opened).
    truncate = bool(recheck is not None and d.judge_opened and d.flags & os.O_TRUNC)
    try:
        fd = open_as(
            creds,
            path,
            (d.flags & ~os.O_TRUNC if truncate else d.flags) | extra,
            d.mode,
            no_symlinks=no_symlinks,
            root_fd=root,
            beneath=d.confine,
            probing=bool(extra),
            stop=None if nonblocking else stop,
            start=start,
        )
    except WouldBlock:
        return None  # To be made again in a worker thread, blocking.
    except FileNotFoundError:
        # A read-only path opened with O_CREAT: what a read-only mount says
        # instead of creating it (EmulateOpen.create_errno).
        return -(d.create_errno or errno.ENOENT)
    except OSError as e:
        return -(e.errno or errno.EIO)
    try:
        if recheck is not None and d.judge_opened:
            refused = _judge_opened(recheck, d, fd, root)
            if refused:
                os.close(fd)
                return -refused
            if truncate and stat.S_ISREG(os.fstat(fd).st_mode):
                # As the open would have (O_TRUNC needs write permission,
                # whatever the access mode: build_open_flags() in fs/open.c),
                # as the program, on the very file judged.
                try:
                    with acting_as(creds):
                        os.truncate(f"/proc/self/fd/{fd}", 0)
                except OSError as e:
                    os.close(fd)
                    return -(e.errno or errno.EIO)
        if d.exclusive:
            os.close(fd)
            return -errno.EEXIST
        if extra:
            if not opens_at_once(os.fstat(fd)):
                os.close(fd)
                return None
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if d.flags & os.O_PATH:
            return readable_instead(fd, creds)
        if d.directory_added and (d.last_dot or not d.flags & os.O_NOFOLLOW):
            # The program's file keeps the flags it gave, which F_GETFL
            # shows (do_dentry_open() keeps O_DIRECTORY in f_flags): the
            # directory is opened again without it, through our fd's magic
            # link, which reaches that very directory whatever its name is
            # by now; with O_NOFOLLOW, which would refuse that link, as "."
            # in it, as the program, where its own lookup of "d/." searched
            # d for "." (the same permission: may_lookup() in fs/namei.c).
            # A "d/" or ".." with O_NOFOLLOW keeps O_DIRECTORY (audit
            # helper-54: a "." lookup there would need a search permission
            # the program's own open did not).
            try:
                if d.flags & os.O_NOFOLLOW:
                    with acting_as(creds):
                        reopened = os.open(".", d.flags & ~os.O_DIRECTORY, dir_fd=fd)
                else:
                    reopened = open_as(creds, f"/proc/self/fd/{fd}", d.flags & ~os.O_DIRECTORY, 0)
            except OSError as e:
                os.close(fd)
                return -(e.errno or errno.EIO)
            os.close(fd)
            fd = reopened
    except BaseException:
        os.close(fd)
        raise
    return fd


def _judge_opened(policy: Policy, d: EmulateOpen, fd: int, root_fd: int | None) -> int:
    """0 if the rules let the program have the file ``fd`` as ``d`` opened
    it, else the errno to answer.

    ``d.path`` is a ``/proc`` path decided on as such, where no rule names
    anything: it went through a magic link to a file without a name (a
    pipe, a deleted file). The program may ``dup2`` another fd onto that
    number before our open follows the link, and a file of a read-only
    tree would then be opened for writing. So the file opened is asked
    about by its name now: a read-only or denied one is refused as an open
    of that name would be (an open in place, of a read-only tree's file
    for reading, is as good as ours).
    """
    flags = d.flags | (os.O_CLOEXEC if d.cloexec else 0)
    try:
        names = opened_names(fd, root_fd)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        deep = judge_too_deep(policy, "modify" if writes(flags) else "read")
        return deep.errno if deep is not None else 0
    for name in names:
        if name.startswith("/proc/"):
            continue  # /proc's own file: what was decided on.
        again = decide_open(policy, OpenRequest("open", name, flags, d.mode))
        if isinstance(again, Fail):
            return again.errno
        if isinstance(again, RefuseWrite):
            # Opened with the program's flags already: as on a read-only
            # mount, unless the file is one it would not open so.
            refused = refuse_write_errno(again.flags, found_of(os.fstat(fd).st_mode))
            if refused:
                return refused
            continue
        if not (isinstance(again, EmulateOpen) and again.path == name):
            return errno.EACCES  # A rule sends that name elsewhere: not this file.
    return 0  # Nameless still, or a name the rules let it have so.


def readable_instead(path_fd: int, creds: Credentials) -> int:
    """An fd to inject in place of the ``O_PATH`` fd ``path_fd`` (closed here); or ``-errno``.

    ``SECCOMP_IOCTL_NOTIF_ADDFD`` takes its source fd with ``fget()``,
    which refuses ``O_PATH`` files (EBADF): such an fd cannot be injected.
    A regular file or a directory is reopened for reading instead, as the
    program (through our ``/proc/self/fd`` name for the very same file):
    the program gets an fd that does all an ``O_PATH`` one does, though it
    needs read permission and ``F_GETFL`` shows ``O_RDONLY``. Anything
    else (a device, whose open may have effects) is refused.
    """
    try:
        mode = os.fstat(path_fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return -errno.EOPNOTSUPP
        flags = os.O_RDONLY | os.O_NOCTTY | (os.O_DIRECTORY if stat.S_ISDIR(mode) else 0)
        try:
            # O_NONBLOCK: a write lease on the file would make the open wait
            # for its holder (fcntl(2), "Leases"): EAGAIN instead, as for
            # every open made inline (see perform_open). Cleared after.
            fd = open_as(creds, f"/proc/self/fd/{path_fd}", flags | os.O_NONBLOCK, 0)
        except OSError as e:
            return -(e.errno or errno.EACCES)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd
    finally:
        os.close(path_fd)


def unblock_fifo(d: EmulateOpen | RefuseWrite, creds: Credentials, root_tid: int | None) -> None:
    """Let the abandoned open ``d`` return, if it waits on a FIFO, by opening its other end.

    Opening a FIFO blocks until the other end is opened too (fifo(7)); a
    non-blocking open of the other end never blocks and releases it. The
    released open's fd is closed by :class:`WorkerResult`. Only a FIFO can be
    released this way; a thread blocked in a device's open stays blocked.

    Both opens are made as the program, as its own open was: the path is
    the program's to change meanwhile, and whatever it leads to now, we
    open nothing the program could not have opened itself. The other end
    is the very file looked at (a reopen of the ``O_PATH`` fd's
    ``/proc/self/fd`` name), so no swap between the look and the open can
    make us open a device.
    """
    try:
        # root_tid is set only for a name in the program's own root.
        root_fd = open_root(root_tid)
    except ProgramGone:
        return  # Its root went with it; the open stays blocked (see above).
    try:
        # A RefuseWrite's is a read-only tree's name, opened refusing every
        # symlink and in no private tree (see open_in_read_only).
        no_symlinks, confine = True, None
        if isinstance(d, EmulateOpen):
            no_symlinks, confine = d.no_symlinks, d.confine
        pinned = open_as(
            creds, d.path, os.O_PATH, 0, no_symlinks=no_symlinks, root_fd=root_fd,
            beneath=confine,
        )  # fmt: skip
        try:
            if not stat.S_ISFIFO(os.fstat(pinned).st_mode):
                return
            other = os.O_RDONLY if d.flags & os.O_ACCMODE == os.O_WRONLY else os.O_WRONLY
            os.close(open_as(creds, f"/proc/self/fd/{pinned}", other | os.O_NONBLOCK, 0))
        finally:
            os.close(pinned)
    except OSError:
        pass  # Gone, or already released (ENXIO: no reader left).
    finally:
        if root_fd is not None:
            os.close(root_fd)


def open_root(root_tid: int | None) -> int | None:
    """An ``O_PATH`` fd of the root directory of thread ``root_tid`` (None: ours, no fd).

    Opened as ourselves: with the program's credentials we might not be
    allowed to look at its ``/proc`` entry. Raises ProgramGone.
    """
    if root_tid is None:
        return None
    try:
        return os.open(f"/proc/{root_tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProgramGone("thread is gone") from None


def our_name(path: str, root_tid: int | None) -> str:
    """A name of ours for the program's symlink-free ``path`` in the root of ``root_tid``.

    Good for a look (``stat``) only: opens go through ``RESOLVE_IN_ROOT``.
    """
    return path if root_tid is None else f"/proc/{root_tid}/root{path}"


#: The character devices whose open neither waits nor acts: memory_open()
#: (drivers/char/mem.c) gives the file the driver's file_operations, and
#: those of null (1:3), zero (1:5), full (1:7), random (1:8) and urandom
#: (1:9) have no open of their own. Opened at once, as a regular file is,
#: not in a worker thread: the hop cost ~250 us an open under --enforce
#: (openloop /dev/null: 260 us, a regular file's 8), where shells open
#: /dev/null for every ``> /dev/null``. Not mem and port (whose opens
#: check CAP_SYS_RAWIO) nor kmsg (devkmsg_open() allocates and checks the
#: syslog permission); a tty's open may wait (for a carrier).
QUIET_DEVICES = frozenset({(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)})


def opens_at_once(st: os.stat_result) -> bool:
    """Whether opening the file ``st`` describes never waits and does
    nothing but give an fd: a regular file, a directory, a quiet device."""
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return True
    return stat.S_ISCHR(mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) in QUIET_DEVICES


def may_block(path: str) -> bool:
    """True unless opening ``path`` never waits (see :func:`opens_at_once`)."""
    try:
        st = os.stat(path)
    except OSError:
        return False  # The open will fail at once, or create a regular file.
    return not opens_at_once(st)
