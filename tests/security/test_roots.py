"""A program with a root of its own never has names looked up outside it.

In a chroot (or a container, served by the OCI agent through the same
resolver), an absolute symlink starts the rest of the lookup again from the
*program's* root: nd_jump_root() in fs/namei.c sets the walk's path to
``nd->root``, the task's ``fs->root``. The supervisor's slow path
(``Resolver._walk``) once went on from its own cwd instead after such a
link: it lstat()ed and readlink()ed host files in the program's name. The
program learnt their types (ENOTDIR for a host file where the kernel says
ENOENT) and had host links followed to names then created in its root,
where the kernel creates nothing.

The supervisor's cwd is ``host/`` here, holding ``hostfile`` and the link
``x -> y`` beside the directory ``y``; the new root holds ``abs -> /`` and
an empty directory ``y``, and nothing named ``hostfile`` or ``x``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..integration.helpers import describe, py, run_launch, run_native

pytestmark = pytest.mark.kernel

PROGRAM = """
import errno, os, sys
os.chroot(sys.argv[1])
os.chdir("/")
def attempt(label, act):
    try:
        act()
        print(label, "OK")
    except OSError as e:
        print(label, errno.errorcode[e.errno])
attempt("stat", lambda: os.stat("/abs/hostfile/x"))
attempt("lstat", lambda: os.lstat("/abs/hostfile/x"))
attempt("create", lambda: os.close(os.open("/abs/x/new", os.O_CREAT | os.O_WRONLY, 0o600)))
attempt("mkdir", lambda: os.mkdir("/abs/x/newdir"))
print("y holds", sorted(os.listdir("/y")))
"""

#: What the kernel answers: none of the names exists in the new root.
NATIVE = ["stat ENOENT", "lstat ENOENT", "create ENOENT", "mkdir ENOENT", "y holds []"]

MODES = {
    "enforce": ("--enforce", "--allow-syscall", "chroot"),
    "virtualize": (),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(2) needs CAP_SYS_CHROOT")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_an_absolute_link_stays_in_the_programs_root(tmp_path: Path, mode: str) -> None:
    host = tmp_path / "host"
    (host / "y").mkdir(parents=True)
    (host / "hostfile").write_text("HOST\n")
    (host / "x").symlink_to("y")
    newroot = tmp_path / "newroot"
    (newroot / "y").mkdir(parents=True)
    (newroot / "abs").symlink_to("/")
    argv = py(PROGRAM, str(newroot))
    # The control: the kernel finds none of them, from any cwd.
    native = run_native(argv, cwd=host)
    assert native.stdout.splitlines() == NATIVE, describe(native)
    # A rule that names nothing there: the calls are trapped and resolved by us.
    proc = run_launch(*MODES[mode], "--deny", "/nothing", argv=argv, cwd=host)
    assert proc.returncode == 0, describe(proc)
    # Before: "stat ENOTDIR" (our lstat of host/hostfile), and under enforce
    # "create OK", "mkdir OK", with new and newdir made in the new root's y
    # (host/x -> y followed).
    assert proc.stdout.splitlines() == NATIVE, describe(proc)
    assert sorted(os.listdir(host / "y")) == [] and sorted(os.listdir(newroot / "y")) == []


BENEATH_PROGRAM = r"""
import ctypes, errno, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chroot(sys.argv[1])
os.chdir("/")
d = os.open("/sub", os.O_PATH | os.O_DIRECTORY)
for path in ("f", "../top", "/top", "abs", "missing/../../top", "new"):
    flags = os.O_RDWR | os.O_CREAT if path == "new" else os.O_RDONLY
    how = struct.pack("QQQ", flags, 0o600 if flags & os.O_CREAT else 0, 8)  # RESOLVE_BENEATH
    fd = libc.syscall(437, d, path.encode(), how, 24)
    if fd < 0:
        print(path, errno.errorcode[ctypes.get_errno()])
    else:
        print(path, repr(os.pread(fd, 16, 0).decode()))  # no /proc in the new root
        os.close(fd)
print("sub holds", sorted(os.listdir("/sub")))
"""

#: What the kernel answers: below /sub only, and nothing above it.
BENEATH_NATIVE = [
    "f 'F\\n'", "../top EXDEV", "/top EXDEV", "abs EXDEV", "missing/../../top ENOENT",
    "new ''", "sub holds ['abs', 'f', 'new']",
]


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(2) needs CAP_SYS_CHROOT")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_openat2_beneath_in_a_programs_own_root(tmp_path: Path, mode: str) -> None:
    """RESOLVE_BENEATH from a dirfd of a chrooted program keeps below that
    dirfd, as natively (helper-43's audit: every such openat2 was EINVAL,
    since our lookup added RESOLVE_IN_ROOT, which the kernel refuses with
    BENEATH)."""
    newroot = tmp_path / "newroot"
    (newroot / "sub").mkdir(parents=True)
    (newroot / "sub" / "f").write_text("F\n")
    (newroot / "top").write_text("TOP\n")
    (newroot / "sub" / "abs").symlink_to("/top")
    argv = py(BENEATH_PROGRAM, str(newroot))
    native = run_native(argv)
    assert native.stdout.splitlines() == BENEATH_NATIVE, describe(native)  # the control
    os.unlink(newroot / "sub" / "new")
    proc = run_launch(*MODES[mode], "--deny", "/nothing", argv=argv)
    assert (proc.returncode, proc.stdout.splitlines()) == (0, BENEATH_NATIVE), describe(proc)
