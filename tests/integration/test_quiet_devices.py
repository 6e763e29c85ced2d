"""Opens of the quiet devices (null, zero, full, random, urandom) under --enforce.

The supervisor makes every open itself in enforcing mode. A device's open
may wait or act, so it used to be made in a worker thread, ~250 us a hop
where a regular file's open costs 8 (a shell's ``> /dev/null`` on every
other line). The memory devices whose open does nothing but give a file
(QUIET_DEVICES in serve/opens.py) are now opened at once, by Python and by
the compiled lane. What must not change is the answer: the same file
flags (F_GETFL), the same device behind the fd, the same errno where the
program may not open it (its permission, a ``nodev`` mount, /dev/mem's
CAP_SYS_RAWIO), as root, as root without capabilities and as nobody.
Natively first (the control: each answer is checked), then under
--enforce with the lane and with Python alone, in the full view and
under --view opens.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..security.support import NO_CAPS
from .helpers import AS_NOBODY, SYSTEM_PYTHON, describe, env, public_dir, run_launch, run_native

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="mknod and a nodev mount need root"),
]

#: One line per open: the name and flags, then ``ok``, the flags F_GETFL
#: shows and what a read or a write of the fd gave, or the errno's name.
PROBE = r"""
import ctypes, errno, fcntl, os, sys
os.chdir(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def raw_open(name, flags, mode):
    # libc's, not os.open, which adds O_CLOEXEC (PEP 446).
    fd = libc.open(name.encode(), flags, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), name)
    return fd
RO, W, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
SHOWN = os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_DIRECTORY
def use(fd, name):
    try:
        if name.startswith(("zero", "random", "urandom")):
            return f"read {len(os.read(fd, 4))}" + (" zeros" if name == "zero" else "")
        return f"wrote {os.write(fd, b'abc')}"
    except OSError as e:
        return errno.errorcode[e.errno]
for name in ("null", "zero", "full", "random", "urandom", "null600", "mem", "nodev/null"):
    for flags in (RO, W, RW, W | os.O_CREAT | os.O_TRUNC, W | os.O_CREAT | os.O_APPEND,
                  RO | os.O_NONBLOCK, W | os.O_CREAT | os.O_EXCL, RO | os.O_DIRECTORY,
                  RO | os.O_NOFOLLOW, RO | os.O_CLOEXEC):
        try:
            fd = raw_open(name, flags, 0o644)
        except OSError as e:
            print(f"{name} {flags:#o}: {errno.errorcode[e.errno]}")
            continue
        shown = fcntl.fcntl(fd, fcntl.F_GETFL) & SHOWN
        cloexec = fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        st = os.fstat(fd)
        device = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        # A read of null or full says nothing (EOF, zeros): not made.
        quiet_read = flags & os.O_ACCMODE == RO and name.startswith(("null", "full"))
        action = "-" if quiet_read else use(fd, name)
        print(f"{name} {flags:#o}: ok {shown:#o} cloexec={cloexec} {device} {action}")
        os.close(fd)
# A shell's "< /dev/null" and "> /dev/null", git's O_RDWR, many times:
# counted by --stats.
for _ in range(150):
    for flags in (RO, W, RW, W | os.O_CREAT | os.O_TRUNC):
        os.close(raw_open("null", flags, 0o644))
"""

#: The device numbers of the probe's names (chmod 0666 but null600); mem
#: is not a quiet device.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "null600": (1, 3), "mem": (1, 1)}  # fmt: skip

_PREFIXES = {"root": (), "root-nocaps": NO_CAPS, "nobody": (*AS_NOBODY, "--")}


@pytest.fixture
def tree() -> Iterator[Path]:
    """The devices, made as root, and a nodev tmpfs holding a null."""
    with public_dir("unotifyd-quiet-") as d:
        t = d / "t"
        t.mkdir(mode=0o777)
        t.chmod(0o777)
        for name, (major, minor) in DEVICES.items():
            mode = 0o600 if name == "null600" else 0o666
            os.mknod(t / name, stat.S_IFCHR | mode, os.makedev(major, minor))
            (t / name).chmod(mode)
        (t / "nodev").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "nodev,mode=0777", "quiet", str(t / "nodev")],
                       check=True)  # fmt: skip
        try:
            os.mknod(t / "nodev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            (t / "nodev" / "null").chmod(0o666)
            yield t
        finally:
            subprocess.run(["umount", str(t / "nodev")], check=True)


def _expected(line: str, who: str) -> str | None:
    """What the control must say for one open, where the kernel's rules say
    it plainly (None: left to the comparison alone)."""
    name, flags_text = line.split(": ", 1)[0].split(" ")
    flags = int(flags_text, 8)
    if flags & os.O_EXCL:
        return "EEXIST"  # do_open(), before may_open()
    if flags & os.O_DIRECTORY:
        return "ENOTDIR"
    if name == "nodev/null":
        return "EACCES"  # may_open(): a device on a nodev mount (even for root)
    if name == "null600" and who == "nobody":
        return "EACCES"
    return None


@pytest.mark.parametrize("who", _PREFIXES)
def test_a_quiet_device_opens_under_enforce_as_it_does_natively(tree: Path, who: str) -> None:
    argv = [*_PREFIXES[who], SYSTEM_PYTHON, "-c", PROBE, str(tree)]
    native = run_native(argv)
    assert native.returncode == 0, describe(native)
    lines = native.stdout.splitlines()
    assert len(lines) == 80, describe(native)
    # The control: the answers the kernel's rules give, and the devices work.
    for line in lines:
        want = _expected(line, who)
        if want is not None:
            assert line.endswith(f": {want}"), line
        elif line.startswith("mem "):
            # Not a quiet device: opened by a worker thread still. ENXIO
            # where the kernel has no /dev/mem (CONFIG_DEVMEM), else
            # open_port()'s CAP_SYS_RAWIO.
            assert who == "root" or line.endswith((": EPERM", ": ENXIO")), line
        elif " ok " in line:
            assert re.search(r" ok 0o\d+ cloexec=[01] 1:\d+ ", line), line
    assert "zero 0o0: ok 0o0 cloexec=0 1:5 read 4 zeros" in lines
    assert "full 0o1: ok 0o1 cloexec=0 1:7 ENOSPC" in lines
    assert "null 0o1101: ok 0o1 cloexec=0 1:3 wrote 3" in lines
    assert "null 0o2101: ok 0o2001 cloexec=0 1:3 wrote 3" in lines
    assert "null 0o2000000: ok 0o0 cloexec=1 1:3 -" in lines
    rule = ("--deny", f"{tree}/unrelated")  # any rule: the full view traps opens
    runs = {
        "enforce": (("--enforce", "--stats", *rule), None),
        "enforce-python": (("--enforce", *rule), {"UNOTIFYD_PASSTHROUGH": "0"}),
        "virtualize": (rule, None),
        "opens": (("--view", "opens", *rule), None),
    }
    failures = []
    for mode, (opts, extra) in runs.items():
        proc = run_launch(*opts, argv=argv, env=env(extra))
        assert proc.returncode == 0, describe(proc)
        diff = [d for d in difflib.unified_diff(lines, proc.stdout.splitlines(), lineterm="", n=0)
                if d[:1] in "+-" and d[:3] not in ("+++", "---")]  # fmt: skip
        failures += [f"{mode}: {d}" for d in diff]
        if mode == "enforce" and who == "root":
            # The lane made the 600 opens of null (it serves root's
            # programs): Python answered only a few of the table's and of
            # the interpreter's start (39 of 716 here; 300 more with the
            # lane leaving the writes to Python, 600 with it leaving all).
            total = re.search(r"by system call: .*?openat (\d+)", proc.stderr)
            by_lane = re.search(r"by the lane: .*?openat (\d+)", proc.stderr)
            assert total is not None and by_lane is not None, describe(proc)
            assert int(total.group(1)) - int(by_lane.group(1)) < 300, describe(proc)
    assert not failures, "\n".join(failures)
