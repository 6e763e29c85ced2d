"""A read-only tree's special files, O_TMPFILE, O_CREAT and truncate, against a read-only mount.

A read-only mount refuses writes to the file system, not I/O to special
files: a FIFO, a socket or a device is opened for writing (its own open
decides: a FIFO waits for a reader, a socket's inode says ENXIO), truncate
of one is EINVAL before the mount is looked at (vfs_truncate() in
fs/open.c), O_TMPFILE is EROFS, O_CREAT of an existing directory EISDIR
(do_open() in fs/namei.c), before any permission check. The same calls run
natively in a read-only bind mount (the control: every answer is checked)
and under ``--readonly TREE/**`` in virtualize mode (with and without the
compiled lane) and under ``--enforce``, as root and as nobody; every line
must be the same. Prints a ``RESULT`` line per run.
"""

from __future__ import annotations

import difflib
import os
import socket
import stat
from pathlib import Path

import pytest

from ..security.support import NO_CAPS, Report
from .helpers import AS_NOBODY, SYSTEM_PYTHON, describe, env, public_dir, run_launch, run_native

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount and mknod need root"),
]

#: One line per call: its name, then ``ok`` (with what the file says) or the errno's name.
PROBE = r"""
import errno, fcntl, os, sys, threading, time
os.chdir(sys.argv[1])
W, RW, RO, NB = os.O_WRONLY, os.O_RDWR, os.O_RDONLY, os.O_NONBLOCK

def line(name, call, *args):
    try:
        r = call(*args)
    except OSError as e:
        print(f"{name}: {errno.errorcode[e.errno]}")
        return
    if isinstance(r, int) and r > 2:
        # F_GETFL: the access mode and the flags a program can see.
        flags = fcntl.fcntl(r, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND | NB)
        os.close(r)
        r = oct(flags)
    print(f"{name}: ok {r}")

def later_reader():
    # Blocking too: the two opens meet whichever is made first (fifo(7)).
    time.sleep(0.3)
    os.close(os.open("fifo2", RO))

# A writer that waits for its reader (served by a worker thread under unotifyd).
meeting = threading.Thread(target=later_reader)
meeting.start()
line("open fifo2 W, reader comes later", os.open, "fifo2", W)
meeting.join()
line("open fifo W|NB, no reader", lambda: os.open("fifo", W | NB))
reader = os.open("fifo", RO | NB)

def write_read():
    fd = os.open("fifo", W | NB)
    try:
        os.write(fd, b"through")
    finally:
        os.close(fd)
    return os.read(reader, 64).decode()

line("write fifo, read back", write_read)
for name, flags in [
    ("fifo", W | NB), ("fifo", RW), ("fifo", RW | os.O_TRUNC), ("fifo", RO | NB | os.O_TRUNC),
    ("fifo", W | NB | os.O_APPEND), ("fifo", W | NB | os.O_CREAT),
    ("fifo", W | NB | os.O_CREAT | os.O_EXCL), ("fifo", W | NB | os.O_DIRECTORY),
    ("fifo600", W | NB), ("fifo600", RW),
    ("null", W), ("null", W | os.O_TRUNC), ("null", RO | os.O_TRUNC), ("null", RW | os.O_APPEND),
    ("null", W | os.O_CREAT), ("null600", W), ("null600", RO | os.O_TRUNC),
    ("null644", RO | os.O_TRUNC), ("null644", RO), ("fifo644", RO | NB | os.O_TRUNC),
    ("sock", W), ("sock", RW | os.O_TRUNC), ("sock755", W), ("sock", RO),
    ("fw", W), ("fw", RO | os.O_TRUNC), ("fw", W | os.O_CREAT | os.O_EXCL),
    (".", os.O_TMPFILE | RW), ("d", os.O_TMPFILE | W), ("d700", os.O_TMPFILE | RW),
    ("fw", os.O_TMPFILE | RW), ("fifo", os.O_TMPFILE | RW), ("missing", os.O_TMPFILE | RW),
    ("d", os.O_TMPFILE | RW | os.O_CREAT), ("d", os.O_TMPFILE | RO),
    ("d", RO | os.O_CREAT), ("d700", RO | os.O_CREAT), ("d700", RO | os.O_CREAT | os.O_EXCL),
    ("d", W), ("fw", RO | os.O_CREAT), ("missing", RO | os.O_CREAT), ("missing", W),
    ("missing", RO | os.O_CREAT | os.O_DIRECTORY), ("d", RO | os.O_CREAT | os.O_DIRECTORY),
]:
    line(f"open {name} {flags:#o}", os.open, name, flags, 0o600)

def write_null():
    fd = os.open("null", W)
    try:
        return f"{os.write(fd, b'abc')} bytes"
    finally:
        os.close(fd)

line("write null", write_null)
for name in ("fifo", "null", "sock", "fw", "d", "d700", "missing"):
    line(f"access {name} W_OK", os.access, name, os.W_OK)
for name, length in [("fifo", 0), ("null", 0), ("null600", 0), ("sock", 0), ("d", 0),
                     ("fw", 0), ("fw", -1), ("missing", -1), ("d700/x", 0)]:
    line(f"truncate {name} {length}", os.truncate, name, length)

# utimensat(fd, NULL, NULL, flags): with a flag, EINVAL before the mount is
# asked (do_utimes_fd() in fs/utimes.c); without, the mount's EROFS.
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def utimensat_on_fd(flags):
    fd = os.open("fw", RO)
    try:
        if libc.syscall(280, fd, None, None, flags) < 0:
            raise OSError(ctypes.get_errno(), "utimensat")
    finally:
        os.close(fd)
for flags in (0, 0x1000, 0x100, 0x1100):
    line(f"utimensat fw-fd NULL {flags:#x}", utimensat_on_fd, flags)
"""


def _make_tree(t: Path) -> None:
    """The tree, as root: special files any user may write and some only root may."""
    t.mkdir(mode=0o755)
    (t / "d").mkdir(mode=0o755)
    (t / "d700").mkdir()
    (t / "d700" / "x").write_text("x")
    (t / "d700").chmod(0o700)
    (t / "fw").write_text("file")
    (t / "fw").chmod(0o666)
    for name, mode in (("fifo", 0o666), ("fifo2", 0o666), ("fifo600", 0o600), ("fifo644", 0o644)):
        os.mkfifo(t / name)
        (t / name).chmod(mode)
    for name, mode in (("null", 0o666), ("null600", 0o600), ("null644", 0o644)):
        os.mknod(t / name, stat.S_IFCHR | mode, os.makedev(1, 3))
        (t / name).chmod(mode)
    for name, mode in (("sock", 0o777), ("sock755", 0o755)):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(t / name))
        (t / name).chmod(mode)


#: What the read-only mount answers (checked on the control): the same as
#: root and as nobody, but for these (nobody may not write them: EACCES
#: first, as may_open() checks the permission before the file's own open).
_CONTROL = {
    "utimensat fw-fd NULL 0x0": "EROFS",
    "utimensat fw-fd NULL 0x1000": "EINVAL",
    "open fifo2 W, reader comes later": "ok 0o1",
    "open fifo W|NB, no reader": "ENXIO",
    "write fifo, read back": "ok through",
    f"open fifo {os.O_RDWR:#o}": "ok 0o2",
    f"open fifo {os.O_RDONLY | os.O_NONBLOCK | os.O_TRUNC:#o}": "ok 0o4000",
    f"open fifo {os.O_WRONLY | os.O_NONBLOCK | os.O_CREAT:#o}": "ok 0o4001",
    f"open fifo {os.O_WRONLY | os.O_NONBLOCK | os.O_CREAT | os.O_EXCL:#o}": "EEXIST",
    f"open fifo {os.O_WRONLY | os.O_NONBLOCK | os.O_DIRECTORY:#o}": "ENOTDIR",
    f"open null {os.O_WRONLY | os.O_TRUNC:#o}": "ok 0o1",
    f"open null {os.O_RDONLY | os.O_TRUNC:#o}": "ok 0o0",
    f"open sock {os.O_WRONLY:#o}": "ENXIO",
    f"open sock {os.O_RDONLY:#o}": "ENXIO",
    f"open fw {os.O_WRONLY:#o}": "EROFS",
    f"open fw {os.O_RDONLY | os.O_TRUNC:#o}": "EROFS",
    f"open . {os.O_TMPFILE | os.O_RDWR:#o}": "EROFS",
    f"open d700 {os.O_TMPFILE | os.O_RDWR:#o}": "EROFS",
    f"open fw {os.O_TMPFILE | os.O_RDWR:#o}": "ENOTDIR",
    f"open d {os.O_TMPFILE | os.O_RDWR | os.O_CREAT:#o}": "EINVAL",
    f"open d {os.O_RDONLY | os.O_CREAT:#o}": "EISDIR",
    f"open d700 {os.O_RDONLY | os.O_CREAT:#o}": "EISDIR",
    f"open d700 {os.O_RDONLY | os.O_CREAT | os.O_EXCL:#o}": "EEXIST",
    f"open missing {os.O_RDONLY | os.O_CREAT:#o}": "EROFS",
    f"open missing {os.O_RDONLY | os.O_CREAT | os.O_DIRECTORY:#o}": "EINVAL",
    "write null": "ok 3 bytes",
    "access fifo W_OK": "ok True",
    "access fw W_OK": "ok False",
    "truncate fifo 0": "EINVAL",
    "truncate null600 0": "EINVAL",
    "truncate sock 0": "EINVAL",
    "truncate d 0": "EISDIR",
    "truncate fw 0": "EROFS",
    "truncate missing -1": "EINVAL",
}
_NOBODY = {
    f"open fifo600 {os.O_WRONLY | os.O_NONBLOCK:#o}": ("ENXIO", "EACCES"),
    # O_TRUNC asks for write permission, though nothing is truncated
    # (build_open_flags(), may_open()): nobody may only read these.
    f"open null644 {os.O_RDONLY | os.O_TRUNC:#o}": ("ok 0o0", "EACCES"),
    f"open null644 {os.O_RDONLY:#o}": ("ok 0o0", "ok 0o0"),
    f"open fifo644 {os.O_RDONLY | os.O_NONBLOCK | os.O_TRUNC:#o}": ("ok 0o4000", "EACCES"),
    f"open null600 {os.O_WRONLY:#o}": ("ok 0o1", "EACCES"),
    f"open sock755 {os.O_WRONLY:#o}": ("ENXIO", "EACCES"),
    "truncate d700/x 0": ("EROFS", "EACCES"),
}


def _run(argv: list[str], t: Path, opts: tuple[str, ...] | None, python_only: bool) -> list[str]:
    """The probe's lines: natively on a read-only bind mount of ``t`` (``opts`` None), or
    under ``unotifyd launch OPTS --readonly t/**`` on a fresh tree."""
    if t.exists():
        run_native(["rm", "-rf", str(t)])
    _make_tree(t)
    if opts is None:
        script = f'mount --bind {t} {t} && mount -o remount,ro,bind {t} && exec "$@"'
        proc = run_native(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           "sh", *argv])  # fmt: skip
    else:
        # Without the compiled lane too: Python answers every call.
        extra = {"UNOTIFYD_PASSTHROUGH": "0"} if python_only else {}
        proc = run_launch(*opts, "--readonly", f"{t}/**", argv=argv, env=env(extra))
    assert proc.returncode == 0, describe(proc)
    return proc.stdout.splitlines()


RUNS = {
    "virtualize": ((), False),
    "virtualize-python": ((), True),
    "enforce": (("--enforce",), False),
}


# Root without capabilities owns the tree as root does: the same answers,
# though the supervisor must not lend it the capabilities it dropped.
_PREFIXES = {"root": (), "root-nocaps": NO_CAPS, "nobody": (*AS_NOBODY, "--")}


@pytest.mark.parametrize("who", _PREFIXES)
def test_read_only_tree_answers_as_a_read_only_mount(
    request: pytest.FixtureRequest, who: str
) -> None:
    report = Report(request.config)
    with public_dir("unotifyd-rospecial-") as d:
        t = d / "t"
        argv = [*_PREFIXES[who], SYSTEM_PYTHON, "-c", PROBE, str(t)]
        native = _run(argv, t, None, False)
        # The control: the read-only mount gives each answer.
        got = dict(line.split(": ", 1) for line in native)
        expected = {**_CONTROL, **{k: v[who == "nobody"] for k, v in _NOBODY.items()}}
        wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        assert not wrong, f"the control is not a read-only mount here: {wrong}"
        failures: list[str] = []
        for mode, (opts, python_only) in RUNS.items():
            lines = _run(argv, t, opts, python_only)
            diff = [line for line in difflib.unified_diff(native, lines, lineterm="", n=0)
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")]  # fmt: skip
            failures += [f"{mode}: {line}" for line in diff]
            report(f"readonly-special[{mode}-{who}]", cases=len(native),
                   differences=sum(1 for line in diff if line.startswith("-")))  # fmt: skip
        assert not failures, "\n".join(failures)
