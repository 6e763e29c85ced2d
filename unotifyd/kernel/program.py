"""Reading a trapped program: its memory, its credentials, its view of paths.

Everything here races with the program, which keeps running its other
threads, may exit at any time, and whose pid may be reused. Callers must
check ``SECCOMP_IOCTL_NOTIF_ID_VALID`` after reading, before acting on what
they read (seccomp_unotify(2), "Caveats regarding blocking system calls" and
NOTES). ``/proc`` failures that mean "the process is gone" become
:class:`ProgramGone`, at this one boundary.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import signal
import stat
from collections.abc import Callable

from . import abi
from .creds import Credentials, acting_as, as_ourselves, proc_status
from .errors import BadArgument, MemoryDenied, ProgramGone
from .rawsys import libc, libc_syscall, syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    _T = TypeVar("_T")

_MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS (include/linux/namei.h)
#: openat2(2)'s RESOLVE_* that make the dirfd the root of the lookup.
_SCOPED = abi.RESOLVE_BENEATH | abi.RESOLVE_IN_ROOT
#: Those under which following a magic link may fail (nd_jump_link()).
_NO_JUMPS = _SCOPED | abi.RESOLVE_NO_MAGICLINKS | abi.RESOLVE_NO_XDEV
_FIRST_READ = 256  # most paths are short; read more only when no NUL shows up

# Links in /proc/PID whose target the kernel resolves by jumping to the file
# itself ("magic links", proc(5)); readlink gives a path or a pseudo name.
_MAGIC_LINK = re.compile(
    r"^/proc/\d+(?:/task/\d+)?/(?:fd/\d+|cwd|root|exe|map_files/[^/]+|ns/[^/]+)$"
)


def is_magic_link(path: str) -> bool:
    """Whether ``path`` is a ``/proc`` magic link (``/proc/PID/fd/N``, ``cwd``...).

    Such a link leads to whatever the process holds there when it is
    followed, not to a name: what it leads to may change between two
    lookups (a ``dup2`` onto the fd), so an act through one must judge the
    file it got (see :func:`opened_names`).
    """
    return _MAGIC_LINK.match(path) is not None


_DELETED = " (deleted)"


def below_a_magic_link(path: str) -> str | None:
    """The magic link ``path`` lies strictly below (``/proc/PID/fd/N`` of
    ``/proc/PID/fd/N/x``), or None."""
    if not path.startswith("/proc/"):
        return None
    cut = path.find("/", 6)
    while cut > 0:
        if _MAGIC_LINK.match(path[:cut]):
            return path[:cut]
        cut = path.find("/", cut + 1)
    return None


def opened_names(fd: int, root_fd: int | None) -> list[str]:
    """The names, in the program's view, the file our ``fd`` refers to goes by.

    What ``/proc/self/fd/N`` reads: the file's path; for a file removed
    since, that path with ``" (deleted)"`` appended, and the path it had
    (rules name files by the path they had; judge by both). None for what
    no path names (a pipe, a socket, a memfd, an anonymous inode) or a file
    outside the program's root (``root_fd``, an fd of it; None: ours).
    A directory deeper than ``/proc`` reads back is named as getcwd(3)
    would, and has none once removed: no name can ever be made in it
    (IS_DEADDIR), and no rule can be about its dead inode. Raises OSError:
    ENAMETOOLONG for another file that deep.
    """
    try:
        name = os.readlink(str(fd), dir_fd=_fd_dir())
    except OSError as e:
        st = os.fstat(fd)
        if e.errno != errno.ENAMETOOLONG or not stat.S_ISDIR(st.st_mode):
            raise
        if st.st_nlink == 0:
            return []
        with as_ourselves():
            name = long_name(fd)
    if not name.startswith("/") or name.startswith("/memfd:"):
        return []
    if root_fd is not None:
        in_view = _in_root(os.readlink(str(root_fd), dir_fd=_fd_dir()), name)
        if in_view is None:
            return []
        name = in_view
    if name.endswith(_DELETED) and os.fstat(fd).st_nlink == 0:
        return [name, name[: -len(_DELETED)] or "/"]
    return [name]


class Openat2:
    """``openat2(2)``, which Python's ``os`` lacks, with preallocated arguments.

    One instance per thread: ``struct open_how`` is reused by every call.
    Raises OSError.
    """

    def __init__(self) -> None:
        self._how = (ctypes.c_uint64 * 3)()  # struct open_how {flags, mode, resolve}
        self._how_ref = ctypes.byref(self._how)
        self._nr = ctypes.c_long(abi.SYS_OPENAT2)
        self._size = ctypes.c_size_t(abi.OPEN_HOW_STRUCT.size)
        self._at_fdcwd = ctypes.c_long(abi.AT_FDCWD)

    def __call__(self, dirfd: int, path: str | bytes, flags: int, mode: int, resolve: int) -> int:
        how = self._how
        how[0] = flags
        how[1] = mode
        how[2] = resolve
        cdirfd = self._at_fdcwd if dirfd == abi.AT_FDCWD else ctypes.c_long(dirfd)
        cpath = path if type(path) is bytes else os.fsencode(path)
        fd: int = libc_syscall(self._nr, cdirfd, cpath, self._how_ref, self._size)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return fd


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """``openat2(2)`` for occasional calls from any thread, of a path of any
    length (see :func:`_open_long`). Raises OSError."""
    data = os.fsencode(path)
    if len(data) >= _PIECE:
        return _open_long(dirfd, data, flags, mode, resolve)
    return Openat2()(dirfd, data, flags, mode, resolve)


#: The kernel takes a path of at most PATH_MAX (4096) bytes in one string
#: (ENAMETOOLONG); longer ones are opened in pieces of at most this many.
_PIECE = 2048


def _open_long(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """``openat2`` of a path longer than the kernel takes, a piece at a time.

    A program reaches such a path with a short name relative to a deep
    cwd; we name what it reaches from the root. Each piece but the last is
    opened ``O_PATH | O_DIRECTORY`` from the one before, with the same
    ``resolve`` flags, except that the pieces after the first stay beneath
    the one before where the first was in a root (``RESOLVE_IN_ROOT``): a
    name of ours is free of ``..``, and with ``RESOLVE_NO_SYMLINKS`` of
    links, so the pieces lead where the whole would.
    """
    parts = path.split(b"/")
    pieces: list[bytes] = []
    for part in parts:
        if pieces and len(pieces[-1]) + len(part) + 1 <= _PIECE:
            pieces[-1] += b"/" + part
        else:
            pieces.append(part)
    opener = Openat2()
    later = resolve & ~abi.RESOLVE_IN_ROOT
    if resolve & abi.RESOLVE_IN_ROOT:
        later |= abi.RESOLVE_BENEATH
    here, owned = dirfd, False
    try:
        for i, piece in enumerate(pieces[:-1]):
            step = opener(
                here, piece, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                resolve if i == 0 else later,
            )  # fmt: skip
            if owned:
                os.close(here)
            here, owned = step, True
        return opener(here, pieces[-1] or b".", flags, mode, later if owned else resolve)
    finally:
        if owned:
            os.close(here)


_process_vm_readv = libc.process_vm_readv
# No argtypes: every argument but the pid is passed as a ready ctypes object
# (see MemoryReader), and the pid as a Python int, which ctypes passes as a
# C int anyway; argtypes would re-check all six on every call.
_process_vm_readv.restype = ctypes.c_ssize_t


class MemoryReader:
    """Reads the memory of trapped threads with ``process_vm_readv(2)``.

    Not ``/proc/TID/mem``: that file reads with ``FOLL_FORCE`` and so also
    returns pages the program itself cannot read (``PROT_NONE``), where the
    kernel's own copy of a syscall argument fails with ``EFAULT``.
    ``process_vm_readv`` honours the program's protections, stops at the
    first unreadable byte, and needs no cached fd that would go stale when
    the program ``execve``s. It is one instance per thread of the
    supervisor: the buffer and iovecs are preallocated.
    """

    def __init__(self) -> None:
        self._buf = ctypes.create_string_buffer(abi.PAGE_SIZE)
        # struct iovec local, remote: {base, len} each, as four u64s.
        self._iov = (ctypes.c_uint64 * 4)(ctypes.addressof(self._buf), 0, 0, 0)
        # The constant arguments as ctypes objects, made once: converting
        # Python ints on every call costs a third of the call (~0.3 us).
        local = ctypes.addressof(self._iov)
        self._local = ctypes.c_void_p(local)
        self._remote = ctypes.c_void_p(local + 16)
        self._one = ctypes.c_ulong(1)
        self._zero = ctypes.c_ulong(0)

    def close(self) -> None:
        """Nothing to release; kept so that owners need not care."""

    def _read_some(self, tid: int, addr: int, size: int) -> bytes:
        """Read up to ``size`` (<= a page) bytes; fewer at an unreadable page."""
        iov = self._iov
        iov[1] = iov[3] = size
        iov[2] = addr
        one = self._one
        n: int = _process_vm_readv(tid, self._local, one, self._remote, one, self._zero)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EFAULT:
                return b""
            if err == errno.ESRCH:
                raise ProgramGone(f"thread {tid} is gone")
            if err == errno.EPERM:
                raise MemoryDenied(tid)
            raise OSError(err, f"process_vm_readv({tid}): {os.strerror(err)}")
        return self._buf.raw[:n]

    def read(self, tid: int, addr: int, size: int) -> bytes:
        """Read exactly ``size`` bytes at ``addr``; raise BadArgument(EFAULT) if short."""
        chunks = []
        total = 0
        while total < size:
            want = min(size - total, abi.PAGE_SIZE)
            data = self._read_some(tid, addr + total, want)
            if len(data) != want:
                raise BadArgument(errno.EFAULT, f"bad address {addr + total + len(data):#x}")
            chunks.append(data)
            total += want
        return b"".join(chunks)

    def read_path(self, tid: int, addr: int) -> bytes:
        """Read the NUL-terminated path at ``addr``, as the kernel would.

        Reads up to the end of the page first, so that a string ending just
        before an unreadable page is read in full, while one running into it
        gets ``EFAULT``. A path of ``PATH_MAX`` bytes or more without a NUL
        gets ``ENAMETOOLONG`` (fs/namei.c, getname_flags).
        """
        if addr == 0:
            raise BadArgument(errno.EFAULT, "NULL path pointer")
        chunks: list[bytes] = []
        total = 0
        want = min(_FIRST_READ, abi.PAGE_SIZE - addr % abi.PAGE_SIZE)
        while total < abi.PATH_MAX:
            want = min(want, abi.PATH_MAX - total)
            data = self._read_some(tid, addr + total, want)
            nul = data.find(0)
            if nul >= 0:
                chunks.append(data[:nul])
                return b"".join(chunks)
            if len(data) < want:
                raise BadArgument(errno.EFAULT, f"unreadable path at {addr + total:#x}")
            chunks.append(data)
            total += len(data)
            # Continue to the end of this page, then a page at a time.
            want = abi.PAGE_SIZE - (addr + total) % abi.PAGE_SIZE
        raise BadArgument(errno.ENAMETOOLONG, "path longer than PATH_MAX")


def fd_table_full(tid: int) -> bool:
    """Whether thread ``tid`` has no fd number left below its
    ``RLIMIT_NOFILE``: an fd given to it now fails with EMFILE (alloc_fd()
    in fs/file.c, for ``SECCOMP_IOCTL_NOTIF_ADDFD`` in the thread's own
    context, with its own limit). Read as ourselves; raises ProgramGone.

    An open's own fd is taken before its path is looked up
    (do_sys_openat2() in fs/open.c): natively a full table fails an open
    before it makes or truncates anything, or opens a FIFO (which releases
    a writer waiting) or a device. An open made for the program is
    injected after it is made, so one that acts so asks this first
    (another thread of the program may fill the table in between: that
    race is the program's own).
    """
    with as_ourselves():
        try:
            soft = _open_files_limit(tid)
            if soft is None:
                return False
            # The size of /proc/TID/fd is the number of fds open (Linux 6.2,
            # proc_fd_getattr() in fs/proc/fd.c; 0 before): listed only where
            # that many might fill every number below the limit.
            opened = os.stat(f"/proc/{tid}/fd").st_size
            if 0 < opened < soft:
                return False
            names = os.listdir(f"/proc/{tid}/fd")
        except (ProcessLookupError, FileNotFoundError):
            raise ProgramGone(f"thread {tid} is gone") from None
        except PermissionError:
            # Its fds are not ours to count (another uid's, not dumpable,
            # and we are not root): cannot tell, so the call goes on, and
            # an fd given then fails as it would.
            return False
    if len(names) < soft:
        return False
    return sum(1 for name in names if int(name) < soft) >= soft


def _open_files_limit(tid: int) -> int | None:
    """Thread ``tid``'s soft ``RLIMIT_NOFILE``, None for none.

    prlimit() may read it where all of our real ids are the thread's real,
    effective and saved ones, or with CAP_SYS_RESOURCE, which the supervisor
    need not hold (check_prlimit_permission() in kernel/sys.c); anyone may
    read /proc/TID/limits (proc(5)), at some 30 times the cost.
    """
    try:
        soft = resource.prlimit(tid, resource.RLIMIT_NOFILE)[0]
    except PermissionError:
        return soft_limit(tid, b"Max open files")
    return None if soft == resource.RLIM_INFINITY else soft


def soft_limit(tid: int, name: bytes) -> int | None:
    """The soft limit called ``name`` (``b"Max open files"``...) of thread
    ``tid``'s process, as /proc/TID/limits shows it (proc_pid_limits() in
    fs/proc/base.c; anyone may read it, proc(5)); None for unlimited.
    Raises OSError."""
    with open(f"/proc/{tid}/limits", "rb") as f:
        for line in f:
            if line.startswith(name + b" "):
                soft = line[len(name) :].split()[0]
                return None if soft == b"unlimited" else int(soft)
    return None


def read_ids(tid: int, *, innermost: bool) -> tuple[int, int]:
    """The process id and thread id of thread ``tid``: in our pid namespace, or
    with ``innermost`` in its own (the one of its ``/proc``).

    ``NStgid:``/``NSpid:`` list them from ours inwards (proc(5), Linux 4.1+).
    """
    fields = proc_status(tid)
    try:
        if not innermost:
            return int(fields[b"Tgid"]), tid
        return int(fields[b"NStgid"].split()[-1]), int(fields[b"NSpid"].split()[-1])
    except (KeyError, IndexError, ValueError):
        raise ProgramGone(f"thread {tid} is exiting") from None


def proc_self_text(tid: int, path: str, *, own_root: bool) -> str | None:
    """What ``readlink(path)`` gives thread ``tid`` for ``/proc/self`` ("PID")
    and ``/proc/thread-self`` ("PID/task/TID"), else None.

    The kernel writes the reader's own ids, in the pid namespace of that
    ``/proc`` (proc_self_get_link(), proc_thread_self_get_link() in
    fs/proc/self.c, thread_self.c): read by us, they would be ours. A
    program with a root of its own sees its own ``/proc`` (see read_ids).
    """
    if path not in ("/proc/self", "/proc/thread-self"):
        return None
    tgid, ntid = read_ids(tid, innermost=own_root)
    return f"{tgid}" if path == "/proc/self" else f"{tgid}/task/{ntid}"


class ThroughMissing(FileNotFoundError):
    """A path that goes on with ``..`` after a name that does not exist.

    The kernel fails it with ENOENT: it looks every name up in turn, and a
    missing one is no directory to go back up from (path_resolution(7)), so
    ``a/x/../f`` never reaches ``a/f`` while ``x`` is missing. ``lexical`` is
    the name the path would have if ``missing`` were a directory, and the
    ones after it (``rest``) were too where a ``..`` leaves them: a tree of
    the policy that is not on disk (a redirect or private tree's source)
    makes them so in the program's view, and only the caller knows the rules.
    """

    def __init__(self, missing: str, rest: list[str]) -> None:
        super().__init__(errno.ENOENT, "no such directory before '..'", missing)
        self.missing = missing
        self.rest = rest
        self.lexical = _lexical_join(missing, rest)


def long_name(fd: int) -> str:
    """The name of our directory ``fd``, whose path is longer than ``/proc``
    reads back: ``readlink`` of its ``/proc/self/fd`` link fails with
    ENAMETOOLONG past a page (PATH_MAX), while the kernel looks up a relative
    name from such a directory like any other.

    Found as getcwd(3) finds a cwd that deep: up ``..`` one directory at a
    time, looking for each one's entry in its parent, until an ancestor
    whose name can be read. Raises OSError (ENAMETOOLONG if a directory on
    the way cannot be listed).
    """
    names: list[str] = []
    child = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    try:
        while True:
            parent = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=child)
            try:
                names.append(_entry_of(child, parent))
            except BaseException:
                os.close(parent)
                raise
            os.close(child)
            child = parent
            try:
                top = os.readlink(str(child), dir_fd=_fd_dir())
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                continue
            names.reverse()
            return top.rstrip("/") + "/" + "/".join(names)
    finally:
        os.close(child)


def _entry_of(child: int, parent: int) -> str:
    """The name of directory ``child`` in directory ``parent``.

    An entry's inode number is the one below a mount point, not the mounted
    root's, so each candidate is stat'ed as a whole (dev and inode), cheap
    ones (the same inode number) first.
    """
    want = os.fstat(child)
    try:
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        raise OSError(errno.ENAMETOOLONG, "a directory above cannot be listed") from None
    try:
        entries = [e for e in os.scandir(listing) if e.is_dir(follow_symlinks=False)]
    finally:
        os.close(listing)
    entries.sort(key=lambda e: e.inode() != want.st_ino)
    for entry in entries:
        try:
            st = os.stat(entry.name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return entry.name
    raise OSError(errno.ENAMETOOLONG, "a directory not found in its parent")


def _lexical_join(base: str, rest: list[str]) -> str:
    """Append path components to an absolute canonical ``base`` lexically."""
    parts = [p for p in base.split("/") if p]
    for c in rest:
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
        else:
            parts.append(c)
    return "/" + "/".join(parts)


class PathResolver:
    """Resolve a path the way the kernel would for one trapped thread.

    The result is the absolute, symlink-free name of what the path refers to
    in the program's own view of the file system (or would refer to, for
    components that do not exist yet: those are appended lexically, but a
    ``..`` after one raises :class:`ThroughMissing`), so rules match a file
    however the program names it.

    Fast path: let the kernel resolve it for us with an ``O_PATH`` open and
    read the name back from ``/proc/self/fd``. That resolution happens in the
    *supervisor's* context, which differs from the program's only inside
    ``/proc``: ``/proc/self`` and the magic links ``/proc/PID/fd/N``,
    ``cwd``... would name the supervisor's own files. ``RESOLVE_NO_MAGICLINKS``
    turns those into ``ELOOP``; any result under ``/proc`` or any failure
    falls back to the slow path, a component-by-component walk that maps
    ``/proc/self`` to the program's pid and follows magic links by their
    ``readlink`` text.

    A program with another root directory (a container, a chroot) is
    resolved inside it: from an fd of ``/proc/TID/root`` with
    ``RESOLVE_IN_ROOT``, so that its absolute symlinks and ``..`` stay in its
    root as they do for the program (openat2(2)), and the walk reads its
    files through ``/proc/TID/root``.
    """

    def __init__(self) -> None:
        st = os.stat("/")
        self._root_id = (st.st_dev, st.st_ino)
        self._openat2 = Openat2()
        _fd_dir()  # Opened now rather than in the middle of serving a call.

    def _fd_name(self, fd: int) -> str:
        """What our ``fd`` names: ``readlink("/proc/self/fd/N")``, a third cheaper.

        See :func:`_fd_dir`. A directory deeper than ``/proc`` can read back
        (ENAMETOOLONG) gets its name from :func:`long_name`.
        """
        try:
            return os.readlink(str(fd), dir_fd=_fd_dir())
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG or not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise
        with as_ourselves():
            return long_name(fd)

    def root_id(self, tid: int) -> tuple[int, int] | None:
        """None if ``tid`` shares our root directory, else an id of its root."""
        try:
            st = os.stat(f"/proc/{tid}/root")
        except (FileNotFoundError, ProcessLookupError):
            raise ProgramGone(f"thread {tid} is gone") from None
        rid = (st.st_dev, st.st_ino)
        return None if rid == self._root_id else rid

    def resolve(
        self,
        tid: int,
        dirfd: int,
        path: bytes,
        *,
        follow: bool,
        resolve_flags: int = 0,
        own_root: bool | None = None,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
    ) -> str:
        """Resolve ``path`` relative to ``dirfd`` (or the cwd) of thread ``tid``.

        ``own_root`` says whether the thread has a root of its own (see
        :meth:`root_id`; found out when None). With ``creds`` (the
        program's), every lookup is made with them, so that a directory the
        program may not search stops the walk as it would stop the
        program's (EACCES), never telling it what lies beyond; the cwd,
        dirfd or root it starts from are the program's own and are opened
        as the supervisor. Raises OSError with the errno the kernel would
        give the program for a path that cannot be resolved (``ENOTDIR``,
        ``ELOOP``, ``EBADF``, ``EACCES``..., or ``EXDEV``... from openat2
        ``resolve_flags``), and :class:`ProgramGone`. ``reach``, if given,
        is asked about each ``/proc`` magic link before it is followed: False
        fails the lookup with EACCES, as the kernel's ptrace check would.
        """
        spath = os.fsdecode(path)
        if not spath:
            raise OSError(errno.ENOENT, "empty path")
        # RESOLVE_BENEATH and RESOLVE_IN_ROOT make the dirfd the root of the
        # lookup, an absolute path included (path_init() in fs/namei.c:
        # LOOKUP_IS_SCOPED; BENEATH then fails it with EXDEV, IN_ROOT starts
        # from the dirfd): the path is never ours to start from "/".
        absolute = spath.startswith("/") and not resolve_flags & _SCOPED
        if absolute:
            base = "/"
        elif dirfd == abi.AT_FDCWD:
            base = f"/proc/{tid}/cwd"
        elif dirfd < 0:
            raise OSError(errno.EBADF, "bad dirfd")
        else:
            base = f"/proc/{tid}/fd/{dirfd}"
        if own_root is None:
            own_root = self.root_id(tid) is not None
        if own_root:
            return self._resolve_in_root(
                tid, base, spath, follow, resolve_flags, creds=creds, reach=reach
            )
        basefd = abi.AT_FDCWD if base == "/" else _open_base(base)
        try:
            # Most lookups need no switch of credentials: spare them the
            # context manager, whose cost is that of a system call here.
            switch = creds is not None and not creds.same_as_supervisor()
            if not switch:
                fast = self._fast(basefd, path, follow, resolve_flags, base=base)
                if fast is not None:
                    return fast
            with acting_as(creds):
                if switch:
                    fast = self._fast(basefd, path, follow, resolve_flags, base=base)
                    if fast is not None:
                        return fast
                if absolute:
                    start, rest, anchor = "/", spath, basefd
                else:
                    start, rest, anchor = self._start_of(basefd, base, spath)
                try:
                    return self._walk(
                        tid, start, rest, follow, anchor=anchor, creds=creds, reach=reach,
                        resolve_flags=resolve_flags,
                    )  # fmt: skip
                finally:
                    if anchor != basefd:
                        os.close(anchor)
        finally:
            if basefd >= 0:
                os.close(basefd)

    def _start_of(self, basefd: int, base: str, path: str) -> tuple[str, str, int]:
        """Where to walk ``path`` from, given the cwd or dirfd ``basefd`` (the
        magic link ``base``): (its name, the path, an fd to look names up from).

        A removed one has no name: its text ("X (deleted)") names another
        directory, or none, and one deeper than PATH_MAX cannot even be read
        back (ENAMETOOLONG). It holds no names either, so a path in it either
        stays in it, named through its magic link (see _fast), or leaves it
        by a first ".." for its old parent, which is looked up as the program
        would (the search right on the removed directory: may_lookup() in
        fs/namei.c) and walked from by its own name and fd. Never by a text
        made up for the removed directory: a name of the program's in the
        parent could then pass for it. The caller closes an fd that is not
        ``basefd``. Raises OSError.
        """
        try:
            name: str | None = self._fd_name(basefd)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG or os.fstat(basefd).st_nlink != 0:
                raise
            name = None
        if name is not None and not (name.endswith(_DELETED) and os.fstat(basefd).st_nlink == 0):
            return name, path, basefd
        parts = path.split("/")
        first = next((i for i, c in enumerate(parts) if c not in ("", ".")), None)
        if first is None or parts[first] != "..":
            return base, path, basefd
        parent = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=basefd)
        try:
            return self._fd_name(parent), "/".join(parts[first + 1 :]), parent
        except BaseException:
            os.close(parent)
            raise

    def _resolve_in_root(
        self,
        tid: int,
        base: str,
        path: str,
        follow: bool,
        resolve_flags: int,
        *,
        creds: Credentials | None,
        reach: Callable[[str], bool] | None,
    ) -> str:
        root = f"/proc/{tid}/root"
        try:
            # Where that root is in our view: "/" for a root in another mount
            # namespace (names there read back as the program sees them), a
            # directory of ours for a chroot (names read back under it).
            prefix = os.readlink(root)
        except (FileNotFoundError, ProcessLookupError):
            raise ProgramGone(f"thread {tid} is gone") from None
        given = path
        start = "/"
        if base != "/":
            found = _in_root(prefix, _readlink_base(base))
            if found is None:
                raise OSError(errno.ENOENT, "cwd or dirfd outside the program's root")
            start = found
            path = start.rstrip("/") + "/" + path
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        resolve = resolve_flags | abi.RESOLVE_IN_ROOT | abi.RESOLVE_NO_MAGICLINKS
        try:
            rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProgramGone(f"thread {tid} is gone") from None
        try:
            with acting_as(creds):
                try:
                    if resolve_flags & abi.RESOLVE_BENEATH:
                        # The kernel refuses BENEATH with IN_ROOT (EINVAL,
                        # build_open_how()): look up from the dirfd's own
                        # directory, found in the root, with the program's
                        # flags. BENEATH then keeps the lookup below it, so
                        # within the root too (no absolute link, no ".." out).
                        fd = self._beneath_in_root(rootfd, start, given, flags, resolve_flags)
                    else:
                        fd = self._openat2(rootfd, path.lstrip("/") or ".", flags, 0, resolve)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ELOOP):
                        raise  # As for the fast path in our own root.
                    fd = -1
                if fd >= 0:
                    try:
                        resolved = _in_root(prefix, self._fd_name(fd))
                    finally:
                        os.close(fd)
                    if resolved is not None and not (resolved + "/").startswith("/proc/"):
                        return resolved
                # The dirfd's scope is not kept here (see README, limits):
                # the walk starts from the program's root.
                return self._walk(
                    tid, "/", path, follow, root=root, prefix=prefix, anchor=rootfd,
                    creds=creds, reach=reach, resolve_flags=resolve_flags & ~_SCOPED,
                )  # fmt: skip
        finally:
            os.close(rootfd)

    def _beneath_in_root(
        self, rootfd: int, start: str, path: str, flags: int, resolve_flags: int
    ) -> int:
        """``path`` opened (``flags``) under RESOLVE_BENEATH from the directory
        ``start`` names in the root ``rootfd``: an fd, or OSError."""
        dirfd = self._openat2(
            rootfd, start.lstrip("/") or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
            abi.RESOLVE_IN_ROOT | abi.RESOLVE_NO_MAGICLINKS,
        )  # fmt: skip
        try:
            return self._openat2(dirfd, path, flags, 0, resolve_flags | abi.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(dirfd)

    def _fast(
        self, basefd: int, path: bytes, follow: bool, resolve_flags: int, *, base: str
    ) -> str | None:
        """Let the kernel resolve ``path`` from ``basefd``; None where the walk must.

        A path that leads back to the cwd or dirfd it starts from (``base``)
        when that directory was removed has no name any more: ``/proc``
        reads ``"DIR (deleted)"``, which names nothing (or another file).
        Its name is then the magic link itself, as for a pipe (see _walk):
        acts on it go through the link, judged by what they get there
        (pathwork._pin_through_magic_link, opens._judge_opened).
        """
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = self._openat2(basefd, path, flags, 0, resolve_flags | abi.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ELOOP) or (
                e.errno == errno.ELOOP and resolve_flags & abi.RESOLVE_NO_SYMLINKS
            ):
                # ENOTDIR, EACCES, ENAMETOOLONG, or the program's own
                # RESOLVE_* restriction (EXDEV, EAGAIN for RESOLVE_CACHED...):
                # the kernel would fail the program's call the same way. ELOOP
                # may be our RESOLVE_NO_MAGICLINKS and ENOENT a file still to
                # be created: the walk sorts those out. Not under the
                # program's RESOLVE_NO_SYMLINKS, where every link, magic or
                # not, is ELOOP for it too (pick_link() in fs/namei.c).
                raise
            return None
        try:
            try:
                resolved = self._fd_name(fd)
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                # A file deeper than PATH_MAX: the walk names it, unless it
                # is the removed cwd or dirfd itself, which has no name.
                return base if self._is_removed_base(fd, basefd) else None
            if resolved.endswith(_DELETED) and basefd != abi.AT_FDCWD and not os.fstat(fd).st_nlink:
                return base if self._is_removed_base(fd, basefd) else None
        finally:
            os.close(fd)
        if resolved.startswith("/proc/") or resolved == "/proc" or not resolved.startswith("/"):
            return None
        return resolved

    @staticmethod
    def _is_removed_base(fd: int, basefd: int) -> bool:
        """Whether ``fd`` is the cwd or dirfd ``basefd`` it was opened from, removed."""
        if basefd == abi.AT_FDCWD:
            return False
        st = os.fstat(fd)
        if st.st_nlink != 0:
            return False
        here = os.fstat(basefd)
        return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)

    def _walk(
        self,
        tid: int,
        start: str,
        path: str,
        follow: bool,
        *,
        root: str = "",
        prefix: str = "/",
        anchor: int = abi.AT_FDCWD,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
        resolve_flags: int = 0,
    ) -> str:
        """Resolve ``path`` from directory ``start`` one component at a time.

        Names are the program's; with ``root`` (``/proc/TID/root`` of a
        program with a root of its own) files are looked up under it, and the
        text of magic links, which the kernel writes in our view, is taken
        back into the program's with ``prefix``; ``anchor`` is then an fd
        of that root. Otherwise ``anchor``, an fd of ``start``, is where
        lookups go from until an absolute link sends the walk to ``/``: a
        program may look up names below its cwd without the right to
        search the directories above it.

        Runs with the program's ``creds`` (the caller switched to them), so
        each lookup makes the permission checks the program's would. A
        ``..`` is taken lexically (``start`` is free of links), after
        checking that the directory it leaves may be searched, as the
        kernel's own lookup of ``..`` does (may_lookup() in fs/namei.c).
        The program's own ``/proc/PID`` is looked into as the supervisor:
        see :func:`~unotifyd.kernel.creds.as_ourselves`.

        The program's openat2(2) ``resolve_flags`` are kept as fs/namei.c
        keeps them: no link followed under ``RESOLVE_NO_SYMLINKS`` nor a
        magic one under ``RESOLVE_NO_MAGICLINKS`` (ELOOP); with
        ``RESOLVE_BENEATH`` or ``RESOLVE_IN_ROOT`` (scoped: ``start`` is the
        dirfd) no magic link (nd_jump_link(): EXDEV), and an absolute link
        or a ``..`` at ``start`` is EXDEV (BENEATH) or stays at ``start``
        (IN_ROOT, nd_jump_root() and follow_dotdot()); with
        ``RESOLVE_NO_XDEV`` a magic link or an absolute one that changes
        the device is EXDEV (the kernel compares mounts, we compare
        ``st_dev``). Mounts crossed by name are left to the kernel's own
        look (``_fast``), which the walk only follows after.
        """
        own_proc: list[str] = []  # "/proc/PID" of the program, once needed

        def place(name: str) -> tuple[str, int | None]:
            """How to reach ``name`` (canonical, absolute) as the program would."""
            if root:
                return name.lstrip("/") or ".", anchor
            if anchor != abi.AT_FDCWD:
                return os.path.relpath(name, start), anchor
            return name, None

        def in_own_proc(name: str) -> bool:
            if not name.startswith("/proc/"):
                return False
            if not own_proc:
                own_proc.append(f"/proc/{read_ids(tid, innermost=bool(root))[0]}")
            return name == own_proc[0] or name.startswith(own_proc[0] + "/")

        def at_name(name: str, suffix: str, look: Callable[[str, int | None], _T]) -> _T:
            """``look(where, dirfd)`` at ``name`` + ``suffix``, as the program would.

            In a root of its own, the directory above the last name is
            opened from that root with RESOLVE_IN_ROOT: the walk found no
            link on the way, but a directory there swapped for an absolute
            symlink since would, in a plain lookup from the root's fd, lead
            on from our root, on the host (nd_jump_root() would keep the
            program's lookup in its own). But where the way goes through a
            magic link (a removed directory's, see below), which IN_ROOT
            refuses (EXDEV, nd_jump_link()): that lookup is the plain one.
            """
            where, at = place(name)
            where += suffix
            cut = where.rfind("/")
            parent = "/" + where[:cut]
            if root and cut > 0 and not is_magic_link(parent) and not below_a_magic_link(parent):
                fd = openat2(
                    anchor, where[:cut], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                    abi.RESOLVE_IN_ROOT | abi.RESOLVE_NO_MAGICLINKS,
                )  # fmt: skip
                try:
                    return look(where[cut + 1 :], fd)
                finally:
                    os.close(fd)
            return look(where, at)

        def as_the_program(name: str, suffix: str, look: Callable[[str, int | None], _T]) -> _T:
            if in_own_proc(name):
                with as_ourselves():
                    return at_name(name, suffix, look)
            return at_name(name, suffix, look)

        def lstat(name: str, suffix: str = "") -> os.stat_result:
            return as_the_program(name, suffix, lambda where, at: os.lstat(where, dir_fd=at))

        def readlink(name: str) -> str:
            return as_the_program(name, "", lambda where, at: os.readlink(where, dir_fd=at))

        def led_to(link: str) -> os.stat_result | None:
            """What the magic ``link`` leads to (None if nothing we may look at)."""
            try:
                return as_the_program(link, "", lambda where, at: os.stat(where, dir_fd=at))
            except OSError:
                return None

        def named(name: str, st: os.stat_result) -> bool:
            """Whether ``name`` is the file ``st`` describes."""
            try:
                there = lstat(name)
            except OSError:
                return False
            return (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino)

        # The parent of each removed directory the walk went into through
        # its magic link: its text's (see below).
        parent_of: dict[str, str] = {}

        beneath = bool(resolve_flags & abi.RESOLVE_BENEATH)
        floor = start if resolve_flags & _SCOPED else "/"
        current = start
        pending = path.split("/")
        if path.startswith("/"):
            if beneath:
                raise OSError(errno.EXDEV, "absolute path beneath a dirfd", path)
            current = floor
        # A trailing slash makes the last component a directory, which is
        # always followed (path_resolution(7)).
        follow_last = follow or path.endswith("/")
        links = 0
        ids: tuple[int, int] | None = None
        pending.reverse()  # pop() from the end is O(1)
        while pending:
            c = pending.pop()
            if c in ("", "."):
                continue
            if c == "..":
                # EACCES where the program may not search the directory it leaves.
                lstat(current, "/.")
                if current == floor and floor != "/":
                    if beneath:
                        raise OSError(errno.EXDEV, "'..' above the dirfd", current)
                    continue  # RESOLVE_IN_ROOT: ".." of the root is the root
                current = parent_of.get(current) or current.rsplit("/", 1)[0] or "/"
                continue
            cand = current.rstrip("/") + "/" + c
            is_last = not any(p not in ("", ".") for p in pending)
            if cand in ("/proc/self", "/proc/thread-self") and (follow_last or not is_last):
                # The program's own, in the pid namespace of its /proc. Not
                # the last component of a call that does not follow it
                # (lstat, readlink): that is the symlink itself, the same
                # for every process but for its text (proc_self_get_link()
                # writes the reader's pid), which the caller makes the
                # program's (see proc_self_text).
                if ids is None:
                    ids = read_ids(tid, innermost=bool(root))
                tgid, ntid = ids
                cand = f"/proc/{tgid}" if cand == "/proc/self" else f"/proc/{tgid}/task/{ntid}"
            try:
                st = lstat(cand)
            except FileNotFoundError:
                pending.reverse()
                if ".." in pending:
                    raise ThroughMissing(cand, pending) from None
                return _lexical_join(cand, pending)
            if not stat.S_ISLNK(st.st_mode) or (is_last and not follow_last):
                if (not is_last or path.endswith("/")) and not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, "not a directory", cand)
                current = cand
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many symbolic links", cand)
            if resolve_flags & abi.RESOLVE_NO_SYMLINKS:
                raise OSError(errno.ELOOP, "a link under RESOLVE_NO_SYMLINKS", cand)
            magic = _MAGIC_LINK.match(cand)
            if magic and reach is not None and not reach(cand):
                raise OSError(errno.EACCES, "a process beyond the program's reach", cand)
            if magic and resolve_flags & _NO_JUMPS:
                # nd_jump_link(), after the ptrace check of proc_pid_get_link().
                if resolve_flags & abi.RESOLVE_NO_MAGICLINKS:
                    raise OSError(errno.ELOOP, "a magic link under RESOLVE_NO_MAGICLINKS", cand)
                led = led_to(cand)
                if resolve_flags & _SCOPED or led is None or led.st_dev != lstat(current).st_dev:
                    raise OSError(errno.EXDEV, "a magic link out of the lookup's scope", cand)
            try:
                target = readlink(cand)
            except OSError as e:
                if not (magic and e.errno == errno.ENAMETOOLONG):
                    raise
                # It leads deeper than /proc reads back. Its name goes
                # unread: the link is its name, and what is opened or acted
                # on through it is judged by what it is, as for a pipe (see
                # below). Names below it cannot be walked by name at all.
                if not is_last:
                    led = led_to(cand)
                    deep_dir = led is not None and stat.S_ISDIR(led.st_mode)
                    err = errno.ENAMETOOLONG if deep_dir else errno.ENOTDIR
                    raise OSError(err, os.strerror(err), cand) from None
                current = cand
                continue
            if magic:
                in_view = _in_root(prefix, target) if target.startswith("/") else None
                led = led_to(cand) if in_view is not None else None
                if in_view is not None and (led is None or not named(in_view, led)):
                    # A deleted file, a memfd, a removed directory: its
                    # text ("X (deleted)") names nothing, or another file.
                    removed_dir = led is not None and stat.S_ISDIR(led.st_mode)
                    if removed_dir and not is_last and in_view.endswith(_DELETED):
                        # Names in a removed directory go through its link;
                        # its ".." is its old parent, which the text names.
                        parent_of[cand] = in_view.rsplit("/", 1)[0] or "/"
                        current = cand
                        continue
                    in_view = None
                if in_view is None:
                    # pipe:[N], socket:[N], anon_inode:..., or a file outside
                    # the program's root: not a path it could name. The link
                    # itself is the only name it has.
                    if not is_last:
                        raise OSError(errno.ENOTDIR, "not a directory", cand)
                    current = cand
                    continue
                target = in_view
            if target.startswith("/") and not magic:
                if beneath:
                    raise OSError(errno.EXDEV, "an absolute link beneath a dirfd", cand)
                if resolve_flags & abi.RESOLVE_NO_XDEV and lstat(floor).st_dev != st.st_dev:
                    raise OSError(errno.EXDEV, "an absolute link to another mount", cand)
            if target.startswith("/"):
                current = floor
                if floor == "/" and not root:
                    # From the root on: the program's root is ours, and its
                    # lookups go there too.
                    anchor = abi.AT_FDCWD
                # With a root of its own, ``anchor`` is already an fd of
                # that root and stays one: an absolute link starts again
                # from the program's root (nd_jump_root() sets nd->path to
                # nd->root, the task's fs->root), never from ours. Our
                # AT_FDCWD there would look the rest of the link up in the
                # supervisor's cwd, on the host: lstat and readlink of host
                # files, their type told to the program by ENOTDIR, and host
                # links followed to a name then acted on in its root.
            pending.extend(reversed(target.split("/")))
        return current


_FD_DIR = [-1, 0]  # an fd of our /proc/PID/fd, and that PID


def _fd_dir() -> int:
    """An fd of our ``/proc/PID/fd`` directory, one per process, opened once.

    Reading links relative to it, the kernel looks up one name instead of
    four (``proc``, ``self``, its link, ``fd``). Fds belong to the process,
    so it serves every thread; a forked child, with a pid and an fd table of
    its own, opens its own (and the inherited copy closes at its exec).
    """
    pid = os.getpid()
    if _FD_DIR[1] != pid:
        _FD_DIR[0] = os.open(f"/proc/{pid}/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _FD_DIR[1] = pid
    return _FD_DIR[0]


def _in_root(prefix: str, path: str) -> str | None:
    """``path`` (in our view) in the view of a program whose root is ``prefix``.

    None if it lies outside that root.
    """
    if prefix == "/":
        return path
    if path == prefix:
        return "/"
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None


def _open_base(base: str) -> int:
    """An ``O_PATH`` fd of the program's cwd or dirfd (a magic link of its ``/proc``).

    Opened as the supervisor: these are the program's own, which the kernel
    lets it use without looking anything up. Raises OSError(EBADF) for a
    dirfd it does not have, ProgramGone if it is gone.
    """
    try:
        return os.open(base, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        if "/fd/" in base:
            raise OSError(errno.EBADF, "bad dirfd") from None
        raise ProgramGone("thread is gone") from None


def _readlink_base(base: str) -> str:
    try:
        target = os.readlink(base)
    except FileNotFoundError:
        if "/fd/" in base:
            raise OSError(errno.EBADF, "bad dirfd") from None
        raise ProgramGone("thread is gone") from None
    if not target.startswith("/"):
        raise OSError(errno.ENOTDIR, "dirfd is not a directory")
    return target


def write_memory(
    tid: int, writes: list[tuple[int, bytes]], still_valid: Callable[[], bool]
) -> list[bytes]:
    """Write ``data`` at each ``addr`` of thread ``tid``'s memory, if ``still_valid()``.

    ``/proc/TID/mem`` is opened first and ``still_valid`` (the
    notification's ``ID_VALID``) asked after: the open fd is bound to the
    memory of the process the tid named when it was opened, and that was
    our trapped thread's if its call is still pending then, since a pid is
    not reused while its thread waits for our answer (seccomp_unotify(2),
    NOTES). A write through this file ignores page protections (like a
    debugger's, FOLL_FORCE); a place that cannot be written at all is
    ``BadArgument(EFAULT)``, as the kernel's own copy would fail.
    Returns the bytes each write replaced.
    """
    try:
        fd = os.open(f"/proc/{tid}/mem", os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProgramGone(f"thread {tid} is gone") from None
    try:
        if not still_valid():
            raise ProgramGone("notification no longer valid")
        replaced = []
        for addr, data in writes:
            try:
                old = os.pread(fd, len(data), addr)
                done = os.pwrite(fd, data, addr) if len(old) == len(data) else -1
            except (OSError, OverflowError):
                done = -1
            if done != len(data):
                raise BadArgument(errno.EFAULT, f"cannot write at {addr:#x}")
            replaced.append(old)
        return replaced
    finally:
        os.close(fd)


def status_field(tid: int, name: bytes) -> bytes:
    """One field of ``/proc/TID/status``; ProgramGone if the thread is gone or exiting."""
    try:
        return proc_status(tid)[name].strip()
    except KeyError:
        raise ProgramGone(f"thread {tid} is exiting") from None


#: Signals that stop a process unless caught or ignored (signal(7)).
_STOP_SIGNALS = sum(
    1 << (sig - 1) for sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
)


def signal_ends_wait(tid: int) -> bool:
    """Whether thread ``tid`` has a signal pending that would end an
    interruptible wait of its, and will take it once back from its call.

    A thread asleep interruptibly in the kernel (a FIFO's open waiting for
    its other end, fifo(7)) is woken by a pending signal it does not block
    and does not ignore, if it has a handler or the signal stops it; its
    call then ends with ``-ERESTARTSYS``, which the signal code turns into
    EINTR, or a restart under ``SA_RESTART`` or after a stop (signal(7),
    "Interruption of system calls"). Under ``WAIT_KILLABLE_RECV`` its wait
    for our answer is not so woken, so the supervisor looks for itself.

    Answering ``-ERESTARTSYS`` is only safe if the thread will look at its
    signals on the way out: a signal sent to the thread itself makes it so,
    and one sent to the process does when the thread is its only one (the
    kernel picks one thread to wake: complete_signal() in kernel/signal.c).
    Otherwise the raw 512 would reach the program; a process-wide signal
    to a multi-threaded program is therefore left alone (False).
    """
    f = proc_status(tid)
    try:
        blocked = int(f[b"SigBlk"], 16)
        takes = int(f[b"SigCgt"], 16) | (_STOP_SIGNALS & ~int(f[b"SigIgn"], 16))
        mine = int(f[b"SigPnd"], 16)
        if int(f[b"Threads"]) == 1:
            mine |= int(f[b"ShdPnd"], 16)
    except (KeyError, ValueError):
        return False  # Exiting: its status has no signal lines left.
    return bool(mine & ~blocked & takes)


def shares_memory(tid: int, other: int) -> bool:
    """True if the two threads run in one address space (kcmp(2) ``KCMP_VM``).

    False also when either is gone: they share nothing any more.
    """
    try:
        return syscall(abi.SYS_KCMP, tid, other, abi.KCMP_VM, 0, 0) == 0
    except OSError:
        return False


def parent_sharing_memory(tid: int) -> int | None:
    """``tid``'s parent if the two share one address space (a vfork child's), else None.

    Raises :class:`ProgramGone` when there is no parent to compare with
    (reaped, or in another pid namespace: PPid 0).
    """
    try:
        ppid = int(status_field(tid, b"PPid"))
    except ValueError:
        raise ProgramGone(f"thread {tid} has no parent we can see") from None
    if ppid <= 0:
        raise ProgramGone(f"thread {tid} has no parent we can see")
    try:
        same = syscall(abi.SYS_KCMP, tid, ppid, abi.KCMP_VM, 0, 0) == 0
    except OSError:
        raise ProgramGone(f"thread {tid} or its parent is gone") from None
    return ppid if same else None


class HeldMemory:
    """A process's memory, held open from now on (``/proc/PID/mem``): bound to that
    address space even after the pid is reused. Reads and writes fail quietly
    (False, b"") once it is gone. Closed exactly once, by :meth:`close`.
    """

    def __init__(self, pid: int) -> None:
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProgramGone(f"process {pid} is gone") from None

    def fileno(self) -> int:
        """The open ``/proc/PID/mem``; -1 once closed."""
        return self._fd

    def holds(self, addr: int, data: bytes) -> bool:
        """True if ``data`` is what the memory holds at ``addr``."""
        try:
            return os.pread(self._fd, len(data), addr) == data
        except OSError:
            return False

    def write(self, addr: int, data: bytes) -> bool:
        try:
            return os.pwrite(self._fd, data, addr) == len(data)
        except OSError:
            return False

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
