"""When Python tries a pass-through lane again (serve/passthrough.py, lane_due).

After Python has answered START_AFTER calls; after a lane that let almost
nothing through ("fruitless"), after AFTER_FRUITLESS, doubled for each such
run in a row up to a bound, and never once a lane failed.
"""

from __future__ import annotations

import types

import pytest

from unotifyd.serve.passthrough import (
    AFTER_FRUITLESS,
    FRUITLESS_MAX,
    START_AFTER,
    lane_due,
)


@pytest.mark.parametrize(
    ("fruitless", "due_after"),
    [
        (0, START_AFTER),
        (1, AFTER_FRUITLESS),
        (2, 2 * AFTER_FRUITLESS),
        (3, 4 * AFTER_FRUITLESS),
        (FRUITLESS_MAX + 1, AFTER_FRUITLESS << FRUITLESS_MAX),
        (FRUITLESS_MAX + 50, AFTER_FRUITLESS << FRUITLESS_MAX),
    ],
)
def test_a_lane_is_tried_again_ever_later_after_fruitless_runs(
    fruitless: int, due_after: int
) -> None:
    def due(served: int, refused: bool = False) -> bool:
        s = types.SimpleNamespace(
            lane_refused=refused, lane_fruitless=fruitless, python_served=served
        )
        return lane_due(s)  # type: ignore[arg-type]

    assert not due(due_after - 1)
    assert due(due_after)
    assert not due(due_after, refused=True)


def test_no_lane_is_due_before_python_answered_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with START_AFTER lowered to 0: a lane that cannot start resets
    the count to 0, and a try due at 0 would spin the serving loop."""
    monkeypatch.setattr("unotifyd.serve.passthrough.START_AFTER", 0)
    s = types.SimpleNamespace(lane_refused=False, lane_fruitless=0, python_served=0)
    assert not lane_due(s)  # type: ignore[arg-type]
    s.python_served = 1
    assert lane_due(s)  # type: ignore[arg-type]
