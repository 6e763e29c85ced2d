"""A program that changes its root: the rules follow it there, although roots are kept.

The supervisor looks a listener's root directory up once and keeps it
(``Served.root_pinned``), because every call that could change it is either
refused by the filter (enforcing mode) or trapped so that it is seen
(``chroot``, ``pivot_root``, ``setns``: the "root" family). Rule paths are
matched in the program's own root, so a rule about ``/data/secret`` takes the
file of that name inside the new root once the program has gone there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import describe, py, run_launch, run_native, write

pytestmark = pytest.mark.kernel

CHROOT_THEN_OPEN = """
import errno, os, sys
def attempt(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return errno.errorcode[e.errno]
print(attempt(sys.argv[2]))
try:
    os.chroot(sys.argv[1])
    os.chdir("/")
except OSError as e:
    print("chroot:", errno.errorcode[e.errno])
    sys.exit(0)
print(attempt("/data/secret"))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(2) needs CAP_SYS_CHROOT")
@pytest.mark.parametrize("view", ["full", "opens"])
def test_rules_follow_the_program_into_its_new_root(tmp_path: Path, view: str) -> None:
    newroot = tmp_path / "newroot"
    # /data/secret is a link in the new root, named by no rule; where it leads is.
    write(newroot / "data" / "real", "inside the new root\n")
    (newroot / "data" / "secret").symlink_to("/data/real")
    target = write(tmp_path / "target", "the redirect's target\n")
    before = write(tmp_path / "before", "read before the chroot\n")
    argv = py(CHROOT_THEN_OPEN, str(newroot), str(before))
    # The control: chroot works here, and the new root's own file is what opens.
    native = run_native(argv)
    assert native.stdout.splitlines() == ["read before the chroot", "inside the new root"], (
        describe(native)
    )
    proc = run_launch("--view", view, "--redirect", f"/data/real={target}", argv=argv)
    assert proc.returncode == 0, describe(proc)
    # Before: a trapped open, which looks the root up; after: the link, followed in the
    # new root to the rule's path. A root kept past the chroot would look the link up
    # on the host's disk, where it is missing: no rule, and the kernel would open it.
    assert proc.stdout.splitlines() == ["read before the chroot", "the redirect's target"], (
        describe(proc)
    )


def test_enforcing_mode_refuses_chroot(tmp_path: Path) -> None:
    """Where the filter refuses every call that changes a root, none is trapped."""
    newroot = tmp_path / "newroot"
    write(newroot / "data" / "secret", "inside the new root\n")
    before = write(tmp_path / "before", "read before the chroot\n")
    proc = run_launch(
        "--enforce", "--stats", "--redirect", "/data/secret=/etc/hostname",
        argv=py(CHROOT_THEN_OPEN, str(newroot), str(before)),
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["read before the chroot", "chroot: EPERM"], describe(proc)
    traps = next(line for line in proc.stderr.splitlines() if "filter traps" in line)
    assert "chroot" not in traps and "pivot_root" not in traps and "setns" not in traps
