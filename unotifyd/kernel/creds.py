"""A program's whole credentials: reading them, and acting with them.

The supervisor usually runs as root. Whatever it does for a program — look
up a path, open a file, set an xattr, make a device node — must be
something the program could have done itself, or the supervisor is a
confused deputy (capabilities(7), credentials(7)). Switching only the
file-system uid, gid and groups is not enough: ``setfsuid`` to a non-zero
id drops only the file-system capabilities, and keeps ``CAP_SETFCAP``
(``security.capability`` xattrs: a program could make its own binary
setuid-root), ``CAP_SYS_ADMIN`` (``trusted.*`` xattrs), ``CAP_SYSLOG``
(``/proc/kallsyms``, ``/dev/kmsg``) and the rest; fsuid 0 keeps them all,
so a root program that dropped its capabilities would get them back.
Every act therefore runs with the program's uids, gids, groups *and*
effective capabilities.

Credentials are per thread in the kernel (``task->cred``). The raw
``setresuid``, ``setresgid``, ``setgroups``, ``setfsuid``, ``setfsgid``
and ``capset`` system calls change the calling thread only; glibc's
wrappers of the first five broadcast the change to
every thread (nptl's "setxid" signal), so only the raw calls are made here.
A thread switches, acts, and switches back (:func:`acting_as`).

What it switches is what the kernel checks when it grants a file access
or a privileged act: the effective and file-system uid, every gid, the
groups and the effective capabilities. The real and saved uids stay ours.
They decide who may signal the thread (kill_ok_by_cred(),
kernel/signal.c, compares the sender's uids with the target thread's real
and saved uid): were they the program's, a program could SIGKILL or
SIGSTOP a supervisor thread while it acts for it, and stall or kill every
other program. No check the supervisor makes for a program reads the real
uid (file-system checks use the fs ids, access(2) is emulated with the
real ids put in the fs ids, see :meth:`Credentials.real`). Keeping a real
uid of 0 also keeps the *permitted* capabilities through the switch
(capabilities(7) "Effect of user ID changes on capabilities" clears them
only when every one of the real, effective and saved uids becomes
non-zero), which is what lets the thread switch back; an act is granted
by the *effective* set only (cap_capable(), security/commoncap.c), which
holds the program's capabilities and nothing more, and which only the
thread itself can raise again, with ``capset``, which it does only to
switch back. One thing is still charged to our real uid's ``user_struct``:
the buffers of a pipe the supervisor is first to open (a FIFO), counted
against ``pipe-user-pages-soft`` (fs/pipe.c, account_pipe_buffers()).

A file opened while acting keeps the credentials it was opened with
(``file->f_cred``): reads of ``/proc/kallsyms``, ``pagemap`` or
``/proc/PID/maps`` through an fd we inject check those, so they must be
the program's too — which they are, since the open itself is an act.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..record import record, replace
from . import abi
from .errors import ProgramGone
from .rawsys import libc, libc_syscall

_SYS_SETRESUID = 117
_SYS_SETRESGID = 119
_SYS_CAPGET = 125
_SYS_CAPSET = 126
# capget(2)/capset(2): _LINUX_CAPABILITY_VERSION_3, two 32-bit halves.
_CAP_VERSION_3 = 0x20080522
#: CAP_SETUID as a bit of a capability set (include/uapi/linux/capability.h: 7).
_CAP_SETUID = 1 << 7

# The capabilities that make supplementary groups irrelevant to file access:
# with these, no permission or ownership check falls back on group
# membership (generic_permission(), inode_owner_or_capable(),
# setattr_should_drop_sgid(), chown_ok() in fs/).
_DAC_CAPS = (
    (1 << 0)  # CAP_CHOWN
    | (1 << 1)  # CAP_DAC_OVERRIDE
    | (1 << 2)  # CAP_DAC_READ_SEARCH
    | (1 << 3)  # CAP_FOWNER
    | (1 << 4)  # CAP_FSETID
)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class _Caps:
    """Preallocated ``capget``/``capset`` arguments (one instance per thread)."""

    def __init__(self) -> None:
        self.header = _CapHeader(_CAP_VERSION_3, 0)
        self.data = (_CapData * 2)()
        self._header_ref = ctypes.byref(self.header)
        self._nr_get = ctypes.c_long(_SYS_CAPGET)
        self._nr_set = ctypes.c_long(_SYS_CAPSET)

    def get(self, tid: int) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) of thread ``tid`` (0: this one).

        capget(2) of another thread needs no privilege. Raises ProgramGone.
        """
        self.header.version = _CAP_VERSION_3
        self.header.pid = tid
        if libc_syscall(self._nr_get, self._header_ref, self.data) != 0:
            err = ctypes.get_errno()
            if err == errno.ESRCH:
                raise ProgramGone(f"thread {tid} is gone")
            raise OSError(err, f"capget({tid}): {os.strerror(err)}")
        lo, hi = self.data
        return (
            lo.effective | hi.effective << 32,
            lo.permitted | hi.permitted << 32,
            lo.inheritable | hi.inheritable << 32,
        )

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        """capset(2) this thread's sets. Raises OSError."""
        self.header.version = _CAP_VERSION_3
        self.header.pid = 0
        lo, hi = self.data
        lo.effective, hi.effective = effective & 0xFFFFFFFF, effective >> 32
        lo.permitted, hi.permitted = permitted & 0xFFFFFFFF, permitted >> 32
        lo.inheritable, hi.inheritable = inheritable & 0xFFFFFFFF, inheritable >> 32
        if libc_syscall(self._nr_set, self._header_ref, self.data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"capset: {os.strerror(err)}")


@record(frozen=True, slots=True)
class Credentials:
    """What the kernel checks when a thread acts on a file (credentials(7), capabilities(7)).

    ``cap_eff``/``cap_prm`` are the thread's effective and permitted
    capabilities *as they count in our user namespace*: a program in a user
    namespace of its own holds its capabilities over that namespace only,
    so they are read as none (see :meth:`CredentialReader.read`).
    ``umask`` is -1 when it was not read (``need_umask=False``).
    """

    ruid: int
    euid: int
    suid: int
    fsuid: int
    rgid: int
    egid: int
    sgid: int
    fsgid: int
    groups: tuple[int, ...]
    cap_eff: int
    cap_prm: int
    umask: int = -1

    def real(self) -> Credentials:
        """These credentials as access(2) checks with them.

        access_override_creds() in fs/open.c: the real ids take the place of
        the file-system ones, and the effective capabilities become the
        permitted ones for a real uid of 0, none for any other.
        """
        return replace(
            self,
            fsuid=self.ruid,
            fsgid=self.rgid,
            cap_eff=self.cap_prm if self.ruid == 0 else 0,
        )

    @classmethod
    def supervisors(cls, umask: int = -1) -> Credentials:
        """Our own credentials (as at start), as :class:`CredentialReader` reads a thread's."""
        o = _SUPERVISOR
        return cls(*o.ids, tuple(sorted(o.groups)), o.cap_eff, o.cap_prm, umask)

    def same_as_supervisor(self) -> bool:
        """True if acting with these is acting with ours: no switch needed."""
        return self is _OURS or _SUPERVISOR.covers(self)


@record(frozen=True, slots=True)
class _Ours:
    """The supervisor's own credentials, taken once at start-up."""

    ids: tuple[int, int, int, int, int, int, int, int]  # r, e, s, fs uid; r, e, s, fs gid
    groups: frozenset[int]
    cap_eff: int
    cap_prm: int
    cap_inh: int
    userns: str | None

    @classmethod
    def now(cls) -> _Ours:
        r, e, s = os.getresuid()
        rg, eg, sg = os.getresgid()
        eff, prm, inh = _Caps().get(0)
        fsuid = int(libc_syscall(ctypes.c_long(abi.SYS_SETFSUID), ctypes.c_long(-1)))
        fsgid = int(libc_syscall(ctypes.c_long(abi.SYS_SETFSGID), ctypes.c_long(-1)))
        try:
            userns: str | None = os.readlink("/proc/self/ns/user")
        except OSError:
            userns = None
        return cls(
            (r, e, s, fsuid, rg, eg, sg, fsgid),
            frozenset(os.getgroups()),
            eff,
            prm,
            inh,
            userns,
        )

    @property
    def groups_never_count(self) -> bool:
        """Whether our supplementary groups never decide an access of ours: we
        hold every capability that overrides file permissions, and in the
        initial user namespace, where they apply to every file (in another,
        not to a file whose owner or group it does not map:
        capable_wrt_inode_uidgid() in kernel/capability.c)."""
        return self.cap_eff & _DAC_CAPS == _DAC_CAPS and self.userns == _INITIAL_USERNS

    def covers(self, c: Credentials) -> bool:
        """Whether acting with ours is acting as ``c`` could, and no more."""
        if (c.ruid, c.euid, c.suid, c.fsuid, c.rgid, c.egid, c.sgid, c.fsgid) != self.ids:
            return False
        if c.cap_eff != self.cap_eff:
            return False
        # Our groups stand for the thread's only if they never count, or are
        # the same: with fewer, acting with ours would lend it one; with
        # more, too, where a group is refused what others may do (a 0604
        # file of its group: POSIX checks the group bits, not the others').
        return self.groups_never_count or frozenset(c.groups) == self.groups


#: The initial user namespace, as /proc/PID/ns/user names it (its inode is
#: fixed: PROC_USER_INIT_INO in include/linux/proc_ns.h).
_INITIAL_USERNS = f"user:[{0xEFFFFFFD}]"

_SUPERVISOR = _Ours.now()
#: Our credentials as a program's are read (no umask): what most reads of a
#: program of ours give, made once rather than per call (~4 us).
_OURS = Credentials.supervisors()


#: How many thread pidfds a CredentialReader keeps (the oldest goes first).
_PIDFDS_KEPT = 256


def supervisor_credentials() -> _Ours:
    """The supervisor's own credentials, as taken at start-up."""
    return _SUPERVISOR


def supervisor_privileged() -> bool:
    """Whether the supervisor holds any capability in its effective set."""
    return _SUPERVISOR.cap_eff != 0


def supervisor_has(capability: int) -> bool:
    """Whether the supervisor's own effective set holds ``capability`` (capabilities(7))."""
    return bool(_SUPERVISOR.cap_eff >> capability & 1)


def userns_of(tid: int) -> str:
    """An id of the user namespace of thread ``tid`` (``user:[INODE]``); ProgramGone if
    it is gone. The link's text, not a stat through it: half the cost, same answer
    (namespaces(7): two processes share the namespace if the inodes are equal)."""
    try:
        return os.readlink(f"/proc/{tid}/ns/user")
    except (FileNotFoundError, ProcessLookupError):
        raise ProgramGone(f"thread {tid} is gone") from None


class CredentialReader:
    """Reads the credentials (and umask) of trapped threads.

    One per supervisor thread: it keeps preallocated buffers. The trapped
    thread cannot change its own credentials while we hold its call (it is
    stopped in the kernel, and ``WAIT_KILLABLE_RECV`` keeps signal handlers
    from running), and no other thread can change them for it, so what is
    read here holds until we answer.
    """

    def __init__(self) -> None:
        self._buf = bytearray(abi.PIDFD_INFO_STRUCT.size)
        self._pidfd_info_works = True
        self._caps = _Caps()
        # Thread pidfds kept between calls, by tid: opening and closing one
        # costs two system calls per call, as much as the query itself.
        self._pidfds: dict[int, int] = {}

    def close(self) -> None:
        """Close the pidfds kept."""
        fds, self._pidfds = self._pidfds, {}
        for fd in fds.values():
            os.close(fd)

    def _pidfd(self, tid: int) -> tuple[int, bool]:
        """A pidfd of thread ``tid`` and whether it was kept from before.

        A pidfd refers to one thread for good, not to a number: if that
        thread is gone and its tid went to another, the kept one answers
        ESRCH (see _ids), never the other thread's credentials.
        """
        fd = self._pidfds.get(tid)
        if fd is not None:
            return fd, True
        fd = os.pidfd_open(tid, abi.PIDFD_THREAD)
        if len(self._pidfds) >= _PIDFDS_KEPT:
            os.close(self._pidfds.pop(next(iter(self._pidfds))))  # the oldest
        self._pidfds[tid] = fd
        return fd, False

    def _forget(self, tid: int) -> None:
        fd = self._pidfds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def _ids(self, tid: int) -> tuple[int, int, int, int, int, int, int, int] | None:
        """The thread's (r, e, s, fs) uids and gids through a pidfd (6.13+), or None.

        ``PIDFD_GET_INFO`` costs about 1 µs where generating ``/proc/TID/status``
        costs about 15. A thread pidfd (``PIDFD_THREAD``) is used because
        credentials belong to threads, not processes.
        """
        if not self._pidfd_info_works:
            return None
        for _ in range(2):
            try:
                pidfd, kept = self._pidfd(tid)
            except ProcessLookupError:
                raise ProgramGone(f"thread {tid} is gone") from None
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._pidfd_info_works = False  # Older than 6.9: no thread pidfds.
                return None
            try:
                abi.PIDFD_INFO_STRUCT.pack_into(self._buf, 0, abi.PIDFD_INFO_CREDS, *([0] * 13))
                fcntl.ioctl(pidfd, abi.PIDFD_GET_INFO, self._buf, True)
                break
            except OSError as e:
                self._forget(tid)
                if e.errno == errno.ESRCH:
                    if kept:
                        continue  # The thread kept is gone; this tid may be another's now.
                    raise ProgramGone(f"thread {tid} is gone") from None
                if e.errno not in (errno.ENOTTY, errno.EINVAL):
                    raise
                self._pidfd_info_works = False  # Older than 6.13: no PIDFD_GET_INFO.
                return None
        f = abi.PIDFD_INFO_STRUCT.unpack(self._buf)
        # ruid, euid, suid, fsuid, rgid, egid, sgid, fsgid
        return (f[5], f[7], f[9], f[11], f[6], f[8], f[10], f[12])

    def read(self, tid: int, *, need_umask: bool = True) -> Credentials:
        """Read the credentials of thread ``tid`` (and its umask if ``need_umask``).

        The cheap way (a pidfd query and ``capget``, ~3 µs) suffices when the
        thread acts exactly as we would and no umask is needed; otherwise
        ``/proc/TID/status`` gives groups and umask. Capabilities are read
        before the user namespace is compared, so a namespace entered
        meanwhile can only make us grant less. Raises ProgramGone.
        """
        ours = _SUPERVISOR
        # Only the status file tells supplementary groups, and they count
        # unless we hold every capability that overrides file permissions
        # (see _Ours.covers): a program of our uid may have others (a
        # daemon's client from another login, or a CAP_SETGID holder's
        # setgroups), and acting with ours would lend it theirs.
        if not need_umask and ours.groups_never_count:
            ids = self._ids(tid)
            if ids == ours.ids:
                eff, prm, _ = self._caps.get(tid)
                if eff == ours.cap_eff and userns_of(tid) == ours.userns:
                    if prm == ours.cap_prm:
                        return _OURS
                    ruid, euid, suid, fsuid, rgid, egid, sgid, fsgid = ids
                    groups = tuple(ours.groups)
                    return Credentials(
                        ruid, euid, suid, fsuid, rgid, egid, sgid, fsgid, groups, eff, prm
                    )
        return read_credentials(tid, self._caps)


def proc_status(tid: int) -> dict[bytes, bytes]:
    """The fields of ``/proc/TID/status`` (proc(5)), by name; ProgramGone if it is gone."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProgramGone(f"thread {tid} is gone") from None
    fields: dict[bytes, bytes] = {}
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        fields[key] = value
    return fields


def read_credentials(tid: int, caps: _Caps | None = None) -> Credentials:
    """Read the credentials and umask of thread ``tid`` from ``/proc/TID/status``.

    proc(5): ``Uid:``/``Gid:`` list the real, effective, saved and
    file-system ids; ``Groups:``; ``Umask:`` (Linux 4.7+); ``CapEff:`` and
    ``CapPrm:``. A thread in another user namespace than ours gets no
    capabilities (see :class:`Credentials`).
    """
    fields = proc_status(tid)
    try:
        uids = [int(u) for u in fields[b"Uid"].split()]
        gids = [int(g) for g in fields[b"Gid"].split()]
        groups = tuple(int(g) for g in fields[b"Groups"].split())
        umask = int(fields[b"Umask"], 8)
        eff = int(fields[b"CapEff"], 16)
        prm = int(fields[b"CapPrm"], 16)
    except (KeyError, IndexError, ValueError):
        # A zombie's status lacks most of these: the thread is exiting.
        raise ProgramGone(f"thread {tid} has no credentials (exiting)") from None
    if len(uids) != 4 or len(gids) != 4:
        raise ProgramGone(f"thread {tid} has no credentials (exiting)")
    if (eff or prm) and userns_of(tid) != _SUPERVISOR.userns:
        eff = prm = 0
    ruid, euid, suid, fsuid = uids
    rgid, egid, sgid, fsgid = gids
    return Credentials(
        ruid, euid, suid, fsuid, rgid, egid, sgid, fsgid, groups, eff, prm, umask
    )


class CredentialError(OSError):
    """This thread could not take on the program's credentials."""


class _Switcher:
    """The raw calls that switch one thread's credentials (one instance per thread)."""

    def __init__(self) -> None:
        self.caps = _Caps()
        self.acting: Credentials | None = None  # whose credentials the thread has now
        self._l = ctypes.c_long
        self._nr_setresuid = ctypes.c_long(_SYS_SETRESUID)
        self._nr_setresgid = ctypes.c_long(_SYS_SETRESGID)
        self._nr_setgroups = ctypes.c_long(abi.SYS_SETGROUPS)
        self._nr_setfsuid = ctypes.c_long(abi.SYS_SETFSUID)
        self._nr_setfsgid = ctypes.c_long(abi.SYS_SETFSGID)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise CredentialError(err, f"{what}: {os.strerror(err)}")

    def _ids(self, euid: int, fsuid: int, gids: tuple[int, ...], groups: tuple[int, ...]) -> None:
        """Set groups, then gids, then the effective and fs uid (after the uid
        change we may lack CAP_SET*ID); the real and saved uid stay ours
        (see the module doc).

        The groups are left alone when they are already these: setgroups(2)
        wants CAP_SETGID even then, which an unprivileged supervisor lacks.
        """
        l_ = self._l
        call = libc_syscall
        if sorted(os.getgroups()) != sorted(groups):  # getgroups(2): this thread's
            arr = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
            self._check(call(self._nr_setgroups, l_(len(groups)), arr), "setgroups")
        self._check(call(self._nr_setresgid, l_(gids[0]), l_(gids[1]), l_(gids[2])), "setresgid")
        call(self._nr_setfsgid, l_(gids[3]))
        self._check(call(self._nr_setresuid, l_(-1), l_(euid), l_(-1)), "setresuid")
        if fsuid != euid and _SUPERVISOR.cap_prm & _CAP_SETUID:
            # A program whose fsuid is not its euid (setfsuid(2); access(2)
            # judged with its real uid, Credentials.real). setresuid() set our
            # fsuid to euid and, euid leaving 0, cleared our effective set
            # (capabilities(7), "Effect of user ID changes on capabilities"):
            # without CAP_SETUID, setfsuid() takes only our real, effective or
            # saved uid (0 or euid). The permitted set is kept (the real uid
            # is still 0): raise CAP_SETUID for this one call; become() sets
            # the program's effective set right after.
            self.caps.set(_CAP_SETUID, _SUPERVISOR.cap_prm, _SUPERVISOR.cap_inh)
        call(self._nr_setfsuid, l_(fsuid))
        # setfs[ug]id(2) never report failure: read back the ids they left.
        if call(self._nr_setfsuid, l_(-1)) != fsuid or call(self._nr_setfsgid, l_(-1)) != gids[3]:
            raise CredentialError(errno.EPERM, "setfsuid/setfsgid did not take")

    def become(self, c: Credentials) -> None:
        ours = _SUPERVISOR
        self.acting = c
        self._ids(c.euid, c.fsuid, (c.rgid, c.egid, c.sgid, c.fsgid), c.groups)
        # Last, since the uid changes above adjust the effective set on
        # their own (capabilities(7)); never more than we hold ourselves.
        effective = c.cap_eff & ours.cap_prm
        try:
            self.caps.set(effective, ours.cap_prm, ours.cap_inh)
        except OSError as e:
            raise CredentialError(e.errno, str(e)) from None
        if self.caps.get(0)[0] != effective:
            raise CredentialError(errno.EPERM, "capset did not take")

    def restore(self) -> None:
        """Take our own credentials back; abort the process if that fails.

        A thread left with a program's identity would serve the next
        program with it, or the supervisor itself: better to stop everything.
        """
        ours = _SUPERVISOR
        try:
            # CAP_SETUID/CAP_SETGID back in the effective set first.
            self.caps.set(ours.cap_prm, ours.cap_prm, ours.cap_inh)
            self._ids(ours.ids[1], ours.ids[3], ours.ids[4:], tuple(sorted(ours.groups)))
            self.caps.set(ours.cap_eff, ours.cap_prm, ours.cap_inh)
            if self.caps.get(0) != (ours.cap_eff, ours.cap_prm, ours.cap_inh):
                raise CredentialError(errno.EPERM, "capabilities not restored")
        except OSError as e:
            os.write(2, f"unotifyd: cannot restore the supervisor's credentials: {e}\n".encode())
            os.abort()
        self.acting = None


_local = threading.local()


def _switcher() -> _Switcher:
    """This thread's :class:`_Switcher` (its ctypes arguments are reused)."""
    sw: _Switcher | None = getattr(_local, "switcher", None)
    if sw is None:
        sw = _local.switcher = _Switcher()
    return sw


@contextmanager
def acting_as(creds: Credentials | None) -> Iterator[None]:
    """Run the body with ``creds`` as this thread's whole credentials.

    A no-op for None or credentials equal to ours. Only the calling thread
    changes (see the module doc); the body must not hand control to other
    work of the supervisor (no trio checkpoint). Raises
    :class:`CredentialError` if the switch fails; the thread then has its
    own credentials back.
    """
    if creds is None or creds.same_as_supervisor():
        yield
        return
    sw = _switcher()
    if sw.acting is not None:
        # Nested: a helper that acts as the program, called by one that does already.
        if sw.acting != creds:
            raise CredentialError(errno.EPERM, "already acting for other credentials")
        yield
        return
    try:
        sw.become(creds)
    except BaseException:
        sw.restore()
        raise
    try:
        yield
    finally:
        sw.restore()


_PR_SET_DUMPABLE = 4


def forbid_inspection() -> None:
    """Make this process non-dumpable, so that its programs cannot reach into it.

    A program of our own uid could otherwise ``ptrace`` the supervisor,
    read or write its memory (``process_vm_readv``, ``/proc/PID/mem``) or
    take its listener with ``pidfd_getfd`` and answer its own trapped calls
    with CONTINUE. All of these pass the kernel's ptrace access check
    (__ptrace_may_access(), kernel/ptrace.c), which for a non-dumpable
    process demands ``CAP_SYS_PTRACE`` in its user namespace. Programs we
    start exec first, which makes them dumpable again (execve(2)); what
    this does not stop is a program killing us, after which every trapped
    call fails with ENOSYS (fail-closed). Raises OSError.
    """
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(err)}")


def allow_inspection() -> None:
    """Undo :func:`forbid_inspection` in a child about to exec its program.

    The exec would make it dumpable anyway (execve(2)), but the exec is
    itself a trapped call: a supervisor without ``CAP_SYS_PTRACE`` must read
    its path from this very process, which the ptrace access check lets it
    do only if the process is dumpable. Called once the child holds nothing
    of ours (the listener handed over and closed). Raises OSError.
    """
    if libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE, 1): {os.strerror(err)}")


@contextmanager
def as_ourselves() -> Iterator[None]:
    """Inside :func:`acting_as`: run the body with our own credentials again.

    For what the kernel lets a program do whoever it is, but not someone
    else acting with its credentials: looking into its own ``/proc/PID``
    magic links (``fd/N``, ``cwd``, ``root``), which pass the ptrace access
    check only within one thread group, for a non-dumpable program too
    (__ptrace_may_access(), kernel/ptrace.c); and taking a copy of one of
    its fds with ``pidfd_getfd``, which checks our *real* uid
    (PTRACE_MODE_ATTACH_REALCREDS) — ours, see the module doc. A no-op
    outside :func:`acting_as`.
    """
    sw: _Switcher | None = getattr(_local, "switcher", None)
    acting = None if sw is None else sw.acting
    if sw is None or acting is None:
        yield
        return
    sw.restore()
    try:
        yield
    finally:
        sw.become(acting)
