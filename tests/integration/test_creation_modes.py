"""Files a program makes get the modes and groups they get natively (issue 16).

The supervisor makes a file itself where the rules have it act (enforcing mode;
a tree redirect), with umask 0 and the program's umask applied by hand. The
kernel's own rules must still hold: a directory with a default ACL ignores the
umask (the ACL's mask applies: posix_acl_create() in fs/posix_acl.c), and a
setgid directory gives its group, and to a new directory its setgid bit.

Each case is made natively first (the control), then through a tree redirect in
both modes and directly under --enforce; the modes, groups and ACL flags of what
was made must be the same.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import describe, run_launch, run_native

pytestmark = pytest.mark.kernel

# A POSIX ACL as the kernel stores it in system.posix_acl_default
# (include/uapi/linux/posix_acl_xattr.h): version 2, then (tag, perm, id)
# entries: user::rwx, group::rwx, other::rwx.
_ACL_UNDEFINED_ID = 0xFFFFFFFF
DEFAULT_ACL_RWX = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, 7, _ACL_UNDEFINED_ID) for tag in (0x01, 0x04, 0x20)
)

#: Makes a file, a directory and a FIFO in each directory named, with umask 022,
#: and prints what was made: mode, group, and whether it has an ACL.
MAKE = r"""
set -e
umask 022
for d in "$@"; do
    touch "$d/file"; mkdir "$d/dir"; mkfifo "$d/fifo"
    python3 -c '
import os, sys
for name in ("file", "dir", "fifo"):
    path = os.path.join(sys.argv[1], name)
    st = os.lstat(path)
    try:
        acl = bool(os.getxattr(path, "system.posix_acl_access"))
    except OSError:
        acl = False
    print(os.path.basename(sys.argv[1]), name, oct(st.st_mode), st.st_gid, "acl" if acl else "-")
' "$d"
done
"""

KINDS = ("plain", "acl", "setgid")


def _tree(top: Path) -> Path:
    tree = top / "tree"
    for kind in KINDS:
        (tree / kind).mkdir(parents=True)
    os.setxattr(tree / "acl", "system.posix_acl_default", DEFAULT_ACL_RWX)
    os.chown(tree / "setgid", 0, 65534)
    (tree / "setgid").chmod(0o2775)
    return tree


@pytest.fixture
def top() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="unotifyd-modes-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _made(top: Path, opts: tuple[str, ...], through_view: bool) -> str:
    if top.exists():
        shutil.rmtree(top)
    tree = _tree(top)
    base = top / "view" if through_view else tree
    argv = ["sh", "-c", MAKE, "sh", *(str(base / kind) for kind in KINDS)]
    proc = run_launch(*opts, argv=argv) if opts else run_native(argv)
    assert proc.returncode == 0, describe(proc)
    return proc.stdout


@pytest.mark.parametrize(
    ("opts", "through_view"),
    [
        (("--enforce", "--deny", "/nonexistent"), False),
        (("--redirect", "{top}/view/**={top}/tree/**"), True),
        (("--enforce", "--redirect", "{top}/view/**={top}/tree/**"), True),
    ],
    ids=["enforce", "virtualize-view", "enforce-view"],
)
def test_modes_and_groups_of_new_files_are_the_kernels(
    top: Path, opts: tuple[str, ...], through_view: bool
) -> None:
    native = _made(top / "native", (), False)
    lines = native.splitlines()
    # The control: each rule of the kernel shows natively.
    assert "plain file 0o100644 0 -" in lines, native
    assert "acl file 0o100666 0 -" in lines, native
    assert "setgid dir 0o42755 65534 -" in lines, native
    here = top / "sandboxed"
    got = _made(here, tuple(o.format(top=here) for o in opts), through_view)
    assert got == native
