"""Decode -> decide -> answer, without a kernel.

The dispatcher is driven with made-up notifications, a fake memory (the
program's strings by address), a fake resolver (paths are taken as they
are) and a fake listener that records each answer, as h11's tests need no
sockets. Work that is performed (an emulated open) opens real files of the
test's own; nothing is trapped.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from unotifyd.calls.registry import BY_NAME
from unotifyd.kernel import abi, passthrough
from unotifyd.kernel.creds import Credentials, proc_status
from unotifyd.kernel.errors import BadArgument
from unotifyd.kernel.listener import Listener, Notification
from unotifyd.policy import Deny, Fail, Pattern, Policy, ReadOnly, Redirect
from unotifyd.serve import handoff
from unotifyd.serve.decide import Decider
from unotifyd.serve.dispatch import Dispatcher
from unotifyd.serve.handoff import Job
from unotifyd.serve.served import InFlight, Served
from unotifyd.serve.trace import Tracer

TID = 4242


class FakeMemory:
    """The program's memory: NUL-terminated strings at made-up addresses."""

    def __init__(self) -> None:
        self.strings: dict[int, bytes] = {}

    def put(self, text: bytes) -> int:
        addr = 0x1000 * (len(self.strings) + 1)
        self.strings[addr] = text
        return addr

    def read(self, tid: int, addr: int, size: int, /) -> bytes:
        raise BadArgument(errno.EFAULT, "no structs in this fake")

    def read_path(self, tid: int, addr: int, /) -> bytes:
        try:
            return self.strings[addr]
        except KeyError:
            raise BadArgument(errno.EFAULT, "bad address") from None


class FakeResolver:
    """Every path is absolute and free of links already; the program shares our root."""

    def root_id(self, tid: int, /) -> tuple[int, int] | None:
        return None

    def resolve(
        self,
        tid: int,
        dirfd: int,
        path: bytes,
        /,
        *,
        follow: bool,
        resolve_flags: int = 0,
        own_root: bool | None = None,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
    ) -> str:
        assert dirfd == abi.AT_FDCWD and path.startswith(b"/")
        return os.fsdecode(path)


class FakeCreds:
    """The program runs as we do, so work is done inline."""

    def read(self, tid: int, /, *, need_umask: bool = True) -> Credentials:
        return Credentials.supervisors(umask=0o022 if need_umask else -1)


class FakeListener:
    """Records every answer; an injected fd is recorded as the bytes it reads."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, object]] = []

    def id_valid(self, nid: int) -> bool:
        return True

    def send_continue(self, nid: int) -> None:
        self.answers.append(("continue", None))

    def send_error(self, nid: int, err: int) -> None:
        self.answers.append(("error", err))

    def send_value(self, nid: int, value: int) -> None:
        self.answers.append(("value", value))

    def send_fd(self, nid: int, srcfd: int, *, cloexec: bool) -> int:
        writable = fcntl.fcntl(srcfd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        self.answers.append(("fd", "writable" if writable else os.pread(srcfd, 100, 0)))
        return 3

    def add_fd(self, nid: int, srcfd: int, *, cloexec: bool) -> int:
        """ADDFD without SEND: installed, the call still waits."""
        self.answers.append(("added", os.pread(srcfd, 100, 0)))
        return 3


class World:
    def __init__(self, policy: Policy, *, colocate: bool = False) -> None:
        self.mem = FakeMemory()
        self.listener = FakeListener()
        decider = Decider(Tracer(), mem=self.mem, resolver=FakeResolver(), creds=FakeCreds())
        self.dispatcher = Dispatcher(colocate=colocate, decider=decider)
        self.served = Served(cast(Listener, self.listener), policy)
        self.deferred: list[Job] = []
        self._ids = 0

    def call(self, name: str, *args: int | bytes) -> tuple[str, object]:
        """Make call ``name``; bytes arguments are put in the program's memory."""
        raw = [self.mem.put(a) if isinstance(a, bytes) else a for a in args]
        raw += [0] * (6 - len(raw))
        self._ids += 1
        nr = BY_NAME[name].nr if name in BY_NAME else 999
        notif = Notification(self._ids, TID, nr, abi.AUDIT_ARCH_X86_64, tuple(raw))  # type: ignore[arg-type]

        def defer(s: Served, p: InFlight, job: Job) -> None:
            self.deferred.append(job)

        self.dispatcher.handle(self.served, notif, defer)
        return self.listener.answers[-1]


@pytest.fixture(autouse=True)
def room_for_fds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fake thread has no /proc entry to count its fds in: it has room,
    unless a test says otherwise (``full.append(TID)``)."""
    full: list[int] = []
    monkeypatch.setattr(handoff, "fd_table_full", lambda tid: tid in full)
    return full


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("the source\n")
    dst.write_text("the target\n")
    return src, dst


def test_an_open_no_rule_covers_continues(files: tuple[Path, Path]) -> None:
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]))
    assert world.call("openat", abi.AT_FDCWD, os.fsencode(dst), os.O_RDONLY) == ("continue", None)
    assert world.dispatcher.stats.decisions == {"continue": 1}


def test_a_redirected_open_injects_the_target(files: tuple[Path, Path]) -> None:
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]))
    path = os.fsencode(src)
    assert world.call("open", path, os.O_RDONLY) == ("fd", b"the target\n")
    assert world.call("openat", abi.AT_FDCWD, path, os.O_RDONLY) == ("fd", b"the target\n")
    assert world.dispatcher.stats.decisions == {"redirect": 2}
    # creat() is open(O_CREAT|O_WRONLY|O_TRUNC): the target is emptied.
    assert world.call("creat", path, 0o644) == ("fd", "writable")
    assert dst.read_text() == "" and src.read_text() == "the source\n"


def test_a_full_fd_table_fails_an_open_before_it_truncates(
    files: tuple[Path, Path], room_for_fds: list[int]
) -> None:
    """EMFILE first, as natively: the target of a creat() is not emptied
    for an fd the program could not take; a read is opened and given (the
    injection itself then fails, with the kernel's EMFILE)."""
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]))
    room_for_fds.append(TID)
    assert world.call("creat", os.fsencode(src), 0o644) == ("error", errno.EMFILE)
    assert dst.read_text() == "the target\n"
    assert world.call("open", os.fsencode(src), os.O_RDONLY) == ("fd", b"the target\n")


def test_an_open_that_fails_asks_for_room_once(
    files: tuple[Path, Path], room_for_fds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open made for the program that fails answers EMFILE where the
    table is full, as natively (the fd comes before the lookup). One that
    acts (O_CREAT, O_TRUNC, a FIFO's, which may wait and be interrupted)
    was asked before it was made, and keeps its own errno whatever the
    table holds once it failed."""
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst / "gone")))]))

    def fills_then_fails(*args: object, **kwargs: object) -> int:
        room_for_fds.append(TID)  # another thread of the program took the last one
        return -errno.EINTR

    monkeypatch.setattr(handoff, "perform_open", fills_then_fails)
    assert world.call("creat", os.fsencode(src), 0o644) == ("error", errno.EINTR)
    assert world.call("open", os.fsencode(src), os.O_RDONLY) == ("error", errno.EMFILE)


def test_a_quiet_device_is_opened_at_once_and_a_fifo_in_a_worker(tmp_path: Path) -> None:
    """Under --enforce the supervisor makes every open. That of a device whose
    open neither waits nor acts (null, zero...: QUIET_DEVICES) is made at
    once, as a regular file's is, where a worker thread's hop cost ~250 us
    (a shell's "> /dev/null"); a FIFO's may wait, and is still handed to a
    worker."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    world = World(Policy([Deny(Pattern(str(tmp_path / "unrelated")))], mode="enforce"))
    zero, null = b"/dev/zero", b"/dev/null"
    assert world.call("openat", abi.AT_FDCWD, zero, os.O_RDONLY) == ("fd", bytes(100))
    shell = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    assert world.call("openat", abi.AT_FDCWD, null, shell, 0o644) == ("fd", "writable")
    assert world.call("open", null, os.O_RDONLY) == ("fd", b"")
    assert (len(world.listener.answers), world.deferred) == (3, [])
    world.call("openat", abi.AT_FDCWD, os.fsencode(fifo), os.O_RDONLY)
    assert (len(world.listener.answers), len(world.deferred)) == (3, 1)


@pytest.mark.parametrize("killable", [False, True])
def test_a_thread_takes_an_fd_on_our_cpu_only_where_its_wait_is_killable(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, killable: bool
) -> None:
    """Moved onto our CPU, the thread takes the fd in two steps (ADDFD, its
    affinity given back, then SEND): only where a signal cannot end its wait
    in between (WAIT_KILLABLE_RECV, Served.killable_wait). Elsewhere the fd
    would stay installed and the call be interrupted (an audit made a runc
    container leak 244 fds so): one step, ADDFD|SEND, and no pinning."""
    src, dst = files
    seen: list[object] = []

    class Pin:
        def release(self) -> None:
            seen.append("released")

    def pin(tid: int) -> Pin:
        seen.append(tid)
        return Pin()

    monkeypatch.setattr(handoff, "pin_to_our_cpu", pin)
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]), colocate=True)
    world.served.killable_wait = killable
    last = world.call("openat", abi.AT_FDCWD, os.fsencode(src), os.O_RDONLY)
    if killable:
        assert seen == [TID, "released"]
        assert world.listener.answers[-2:] == [("added", b"the target\n"), ("value", 3)]
    else:
        assert seen == []
        assert last == ("fd", b"the target\n")


def test_a_root_call_unpins_roots_and_namespaces_an_unshare_namespaces_only(
    files: tuple[Path, Path],
) -> None:
    """Seen before it is let through, a call that may change a root (chroot,
    pivot_root, setns) unpins both the root and the namespaces kept for the
    listener, Python's and a lane's; an unshare of a new user or mount
    namespace only the namespaces (the root it leaves is the same directory):
    a program that unshares once keeps its root looked at once."""
    src, dst = files
    policy = Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))])
    for name, args, root_kept in (
        ("unshare", (0x10000000,), True),
        ("setns", (3, 0x10000000), False),
        ("chroot", (os.fsencode("/"),), False),
    ):
        world = World(policy)
        s = world.served
        s.root_pinned = s.namespaces_pinned = True
        s.lane_config = passthrough.config(
            (), (), idle_s=1, check_creds=True, ids=(0,) * 8, cap_eff=0, cap_prm=0,
            userns="user:[1]", root_pinned=True, namespaces_pinned=True,
        )  # fmt: skip
        assert world.call(name, *args) == ("continue", None), name
        assert (s.root_pinned, s.lane_config.root_pinned) == (root_kept, int(root_kept)), name
        assert (s.namespaces_pinned, s.lane_config.ns_pinned) == (False, 0), name


def test_python_notes_the_threads_whose_cwd_may_not_have_moved_yet(
    files: tuple[Path, Path],
) -> None:
    """A call that may move a cwd (chdir, fchdir, execve...) is noted under
    its thread until Python decides another of that thread's calls
    (Served.unsettled, which the next lane is told: struct cwds in
    passthrough.c); fchdir is let through. Past what a lane can be told,
    the threads that are gone are let go, the others kept."""
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]))
    s = world.served
    assert world.call("fchdir", 3) == ("continue", None)
    assert s.unsettled == {TID}
    world.call("access", os.fsencode(str(dst)), os.R_OK)
    assert s.unsettled == set()
    gone = []
    for _ in range(passthrough.UNSETTLED_MAX):
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        gone.append(child)
    s.unsettled = set(gone)
    s.moved_cwd(os.getpid())  # one more than is kept: the gone ones go
    assert s.unsettled == {os.getpid()}


def test_a_denied_path_fails_every_call_with_its_errno(files: tuple[Path, Path]) -> None:
    src, _ = files
    world = World(Policy([Deny(Pattern(str(src)), errno.ENOENT)]))
    path = os.fsencode(src)
    assert world.call("openat", abi.AT_FDCWD, path, os.O_RDONLY) == ("error", errno.ENOENT)
    # Legacy forms are decided as their *at forms.
    assert world.call("stat", path, 0x5000) == ("error", errno.ENOENT)
    assert world.call("unlink", path) == ("error", errno.ENOENT)
    assert world.call("rename", path, b"/x") == ("error", errno.ENOENT)
    assert src.exists()


def test_a_change_in_a_read_only_tree_is_refused_as_a_read_only_mount(
    files: tuple[Path, Path],
) -> None:
    src, _ = files
    world = World(Policy([ReadOnly(Pattern(str(src.parent), tree=True))]))
    # The file exists: unlink says EROFS; mkdir of it EEXIST (the lookup comes first).
    assert world.call("unlink", os.fsencode(src)) == ("error", errno.EROFS)
    assert world.call("mkdir", os.fsencode(src), 0o755) == ("error", errno.EEXIST)
    assert world.call("mkdirat", abi.AT_FDCWD, os.fsencode(src) + b"2", 0o755) == (
        "error",
        errno.EROFS,
    )
    assert src.exists() and not Path(f"{src}2").exists()


def test_a_path_call_is_performed_on_the_target(files: tuple[Path, Path]) -> None:
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))], mode="enforce"))
    assert world.call("chmod", os.fsencode(src), 0o600) == ("value", 0)
    assert dst.stat().st_mode & 0o777 == 0o600
    assert src.stat().st_mode & 0o777 != 0o600 or src.stat().st_ino == dst.stat().st_ino


def test_what_the_program_cannot_pass_fails_as_the_kernel_would() -> None:
    world = World(Policy([Deny(Pattern("/x"))]))
    # A path at an address it does not own: EFAULT, before any decision.
    assert world.call("openat", abi.AT_FDCWD, 0xDEAD, os.O_RDONLY) == ("error", errno.EFAULT)
    # A call that was never asked for: ENOSYS, fail closed.
    assert world.call("not-trapped") == ("error", errno.ENOSYS)


def test_a_crashing_decision_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(Policy([Deny(Pattern("/x"))]))

    def crash(*_: object) -> Fail:
        raise RuntimeError("injected")

    monkeypatch.setattr(world.dispatcher.decider, "decide", crash)
    assert world.call("openat", abi.AT_FDCWD, b"/y", os.O_RDONLY) == ("error", errno.EPERM)
    assert world.dispatcher.stats.internal_errors == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="taking on another uid needs root")
def test_work_for_another_user_is_performed_inline_as_that_user(
    files: tuple[Path, Path],
) -> None:
    """No hop to a worker thread for work that cannot block: the serving
    thread takes on the program's credentials for it (dispatch._work)."""
    src, dst = files
    world = World(Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))]))

    class Nobody(FakeCreds):
        def read(self, tid: int, /, *, need_umask: bool = True) -> Credentials:
            mine = super().read(tid, need_umask=need_umask)
            return Credentials(*(65534,) * 8, (), 0, 0, mine.umask)

    world.dispatcher.decider.creds = Nobody()
    before = list(world.listener.answers)
    groups_before = os.getgroups()
    caps_before = proc_status(threading.get_native_id())[b"CapEff"].strip()
    raw = [world.mem.put(os.fsencode(src)), os.O_RDONLY]
    notif = Notification(99, TID, BY_NAME["open"].nr, abi.AUDIT_ARCH_X86_64, (*raw, 0, 0, 0, 0))  # type: ignore[arg-type]
    jobs: list[Job] = []
    world.dispatcher.handle(world.served, notif, lambda s, p, job: jobs.append(job))
    assert jobs == []
    # Made as nobody, to whom pytest's temporary directories are closed
    # (as root, the open would have succeeded).
    assert world.listener.answers[len(before):] == [("error", errno.EACCES)]
    assert dst.parent.stat().st_mode & 0o005 == 0, "the test needs a directory nobody can't search"
    # And this thread is ourselves again: every id (real, effective, saved,
    # file system), the groups and the capabilities.
    after = proc_status(threading.get_native_id())
    assert after[b"Uid"].split() == [b"0"] * 4 and after[b"Gid"].split() == [b"0"] * 4
    assert os.getgroups() == groups_before
    assert after[b"CapEff"].strip() == caps_before


class _Counted(FakeCreds):
    """Runs as ``uid`` (None: as we do); counts how often credentials are read."""

    def __init__(self, uid: int | None) -> None:
        self.reads = 0
        self.uid = uid

    def read(self, tid: int, /, *, need_umask: bool = True) -> Credentials:
        self.reads += 1
        if self.uid is None:
            return super().read(tid, need_umask=need_umask)
        return Credentials(*(self.uid,) * 8, (), 0, 0, 0o022 if need_umask else -1)


class _Recording(FakeResolver):
    """Records the credentials each lookup was made with (None: ours)."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, int | None]] = []

    def resolve(self, tid: int, dirfd: int, path: bytes, /, **kw: Any) -> str:
        creds = kw.get("creds")
        self.lookups.append((os.fsdecode(path), None if creds is None else creds.euid))
        return super().resolve(tid, dirfd, path, **kw)


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
@pytest.mark.parametrize("call", ["openat", "newfstatat"])
@pytest.mark.parametrize(
    "who", ["same-as-privileged", "other-than-privileged", "under-unprivileged"]
)
def test_a_path_no_rule_governs_is_decided_on_a_lookup_as_the_program_would_make_it(
    files: tuple[Path, Path], mode: str, call: str, who: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Virtualize mode lets the kernel make a call no rule governs, as the program: decided
    on a lookup of ours where ours is the program's — its credentials are ours, or we hold
    no capability (then they are not even read). A privileged supervisor looks as the
    program otherwise: a lookup that succeeds as root where the program's would fail
    would let it time what lies beyond a directory it may not search. A path a rule takes
    is looked up as the program, and enforcing mode always acts as the program."""
    src, dst = files
    policy = Policy([Redirect(Pattern(str(src)), Pattern(str(dst)))], mode=mode)
    world = World(policy)
    creds = _Counted(None if who == "same-as-privileged" else 65534)
    resolver = _Recording()
    world.dispatcher.decider.creds, world.dispatcher.decider.resolver = creds, resolver
    privileged = who != "under-unprivileged"
    monkeypatch.setattr("unotifyd.serve.decide.supervisor_privileged", lambda: privileged)
    other = str(dst.parent / "elsewhere")
    # The full way passes the program's credentials (ours: no switch is made).
    as_program = 0 if who == "same-as-privileged" else 65534

    def make(path: str) -> None:
        raw = (abi.AT_FDCWD, world.mem.put(os.fsencode(path)), 0x1000, 0, 0, 0)
        nr = BY_NAME[call].nr
        notif = Notification(len(world.mem.strings), TID, nr, abi.AUDIT_ARCH_X86_64, raw)
        world.dispatcher.handle(world.served, notif, lambda s, p, job: None)

    make(other)
    if mode == "virtualize" and who == "under-unprivileged":
        assert (creds.reads, resolver.lookups) == (0, [(other, None)])
    elif mode == "virtualize" and who == "same-as-privileged":
        assert (creds.reads, resolver.lookups) == (1, [(other, None)])
    else:
        assert creds.reads == 1 and resolver.lookups == [(other, as_program)]
    if mode == "virtualize":
        assert world.listener.answers[-1] == ("continue", None)
    resolver.lookups.clear()
    reads = creds.reads
    make(str(src))
    assert creds.reads == reads + 1
    assert resolver.lookups[-1] == (str(src), as_program)  # the one the decision rests on
