"""The vfork parent's memory is given back only while it still holds the name we wrote:
by ``pt_restore`` in C where it is built, else by Python; each test runs both ways."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from unotifyd.kernel import passthrough, program
from unotifyd.serve import rewrite
from unotifyd.serve.rewrite import _Restorer


@pytest.fixture(params=["compiled", "python"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    looked: list[int] = []

    def shares_memory(tid: int, other: int) -> bool:
        looked.append(tid)
        return program.shares_memory(tid, other)

    monkeypatch.setattr("unotifyd.serve.rewrite.shares_memory", shares_memory)
    if request.param == "compiled":
        lib = passthrough._built()
        if lib is None or not hasattr(lib, "pt_restore"):
            # tests/run installs gcc, and the install builds the library.
            pytest.fail("the compiled library is not built, or is older than passthrough.c "
                        "(python setup.py build_ext --inplace)")  # fmt: skip
    else:
        monkeypatch.setattr(rewrite, "restore_after_exec", lambda *a, **k: None)
    yield request.param
    # The control: each way ran, not the other.
    assert bool(looked) == (request.param == "python")


def _gone_pid() -> int:
    """A pid of a process that has exited (kcmp on it fails: the child 'is gone')."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _restore(buf: ctypes.Array[ctypes.c_char], old: bytes, new: bytes, child: int) -> None:
    # This process stands for the vfork parent: its memory is the one restored.
    r = _Restorer(child, os.getpid(), ctypes.addressof(buf), old, new)
    r.start()
    r.join(10)
    assert not r.is_alive()


def test_the_old_bytes_come_back_over_our_name(way: str) -> None:
    buf = ctypes.create_string_buffer(b"/usr/bin/printf\0", 32)
    _restore(buf, b"/tmp/tools/prin\0", b"/usr/bin/printf\0", _gone_pid())
    assert buf.raw[:16] == b"/tmp/tools/prin\0"


def test_memory_the_parent_reused_is_left_alone(way: str) -> None:
    """Late (the parent ran on and built other words there): writing the old
    bytes would corrupt them, as it did an ``env PATH=DIR printf``'s argv."""
    buf = ctypes.create_string_buffer(b"PATH=/x\0printf\0\0", 32)
    _restore(buf, b"/tmp/tools/prin\0", b"/usr/bin/printf\0", _gone_pid())
    assert buf.raw[:16] == b"PATH=/x\0printf\0\0"


def test_nothing_is_written_while_the_child_shares_the_memory(
    way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own thread stands for a child still in its exec (kcmp says one
    address space): the bytes stay ours until it gives up waiting."""
    monkeypatch.setattr(_Restorer, "_GIVE_UP_S", 0.3)
    buf = ctypes.create_string_buffer(b"/usr/bin/printf\0", 32)
    r = _Restorer(os.getpid(), os.getpid(), ctypes.addressof(buf), b"/tmp/tools/prin\0",
                  b"/usr/bin/printf\0")  # fmt: skip
    r.start()
    r.join(0.1)
    assert r.is_alive() and buf.raw[:16] == b"/usr/bin/printf\0"
    r.join(10)
    # A child that failed its exec and runs on in the parent's memory: the
    # parent gets its bytes back all the same.
    assert buf.raw[:16] == b"/tmp/tools/prin\0"


def test_a_build_older_than_the_restore_keeps_its_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-place build left from before ``pt_restore`` (the .so is not in
    git): the lane still loads, and restores are Python's."""

    class OldBuild:
        pt_run = object()

    monkeypatch.delenv("UNOTIFYD_PASSTHROUGH", raising=False)
    monkeypatch.setattr(passthrough, "_LIB", [OldBuild()])
    assert passthrough.library() is not None
    assert passthrough.restore_after_exec(
        1, 1, mem=-1, addr=0, old=b"a\0", new=b"b\0", timeout_s=0.1
    ) is None
