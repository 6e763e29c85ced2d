"""``execve`` and ``chdir``: let through to the kernel, with the path rewritten if need be.

Neither call can be made by the supervisor for the program, so a redirect
writes its target's name over the program's path string, in the program's
memory, and answers CONTINUE. CONTINUE lets the kernel read that memory
again (seccomp_unotify(2)), so in enforcing mode an exec is let through
only if no other thread can change the string meanwhile
(:func:`_alone_in_memory`). A vfork child's string is its parent's: the
parent's bytes are put back once the exec is over (:class:`_Restorer`).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from functools import partial

from ..calls.decode import PathArg, PathCall
from ..kernel import abi
from ..kernel.creds import Credentials
from ..kernel.errors import ProgramGone
from ..kernel.listener import Listener, Notification
from ..kernel.opener import open_as, runnable_errno
from ..kernel.passthrough import restore_after_exec
from ..kernel.program import (
    HeldMemory,
    parent_sharing_memory,
    shares_memory,
    status_field,
    write_memory,
)
from ..policy import Continue, Fail, Rewrite
from ..policy.paths import PathDecision, RefuseChange
from .opens import our_name
from .served import InFlight


def decide_rewrite(
    call: PathCall, d: PathDecision, guard_exec: bool, source: str | None
) -> Fail | Rewrite:
    """``chdir`` and ``execve`` run in the kernel: CONTINUE, maybe with the path rewritten.

    A ``chdir`` is let through even in enforcing mode: the cwd it sets
    only ever serves as the start of later lookups, and every later
    trapped call is resolved and decided in full, whatever the cwd is (so
    a second thread that swaps the path after our look gets a cwd it
    could not open, and nothing from it). The one lookup from the cwd that
    no call makes, the kernel's own core dump file, enforcing mode forbids
    (:mod:`unotifyd.kernel.coredump`: helper-56 had a crash write ``core``
    into a denied directory reached so).
    An exec, though, runs the file the kernel finds: with ``guard_exec``
    (enforcing mode with an exec allow-list), only when no other thread
    can change the path meanwhile (:func:`_alone_in_memory`).
    """
    arg = call.paths[0]
    is_exec = call.op != "chdir"
    if isinstance(d, Fail):
        return d
    if isinstance(d, RefuseChange):  # Not a changing role: cannot happen.
        return Fail(errno.EROFS, d.reason)
    guard = guard_exec and is_exec
    if isinstance(d, Continue) or d.in_program_root:
        return Rewrite(None, d.reason, guard)
    if d.content:
        # A content rule's file is a memfd of ours: not the program's to run.
        return Fail(errno.EACCES, f"{d.reason}: content files are not executable")
    if arg.itself:
        return Fail(errno.EXDEV, f"{d.reason}: cannot redirect an exec of an open fd")
    if is_exec:
        return Rewrite(d.path, d.reason, guard)
    return Rewrite(
        d.path,
        d.reason,
        source=source,
        keep_source=d.confine is not None,
        directory=True,
    )


def answer_rewrite(
    listener: Listener, p: InFlight, d: Rewrite, read_creds: Callable[[], Credentials]
) -> None:
    """Answer ``d``: write the new path if any, then CONTINUE (see :class:`Rewrite`).

    Where the call must fail after all, ``p.decision`` becomes that failure.
    """
    n = p.notif
    arg = p.path_call.paths[0]
    name = None if d.path is None else _fitting_name(d.path, arg, n.pid, p.own_root)
    # chdir: when the program's own name is a directory, the kernel may
    # as well go there: every later lookup from that cwd is trapped and
    # mapped by the same rules. Preferred for a private tree; else the
    # fallback when the target's name does not fit.
    if (
        d.source is not None
        and d.path is not None
        and (d.keep_source or name is None)
        and os.path.isdir(our_name(d.source, n.pid if p.own_root else None))
    ):
        d, name = Rewrite(None, d.reason), None
    if d.guard and not _alone_in_memory(n.pid, vfork_ok=True):
        # Checked whether or not we write: another thread could put any
        # name there after us, or after our check of the program's own.
        listener.send_error(n.id, errno.EACCES)
        p.decision = Fail(
            errno.EACCES, f"{d.reason}; enforce: another thread could change the path"
        )
        return
    if d.path is not None:
        # What would make the call fail is answered before anything is
        # written: a failed exec returns to a program whose memory must
        # be as it left it (the shell prints that very path next).
        creds = p.creds or read_creds()
        err = None if p.own_root else runnable_errno(creds, d.path, directory=d.directory)
        if err is not None:
            listener.send_error(n.id, err)
            p.decision = Fail(err, f"{d.reason}: {os.strerror(err)}")
            return
        if name is None and not d.directory and not p.own_root:
            name = _exec_through_fd(listener, n, arg, d.path, creds)
        if name is None:
            # Writing past the program's string would overwrite whatever
            # follows it (often the next argv string, read after it).
            listener.send_error(n.id, errno.ENAMETOOLONG)
            p.decision = Fail(errno.ENAMETOOLONG, f"{d.reason}: target's name too long")
            return
        vfork_parent = _vfork_parent(n.pid)
        old = write_memory(n.pid, [(arg.addr, name)], partial(listener.id_valid, n.id))
        if vfork_parent is not None:
            # A vfork child writes into its parent's memory: put the
            # parent's bytes back once the exec is over (see _Restorer).
            _Restorer(n.pid, vfork_parent, arg.addr, old[0], name).start()
    listener.send_continue(n.id)


def _exec_through_fd(
    listener: Listener, n: Notification, arg: PathArg, path: str, creds: Credentials
) -> bytes | None:
    """``/dev/fd/N`` for an exec whose target has no name short enough, or None.

    The target is opened as the program (it must be allowed to read it)
    and injected close-on-exec as fd N, which ``/dev/fd/N`` names for
    the program (a link to ``/proc/self/fd``): the kernel runs the file
    and the exec closes N. Not for scripts: their interpreter opens the
    script by that name after the exec, when N is closed already. A
    failed exec leaves N open in the program (close-on-exec).
    """
    if len(arg.path) < len("/dev/fd/999"):
        return None
    try:
        # O_NONBLOCK: a FIFO put there since must not stall the serving thread.
        fd = open_as(creds, path, os.O_RDONLY | os.O_NONBLOCK, 0)
    except OSError:
        return None  # Execute-only for the program: no fd to run it by.
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or os.pread(fd, 2, 0) == b"#!":
            return None
        if not listener.id_valid(n.id):
            raise ProgramGone("notification no longer valid")
        number = listener.add_fd(n.id, fd, cloexec=True)
    except OSError:
        return None  # EMFILE and the like: the call fails ENAMETOOLONG.
    finally:
        os.close(fd)
    name = f"/dev/fd/{number}".encode()
    if len(name) > len(arg.path):
        return None  # fd 1000 and up: rare; N stays open (close-on-exec).
    return name + b"\0"


def _fitting_name(path: str, arg: PathArg, tid: int, own_root: bool) -> bytes | None:
    """The shortest name of ``path`` that fits over the program's string, NUL included.

    The target's absolute name, or its name relative to the program's cwd
    (both name the same file: the cwd read from /proc is free of symlinks,
    so each ``..`` is its lexical parent), which may be the shorter even for
    an absolute path of the program's. Not relative to a dirfd, which
    another thread may close and reuse meanwhile. None if neither fits.
    A trailing ``/`` of the program's path is kept: the kernel then insists
    on a directory, as it would have.
    """
    slash = "/" if arg.path.endswith(b"/") and not path.endswith("/") else ""
    names = [path + slash]
    if arg.dirfd == abi.AT_FDCWD and not own_root:
        try:
            cwd = os.readlink(f"/proc/{tid}/cwd")
        except (FileNotFoundError, ProcessLookupError):
            raise ProgramGone(f"thread {tid} is gone") from None
        if cwd.startswith("/"):  # not "... (deleted)" or unreachable
            names.append(os.path.relpath(path, cwd) + slash)
    fitting = [b for b in map(os.fsencode, names) if len(b) <= len(arg.path)]
    return min(fitting, key=len) + b"\0" if fitting else None


def _alone_in_memory(tid: int, *, vfork_ok: bool) -> bool:
    """True if no other running thread can write to ``tid``'s memory now.

    CONTINUE lets the kernel read the path again from the program's memory
    (seccomp_unotify(2), "Design goals"): safe only if no other thread of
    the program runs in that memory meanwhile. That holds for a process of
    one thread that shares its memory with nobody — or, with ``vfork_ok``,
    only with a vfork parent of one thread, which is suspended until the
    exec (vfork(2)). Threads made by clone(CLONE_VM) without CLONE_THREAD
    in another branch of the process tree are not seen: they are rare,
    and documented as a limit.
    """
    if status_field(tid, b"Threads") != b"1":
        return False
    try:
        parent = parent_sharing_memory(tid)
    except ProgramGone:
        return False  # No parent to compare with (reaped, other pid namespace): be strict.
    if parent is None:
        return True
    if not vfork_ok:
        return False
    try:
        return status_field(parent, b"Threads") == b"1"
    except ProgramGone:
        return False


def _vfork_parent(tid: int) -> int | None:
    """The parent whose memory ``tid`` shares (a vfork child's), or None (also if unknown)."""
    try:
        return parent_sharing_memory(tid)
    except ProgramGone:
        return None


class _Restorer(threading.Thread):
    """Puts back what a path rewrite overwrote in a vfork parent's memory.

    A vfork child runs in its parent's memory until its exec replaces it
    (vfork(2)), so the path we rewrote for its exec is the parent's string.
    The parent stays suspended until then; once the child's memory is no
    longer the parent's (kcmp(2) KCMP_VM) — or the child is gone — the old
    bytes are written back, if the new ones are still there. The parent
    resumes at that same moment, so there is a window (microseconds, up to
    200 for an exec slower than 5 ms) in which it could read the new path;
    shells and posix_spawn do not read that string again. The look and the
    write are made in C where it is built (``pt_restore``, which says why);
    else here, where this thread may wait for the GIL between the two.
    """

    _POLL_S = 0.0002
    _GIVE_UP_S = 10.0

    def __init__(self, child: int, parent: int, addr: int, old: bytes, new: bytes) -> None:
        super().__init__(name=f"unotifyd-restore-{child}", daemon=True)
        self.child, self.parent, self.addr, self.old, self.new = child, parent, addr, old, new
        # Opened now, while the parent is suspended in vfork: bound to its memory.
        self.mem = HeldMemory(parent)

    def run(self) -> None:
        try:
            restored = restore_after_exec(
                self.child, self.parent, mem=self.mem.fileno(), addr=self.addr,
                old=self.old, new=self.new, timeout_s=self._GIVE_UP_S,
            )  # fmt: skip
            if restored is not None:
                return
            deadline = time.monotonic() + self._GIVE_UP_S
            # Once they differ (or either is gone), the exec is over.
            while time.monotonic() < deadline and shares_memory(self.child, self.parent):
                time.sleep(self._POLL_S)
            if self.mem.holds(self.addr, self.new):
                self.mem.write(self.addr, self.old)
        finally:
            self.mem.close()
