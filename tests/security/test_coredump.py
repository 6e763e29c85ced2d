"""A crash writes no core file past the rules under --enforce.

The kernel writes a core dump itself (fs/coredump.c), with the program's
credentials, in its cwd when ``core_pattern`` is a file name: no system call
the filter could see. A program raises its soft ``RLIMIT_CORE`` (up to the
hard limit, which Debian leaves unlimited), changes into a read-only tree
and crashes. Natively (the control) its ``core`` replaces the file of that
name there; under ``--enforce`` it starts with a hard limit of 0
(:mod:`unotifyd.kernel.coredump`) and the file stays as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..integration.helpers import describe, run_native
from .support import IDENTITIES, Report, Workspace, directory, put

pytestmark = pytest.mark.kernel

ORIGINAL = "ORIGINAL\n"
#: Raises the soft limit as far as the hard one lets it, then crashes in "$1".
CRASH = 'ulimit -S -c unlimited; cd "$1" && kill -s SEGV $$'


def _pattern() -> str:
    return Path("/proc/sys/kernel/core_pattern").read_text().strip()


@pytest.fixture
def lab_dir(public: Path) -> Path:
    scratch = public / "coredump-ws"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return scratch


def crash_in(lab_dir: Path, who: str, launch: tuple[str, ...]) -> tuple[Path, str]:
    """Crash as ``who`` in a fresh read-only directory holding a file
    ``core`` (natively when ``launch`` is empty): that directory, and the
    shell's stderr."""
    identity = IDENTITIES[who]
    ws = Workspace.make(lab_dir)
    sub = directory(directory(ws.real / "ro", owner=identity.uid) / "sub", owner=identity.uid)
    core = put(sub / "core", ORIGINAL, owner=identity.uid)
    opts = tuple(a.format(ws=ws.real) for a in launch)
    wrap = ("unotifyd", "launch", *opts, "--") if launch else ()
    argv = [*wrap, *identity.prefix, "sh", "-c", CRASH, "sh", str(sub)]
    proc = run_native(argv, cwd="/")
    # sh dies of SIGSEGV: natively -11, through unotifyd 128 + 11.
    assert proc.returncode in (-11, 139), describe(proc)
    return core.parent, proc.stderr


def dumped(where: Path) -> list[str]:
    """The files of ``where`` the kernel wrote a core into: ``core``, or a
    name of the pattern's (core.PID with kernel.core_uses_pid)."""
    return sorted(f.name for f in where.iterdir() if f.read_bytes().startswith(b"\x7fELF"))


@pytest.mark.parametrize("who", ["root", "root-nocaps", "user"])
def test_a_crash_writes_no_core_into_a_read_only_tree(
    lab_dir: Path, report: Report, who: str
) -> None:
    pattern = _pattern()
    if pattern.startswith(("|", "@")) or "/" in pattern:
        pytest.skip(f"kernel.core_pattern here is {pattern!r}: no core file goes to the cwd")
    native, _ = crash_in(lab_dir, who, ())
    enforced, said = crash_in(lab_dir, who, ("--enforce", "--readonly", "{ws}/ro/**"))
    natively_written = bool(dumped(native))
    kept = [f.name for f in enforced.iterdir()] == ["core"]
    escaped = not kept or (enforced / "core").read_text(errors="replace") != ORIGINAL
    report(f"coredump[{who}]", native_core=int(natively_written), escapes=int(escaped))
    assert natively_written, "natively the crash wrote no core: the control does not hold"
    assert not escaped, f"a core was written under --enforce (sh said {said!r})"
