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

import ctypes
import os
import threading
from pathlib import Path

import pytest

from ..integration.helpers import describe, py, run_launch, run_native

pytestmark = pytest.mark.kernel

_LIBC = ctypes.CDLL(None, use_errno=True)

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


RACE_PROGRAM = """
import collections, errno, os, stat, sys
os.chroot(sys.argv[1])
os.chdir("/")
seen = collections.Counter()
for _ in range(int(sys.argv[2])):
    try:
        os.lstat("/a/etc/hostname/x")
        seen["OK"] += 1
    except OSError as e:
        seen[errno.errorcode[e.errno]] += 1
    # The race is on: "/a" is seen as both.
    seen["link" if stat.S_ISLNK(os.lstat("/a").st_mode) else "dir"] += 1
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(2) needs CAP_SYS_CHROOT")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_directory_swapped_for_an_absolute_link_mid_walk_stays_in_the_root(
    tmp_path: Path, mode: str
) -> None:
    """The walk looks each name up in a directory it found, in the program's
    root; a directory swapped for an absolute link since must lead on from
    that root (nd_jump_root()), never from ours. Here "/a" of the new root
    is swapped, again and again from outside, with "a2 -> /": in the
    program's root "/a/etc/hostname" never exists (ENOENT), in ours it is a
    file, whose type a lookup from our root told the program (ENOTDIR for
    "/a/etc/hostname/x": seen 21 and 138 times in 3 000 before the walk
    opened the directory above each name with RESOLVE_IN_ROOT)."""
    root = tmp_path / "root"
    (root / "a" / "sub").mkdir(parents=True)
    (root / "a2").symlink_to("/")
    assert Path("/etc/hostname").is_file()  # what the host has there
    argv = py(RACE_PROGRAM, str(root), "3000")
    stop = threading.Event()

    def swap() -> None:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        try:
            while not stop.is_set():
                _LIBC.syscall(316, fd, b"a", fd, b"a2", 2)  # renameat2 RENAME_EXCHANGE
        finally:
            os.close(fd)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        native = run_native(argv, cwd=tmp_path)
        proc = run_launch(*MODES[mode], "--deny", "/nothing", argv=argv, cwd=tmp_path)
    finally:
        stop.set()
        swapper.join()
    seen = {n: dict(kv.split("=") for kv in p.stdout.split()) for n, p in
            (("native", native), ("unotifyd", proc))}  # fmt: skip
    # The control: natively nothing is there, and the swaps were seen.
    assert set(seen["native"]) == {"ENOENT", "dir", "link"}, describe(native)
    assert proc.returncode == 0 and {"dir", "link"} <= set(seen["unotifyd"]), describe(proc)
    # No host file's type. Besides ENOENT a racing lookup may answer ELOOP
    # (a link swapped in after the look is refused: README, enforcing mode)
    # or EINVAL (one swapped away before its text was read), never that.
    assert "ENOTDIR" not in seen["unotifyd"] and "OK" not in seen["unotifyd"], describe(proc)
