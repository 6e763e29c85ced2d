"""Lanes: each client's programs served in a thread (and trio loop) of their own."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from unotifyd.daemon import lanes as lanes_mod
from unotifyd.daemon.lanes import Lanes
from unotifyd.serve.trace import Tracer
from unotifyd.serve.trioserve import TrioServer


async def _thread_of(lanes: Lanes, key: object) -> int:
    seen: list[int] = []

    async def serve(sup: TrioServer) -> None:
        seen.append(threading.get_ident())
        await trio.sleep(0)

    await lanes.run(key, serve)
    return seen[0]


async def test_each_client_has_its_own_thread_and_keeps_it() -> None:
    lanes = Lanes(Tracer())
    try:
        a1 = await _thread_of(lanes, 1000)
        b = await _thread_of(lanes, 1001)
        a2 = await _thread_of(lanes, 1000)
        assert a1 == a2
        assert len({a1, b, threading.get_ident()}) == 3
    finally:
        lanes.stop()


async def test_a_stalled_lane_does_not_stall_another() -> None:
    """A lane stuck in a blocking call (as one waiting on a lease or a
    userfaultfd page would be) leaves the others serving."""
    lanes = Lanes(Tracer())
    release = threading.Event()

    async def stuck(sup: TrioServer) -> None:
        release.wait(30)  # blocks the lane's whole trio loop, on purpose

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lanes.run, "attacker", stuck)
            await trio.sleep(0.05)
            with trio.fail_after(5):
                await _thread_of(lanes, "victim")
            release.set()
    finally:
        release.set()
        lanes.stop()


async def test_cancelling_the_caller_cancels_the_lanes_task_and_waits_for_it() -> None:
    lanes = Lanes(Tracer())
    ended = threading.Event()

    async def forever(sup: TrioServer) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    try:
        with trio.move_on_after(0.1):
            await lanes.run(7, forever)
        # Returned only once the lane's task was over.
        assert ended.is_set()
    finally:
        lanes.stop()


async def test_an_error_in_the_lane_reaches_the_caller() -> None:
    lanes = Lanes(Tracer())

    async def broken(sup: TrioServer) -> None:
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await lanes.run(7, broken)
        # The lane survives its task's failure.
        await _thread_of(lanes, 7)
    finally:
        lanes.stop()


async def test_an_idle_lane_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes_mod, "LINGER", 0.05)
    lanes = Lanes(Tracer())
    try:
        await _thread_of(lanes, 7)
        assert len(lanes) == 1
        deadline = time.monotonic() + 5
        while len(lanes) and time.monotonic() < deadline:
            await trio.sleep(0.02)
        assert len(lanes) == 0
        await _thread_of(lanes, 7)  # a new one when needed
    finally:
        lanes.stop()
