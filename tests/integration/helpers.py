"""Helpers for the real-kernel integration tests.

Every test drives ``python -m unotifyd launch`` as a black box, exactly as a
user would, with a timeout on every run so that a supervisor that stalls
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unotifyd.kernel import abi

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


def locale_free_env(
    base: Mapping[str, str] | None = None, python: str = sys.executable
) -> dict[str, str]:
    """``base`` (:func:`env`) without a locale variable: the C locale, under
    which Python sets ``LC_CTYPE`` in its own environment (PEP 538) unless
    undone. The control (``python`` does so here) is checked."""
    base = env() if base is None else base
    e = {k: v for k, v in base.items() if k not in ("LANG", "LANGUAGE") and k[:3] != "LC_"}
    coerced = subprocess.run(
        [python, "-c", "import os; print(os.environ.get('LC_CTYPE'))"],
        env=e, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert coerced == "C.UTF-8\n", coerced
    return e


def kernel_refuses_rights() -> bool:
    """Whether this kernel lets a unix socket refuse fds (SO_PASSRIGHTS,
    Linux 6.16): the daemon's connections then do until the hand-over, and
    a client's sendmsg with fds fails with EPERM."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, abi.SO_PASSRIGHTS, 0)
        except OSError:
            return False
    return True


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


# --- A copy of unotifyd any uid may run --------------------------------------------------

#: The interpreter other users run unotifyd with in tests: the test venv, and
#: the clone itself, may sit under a directory they cannot enter (a clone in
#: /root, mode 0700, is where root naturally puts it).
SYSTEM_PYTHON = "/usr/bin/python3"

#: ``launch --daemon`` by the Python client alone (what runs where the C
#: client, unotifyd-launch, was not built): SOCKET PROFILE PROG [ARGS...].
PYTHON_CLIENT = (
    "import sys; from unotifyd.daemon.client import launch_via_daemon; "
    "sys.exit(launch_via_daemon(sys.argv[1], sys.argv[2], sys.argv[3:]))"
)
#: What unotifyd imports (trio's dependencies included).
_PACKAGES = ("unotifyd", "trio", "sniffio", "outcome", "attr", "attrs", "sortedcontainers",
             "idna", "pyseccomp")  # fmt: skip


def importable_copy(out: Path) -> Path:
    """unotifyd and its dependencies, as the tests import them, copied into the
    new directory ``out`` (world-readable) for :data:`SYSTEM_PYTHON` with
    ``PYTHONPATH=out`` (see :func:`env_for_copy`)."""
    proc = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "True", f"{SYSTEM_PYTHON} must be Python 3.11 or later"
    out.mkdir(mode=0o755)
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        if spec.submodule_search_locations:
            src = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(src, out / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(spec.origin, out)
    for where, dirs, files in os.walk(out):
        for d in dirs:
            Path(where, d).chmod(0o755)
        for f in files:
            # Programs stay programs (the daemon's C client, unotifyd-launch).
            executable = Path(where, f).stat().st_mode & 0o100
            Path(where, f).chmod(0o755 if executable else 0o644)
    return out


@contextlib.contextmanager
def public_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory any user may enter (pytest's tmp_path is 0700), removed after."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def env_for_copy(copy: Path) -> dict[str, str]:
    """The environment that runs :data:`SYSTEM_PYTHON` on ``copy`` (see :func:`importable_copy`)."""
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C"}
