"""Acting with a program's whole credentials: on this test process's own threads.

The switch must change the calling thread only, leave it no effective
capability the program lacks, and give everything back afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from unotifyd.kernel import creds as kcreds
from unotifyd.kernel.creds import (
    CredentialError,
    CredentialReader,
    Credentials,
    acting_as,
    as_ourselves,
    read_credentials,
)
from unotifyd.kernel.errors import ProgramGone
from unotifyd.kernel.rawsys import syscall
from unotifyd.record import replace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching credentials needs root")

T = TypeVar("T")
NOBODY = 65534
CAP_SETFCAP = 31
ALL_CAPS = (1 << 41) - 1


def _nobody() -> Credentials:
    return Credentials(
        NOBODY, NOBODY, NOBODY, NOBODY, NOBODY, NOBODY, NOBODY, NOBODY, (), 0, 0, 0o022
    )


def _thread_state() -> State:
    eff, _, _ = kcreds._Caps().get(0)
    return os.getresuid(), os.getresgid(), sorted(os.getgroups()), eff


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread (as trio's worker threads are) and return its result."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


State = tuple[tuple[int, int, int], tuple[int, int, int], list[int], int]


def test_this_thread_reads_as_the_supervisor() -> None:
    full = read_credentials(threading.get_native_id())
    assert (full.fsuid, full.fsgid) == (os.geteuid(), os.getegid())
    assert full.umask == os.umask(full.umask)
    assert full.same_as_supervisor()
    quick = CredentialReader().read(threading.get_native_id(), need_umask=False)
    assert quick.same_as_supervisor()
    assert quick.umask == -1  # not read: creating with it is refused (opener.open_as)


def test_acting_as_nobody_takes_every_id_and_drops_every_capability() -> None:
    before = _thread_state()

    def body() -> tuple[State, tuple[int, int]]:
        with acting_as(_nobody()):
            return _thread_state(), fsids()

    def fsids() -> tuple[int, int]:
        # setfsuid(2)/setfsgid(2) with an invalid id change nothing and return the current one.
        return syscall(122, 0xFFFFFFFF), syscall(123, 0xFFFFFFFF)

    inside, fs = _in_thread(body)
    # The other threads (this test's main thread) are untouched. The real
    # and saved uid stay ours: they decide who may signal the thread.
    r, _, s = os.getresuid()
    assert inside == ((r, NOBODY, s), (NOBODY,) * 3, [], 0)
    assert fs == (NOBODY, NOBODY)
    assert _thread_state() == before


def test_the_thread_gets_its_own_credentials_back() -> None:
    def body() -> tuple[State, State]:
        before = _thread_state()
        with acting_as(_nobody()):
            pass
        return before, _thread_state()

    before, after = _in_thread(body)
    assert before == after


def test_root_without_capabilities_is_not_the_supervisor() -> None:
    # fsuid 0 with no capabilities: the case the old fsuid-only switch served inline.
    capless_root = Credentials(0, 0, 0, 0, 0, 0, 0, 0, (), 0, 0, 0o022)
    assert not capless_root.same_as_supervisor()

    def body() -> int:
        with acting_as(capless_root):
            try:
                os.chown("/", 1, 1)
            except OSError as e:
                return e.errno or 0
        return 0

    assert _in_thread(body) == errno.EPERM


def test_only_the_programs_capabilities_are_effective() -> None:
    # A root program that kept CAP_SETFCAP only.
    keeps = Credentials(0, 0, 0, 0, 0, 0, 0, 0, (), 1 << CAP_SETFCAP, 1 << CAP_SETFCAP, 0)

    def body() -> tuple[int, int, int]:
        with acting_as(keeps):
            return kcreds._Caps().get(0)

    eff, prm, _ = _in_thread(body)
    assert eff == 1 << CAP_SETFCAP
    assert prm == kcreds._SUPERVISOR.cap_prm  # kept, only to switch back


def test_as_ourselves_inside_acting_as() -> None:
    def body() -> tuple[State, State]:
        with acting_as(_nobody()):
            with as_ourselves():
                mid = _thread_state()
            after = _thread_state()
        return mid, after

    mid, after = _in_thread(body)
    assert mid[0] == os.getresuid() and mid[3] == kcreds._SUPERVISOR.cap_eff
    assert after[1:] == ((NOBODY,) * 3, [], 0) and after[0][1] == NOBODY


def test_nesting_for_someone_else_is_refused() -> None:
    other = replace(_nobody(), fsuid=1, euid=1, ruid=1, suid=1)

    def body() -> State:
        with acting_as(_nobody()):
            with pytest.raises(CredentialError), acting_as(other):
                pass
            with acting_as(_nobody()):  # the same: a no-op
                inner = _thread_state()
        return inner

    inner = _in_thread(body)
    assert inner[1:] == ((NOBODY,) * 3, [], 0) and inner[0][1] == NOBODY


def test_a_program_cannot_signal_a_thread_acting_for_it() -> None:
    """kill_ok_by_cred() (kernel/signal.c) compares the sender's uids with the
    target thread's real and saved uid: those must stay ours while acting."""
    acting = threading.Event()
    leave = threading.Event()
    tids: list[int] = []

    def body() -> None:
        with acting_as(_nobody()):
            tids.append(threading.get_native_id())
            acting.set()
            leave.wait(30)

    t = threading.Thread(target=body)
    t.start()
    try:
        assert acting.wait(30)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child: becomes nobody and signals
            code = 3
            try:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                # Signal 0 checks the permission only (kill(2)).
                syscall(234, os.getppid(), tids[0], 0)  # tgkill
                code = 0
            except OSError as e:
                code = 1 if e.errno == errno.EPERM else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1  # EPERM
    finally:
        leave.set()
        t.join()


def test_access_checks_with_real_ids_and_capabilities() -> None:
    c = Credentials(1000, 0, 0, 0, 1000, 0, 0, 0, (), ALL_CAPS, ALL_CAPS, 0)
    r = c.real()
    assert (r.fsuid, r.fsgid, r.cap_eff) == (1000, 1000, 0)  # access_override_creds()
    root = replace(c, ruid=0, cap_eff=0).real()
    assert root.cap_eff == ALL_CAPS  # real root: the permitted set


def test_a_program_in_another_user_namespace_gets_no_capabilities() -> None:
    # A child that unshares its user namespace holds every capability there.
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.unshare(0x10000000) == 0  # CLONE_NEWUSER
            os.write(ready_w, b"ok" if ok else errno.errorcode[ctypes.get_errno()].encode())
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        got = os.read(ready_r, 16)
        if got != b"ok":
            # A chroot (unshare(2): EPERM "the caller is in a chroot
            # environment"), or user.max_user_namespaces=0 (ENOSPC).
            pytest.skip(f"user namespaces unavailable here: unshare(CLONE_NEWUSER) {got.decode()}")
        for seen in (read_credentials(pid), CredentialReader().read(pid, need_umask=False)):
            assert (seen.cap_eff, seen.cap_prm) == (0, 0)
            assert not seen.same_as_supervisor()
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)


def test_the_reader_keeps_pidfds_of_threads_and_drops_those_that_are_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pidfd refers to a thread, not to a number: once the thread is gone, the one
    kept answers ESRCH and the reader looks the tid up afresh (it may be another's now).
    It keeps a bounded number: the oldest goes first."""
    monkeypatch.setattr(kcreds, "_PIDFDS_KEPT", 1)
    reader = CredentialReader()
    try:
        me = threading.get_native_id()
        reader.read(me, need_umask=False)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only waits to be killed
            signal.pause()
            os._exit(0)
        try:
            first = reader.read(pid, need_umask=False)
            assert list(reader._pidfds) == [pid]  # ours went: one is kept
            again = reader.read(pid, need_umask=False)
            assert again == first and list(reader._pidfds) == [pid]
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        with pytest.raises(ProgramGone):
            reader.read(pid, need_umask=False)
        assert pid not in reader._pidfds
    finally:
        reader.close()
    assert reader._pidfds == {}


def test_our_groups_stand_for_a_thread_only_where_they_lend_it_nothing() -> None:
    """Acting with our groups for a thread of our ids and capabilities is
    acting as it could, and no more, only if our groups never count (every
    DAC-overriding capability, in the initial user namespace) or are its
    own: fewer would lend it one, and so would more, where a group is
    refused what others may do (a 0604 file of that group)."""
    ids = (1000,) * 4 + (1000,) * 4
    weak = kcreds._Ours(ids, frozenset({5, 6}), 0, 0, 0, kcreds._INITIAL_USERNS)

    def thread(*groups: int, caps: int = 0) -> Credentials:
        return Credentials(*ids, groups, caps, caps, -1)

    assert weak.covers(thread(6, 5))
    for other in (thread(5, 6, 7), thread(5), thread()):
        assert not weak.covers(other)
    dac = kcreds._DAC_CAPS
    strong = kcreds._Ours(ids, frozenset({5}), dac, dac, 0, kcreds._INITIAL_USERNS)
    assert strong.groups_never_count and strong.covers(thread(caps=dac))
    # In another user namespace, files it does not map are checked by group.
    nested = kcreds._Ours(ids, frozenset({5}), dac, dac, 0, "user:[4026532000]")
    assert not nested.groups_never_count and not nested.covers(thread(caps=dac))
