"""The program's resource limits hold for the calls the supervisor makes for it (issue 16).

``truncate(2)`` that grows a file past the caller's ``RLIMIT_FSIZE`` fails with
EFBIG and sends it SIGXFSZ (inode_newsize_ok() in fs/attr.c). The supervisor has
limits of its own: it must apply the program's. Each case runs natively first
(the control), then where the supervisor performs the call: under --enforce,
and through a tree redirect in virtualize mode; as root and as nobody.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import AS_NOBODY, SYSTEM_PYTHON, describe, public_dir, py, run_launch, run_native

pytestmark = pytest.mark.kernel

TRUNCATE = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, lambda *a: print("SIGXFSZ"))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
for size in (2 << 20, 512 << 10, 3 << 20):
    try:
        os.truncate(sys.argv[1], size)
        print("truncate", size, "OK")
    except OSError as e:
        print("truncate", size, e.strerror)
    # Past the limit but not growing the file: no limit applies.
    if size == 512 << 10:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))
print("size", os.stat(sys.argv[1]).st_size)
"""

EXPECTED = (
    "SIGXFSZ\ntruncate 2097152 File too large\ntruncate 524288 OK\n"
    "SIGXFSZ\ntruncate 3145728 File too large\nsize 524288\n"
)


@pytest.fixture
def top() -> Iterator[Path]:
    with public_dir("unotifyd-limits-") as d:
        yield d


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_truncate_past_the_programs_file_size_limit(top: Path, who: str) -> None:
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    python = SYSTEM_PYTHON if who == "nobody" else sys.executable
    for name in ("native", "enforce", "tree"):
        (top / name).mkdir(mode=0o777)
        (top / name).chmod(0o777)
        (top / name / "f").touch()
        (top / name / "f").chmod(0o666)
    argv = [*prefix, *py(TRUNCATE)]
    argv[len(prefix)] = python
    native = run_native([*argv, str(top / "native" / "f")])
    assert native.stdout == EXPECTED, describe(native)
    enforced = run_launch(
        "--enforce", "--deny", "/nonexistent", argv=[*argv, str(top / "enforce" / "f")]
    )
    assert enforced.stdout == EXPECTED, describe(enforced)
    tree = run_launch(
        "--redirect", f"{top}/view/**={top}/tree/**", argv=[*argv, str(top / "view" / "f")]
    )
    assert tree.stdout == EXPECTED, describe(tree)
