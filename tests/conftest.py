"""Shared test fixtures, and the rule that real-kernel tests must run.

Tests marked ``kernel`` need seccomp user notification. They may skip only
when the running kernel lacks it, with a reason that names the missing
feature. If the kernel has it and a ``kernel`` test skipped anyway (a bad
skip condition, a missing tool), the session fails: CI must never go green
on tests that did not run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from unotifyd.kernel.errors import Unsupported
from unotifyd.kernel.filter import check_support

from .reliability.support import Procs


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Start processes through this; every one of them is killed at teardown."""
    p = Procs()
    try:
        yield p
    finally:
        p.kill_all()


def _kernel_support() -> str | None:
    """None if user notification works here, else the missing feature."""
    try:
        check_support()
    except Unsupported as e:
        return str(e)
    return None


KERNEL_MISSING = _kernel_support()
_skipped_kernel_tests: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if KERNEL_MISSING is None:
        return
    skip = pytest.mark.skip(reason=f"kernel feature missing: {KERNEL_MISSING}")
    for item in items:
        if item.get_closest_marker("kernel"):
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # An expected failure (xfail) reports as skipped too; it did run.
    if report.skipped and "kernel" in report.keywords and not hasattr(report, "wasxfail"):
        _skipped_kernel_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if KERNEL_MISSING is None and _skipped_kernel_tests:
        print(
            f"\nERROR: seccomp user notification is available but {len(_skipped_kernel_tests)} "
            "kernel test(s) skipped:\n  " + "\n  ".join(_skipped_kernel_tests)
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
