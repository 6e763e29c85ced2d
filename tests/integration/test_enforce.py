"""``--enforce``: every trapped open is performed by the supervisor, as the program."""

from __future__ import annotations

import pytest

from .conftest import Files
from .helpers import REDIRECTED, describe, run_launch

pytestmark = pytest.mark.kernel


def test_programs_work_as_usual_under_enforce(files: Files) -> None:
    script = (
        f"cat {files.src}; cat < /etc/hostname > /dev/null && echo hostname-ok; "
        "echo piped | cat /dev/stdin; ls /proc/self/fd > /dev/null && echo proc-ok"
    )
    proc = run_launch("--enforce", "--redirect", files.redirect, argv=["sh", "-c", script])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"{REDIRECTED}hostname-ok\npiped\nproc-ok\n", describe(proc)


def test_enforce_is_said_in_the_trace(files: Files) -> None:
    proc = run_launch("--enforce", "--trace", "--redirect", files.redirect, argv=["true"])
    assert proc.returncode == 0, describe(proc)
    assert "unotifyd: mode enforce" in proc.stderr
    assert "enforce: no rule" in proc.stderr  # ld.so's opens, emulated too


def test_enforce_opens_as_the_program_not_as_root(files: Files) -> None:
    # Everything is opened by the (root) supervisor, with the program's
    # credentials: nobody still cannot read /etc/shadow.
    proc = run_launch(
        "--enforce", "--redirect", files.redirect,
        argv=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "sh", "-c", "cat /etc/shadow; echo rc=$?"],
    )  # fmt: skip
    assert proc.stdout.strip().endswith("rc=1"), describe(proc)
    assert "Permission denied" in proc.stderr, describe(proc)
