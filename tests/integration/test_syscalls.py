"""Each trapped system call, made raw with ``syscall(2)``: open, openat2, creat."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
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
    code = (
        "import os, sys; os.umask(0o077); "
        "os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o666))"
    )
    proc = run_launch("--redirect", f"{src}={target}", argv=py(code, str(src)))
    assert proc.returncode == 0, describe(proc)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not src.exists()
    assert os.path.exists(target)


_OTHER_ABI_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* int 0x80 takes 32-bit pointers: the path must live in the low 4 GiB (-no-pie .bss). */
static char path[4096];
int main(int argc, char **argv) {
    long ret;
    if (argc != 3) return 2;
    strncpy(path, argv[1], sizeof path - 1);
    if (argv[2][0] == 'i') {
        /* i386 open(path, O_RDONLY) through the 32-bit entry point. */
        asm volatile("int $0x80" : "=a"(ret) : "a"(5L), "b"(path), "c"(0L), "d"(0L) : "memory");
    } else {
        /* x32 open: the 64-bit entry point with __X32_SYSCALL_BIT set. */
        asm volatile("syscall" : "=a"(ret) : "a"(0x40000000L | 2), "D"(path), "S"(0L), "d"(0L)
                     : "rcx", "r11", "memory");
    }
    if (ret < 0) { printf("error %ld\n", -ret); return 0; }
    char buf[256];
    ssize_t n = read((int)ret, buf, sizeof buf);
    fwrite(buf, 1, n > 0 ? (size_t)n : 0, stdout);
    return 0;
}
"""


@pytest.fixture
def other_abi(tmp_path: Path) -> Path:
    """A program that opens argv[1] through the i386 ("i") or x32 ("x") syscall ABI."""
    src = tmp_path / "other_abi.c"
    src.write_text(_OTHER_ABI_C)
    exe = tmp_path / "other_abi"
    subprocess.run(
        ["gcc", "-O1", "-no-pie", "-o", str(exe), str(src)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return exe


def test_i386_open_cannot_bypass_a_rule(files: Files, other_abi: Path) -> None:
    native = run_native([str(other_abi), str(files.src), "i"])
    assert native.stdout == ORIGINAL, describe(native)  # the bypass exists natively
    proc = run_launch("--redirect", files.redirect, argv=[str(other_abi), str(files.src), "i"])
    assert ORIGINAL not in proc.stdout, describe(proc)
    # The filter kills a process that uses another ABI (SIGSYS).
    assert proc.returncode == 128 + signal.SIGSYS, describe(proc)


def test_x32_open_cannot_bypass_a_rule(files: Files, other_abi: Path) -> None:
    proc = run_launch("--redirect", files.redirect, argv=[str(other_abi), str(files.src), "x"])
    assert ORIGINAL not in proc.stdout, describe(proc)
    assert proc.returncode in (0, 128 + signal.SIGSYS), describe(proc)


def test_bad_path_arguments_fail_as_natively(files: Files) -> None:
    # NULL, too long, a too-long component, empty: the same errno as natively,
    # for paths under no rule (decoding fails before any rule is consulted).
    code = _program(
        "print(sys_(2, None, os.O_RDONLY, 0))\n"
        "print(sys_(2, b'/' + b'a/' * 3000, os.O_RDONLY, 0))\n"
        "print(sys_(2, b'/tmp/' + b'a' * 300, os.O_RDONLY, 0))\n"
        "print(sys_(2, b'', os.O_RDONLY, 0))\n"
        "print(sys_(257, 12345, b'relative', os.O_RDONLY, 0))\n"
        "print(sys_(257, 0, b'relative', os.O_RDONLY, 0))\n"
    )
    native = run_native(py(code))
    assert native.returncode == 0, describe(native)
    assert native.stdout == "EFAULT\nENAMETOOLONG\nENAMETOOLONG\nENOENT\nEBADF\nENOTDIR\n"
    proc = run_launch("--redirect", files.redirect, argv=py(code))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == native.stdout


def test_trailing_slash_on_a_redirected_path_fails_as_natively(files: Files) -> None:
    # "FILE/" names a directory: O_CREAT of a missing one is EISDIR, an existing
    # regular file is ENOTDIR, a plain open of a missing one ENOENT. Nothing
    # may be created, neither at the source nor at the redirect's target.
    missing = files.root / "src" / "missing"
    new_target = files.root / "dst" / "new-target"
    code = _program(
        "print(sys_(2, sys.argv[1].encode() + b'/', os.O_WRONLY | os.O_CREAT, 0o644))\n"
        "print(sys_(2, sys.argv[1].encode() + b'/', os.O_RDONLY, 0))\n"
        "print(sys_(2, sys.argv[2].encode() + b'/', os.O_RDONLY, 0))\n"
    )
    native = run_native(py(code, str(missing), str(files.src)))
    assert native.stdout == "EISDIR\nENOENT\nENOTDIR\n", describe(native)
    proc = run_launch(
        "--redirect",
        f"{missing}={new_target}",
        "--redirect",
        files.redirect,
        argv=py(code, str(missing), str(files.src)),
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == native.stdout
    assert not new_target.exists()
    assert not missing.exists()
