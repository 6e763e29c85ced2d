"""The vfork parent's memory is given back only while it still holds the name we wrote."""

from __future__ import annotations

import ctypes
import os

from unotifyd.serve.rewrite import _Restorer


def _gone_pid() -> int:
    """A pid of a process that has exited (kcmp on it fails: the child 'is gone')."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _restore(buf: ctypes.Array[ctypes.c_char], old: bytes, new: bytes) -> None:
    # This process stands for the vfork parent: its memory is the one restored.
    r = _Restorer(_gone_pid(), os.getpid(), ctypes.addressof(buf), old, new)
    r.start()
    r.join(10)


def test_the_old_bytes_come_back_over_our_name() -> None:
    buf = ctypes.create_string_buffer(b"/usr/bin/printf\0", 32)
    _restore(buf, b"/tmp/tools/prin\0", b"/usr/bin/printf\0")
    assert buf.raw[:16] == b"/tmp/tools/prin\0"


def test_memory_the_parent_reused_is_left_alone() -> None:
    """Late (the parent ran on and built other words there): writing the old
    bytes would corrupt them, as it did an ``env PATH=DIR printf``'s argv."""
    buf = ctypes.create_string_buffer(b"PATH=/x\0printf\0\0", 32)
    _restore(buf, b"/tmp/tools/prin\0", b"/usr/bin/printf\0")
    assert buf.raw[:16] == b"PATH=/x\0printf\0\0"
