"""Helpers for the real-kernel integration tests.

Every test drives ``python -m unotifyd launch`` as a black box, exactly as a
user would, with a timeout on every run so that a supervisor that stalls
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The repository root: ``python -m unotifyd`` must import the working tree.
REPO = Path(__file__).resolve().parents[2]

#: Seconds any single launch may take before the test fails. Every program the
#: tests run finishes in well under a second when the supervisor works.
TIMEOUT = 20.0

#: What a redirect target contains, so that the output proves which file was opened.
REDIRECTED = "REDIRECTED\n"
ORIGINAL = "ORIGINAL\n"


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a launch: the working tree first on ``PYTHONPATH``."""
    e = dict(os.environ)
    old = e.get("PYTHONPATH")
    e["PYTHONPATH"] = str(REPO) if not old else f"{REPO}{os.pathsep}{old}"
    # The programs print with Python: keep their output unbuffered-free of surprises.
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    e["LC_ALL"] = "C"
    if extra:
        e.update(extra)
    return e


def launch_cmd(*opts: str, argv: Sequence[str]) -> list[str]:
    """The command line of ``unotifyd launch OPTS -- ARGV``."""
    return [sys.executable, "-m", "unotifyd", "launch", *opts, "--", *argv]


def run_launch(
    *opts: str,
    argv: Sequence[str],
    timeout: float = TIMEOUT,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``unotifyd launch OPTS -- ARGV`` to completion and capture its output.

    Standard input is ``/dev/null`` and no fd beyond 0-2 is inherited unless
    ``pass_fds`` says otherwise. Raises ``subprocess.TimeoutExpired`` (and
    so fails the test) when the run does not end within ``timeout`` seconds.
    """
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("capture_output", True)
    kw.setdefault("close_fds", True)
    kw.setdefault("env", env())
    return subprocess.run(
        launch_cmd(*opts, argv=argv), text=True, timeout=timeout, check=False, **kw
    )


def run_native(
    argv: Sequence[str], timeout: float = TIMEOUT, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` without unotifyd, set up like :func:`run_launch` does."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("capture_output", True)
    kw.setdefault("close_fds", True)
    kw.setdefault("env", env())
    return subprocess.run(list(argv), text=True, timeout=timeout, check=False, **kw)


def py(code: str, *args: str) -> list[str]:
    """argv running the (dedented) Python ``code`` with ``args`` in ``sys.argv[1:]``."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A readable account of a finished run, for assertion messages."""
    return (
        f"exit status {proc.returncode}\n--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
    )


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (making its directory) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# Python snippets shared by several tests' programs.

#: Defines ``attempt(path, flags, mode=0o666)`` returning the file's contents
#: (read from the start) or the errno name of the failure.
ATTEMPT = """
import errno, os
def attempt(path, flags, mode=0o666, **kw):
    try:
        fd = os.open(path, flags, mode, **kw)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        if flags & os.O_ACCMODE == os.O_WRONLY or flags & os.O_DIRECTORY:
            return "opened"
        return os.pread(fd, 4096, 0).decode()
    finally:
        os.close(fd)
"""


# Shared by the file-system view tests (test_view, test_exec_view, test_deputy).

#: The launch options of each mode: parametrize over the keys, pass ``*MODES[key]``.
MODES: dict[str, tuple[str, ...]] = {"virtualize": (), "enforce": ("--enforce",)}

#: argv prefix that runs the rest of the command line as ``nobody`` (no groups).
AS_NOBODY: tuple[str, ...] = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def sh(script: str) -> list[str]:
    """argv running the (dedented) shell ``script`` with ``sh -c``."""
    return ["sh", "-c", textwrap.dedent(script)]
