"""A redirect runs the program's thread on the supervisor's CPU for an instant only.

unotifyd narrows the trapped thread's CPU affinity while the kernel installs
an injected fd (unotifyd/kernel/sched.py). The program must find its
affinity as it left it, and a program restricted to one CPU stays there.
"""

from __future__ import annotations

import os

import pytest

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


def test_affinity_is_as_the_program_left_it(files: Files) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    proc = run_launch("--redirect", files.redirect, argv=py(PROGRAM, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{cpus} {[REDIRECTED]}\n", describe(proc)


def test_a_program_bound_to_one_cpu_stays_on_it(files: Files) -> None:
    cpu = max(os.sched_getaffinity(0))
    proc = run_launch(
        "--redirect", files.redirect, argv=["taskset", "-c", str(cpu), *py(PROGRAM, str(files.src))]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{[cpu]} {[REDIRECTED]}\n", describe(proc)


def test_no_colocate_leaves_affinity_alone(files: Files) -> None:
    proc = run_launch(
        "--no-colocate", "--redirect", files.redirect, argv=py(PROGRAM, str(files.src))
    )
    assert proc.returncode == 0, describe(proc)
