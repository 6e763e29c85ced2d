"""Fixtures of the reliability suite: process cleanup, builds, printed figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Report, collected_results, public_dir


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report("name", k=v, ...)`` prints a ``RESULT`` line with the test's figures."""
    return Report(request.config)


@pytest.fixture(scope="session")
def bin_dir() -> Iterator[Path]:
    """Where the test programs are built: world-readable, so `nobody` may run them."""
    with public_dir("unotifyd-rel-bin-") as d:
        yield d


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = collected_results(terminalreporter.config)
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
