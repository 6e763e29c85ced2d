"""Fixtures of the security suite: the attack program, scratch space, a root
process to attack, and the ``RESULT`` lines printed at the end of the run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..integration.helpers import importable_copy, public_dir
from .support import Lab, Report, build_c, collected_results


@pytest.fixture(scope="session")
def public() -> Iterator[Path]:
    """A session directory any user may enter: programs and workspaces live here."""
    with public_dir("unotifyd-sec-") as d:
        yield d


@pytest.fixture(scope="session")
def attack_bin(public: Path) -> Path:
    """``progs/attack.c``, built once, executable by nobody."""
    return build_c(public, "attack")


@pytest.fixture(scope="session")
def site(public: Path) -> Path:
    """unotifyd where any uid may run it with the system Python (see ``importable_copy``)."""
    return importable_copy(public / "site")


@pytest.fixture(scope="session")
def sleeper() -> Iterator[int]:
    """The pid of a root process with root's capabilities (a ``sleep``), whose
    ``/proc/PID`` files only a process with the same or more capabilities may read."""
    proc = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report("name", k=v, ...)`` prints a ``RESULT`` line with the test's figures."""
    return Report(request.config)


@pytest.fixture
def lab(attack_bin: Path, public: Path, sleeper: int, report: Report) -> Lab:
    scratch = public / "scratch"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return Lab(attack_bin, scratch, sleeper, report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = collected_results(terminalreporter.config)
    if lines:
        terminalreporter.section("security figures")
        for line in lines:
            terminalreporter.write_line(line)
