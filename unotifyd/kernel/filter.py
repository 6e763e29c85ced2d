"""Compile a seccomp filter with pyseccomp, load it with the raw syscall, pass its listener.

pyseccomp (libseccomp) is used only as a compiler: ``export_bpf`` gives us the
classic-BPF program, which we load with ``seccomp(2)`` ourselves so that we
choose the flags (``NEW_LISTENER | WAIT_KILLABLE_RECV``) and get the listener
fd back; ``seccomp_load`` would keep the listener to itself.

:class:`PreparedFilter` and :class:`FdSender` are what a process needs for
the window between loading its filter and handing the listener over, both
made ready before it (``unotifyd launch`` and ``launch --daemon``).
"""

from __future__ import annotations

# _socket, the C module under socket: FdSender needs its constants only,
# and ``import socket`` would cost launch --daemon ~2.4 ms (selectors, four
# IntEnum conversions).
import _socket
import ctypes
import errno
import os
import sys
import threading
import types
from collections.abc import Callable

from . import abi
from .errors import Unsupported
from .landlock import restrict_self
from .rawsys import libc, libc_syscall

# ``launch --daemon`` imports this module: no typing or dataclasses at run
# time (see unotifyd.daemon.protocol for what they cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Literal

    #: ``(argument index, mask, value)``: the argument tested with libseccomp's
    #: ``SCMP_CMP_MASKED_EQ`` (``args[index] & mask == value``).
    ArgTest = tuple[int, int, int]
    #: ``(name, number, errno, tests)``: fail the call with ``errno`` when any
    #: of ``tests`` holds, or always when there is none.
    Refused = tuple[str, int, int, tuple[ArgTest, ...]]

_prctl = libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_NO_NEW_PRIVS = 38


def _sys(nr: int, *args: object) -> int:
    """``syscall(2)`` with integer arguments widened to ``long``.

    ``syscall`` is variadic and reads every argument as a ``long``; ctypes
    would pass a Python int as a 32-bit ``int`` whose upper half is undefined.
    """
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result: int = libc_syscall(ctypes.c_long(nr), *conv)
    return result


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


#: The libraries pyseccomp loads, by the sonames the dynamic loader finds on
#: its own (ld.so.cache): glibc's and libseccomp 2's.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _import_pyseccomp() -> Any:  # the module: pyseccomp has no type information
    """pyseccomp, imported without running ``ldconfig -p`` twice. Raises OSError.

    pyseccomp finds libc and libseccomp with ``ctypes.util.find_library``
    at import, which on Linux runs ``/sbin/ldconfig -p`` (and, failing
    that, gcc) and reads its output: two processes, ~10 ms of every
    launch. While it imports, ``find_library`` answers the soname of each
    (the very name ``ldconfig -p`` would give) once the dynamic loader has
    loaded it from that name: dlopen(3) searches ld.so.cache,
    ``LD_LIBRARY_PATH`` and the default directories itself, every place
    ``ldconfig -p`` lists. Any other name, or one that does not load, is
    looked up the usual way.

    Importing :mod:`ctypes.util` itself costs ~6 ms more (shutil,
    subprocess, tempfile). Where nothing has imported it yet and no other
    thread runs that could (``unotifyd launch``), pyseccomp is given a
    stand-in ``ctypes.util`` instead, whose ``find_library`` answers only
    sonames that load; should the import fail with it, it is made again the
    usual way, which says what the loader found.
    """
    with _IMPORTING:
        module = sys.modules.get("pyseccomp")
        if module is not None:
            return module
        if "ctypes.util" not in sys.modules and threading.active_count() == 1:
            try:
                return _import_with_stand_in()
            except Exception:  # made again below, to say why
                sys.modules.pop("pyseccomp", None)
        import ctypes.util  # noqa: PLC0415

        try:
            return _import_with(ctypes.util)
        except RuntimeError as e:  # "Unable to find libseccomp"
            raise OSError(
                f"cannot load libseccomp ({e}): install libseccomp 2 "
                "(Debian: apt-get install libseccomp2)"
            ) from None


#: Held while pyseccomp imports: the daemon compiles filters in several
#: threads, and a second thread must not save our find_library as the one
#: to put back.
_IMPORTING = threading.Lock()


def _loads(name: str) -> str | None:
    """The soname of library ``name`` (``c``, ``seccomp``) if the loader loads it."""
    soname = _SONAMES.get(name)
    if soname is None:
        return None
    try:
        ctypes.CDLL(soname)
    except OSError:
        return None
    return soname


def _import_with(util: Any) -> Any:
    """pyseccomp, imported while ``util.find_library`` answers sonames that load."""
    usual: Callable[[str], str | None] = util.find_library

    def find(name: str) -> str | None:
        return _loads(name) or usual(name)

    util.find_library = find
    try:
        import pyseccomp  # noqa: PLC0415  - only the compiling process needs libseccomp
    finally:
        util.find_library = usual
    return pyseccomp


def _import_with_stand_in() -> Any:
    """pyseccomp, imported while ``ctypes.util`` is a stand-in (see above)."""
    stand_in = types.ModuleType("ctypes.util", "find_library for pyseccomp (kernel/filter.py)")
    stand_in.find_library = _loads  # type: ignore[attr-defined]
    # `import ctypes.util` reads sys.modules, then the package's attribute;
    # neither held it (the caller checked), and neither does after.
    sys.modules["ctypes.util"] = stand_in
    ctypes.util = stand_in
    try:
        import pyseccomp  # noqa: PLC0415  - only the compiling process needs libseccomp
    finally:
        del sys.modules["ctypes.util"]
        del ctypes.util
    return pyseccomp


def compile_filter(
    syscalls: Iterable[str],
    refused: Iterable[Refused],
    unless: Iterable[tuple[str, int, int, int]] = (),
    only: Iterable[tuple[str, ArgTest]] = (),
    only_if_set: Iterable[tuple[str, int]] = (),
) -> bytes:
    """Return a BPF program that notifies ``syscalls``, fails ``refused`` and allows the rest.

    ``unless`` holds ``(name, index, bit, dirfd)``: that call is notified
    only when ``args[index]`` lacks ``bit`` or ``args[dirfd]`` is
    ``AT_FDCWD``, and allowed otherwise (masked compares,
    seccomp_rule_add(3)). ``only`` holds ``(name, test)``: that call is
    notified only when one of its tests holds (``ioctl`` only for the
    commands that change a file), and allowed otherwise. ``only_if_set``
    holds ``(name, index)``: that call is notified only when ``args[index]``
    is not 0 (``sendto`` with an address), and allowed otherwise.

    ``refused`` (from :func:`unotifyd.policy.surface.refused_calls`) fail in
    the filter with their errno (``SECCOMP_RET_ERRNO``): the kernel never
    notifies them and never runs them. A call with argument tests gets one
    rule per test, and libseccomp ORs the rules of one call: it fails when
    any test holds and is allowed otherwise (seccomp_rule_add(3)). Refusing
    a call that is also trapped is a :class:`ValueError`: one of the two
    answers would silently win.

    Calls from any other ABI (i386 ``int 0x80``, x32) kill the process: a
    32-bit ``open`` has another number and another argument layout, and
    letting it through would bypass every rule (libseccomp's default
    ``SCMP_FLTATR_ACT_BADARCH``, made explicit here).
    """
    pyseccomp = _import_pyseccomp()
    trapped = sorted(syscalls)
    refusals = sorted(refused)
    when: dict[str, list[ArgTest]] = {}
    for name, test in only:
        when.setdefault(name, []).append(test)
    # A call may be both only for other argument values (ioctl: trapped for
    # FS_IOC_SETFLAGS, refused for TIOCSTI); else one answer would silently win.
    refused_tests = {name: set(tests) for name, _, _, tests in refusals}
    both = {
        name
        for name in set(trapped) & set(refused_tests)
        if not when.get(name)
        or not refused_tests[name]
        or _overlap(when[name], refused_tests[name])
    }
    if both:
        raise ValueError(f"calls both trapped and refused: {', '.join(sorted(both))}")
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    conditions = {name: (index, bit, dirfd) for name, index, bit, dirfd in unless}
    nonzero = dict(only_if_set)
    for name in trapped:
        # By number: libseccomp adds an x86_64 number as it is, including
        # calls newer than its own table (the *xattrat family of 6.13).
        number = abi.SYSCALL_NUMBERS[name]
        if name in when:
            # One rule per test: libseccomp ORs the rules of a call.
            for index, mask, value in when[name]:
                arg = pyseccomp.Arg(index, pyseccomp.MASKED_EQ, mask, value)
                flt.add_rule(pyseccomp.NOTIFY, number, arg)
        elif name in nonzero:
            flt.add_rule(pyseccomp.NOTIFY, number, pyseccomp.Arg(nonzero[name], pyseccomp.NE, 0))
        elif name in conditions:
            index, bit, dirfd = conditions[name]
            without = pyseccomp.Arg(index, pyseccomp.MASKED_EQ, bit, 0)
            flt.add_rule(pyseccomp.NOTIFY, number, without)
            # A dirfd is an int: the kernel reads the low 32 bits of the
            # register, whatever the caller left in the rest.
            cwd = abi.AT_FDCWD & 0xFFFFFFFF
            at_cwd = pyseccomp.Arg(dirfd, pyseccomp.MASKED_EQ, 0xFFFFFFFF, cwd)
            flt.add_rule(pyseccomp.NOTIFY, number, at_cwd)
        else:
            flt.add_rule(pyseccomp.NOTIFY, number)
    for _name, number, err, tests in refusals:
        action = pyseccomp.ERRNO(err)
        if not tests:
            flt.add_rule(action, number)
        for index, mask, value in tests:
            flt.add_rule(action, number, pyseccomp.Arg(index, pyseccomp.MASKED_EQ, mask, value))
    fd = os.memfd_create("unotifyd-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            flt.export_bpf(f)
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _overlap(trap: Iterable[ArgTest], refuse: Iterable[ArgTest]) -> bool:
    """Whether some argument values could pass a test of both sets (same argument
    and mask, same value; tests of other shapes are taken to overlap)."""
    refused = set(refuse)
    for index, mask, value in trap:
        for r_index, r_mask, r_value in refused:
            if (index, mask) != (r_index, r_mask) or value == r_value:
                return True
    return False


def install_failure(err: int) -> str:
    """Why seccomp(2) refused to install our filter (``err``), for the user.

    ``EBUSY``: another filter of this process already has a listener; the
    kernel allows one per chain (has_duplicate_listener() in
    kernel/seccomp.c), so a program under one supervisor cannot be given
    another, ours included (a launch inside a launch).
    """
    if err == errno.EBUSY:
        return (
            "this process is already served by a seccomp supervisor (unotifyd's or "
            "another's), and the kernel gives a process one at most (EBUSY): "
            "run unotifyd outside that sandbox"
        )
    return os.strerror(err)


class NotifSizes:
    """The kernel's sizes of the notification structs (``SECCOMP_GET_NOTIF_SIZES``)."""

    __slots__ = ("data", "notif", "resp")

    def __init__(self, notif: int, resp: int, data: int) -> None:
        self.notif = notif
        self.resp = resp
        self.data = data

    def __repr__(self) -> str:
        return f"NotifSizes(notif={self.notif}, resp={self.resp}, data={self.data})"


def check_support() -> NotifSizes:
    """Check that this kernel can do what unotifyd needs; raise :class:`Unsupported`.

    ``SECCOMP_GET_ACTION_AVAIL`` answers ``EOPNOTSUPP`` for an action the
    kernel does not know (seccomp(2)), so it tells apart "no user
    notification" (< 5.0) from "no seccomp at all" (``ENOSYS``/``EINVAL``).
    The struct sizes must match ours or every RECV would fail with EINVAL.
    """
    action = ctypes.c_uint32(abi.SECCOMP_RET_USER_NOTIF)
    if _sys(abi.SYS_SECCOMP, abi.SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action)) != 0:
        err = ctypes.get_errno()
        if err == errno.EOPNOTSUPP:
            raise Unsupported(
                "this kernel lacks seccomp user notification (SECCOMP_RET_USER_NOTIF)"
            )
        raise Unsupported(f"this kernel lacks seccomp filters: seccomp(2): {os.strerror(err)}")
    buf = ctypes.create_string_buffer(abi.SIZES_STRUCT.size)
    if _sys(abi.SYS_SECCOMP, abi.SECCOMP_GET_NOTIF_SIZES, 0, buf) != 0:
        err = ctypes.get_errno()
        raise Unsupported(f"this kernel lacks SECCOMP_GET_NOTIF_SIZES: {os.strerror(err)}")
    sizes = NotifSizes(*abi.SIZES_STRUCT.unpack(buf.raw))
    if sizes.notif != abi.NOTIF_STRUCT.size or sizes.resp != abi.RESP_STRUCT.size:
        raise Unsupported(
            f"unexpected seccomp notification sizes {sizes} (expected "
            f"{abi.NOTIF_STRUCT.size}/{abi.RESP_STRUCT.size})"
        )
    return sizes


class PreparedFilter:
    """A BPF program staged in C memory, ready to be loaded after ``fork``.

    Everything that allocates or may trigger a lazy import happens in
    ``__init__``, in the parent. :meth:`install` does two raw syscalls and
    nothing else, because between loading the filter and handing the
    listener over, any trapped call (an ``open`` from a lazy import, say)
    would block forever waiting for a supervisor that has no listener yet.
    """

    def __init__(self, bpf: bytes, ruleset: int = -1) -> None:
        if len(bpf) % 8 or not bpf:
            raise ValueError("a BPF program is a non-empty array of 8-byte instructions")
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buf))
        prog_ref = ctypes.byref(self._prog)
        base = abi.SECCOMP_FILTER_FLAG_NEW_LISTENER
        killable = base | abi.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        self._attempts = tuple(
            (
                ctypes.c_long(abi.SYS_SECCOMP),
                ctypes.c_long(abi.SECCOMP_SET_MODE_FILTER),
                ctypes.c_long(flags),
                prog_ref,
            )
            for flags in (killable, base)
        )
        self._get_errno = ctypes.get_errno
        self._restrict = restrict_self
        #: A Landlock ruleset to make the process's before the filter, or -1.
        self.ruleset = ruleset
        self.killable_wait = True

    def install(self) -> int:
        """Set NO_NEW_PRIVS, apply the ruleset, load the filter: the listener fd, or ``-errno``.

        NO_NEW_PRIVS comes first: both ``landlock_restrict_self`` and an
        unprivileged ``seccomp`` need it. The ruleset goes in before the
        filter, so that no trapped call can happen before the hand-over.

        ``WAIT_KILLABLE_RECV`` (5.19+) keeps non-fatal signals from
        interrupting a call the supervisor already received, which would
        make the kernel notify the same call again (seccomp_unotify(2)).
        Older kernels reject the flag with EINVAL; we then load without it
        and say so in :attr:`killable_wait`.

        Returns a negative errno instead of raising: it runs in a freshly
        forked child where an exception would need formatting (more Python).
        """
        if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return -self._get_errno()
        if self.ruleset >= 0:
            refused = self._restrict(self.ruleset)
            if refused < 0:
                return refused
        for args in self._attempts:
            fd: int = libc_syscall(*args)
            if fd >= 0:
                return fd
            err: int = self._get_errno()
            if err != errno.EINVAL:
                return -err
            self.killable_wait = False
        return -err


class FdSender:
    """Sends one fd (``SCM_RIGHTS``) with everything bound in advance.

    For the window between loading a seccomp filter and handing its
    listener over, where a trapped call would wait forever: no lazy import
    (``socket.send_fds`` imports :mod:`array` on first use), no lookup that
    could load anything. Raises OSError.
    """

    def __init__(self, sock: _socket.socket, data: bytes) -> None:
        self._sendmsg = sock.sendmsg
        self._data = [data]
        self._level = _socket.SOL_SOCKET
        self._type = _socket.SCM_RIGHTS
        self._flags = _socket.MSG_NOSIGNAL
        self._byteorder: Literal["little", "big"] = sys.byteorder

    def __call__(self, fd: int) -> None:
        rights = fd.to_bytes(4, self._byteorder, signed=True)
        self._sendmsg(self._data, [(self._level, self._type, rights)], self._flags)


class UnfilteredSender:
    """Hands a listener over from a thread the new filter does not cover.

    A filter goes on the thread that installs it, and on no other thread
    already running (seccomp(2): only ``SECCOMP_FILTER_FLAG_TSYNC`` would
    spread it). The hand-over is a ``sendmsg``, which an enforcing filter
    traps (calls/sends.py): made by the filtered thread, it would wait for
    a supervisor that has no listener yet, forever. So a thread is started
    *before* the filter goes in, waits, sends the fd once told to, and
    ends; the filtered thread only releases and joins it (futexes, never
    trapped). Nothing of the program runs meanwhile: the exec comes after,
    and an exec ends every other thread anyway (execve(2)).
    """

    def __init__(self, send: Callable[[int], None]) -> None:
        self._send = send
        self._fd = -1
        self._errno = 0
        self._go = threading.Lock()
        self._go.acquire()
        self._thread = threading.Thread(target=self._run, name="unotifyd-handover", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.acquire()
        if self._fd < 0:
            return  # Not needed after all (see cancel).
        try:
            self._send(self._fd)
        except OSError as e:
            self._errno = e.errno or errno.EIO

    def __call__(self, fd: int) -> None:
        """Send ``fd`` from the thread; raises OSError as the send did."""
        self._fd = fd
        self._go.release()
        self._thread.join()
        if self._errno:
            raise OSError(self._errno, os.strerror(self._errno))

    def cancel(self) -> None:
        """End the thread without sending (the filter could not be installed)."""
        self._go.release()
        self._thread.join()
