"""Calls that make, remove or rename a directory entry, on odd last components.

``.``, ``..``, ``/``, a trailing ``/`` after a symlink, ``..`` after a missing name
(issue 16): each case runs on a
fresh tree natively (the oracle), then under unotifyd in each mode; the errno and the
tree afterwards must be the same. Before, enforcing mode removed or renamed the directory
the path led to (``rmdir dir/.``, ``rmdir lnk/``...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import describe, py, run_launch, run_native

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",)}

CASES = """
import ctypes, errno, os, shutil, sys
libc = ctypes.CDLL(None, use_errno=True)
base = sys.argv[1]

def fresh():
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base + "/a/b/c")
    os.mkdir(base + "/empty")
    open(base + "/f", "w").close()
    open(base + "/a/f", "w").close()
    os.symlink("a", base + "/lnk")
    os.symlink("missing", base + "/dang")

def tree():
    out = []
    for top, dirs, files in os.walk(base):
        dirs.sort()
        out += [os.path.relpath(os.path.join(top, n), base) for n in sorted(dirs + files)]
    return " ".join(out)

CASES = [
    ("rmdir", "empty/."), ("rmdir", "a/b/.."), ("rmdir", "."), ("rmdir", "lnk/"),
    ("rmdir", "empty/"), ("rmdir", "/"),
    ("unlink", "lnk/"), ("unlink", "dang/"), ("unlink", "a/."), ("unlink", "f/"),
    ("rename", "empty/.", "x"), ("rename", "a/b/..", "y"), ("rename", ".", "z"),
    ("rename", "lnk/", "m"), ("rename", "f", "empty/.."), ("rename", "empty/", "e2"),
    ("mkdir", "newd/.", 0o755), ("mkdir", "dang/", 0o755), ("mkdir", "f/", 0o755),
    ("mkdir", "new/", 0o755), ("mkdir", "a/.", 0o755),
    ("symlink", "x", "f/"), ("symlink", "x", "dang/"), ("symlink", "x", "new/"),
    ("link", "f", "a/f/"), ("link", "f", "new/"), ("mknod", "f/", 0o10644, 0),
    # ".." after a name that is not there: ENOENT, never the name without them.
    ("open", "a/x/../f2", os.O_CREAT | os.O_WRONLY, 0o644), ("rmdir", "a/x/.."),
    ("mkdir", "a/x/../y", 0o755), ("unlink", "a/x/../../f"), ("rename", "f", "a/x/../g"),
    ("symlink", "t", "a/x/../s"), ("link", "f", "a/x/../h"), ("rmdir", "a/b/x/../../b"),
    # RENAME_NOREPLACE (1): EEXIST for an odd new name, EBUSY for an odd old one.
    ("renameat2", -100, "f", -100, "empty/..", 1), ("renameat2", -100, "f", -100, ".", 1),
    ("renameat2", -100, "empty/.", -100, "x", 1),
]
for case in CASES:
    fresh()
    os.chdir(base)
    args = [a.encode() if isinstance(a, str) else a for a in case[1:]]
    ctypes.set_errno(0)
    rc = getattr(libc, case[0])(*args)
    err = "0" if rc >= 0 else errno.errorcode[ctypes.get_errno()]
    os.chdir("/")
    print(case, err, tree())
"""


@pytest.mark.parametrize("mode", list(MODES))
def test_odd_last_components_answer_as_natively(tmp_path: Path, mode: str) -> None:
    native = run_native(py(CASES, str(tmp_path / "native")))
    assert native.returncode == 0, describe(native)
    # The control: the kernel refuses each odd name, and removes nothing by it.
    assert "('rmdir', 'empty/.') EINVAL" in native.stdout
    assert "('rmdir', 'lnk/') ENOTDIR" in native.stdout
    assert "('rename', 'a/b/..', 'y') EBUSY" in native.stdout
    assert "('renameat2', -100, 'f', -100, 'empty/..', 1) EEXIST" in native.stdout
    assert "('renameat2', -100, 'empty/.', -100, 'x', 1) EBUSY" in native.stdout
    assert "('unlink', 'a/x/../../f') ENOENT" in native.stdout
    opts = (*MODES[mode], "--deny", str(tmp_path / "elsewhere"))
    proc = run_launch(*opts, argv=py(CASES, str(tmp_path / "native")))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == native.stdout.splitlines()
