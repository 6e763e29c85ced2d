"""A redirect runs the program's thread on the supervisor's CPU for an instant only.

unotifyd narrows the trapped thread's CPU affinity while the kernel installs
an injected fd (unotifyd/kernel/sched.py). The program must find its
affinity as it left it, and a program restricted to one CPU stays there.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ..reliability.support import SERVING, lane_answered, serving_env
from .conftest import Files
from .helpers import REDIRECTED, describe, py, run_launch

pytestmark = pytest.mark.kernel

PROGRAM = """
import os, sys
before = os.sched_getaffinity(0)
contents = set()
for _ in range(300):
    with open(sys.argv[1]) as f:
        contents.add(f.read())
    assert os.sched_getaffinity(0) == before, (before, os.sched_getaffinity(0))
print(sorted(before), sorted(contents))
"""


def _served_by(serving: str, proc: subprocess.CompletedProcess[str]) -> None:
    """Python alone injects, or (as root) mostly the pass-through lane, which
    makes the opens of an exact redirect itself and pins as Python does."""
    by_lane = lane_answered(proc.stderr)
    if serving == "python":
        assert by_lane == 0, proc.stderr
    elif os.geteuid() == 0:
        assert by_lane > 200, proc.stderr


@pytest.mark.parametrize("serving", SERVING)
def test_affinity_is_as_the_program_left_it(files: Files, serving: str) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    proc = run_launch(
        "--stats", "--redirect", files.redirect, argv=py(PROGRAM, str(files.src)),
        env=serving_env(serving),
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{cpus} {[REDIRECTED]}\n", describe(proc)
    _served_by(serving, proc)


@pytest.mark.parametrize("serving", SERVING)
def test_a_program_bound_to_one_cpu_stays_on_it(files: Files, serving: str) -> None:
    cpu = max(os.sched_getaffinity(0))
    proc = run_launch(
        "--stats", "--redirect", files.redirect,
        argv=["taskset", "-c", str(cpu), *py(PROGRAM, str(files.src))], env=serving_env(serving),
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{[cpu]} {[REDIRECTED]}\n", describe(proc)
    _served_by(serving, proc)


def test_no_colocate_leaves_affinity_alone(files: Files) -> None:
    proc = run_launch(
        "--no-colocate", "--redirect", files.redirect, argv=py(PROGRAM, str(files.src))
    )
    assert proc.returncode == 0, describe(proc)


# After its opens, the affinity of each of the supervisor's threads (the
# program's parent): the threads that injected fds narrowed theirs to one
# CPU for each, and must have given it back.
SUPERVISOR = """
import os, sys
for _ in range(300):
    with open(sys.argv[1]) as f:
        f.read()
masks = set()
for tid in os.listdir(f"/proc/{os.getppid()}/task"):
    try:
        masks.add(tuple(sorted(os.sched_getaffinity(int(tid)))))
    except OSError:
        pass  # a thread that ended meanwhile
print(sorted(masks))
"""


@pytest.mark.parametrize("mode", ["redirect", "enforce"])
@pytest.mark.parametrize("serving", SERVING)
def test_the_supervisor_gets_its_own_affinity_back(files: Files, serving: str, mode: str) -> None:
    """Redirected (virtualizing mode), or any file opened under --enforce:
    an fd injected each time, by the lane or by Python."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    opened, flags = (files.src, ()) if mode == "redirect" else (files.target, ("--enforce",))
    proc = run_launch(
        "--stats", *flags, "--redirect", files.redirect, argv=py(SUPERVISOR, str(opened)),
        env=serving_env(serving),
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{[cpus]}\n", describe(proc)
    _served_by(serving, proc)
