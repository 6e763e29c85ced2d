"""Each trapped system call, made raw with ``syscall(2)``: open, openat2, creat."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .conftest import Files
from .helpers import ORIGINAL, REDIRECTED, describe, py, run_launch, run_native, write

pytestmark = pytest.mark.kernel

# x86_64 system call numbers and openat2 constants (linux/openat2.h).
SYS_OPEN = 2
SYS_CREAT = 85
SYS_OPENAT = 257
SYS_OPENAT2 = 437
RESOLVE_BENEATH = 0x08

#: Prelude of the raw-syscall programs: ``sys_(nr, *args)`` returns the result
#: or ``-errno`` name, ``openat2(dirfd, path, flags, mode, resolve)`` likewise.
_RAW = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sys_(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    if r < 0:
        return errno.errorcode[ctypes.get_errno()]
    return r

class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]

def openat2(dirfd, path, flags, mode=0, resolve=0, size=None):
    how = OpenHow(flags, mode, resolve)
    return sys_(437, dirfd, path.encode(), ctypes.byref(how),
                ctypes.sizeof(how) if size is None else size)

def read(fd):
    if isinstance(fd, str):
        return fd
    try:
        return os.pread(fd, 4096, 0).decode()
    finally:
        os.close(fd)
"""


def _program(body: str) -> str:
    return _RAW + body


def test_openat2_is_redirected(files: Files) -> None:
    code = _program("print(read(openat2(-100, sys.argv[1], os.O_RDONLY)), end='')")
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_openat2_with_a_dirfd_is_redirected(files: Files) -> None:
    code = _program(
        "dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "print(read(openat2(dfd, sys.argv[2], os.O_RDONLY)), end='')"
    )
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src.parent), files.src.name)
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_openat2_resolve_beneath_escape_is_exdev_as_natively(files: Files) -> None:
    # From dirfd src/sub, "../data.txt" escapes the dirfd: EXDEV, before any rule.
    sub = files.src.parent / "sub"
    sub.mkdir()
    code = _program(
        "dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "print(read(openat2(dfd, sys.argv[2], os.O_RDONLY, 0, 0x08)))\n"
        # Escaping, coming back, escaping again: still an escape.
        "print(read(openat2(dfd, '../sub/../' + sys.argv[2], os.O_RDONLY, 0, 0x08)))\n"
    )
    argv = py(code, str(sub), f"../{files.src.name}")
    native = run_native(argv)
    assert native.returncode == 0, describe(native)
    assert native.stdout == "EXDEV\nEXDEV\n"
    proc = run_launch("--redirect", files.redirect, argv=argv)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == native.stdout


def test_openat2_resolve_beneath_inside_is_redirected(files: Files) -> None:
    code = _program(
        "dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "print(read(openat2(dfd, sys.argv[2], os.O_RDONLY, 0, 0x08)), end='')"
    )
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src.parent), files.src.name)
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_openat2_invalid_how_is_rejected_as_natively(files: Files) -> None:
    # The same checks of struct open_how as the kernel's, on a redirected path:
    # a mode without O_CREAT, unknown flag bits, a too-small struct.
    code = _program(
        "p = sys.argv[1]\n"
        "print(openat2(-100, p, os.O_RDONLY, 0o644))\n"
        "print(openat2(-100, p, os.O_RDONLY | (1 << 40)))\n"
        "print(openat2(-100, p, os.O_RDONLY, 0, 1 << 20))\n"
        "print(openat2(-100, p, os.O_RDONLY, size=16))\n"
    )
    native = run_native(py(code, str(files.target)))
    assert native.returncode == 0, describe(native)
    assert native.stdout == "EINVAL\nEINVAL\nEINVAL\nEINVAL\n"
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == native.stdout


def test_openat2_with_o_largefile_works_as_natively(files: Files) -> None:
    # 0o100000 is the kernel's O_LARGEFILE on x86_64 (Python's os.O_LARGEFILE is
    # 0 there). openat2 accepts it (VALID_OPEN_FLAGS, include/linux/fcntl.h) and
    # musl's O_LARGEFILE is this bit. It must work under a rule and under none.
    other = write(files.root / "other.txt", "OTHER\n")
    code = _program(
        "print(read(openat2(-100, sys.argv[1], os.O_RDONLY | 0o100000)), end='')\n"
        "print(read(openat2(-100, sys.argv[2], os.O_RDONLY | 0o100000)), end='')\n"
    )
    native = run_native(py(code, str(files.target), str(other)))
    assert native.returncode == 0, describe(native)
    assert native.stdout == REDIRECTED + "OTHER\n"
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src), str(other)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED + "OTHER\n"


def test_raw_open_is_redirected(files: Files) -> None:
    code = _program("print(read(sys_(2, sys.argv[1].encode(), os.O_RDONLY, 0)), end='')")
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_raw_openat_is_redirected(files: Files) -> None:
    code = _program("print(read(sys_(257, -100, sys.argv[1].encode(), os.O_RDONLY, 0)), end='')")
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_creat_creates_the_target_with_the_programs_umask(tmp_path: Path) -> None:
    src = tmp_path / "src" / "new.txt"
    src.parent.mkdir()
    target = tmp_path / "dst" / "created.txt"
    target.parent.mkdir()
    code = _program(
        "os.umask(0o027)\n"
        "fd = sys_(85, sys.argv[1].encode(), 0o666)\n"
        "os.write(fd, b'CREATED\\n')\n"
        "print(fd)\n"
    )
    proc = run_launch("--redirect", f"{src}={target}", argv=py(code, str(src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip().isdigit(), describe(proc)
    assert target.read_text() == "CREATED\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not src.exists()


def test_creat_truncates_an_existing_target(files: Files) -> None:
    files.target.write_text("A MUCH LONGER OLD CONTENT\n")
    code = _program("fd = sys_(85, sys.argv[1].encode(), 0o644)\nos.write(fd, b'NEW\\n')\n")
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert files.target.read_text() == "NEW\n"
    assert files.src.read_text() == ORIGINAL


def test_creat_fd_is_write_only(files: Files) -> None:
    code = _program(
        "import fcntl\n"
        "fd = sys_(85, sys.argv[1].encode(), 0o644)\n"
        "print(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY)\n"
        "print(bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))\n"
    )
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "True\nFalse\n"


def test_open_with_o_creat_applies_the_programs_umask(tmp_path: Path) -> None:
    src, target = tmp_path / "new-src", tmp_path / "new-target"
    code = "import os, sys; os.umask(0o077); os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o666))"
    proc = run_launch("--redirect", f"{src}={target}", argv=py(code, str(src)))
    assert proc.returncode == 0, describe(proc)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not src.exists()
    assert os.path.exists(target)
