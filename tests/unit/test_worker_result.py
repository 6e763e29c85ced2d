"""WorkerResult: what a worker thread returns after its call was abandoned is disposed of once."""

from __future__ import annotations

import os

from unotifyd.calls.ops import Outcome
from unotifyd.serve.handoff import WorkerResult


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_late_fd_of_an_abandoned_open_is_closed() -> None:
    fd = os.dup(2)
    h = WorkerResult()
    assert h.abandon()  # abandoned before the thread is done
    assert h.run(lambda: fd) is None
    assert not _is_open(fd)


def test_a_path_calls_result_is_never_taken_for_an_fd() -> None:
    """truncate() returns 0, readlink() a length: closing those closed the
    daemon's stdin, or worse, an unrelated fd of ours (a program's listener).
    A path call's result is an Outcome, never an int, so it cannot be taken
    for one."""
    fd = os.dup(2)
    try:
        h = WorkerResult()
        assert h.run(lambda: Outcome(fd)) == Outcome(fd)
        assert not h.abandon()  # done already: nothing to dispose of but the result
        assert _is_open(fd)
        h = WorkerResult()
        h.abandon()
        assert h.run(lambda: Outcome(fd)) is None
        assert _is_open(fd)
    finally:
        os.close(fd)
