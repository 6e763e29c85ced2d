"""Reads opened with O_NOFOLLOW under --enforce, as fts(3), find, cp -r and rm -r open.

The supervisor makes every open itself in enforcing mode. The compiled lane
opens a read again through our /proc/self/fd/N, which cannot carry
O_NOFOLLOW (the kernel would refuse that magic link), and the file keeps the
flag (F_GETFL shows it): so such opens all went to Python (``cp -r`` of 475
files: 480 of its 1 019 opens). The lane now opens them by their name in
the directory it pinned (``open_entry`` in kernel/passthrough.c). What must
not change is the answer: the flags the fd shows, FD_CLOEXEC, the file
behind it, and the errno of a link, a missing name, a directory wanted of a
file, a file the program may not read; and a FIFO or a device, whose open
waits or acts, is still Python's. Natively first (the control: each answer
is checked), then under --enforce with the lane and with Python alone, as
root, as root without capabilities and as nobody.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..reliability.support import SERVING, serving_env
from ..security.support import IDENTITIES
from .helpers import SYSTEM_PYTHON, describe, public_dir, run_launch, run_native

pytestmark = pytest.mark.kernel

#: One line per open (name, flags: ok, what F_GETFL and F_GETFD show, the
#: file's inode is the name's, what a read gives; or the errno's name), then
#: LOOPS opens of a file and of a directory, to count who answered them.
PROBE = r"""
import ctypes, errno, fcntl, os, sys
os.chdir(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
NF, D, NB, CX = os.O_NOFOLLOW, os.O_DIRECTORY, os.O_NONBLOCK, os.O_CLOEXEC
SHOWN = os.O_ACCMODE | os.O_APPEND | NB | NF | D | os.O_NOATIME
def probe(name, flags):
    fd = libc.open(name.encode(), flags, 0)  # libc's: os.open adds O_CLOEXEC
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    try:
        fl = fcntl.fcntl(fd, fcntl.F_GETFL) & SHOWN
        same = os.fstat(fd).st_ino == os.lstat(name).st_ino
        try:
            got = os.read(fd, 8)
        except OSError as e:
            got = errno.errorcode[e.errno]
        return f"ok fl={fl:#o} cloexec={fcntl.fcntl(fd, fcntl.F_GETFD)} same={same} read={got!r}"
    finally:
        os.close(fd)
for name in ("f", "d", "d/g", "link", "dlink", "missing", "d/missing", "nodir/x", "secret",
             "closed", "fifo", "null", "f/", "d/.", "./f", "nosearch/."):
    for flags in (NF, NF | CX, NF | D, NF | NB, NF | CX | D | NB, NF | os.O_NOATIME):
        if name != "fifo" or flags & NB:  # else it waits for a writer
            print(name, oct(flags), probe(name, flags))
# A directory named "d/", which it may read but not search: opened, as natively
# (its flags are a known gap: they show the O_DIRECTORY its name implies).
fd = libc.open(b"nosearch/", NF, 0)
print("nosearch/", "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
for _ in range(int(sys.argv[2])):
    os.close(os.open("f", NF))
    os.close(os.open("d", NF | D))
"""

LOOPS = 150


@pytest.fixture
def tree() -> Iterator[Path]:
    with public_dir("unotifyd-nofollow-") as d:
        yield d


def _make(t: Path, owner: int, other: int) -> None:
    (t / "d").mkdir()
    (t / "f").write_text("a file\n")
    (t / "d" / "g").write_text("in d\n")
    (t / "secret").write_text("not yours\n")
    (t / "closed").mkdir()
    (t / "nosearch").mkdir()
    (t / "link").symlink_to("f")
    (t / "dlink").symlink_to("d")
    os.mkfifo(t / "fifo")
    for p in (t, *t.iterdir(), t / "d" / "g"):
        os.lchown(p, owner, owner)
    # Another's, which the program may not read (or, for root without
    # capabilities, may not read as its owner does not let it).
    os.lchown(t / "secret", other, other)
    (t / "secret").chmod(0o600)
    os.lchown(t / "closed", other, other)
    (t / "closed").chmod(0o700)
    # Another's that others may read but not search (root searches it all the same).
    os.lchown(t / "nosearch", other, other)
    (t / "nosearch").chmod(0o744)
    (t / "null").symlink_to("/dev/null")


def _run(argv: list[str], serving: str | None) -> subprocess.CompletedProcess[str]:
    if serving is None:
        return run_native(argv, timeout=120)
    return run_launch(
        "--stats", "--enforce", "--redirect", "/nonexistent/unotifyd=/etc/hostname",
        argv=argv, timeout=120, env=serving_env(serving),
    )  # fmt: skip


@pytest.mark.parametrize("who", list(IDENTITIES))
def test_a_read_with_o_nofollow_opens_under_enforce_as_it_does_natively(
    tree: Path, who: str
) -> None:
    identity = IDENTITIES[who]
    _make(tree, identity.uid, identity.other)
    argv = [*identity.prefix, SYSTEM_PYTHON, "-c", PROBE, str(tree), str(LOOPS)]
    native = _run(argv, None)
    assert native.returncode == 0, describe(native)
    lines = native.stdout.splitlines()
    # The control: the kernel's answers, each kind of them.
    o = oct(os.O_NOFOLLOW)
    assert f"f {o} ok fl={os.O_NOFOLLOW:#o} cloexec=0 same=True read=b'a file\\n'" in lines
    assert f"link {o} ELOOP" in lines and f"missing {o} ENOENT" in lines
    assert f"f {oct(os.O_NOFOLLOW | os.O_DIRECTORY)} ENOTDIR" in lines
    assert f"f/ {o} ENOTDIR" in lines and f"dlink {o} ELOOP" in lines
    assert f"fifo {oct(os.O_NOFOLLOW | os.O_NONBLOCK)} ok" in " ".join(lines)
    assert "nosearch/ ok" in lines
    assert (f"nosearch/. {o} EACCES" in lines) == (who != "root"), lines
    secret = next(line for line in lines if line.startswith(f"secret {o} "))
    assert secret == f"secret {o} " + ("EACCES" if who != "root" else secret.split(" ", 2)[2])
    for serving in SERVING:
        proc = _run(argv, serving)
        assert proc.returncode == 0, describe(proc)
        diff = "\n".join(difflib.unified_diff(lines, proc.stdout.splitlines(), lineterm=""))
        assert proc.stdout == native.stdout, f"{serving}:\n{diff}\n{describe(proc)}"
        by_lane = re.search(r"by the lane: .*?\bopenat (\d+)", proc.stderr)
        answered = int(by_lane.group(1)) if by_lane else 0
        if serving == "python":
            assert answered == 0, describe(proc)
        elif who == "root":
            # The loop's opens are the lane's (the lane serves a thread
            # whose credentials are ours alone: see serve/passthrough.py).
            assert answered >= 2 * LOOPS, describe(proc)
