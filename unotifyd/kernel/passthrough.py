"""The pass-through lane: ``passthrough.c``, run on a thread of its own through ctypes.

What the lane answers by itself, and why that is what Python would answer,
is said at the top of ``passthrough.c``. This module loads the library
(built with the package when a C compiler is there, see ``setup.py``; none
means no lane, and Python serves every call as before), fills its
configuration and runs it: :class:`Lane` owns a thread blocked in
``pt_run`` (ctypes releases the GIL for the whole call), the socket its
forwarded notifications come through, and the eventfd that stops it.

``UNOTIFYD_PASSTHROUGH=0`` in the environment serves without the lane,
whatever is built: the tests run both ways.

The library also puts a vfork parent's bytes back after a redirected exec
(:func:`restore_after_exec`), which must not wait for the GIL either.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Final, Literal

from . import abi
from .listener import Notification, notification_from

#: Keep in step with ``struct pt_config`` and ``enum shape`` in passthrough.c.
_VERSION: Final = 13
_MAX_NR: Final = 512
#: The calls the lane knows how to read, by name (their arguments' layout).
SHAPES: Final = {
    "open": 1, "openat": 2, "stat": 3, "lstat": 4, "newfstatat": 5, "statx": 6,
    "access": 7, "faccessat": 8, "faccessat2": 9, "readlink": 10, "readlinkat": 11,
    "getxattr": 12, "lgetxattr": 13, "listxattr": 14, "llistxattr": 15,
    "mkdir": 16, "mkdirat": 17, "rmdir": 18, "unlink": 19, "unlinkat": 20,
    "rename": 21, "renameat": 22, "renameat2": 23, "execve": 24,
}  # fmt: skip
#: Those it makes itself in enforcing mode (``emulate`` and ``emulate_entry``
#: in passthrough.c): the stat family, readlink, access and the opens that
#: only read or have O_CREAT, and the making, removing and renaming of names;
#: and in both modes an execve of a name where nothing is (``exec_missing``).
EMULATED: Final = frozenset((
    "open", "openat", "stat", "lstat", "newfstatat", "statx", "readlink", "readlinkat",
    "access", "faccessat", "faccessat2", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat",
    "rename", "renameat", "renameat2", "execve",
))  # fmt: skip
_NOTIF_SIZE: Final = abi.NOTIF_STRUCT.size
#: How many threads a lane can be told may not have moved their cwd yet
#: (PT_UNSETTLED in passthrough.c, struct cwds).
UNSETTLED_MAX: Final = 8
_END_POLL_S: Final = 0.1


class Config(ctypes.Structure):
    """``struct pt_config``: what the lane may pass, and its counters."""

    _fields_ = (
        ("version", ctypes.c_uint32),
        ("check_creds", ctypes.c_uint32),
        ("idle_ms", ctypes.c_int32),
        ("emulate", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("root_pinned", ctypes.c_uint32),
        ("ns_pinned", ctypes.c_uint32),
        ("colocate", ctypes.c_uint32),
        ("cwd_kept", ctypes.c_uint32),
        ("exec_runs", ctypes.c_uint32),
        ("unsettled", ctypes.c_int32 * UNSETTLED_MAX),
        ("root_dev", ctypes.c_uint64),
        ("root_ino", ctypes.c_uint64),
        ("ids", ctypes.c_uint32 * 8),
        ("cap_eff", ctypes.c_uint64),
        ("cap_prm", ctypes.c_uint64),
        ("userns", ctypes.c_char * 64),
        ("mntns", ctypes.c_char * 64),
        ("watched", ctypes.c_char_p),
        ("redirects", ctypes.c_char_p),
        ("shape", ctypes.c_uint8 * _MAX_NR),
        ("moves_cwd", ctypes.c_uint8 * _MAX_NR),
        ("continued", ctypes.c_uint64 * _MAX_NR),
        ("forwarded", ctypes.c_uint64),
        ("gone", ctypes.c_uint64),
        ("second", ctypes.c_uint64),
        ("redirected", ctypes.c_uint64),
        ("missing", ctypes.c_uint64),
    )


def _load() -> ctypes.CDLL | None:
    """The library built next to this file; None if there is none, or it will
    not load (another architecture, a stale build): Python then serves alone."""
    # os.path, not pathlib: pathlib (with urllib.parse and ipaddress) costs
    # ~7 ms of every launch, before the program may make its first call.
    here = os.path.dirname(__file__)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, f"_passthrough{suffix}")
        if os.path.exists(path):
            try:
                lib = ctypes.CDLL(path, use_errno=True)
                run = lib.pt_run
            except (OSError, AttributeError):
                return None
            run.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(Config))
            run.restype = ctypes.c_int
            # Absent from a build older than the source (an in-place build
            # left by a pull): the lane runs, restores are Python's.
            restore = getattr(lib, "pt_restore", None)
            if restore is not None:
                restore.argtypes = (
                    ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint64,
                    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int32,
                )  # fmt: skip
                restore.restype = ctypes.c_int
            return lib
    return None


_LIB: list[ctypes.CDLL | None] = []


def _built() -> ctypes.CDLL | None:
    """The library, loaded once (None: not built, or will not load)."""
    if not _LIB:
        _LIB.append(_load())
    return _LIB[0]


def library() -> ctypes.CDLL | None:
    """The built lane, loaded once; None if it is not built or is turned off."""
    if os.environ.get("UNOTIFYD_PASSTHROUGH", "1") == "0":
        return None
    return _built()


def restore_after_exec(
    child: int, parent: int, *, mem: int, addr: int, old: bytes, new: bytes, timeout_s: float
) -> bool | None:
    """Put ``old`` back at ``addr`` in the vfork parent's memory (``mem``, its
    /proc/PID/mem) once ``child`` no longer runs in it, if ``new`` is still
    there; after ``timeout_s`` even if the child still does (its exec failed
    and it runs on). ``pt_restore`` in passthrough.c, which says why in C.
    True if restored, False if not (the parent's bytes changed, or it is
    gone); None if the library is not built: the caller does it itself, with
    a wider window. Not turned off by UNOTIFYD_PASSTHROUGH=0, which is about
    the lane alone. Blocks for up to ``timeout_s`` and sets the calling
    thread's timer slack: call it from a thread of its own."""
    lib = _built()
    restore = None if lib is None else getattr(lib, "pt_restore", None)
    if restore is None:
        return None
    assert len(old) == len(new)
    done: int = restore(child, parent, mem, addr, old, new, len(new), int(timeout_s * 1000))
    return done == 1


def config(
    shapes: Iterable[tuple[int, int]],
    watched: Iterable[str],
    *,
    idle_s: float,
    check_creds: bool,
    ids: tuple[int, ...],
    cap_eff: int,
    cap_prm: int,
    userns: str,
    emulate: bool = False,
    root_pinned: bool = False,
    namespaces_pinned: bool = False,
    redirects: Iterable[tuple[str, str]] = (),
    colocate: bool = True,
    moves_cwd: Iterable[int] = (),
    unsettled: Iterable[int] = (),
    exec_runs: bool = False,
) -> Config:
    """A lane's configuration: ``shapes`` as (syscall nr, shape); ``watched``
    the paths whose names (and everything below) go to Python. ``emulate``
    (enforcing mode): the lane makes its calls itself, never CONTINUE, and
    only for a thread of our mount namespace. ``root_pinned``: see
    ``Served.root_pinned``; cleared with :func:`unpin_root` while it runs.
    ``namespaces_pinned``: see ``Served.namespaces_pinned``; cleared with
    :func:`unpin_namespaces`. ``redirects``
    (virtualizing mode): the (source, target) of the exact redirects whose
    opens the lane makes itself (``redirect`` in passthrough.c). ``colocate``:
    a program's thread runs on our CPU while it takes an injected fd, as
    :func:`~unotifyd.kernel.sched.pin_to_our_cpu` has it. ``moves_cwd``:
    the numbers of the calls that may move a thread's cwd, all of which the
    filter traps; then each thread's cwd is kept open between its calls
    (``struct cwds`` in passthrough.c), but while one of the threads
    ``unsettled`` (tids; 0 for one we cannot name) has not made another call
    since it made such a call, and not at all if more than
    :data:`UNSETTLED_MAX` are given. ``exec_runs`` (virtualizing mode, no
    rule that could refuse what an exec runs): an ``execve`` of a file no
    rule watches is let through (``exec_missing`` in passthrough.c)."""
    c = Config()
    c.version = _VERSION
    c.check_creds = int(check_creds)
    c.emulate = int(emulate)
    c.root_pinned = int(root_pinned)
    c.ns_pinned = int(namespaces_pinned)
    c.colocate = int(colocate)
    c.exec_runs = int(exec_runs and not emulate)
    # Two threads take turns at the listener where two CPUs may run them
    # (pt_run, struct shared): one answers while the other receives.
    c.threads = min(2, len(os.sched_getaffinity(0)))
    c.mntns = os.fsencode(os.readlink("/proc/self/ns/mnt"))
    c.idle_ms = int(idle_s * 1000)
    st = os.stat("/")
    c.root_dev, c.root_ino = st.st_dev, st.st_ino
    for i, v in enumerate(ids):
        c.ids[i] = v
    c.cap_eff, c.cap_prm = cap_eff, cap_prm
    c.userns = os.fsencode(userns)
    # One NUL after each, a last one to end: the buffer outlives the lane
    # (Config keeps a reference to the bytes object it was given).
    c.watched = b"".join(os.fsencode(w) + b"\0" for w in watched) + b"\0"
    pairs = b"".join(os.fsencode(a) + b"\0" + os.fsencode(b) + b"\0" for a, b in redirects)
    c.redirects = pairs + b"\0" if pairs else None
    for nr, shape in shapes:
        c.shape[nr] = shape
    movers = list(moves_cwd)
    pending = list(unsettled)
    c.cwd_kept = int(bool(movers) and len(pending) <= UNSETTLED_MAX and 0 not in pending)
    for nr in movers:
        c.moves_cwd[nr] = 1
    for i, tid in enumerate(pending[:UNSETTLED_MAX]):
        c.unsettled[i] = tid
    return c


def unpin_root(cfg: Config) -> None:
    """Tell a lane, running or not, that roots may change from now on: each
    thread's root is looked at again for each of its calls. A store of one
    aligned 32-bit word, which the lane reads before each look."""
    cfg.root_pinned = 0


def unpin_namespaces(cfg: Config) -> None:
    """The same for a thread's user and mount namespaces (``ns_pinned``)."""
    cfg.ns_pinned = 0


#: Why a lane ended: every process using the filter is gone; we stopped it;
#: no call came for a while (its thread and fds are given back until calls
#: come again); it let through too few calls to be worth its hop (a
#: container's, whose root is not ours); it failed (an error of ours).
#: Python serves on after each but the first, alone after the last two.
Ended = Literal["hangup", "stopped", "idle", "fruitless", "failed"]
_ENDS: Final[dict[bytes, Ended]] = {
    b"H": "hangup", b"S": "stopped", b"I": "idle", b"F": "fruitless", b"E": "failed"
}  # fmt: skip

#: How many lanes may run at once in this process: each is a thread and a
#: few fds (more in its cache), and a daemon serves many programs. Beyond
#: that, Python serves alone; lanes of idle programs end (see Ended).
MAX_LANES: Final = 32
_SLOTS = threading.BoundedSemaphore(MAX_LANES)


class Lane:
    """One run of the lane on listener ``fd``, from :meth:`start` to :meth:`finish`.

    The listener is the caller's and must stay open until :meth:`finish`
    returned. Every notification the lane does not answer comes out of
    :meth:`take` (or :meth:`finish`), and must be answered.
    """

    def __init__(self, lib: ctypes.CDLL, fd: int, cfg: Config) -> None:
        self.config = cfg
        self._run = lib.pt_run
        self._fd = fd
        # Made by start(), once a slot is had: a lane that cannot run holds nothing.
        self._ours: socket.socket | None = None
        self._theirs: socket.socket | None = None
        self._stop = -1
        # stop_soon() may come from another thread (a Gate's pause): never
        # after finish() closed the eventfd, whose number may be reused.
        self._stop_lock = threading.Lock()
        self._stop_asked = False
        self._thread: threading.Thread | None = None
        self.result: int | None = None
        self.ended: Ended | None = None
        #: What of the counters was counted already (serve/passthrough.count), by nr.
        self.counted: dict[int, int] = {}

    def _main(self) -> None:
        assert self._theirs is not None
        self.result = self._run(self._fd, self._theirs.fileno(), self._stop, self.config)

    def start(self) -> bool:
        """Run the lane; False if no more may run (:data:`MAX_LANES`), or its
        socket, eventfd or thread cannot be made (EMFILE, a pids limit):
        Python serves. :meth:`finish` must follow, once, either way."""
        if not _SLOTS.acquire(blocking=False):
            return False
        try:
            self._ours, self._theirs = socket.socketpair(
                socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC
            )
            with self._stop_lock:
                self._stop = os.eventfd(1 if self._stop_asked else 0, os.EFD_CLOEXEC)
            thread = threading.Thread(target=self._main, name="unotifyd pass-through", daemon=True)
            thread.start()
        except (OSError, RuntimeError):  # RuntimeError: "can't start new thread"
            self._release()
            _SLOTS.release()
            return False
        self._thread = thread
        return True

    def fileno(self) -> int:
        """Readable when the lane forwarded something (or ended); once started."""
        assert self._ours is not None
        return self._ours.fileno()

    def stop_soon(self) -> None:
        """Ask the lane to end (it says "stopped" through :meth:`take`); any
        thread, before or after it started."""
        with self._stop_lock:
            self._stop_asked = True
            if self._stop >= 0:
                os.eventfd_write(self._stop, 1)

    def take(self, serve: Callable[[Notification], None], limit: int = 0) -> Ended | None:
        """Serve what was forwarded until none is left (None), ``limit``
        were served (None), or the lane ended (why)."""
        assert self._ours is not None and self._thread is not None
        served = 0
        while self.ended is None:
            try:
                msg = self._ours.recv(_NOTIF_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if self._thread.is_alive():
                    return None
                # It always says why before it returns: read once more, in
                # case it did so since; else it ended without a word.
                try:
                    msg = self._ours.recv(_NOTIF_SIZE, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    self.ended = "failed"
                    break
            if len(msg) != _NOTIF_SIZE:
                self._end(msg)
                break
            serve(notification_from(msg))
            served += 1
            if served == limit:
                return None
        return self.ended

    def finish(self, serve: Callable[[Notification], None]) -> Ended:
        """Stop the lane, serve what it forwarded until it ended, and release it
        (one that never started only says "stopped").

        It ends as soon as it is back in its poll. A RECV it lost to another
        reader, or a lookup in a FUSE mount or a userfaultfd page the
        program controls, holds it until that returns, as either would hold
        a Python serving thread.
        """
        thread, ours = self._thread, self._ours
        if thread is None or ours is None:
            self.ended = self.ended or "stopped"
            return self.ended
        if self.ended is None:
            self.stop_soon()
        # A lane that ended without a word (it cannot, but waiting forever
        # for one would hang the supervisor) is "failed".
        ours.settimeout(_END_POLL_S)
        while self.ended is None:
            try:
                msg = ours.recv(_NOTIF_SIZE)
            except TimeoutError:
                if not thread.is_alive():
                    # It may have forwarded calls and ended between our
                    # wait's end and this look (audit helper-25): what it
                    # sent is read to the end before it is called "failed",
                    # or a call it received would never be answered.
                    self._drain(ours, serve)
                continue
            if len(msg) != _NOTIF_SIZE:
                self._end(msg)
            else:
                serve(notification_from(msg))
        thread.join()
        self._thread = None
        self._release()
        _SLOTS.release()
        return self.ended

    def _drain(self, ours: socket.socket, serve: Callable[[Notification], None]) -> None:
        """Serve what a lane whose thread has ended left in its socket, and
        take its last word; "failed" if it had none."""
        while self.ended is None:
            try:
                msg = ours.recv(_NOTIF_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError):
                # TimeoutError: finish() gave the socket a timeout, which
                # CPython waits out first even with MSG_DONTWAIT (audit
                # helper-26): nothing more came either way.
                self.ended = "failed"
                return
            if len(msg) != _NOTIF_SIZE:
                self._end(msg)
            else:
                serve(notification_from(msg))

    def _release(self) -> None:
        for sock in (self._ours, self._theirs):
            if sock is not None:
                sock.close()
        with self._stop_lock:
            if self._stop >= 0:
                os.close(self._stop)
                self._stop = -1

    def _end(self, msg: bytes) -> None:
        self.ended = _ENDS.get(msg, "failed")
