"""A lane's last forwarded calls are served even when it ends as we stop waiting.

``Lane.finish`` waits for the lane's last word in slices; a lane can
forward a call, say "stopped" and end between the end of one slice and the
look at its thread (audit helper-25). What it sent must still be served:
a call it received from the kernel is answered by nobody else.
"""

from __future__ import annotations

import socket
import types

from unotifyd.kernel import abi, passthrough
from unotifyd.kernel.listener import Notification


def test_what_an_ended_lane_left_is_served_before_its_end() -> None:
    lane = passthrough.Lane(types.SimpleNamespace(pt_run=None), -1, passthrough.Config())  # type: ignore[arg-type]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        notif = bytearray(abi.NOTIF_STRUCT.size)
        notif[0:8] = (42).to_bytes(8, "little")  # the id
        theirs.send(bytes(notif))
        theirs.send(b"S")
        served: list[Notification] = []
        lane._drain(ours, served.append)
        assert [n.id for n in served] == [42]
        assert lane.ended == "stopped"
        # And one that said nothing is "failed", after what it sent.
        lane.ended = None
        theirs.send(bytes(notif))
        lane._drain(ours, served.append)
        assert len(served) == 2 and lane.ended == "failed"
    finally:
        ours.close()
        theirs.close()


def test_finish_serves_what_came_as_the_thread_ended() -> None:
    """The race itself, made certain: finish()'s wait for a word times out,
    and the lane forwards a call and ends just before finish() looks at its
    thread (here: while it looks)."""
    lane = passthrough.Lane(types.SimpleNamespace(pt_run=None), -1, passthrough.Config())  # type: ignore[arg-type]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    notif = bytearray(abi.NOTIF_STRUCT.size)
    notif[0:8] = (7).to_bytes(8, "little")

    class EndsAsLookedAt:
        def is_alive(self) -> bool:
            theirs.send(bytes(notif))
            theirs.send(b"S")
            return False

        def join(self) -> None:
            pass

    lane._ours, lane._theirs = ours, theirs
    lane._thread = EndsAsLookedAt()  # type: ignore[assignment]
    assert passthrough._SLOTS.acquire(blocking=False)  # finish() gives its slot back
    served: list[Notification] = []
    assert lane.finish(served.append) == "stopped"
    assert [n.id for n in served] == [7]


def test_finish_says_failed_of_a_lane_that_ended_without_a_word() -> None:
    """The same look at a dead thread that sent nothing: "failed", and the
    lane's slot and socket given back (a TimeoutError escaped here once)."""
    lane = passthrough.Lane(types.SimpleNamespace(pt_run=None), -1, passthrough.Config())  # type: ignore[arg-type]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    class Dead:
        def is_alive(self) -> bool:
            return False

        def join(self) -> None:
            pass

    lane._ours, lane._theirs = ours, theirs
    lane._thread = Dead()  # type: ignore[assignment]
    assert passthrough._SLOTS.acquire(blocking=False)
    assert lane.finish(lambda n: None) == "failed"
    assert ours.fileno() == -1 and lane._thread is None
    # Its slot came back: all MAX_LANES can be taken again.
    taken = [passthrough._SLOTS.acquire(blocking=False) for _ in range(passthrough.MAX_LANES)]
    for ok in taken:
        if ok:
            passthrough._SLOTS.release()
    assert all(taken)
