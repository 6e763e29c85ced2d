"""A differential table: system calls x path shapes, natively and under each mode (issue 16).

Each case runs on a fresh tree: one call (``stat``, ``open``, ``mkdir``,
``rename``...) on one shape of path (a plain name, ``d/.``, ``d/..``, a
trailing ``/``, a symlink to a directory followed by ``/``, a dangling
symlink, ``..`` after a missing name, the empty path, a name deeper than
PATH_MAX, a deleted file through ``/proc/self/fd/N``, a removed cwd...). What
it answers (the errno, or for a ``stat`` the file's type and size) and the
whole tree afterwards are printed. The table runs natively (the oracle),
then under ``unotifyd launch`` in virtualize mode, ``--enforce`` and
``--view opens``, with a rule elsewhere (so that every call is trapped and
performed or let through as the mode does, and none is governed), as root;
and as an unprivileged user under ``--enforce``, where every call is
performed with its credentials. Every line must be the same. Prints a
``RESULT`` line per run with the number of cases and of differences.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from ..security.support import NO_CAPS, Report
from .helpers import (
    AS_NOBODY,
    SYSTEM_PYTHON,
    describe,
    env,
    public_dir,
    run_launch,
    run_native,
)

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",), "opens": ("--view", "opens")}
#: Virtualize mode again without the compiled pass-through lane: Python answers every call.
PYTHON_ONLY = {"UNOTIFYD_PASSTHROUGH": "0"}

TABLE = r'''
import ctypes, errno, fcntl, os, shutil, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
base = sys.argv[1]
DEEP = "/".join(["n" * 200] * 22)  # a name deeper than PATH_MAX, made a level at a time

def fresh():
    os.chdir("/")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base + "/d/sub")
    os.mkdir(base + "/e")
    for name, text in (("f", "file"), ("d/f", "in d"), ("g", "other")):
        with open(os.path.join(base, name), "w") as out:
            out.write(text)
    os.symlink("d", base + "/ld")
    os.symlink("f", base + "/lf")
    os.symlink("missing", base + "/dang")
    os.chdir(base)

def tree():
    st = os.lstat(base)
    out = [f".:{oct(st.st_mode & 0o7777)}"]
    for top, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(top, name)
            st = os.lstat(p)
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            size = st.st_size if kind == "f" else ""
            out.append(f"{os.path.relpath(p, base)}:{kind}{oct(st.st_mode & 0o7777)}{size}")
    return " ".join(out)

def errname():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def raw(name, *args):
    ctypes.set_errno(0)
    args = [a.encode() if isinstance(a, str) else a for a in args]
    rc = getattr(libc, name)(*args)
    return rc, ("0" if rc >= 0 else errname())

def kind_of(p, follow):
    try:
        st = os.stat(p) if follow else os.lstat(p)
    except OSError as e:
        return errno.errorcode[e.errno]
    return stat.filemode(st.st_mode)[0] + (str(st.st_size) if stat.S_ISREG(st.st_mode) else "")

def opened(p, flags, mode=0o640):
    rc, res = raw("open", p, flags, mode)
    if rc >= 0:
        res += ":" + oct(fcntl.fcntl(rc, fcntl.F_GETFL))  # the file's flags, as kept
        os.close(rc)
    return res

def chdir_and_back(p):
    rc, res = raw("chdir", p)
    os.chdir(base)
    return res

CALLS = {
    "stat": lambda p: kind_of(p, True),
    "lstat": lambda p: kind_of(p, False),
    "open": lambda p: opened(p, os.O_RDONLY),
    "open-dir": lambda p: opened(p, os.O_RDONLY | os.O_DIRECTORY),
    "creat": lambda p: opened(p, os.O_CREAT | os.O_WRONLY),
    "creat-excl": lambda p: opened(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY),
    "trunc": lambda p: opened(p, os.O_WRONLY | os.O_TRUNC),
    "access": lambda p: raw("access", p, os.R_OK)[1],
    "readlink": lambda p: raw("readlink", p, ctypes.create_string_buffer(64), 64)[1],
    "mkdir": lambda p: raw("mkdir", p, 0o750)[1],
    "rmdir": lambda p: raw("rmdir", p)[1],
    "unlink": lambda p: raw("unlink", p)[1],
    "rename-from": lambda p: raw("rename", p, "moved")[1],
    "rename-onto": lambda p: raw("rename", "g", p)[1],
    "link-onto": lambda p: raw("link", "g", p)[1],
    "symlink-onto": lambda p: raw("symlink", "t", p)[1],
    "chmod": lambda p: raw("chmod", p, 0o700)[1],  # its owner can still list it
    "truncate": lambda p: raw("truncate", p, ctypes.c_long(1))[1],
    "utime": lambda p: raw("utimes", p, None)[1],
    "chdir": chdir_and_back,
}

SHAPES = [
    "f", "d", "d/", "d/.", "d/..", "d/sub/..", "e/.", ".", "ld", "ld/", "lf", "lf/",
    "dang", "dang/", "missing", "missing/", "missing/.", "missing/..", "d/missing/../f",
    "f/", "f/.", "", "/proc/self/fd/DELETED", "DEEP", "DEEP/f", "CWD-GONE", "CWD-GONE/x",
]
# Calls that would change something above the tree through these shapes.
UNSAFE = {("chmod", "d/.."), ("chmod", "d/sub/.."), ("utime", "d/.."), ("truncate", "d/..")}

def shaped(shape):
    """The path to pass for ``shape``, after whatever it needs is set up."""
    if shape == "/proc/self/fd/DELETED":
        fd = os.open("gone-file", os.O_CREAT | os.O_RDWR, 0o640)
        os.write(fd, b"deleted")
        os.unlink("gone-file")
        return f"/proc/self/fd/{fd}"
    if shape.startswith("DEEP"):
        for part in DEEP.split("/"):
            os.mkdir(part)
            os.chdir(part)
        with open("f", "w") as out:
            out.write("deep")
        os.chdir(base)
        # From a cwd deep inside: a short name there, deeper than PATH_MAX from /.
        for part in DEEP.split("/")[:-1]:
            os.chdir(part)
        return DEEP.rsplit("/", 1)[1] + shape[4:]
    if shape.startswith("CWD-GONE"):
        os.mkdir("cwd-gone")
        os.chdir("cwd-gone")
        os.rmdir("../cwd-gone")
        return "." + shape[8:]
    return shape

fresh()
pristine = tree()
for call, fn in CALLS.items():
    for shape in SHAPES:
        if (call, shape) in UNSAFE:
            continue
        try:
            result = fn(shaped(shape))
        finally:
            os.chdir(base)
        # The deep tree is left out of the listing (its names are long),
        # but what is at its bottom is in it.
        there = None
        if os.path.isdir(DEEP.split("/")[0]):
            for part in DEEP.split("/")[:-1]:
                os.chdir(part)
            last = DEEP.rsplit("/", 1)[1]
            there = [n if n != last else "DEEP" for n in sorted(os.listdir("."))]
            if os.path.isdir(last):
                there += sorted(os.listdir(last))
            os.chdir(base)
            shutil.rmtree(DEEP.split("/")[0])
        after = tree()
        print(call, repr(shape), result, there, after)
        if after != pristine:
            fresh()  # else the next case finds it as it was made
'''


def _table(
    argv: list[str], opts: tuple[str, ...] | None, extra_env: dict[str, str] | None = None
) -> list[str]:
    proc = run_native(argv, timeout=300) if opts is None else run_launch(
        *opts, argv=argv, timeout=300, env=env(extra_env)
    )
    assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    return proc.stdout.splitlines()


def _runs(who: str) -> list[tuple[str, tuple[str, ...], dict[str, str] | None]]:
    """(name, options, extra environment) of each run of a table: --enforce
    with the lane and with Python alone, and virtualize mode for root."""
    runs = [("enforce", MODES["enforce"], None), ("enforce-python", MODES["enforce"], PYTHON_ONLY)]
    if who == "root":
        runs.append(("virtualize", MODES["virtualize"], None))
    return runs


def _as(who: str, d: Path) -> tuple[str, ...]:
    """The argv prefix that runs a table as ``who``, in ``d`` (nobody's own)."""
    if who == "nobody":
        os.chown(d, 65534, 65534)
    return {"root": (), "root-nocaps": NO_CAPS, "nobody": (*AS_NOBODY, "--")}[who]


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
def test_every_call_on_every_path_shape_answers_as_natively(
    request: pytest.FixtureRequest, who: str
) -> None:
    report = Report(request.config)
    with public_dir("unotifyd-diff-") as d:
        base = d / "t"
        argv = [*_as(who, d), SYSTEM_PYTHON, "-c", TABLE, str(base)]
        native = _table(argv, None)
        # The control: the odd shapes are refused natively, and the tree stays.
        assert "rmdir 'd/.' EINVAL" in " ".join(native)
        assert any(line.startswith("open 'd/' 0:0o100000 ") for line in native)  # no O_DIRECTORY
        assert any(line.startswith("stat 'DEEP/f' -4 ") for line in native)  # 4 bytes, deep
        assert len(native) > 500
        differences: dict[str, int] = {}
        failures: list[str] = []
        # As nobody and as root without capabilities, the mode that acts
        # with the program's credentials (and whose run takes longest): the
        # others let the kernel act.
        runs = [(m, o, None) for m, o in MODES.items()] + [
            ("virtualize-python", MODES["virtualize"], PYTHON_ONLY)
        ]
        for mode, opts, extra in runs if who == "root" else [("enforce", MODES["enforce"], None)]:
            got = _table(argv, (*opts, "--deny", str(d / "elsewhere")), extra)
            diff = [line for line in difflib.unified_diff(native, got, lineterm="", n=0)
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")]  # fmt: skip
            failures += [f"{mode}: {line}" for line in diff[:30]]
            differences[mode] = sum(1 for line in diff if line.startswith("-"))
            report(f"differential[{mode}-{who}]", cases=len(native),
                   differences=differences[mode])  # fmt: skip
        assert not any(differences.values()), failures


#: Odd arguments (issue 40): flags the kernel refuses, a mask with no event,
#: a NULL path with AT_EMPTY_PATH, what name_to_handle_at writes on
#: EOVERFLOW, linking an open file. One line per case; a line starting with
#: ``LIMIT`` is a known limit (README.md), compared apart.
ARGS = r"""
import ctypes, errno, os, shutil, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
base = sys.argv[1]
shutil.rmtree(base, ignore_errors=True)
os.makedirs(base + "/d")
os.chdir(base)
with open("f", "w") as out:
    out.write("file")
NR = dict(newfstatat=262, statx=332, linkat=265, fchownat=260, fchmodat2=452, unlinkat=263,
          renameat2=316, inotify_add_watch=254, name_to_handle_at=303, getxattrat=464,
          listxattrat=465, file_getattr=468, utimensat=280)
CWD, EMPTY, NOFOLLOW, FOLLOW = -100, 0x1000, 0x100, 0x400

def sc(name, *args):
    ctypes.set_errno(0)
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    rc = libc.syscall(ctypes.c_long(NR[name]), *args)
    return str(rc) if rc >= 0 else errno.errorcode[ctypes.get_errno()]

def show(name, result):
    print(name, result, flush=True)

fd = os.open("f", os.O_RDONLY)
st, stx = ctypes.create_string_buffer(144), ctypes.create_string_buffer(256)
buf = ctypes.create_string_buffer(64)
xargs = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(buf), 64, 0))
# Flags the kernel does not know, checked before the path is read or looked up.
show("linkat flags=0x2", sc("linkat", CWD, b"f", CWD, b"l1", 0x2))
show("linkat missing flags=0x2", sc("linkat", CWD, b"missing", CWD, b"l1", 0x2))
show("linkat NULL flags=0x2", sc("linkat", CWD, None, CWD, b"l1", 0x2))
show("fchownat missing flags=0x2", sc("fchownat", CWD, b"missing", -1, -1, 0x2))
show("fchmodat2 missing flags=0x2", sc("fchmodat2", CWD, b"missing", 0o644, 0x2))
show("unlinkat missing flags=0x1", sc("unlinkat", CWD, b"missing", 0x1))
show("renameat2 missing flags=8", sc("renameat2", CWD, b"missing", CWD, b"x", 8))
show("renameat2 missing EXCHANGE|NOREPLACE", sc("renameat2", CWD, b"missing", CWD, b"x", 3))
show("utimensat missing flags=0x2", sc("utimensat", CWD, b"missing", None, 0x2))
show("getxattrat fd NULL flags=0x2", sc("getxattrat", fd, None, 0x2, b"user.x", xargs, 16))
show("name_to_handle_at missing flags=0x4",
     sc("name_to_handle_at", CWD, b"missing", buf, None, 0x4))
show("tree", sorted(os.listdir(".")))
# inotify_add_watch: a mask with no bit inotify knows is EINVAL, before anything else.
ino = libc.inotify_init1(0)
show("inotify mask=0", sc("inotify_add_watch", ino, b"d", 0))
show("inotify mask=0 NULL", sc("inotify_add_watch", ino, None, 0))
show("inotify mask=0x08000000", sc("inotify_add_watch", ino, b"d", 0x08000000))
show("inotify mask=IN_DONT_FOLLOW", sc("inotify_add_watch", ino, b"d", 0x02000000) != "0")
show("inotify mask=IN_ONESHOT", sc("inotify_add_watch", ino, b"f", 0x80000000).isdigit())
# A NULL path with AT_EMPTY_PATH is "" for the calls of getname_maybe_null() (6.11).
def size(rc):
    return rc if rc != "0" else "0:" + str(struct.unpack_from("<q", st.raw, 48)[0])
show("newfstatat fd NULL EMPTY", size(sc("newfstatat", fd, None, st, EMPTY)))
show("newfstatat fd NULL EMPTY|0x8000", size(sc("newfstatat", fd, None, st, EMPTY | 0x8000)))
show("newfstatat CWD NULL EMPTY", sc("newfstatat", CWD, None, st, EMPTY))
show("newfstatat CWD NULL 0", sc("newfstatat", CWD, None, st, 0))
show("newfstatat -1 NULL EMPTY", sc("newfstatat", -1, None, st, EMPTY))
show("newfstatat 999 NULL EMPTY", sc("newfstatat", 999, None, st, EMPTY))
show("statx fd NULL EMPTY", sc("statx", fd, None, EMPTY, 0x7FF, stx))
show("statx CWD NULL EMPTY|NOFOLLOW", sc("statx", CWD, None, EMPTY | NOFOLLOW, 0x7FF, stx))
show("getxattrat fd NULL EMPTY", sc("getxattrat", fd, None, EMPTY, b"user.x", xargs, 16))
show("getxattrat CWD NULL EMPTY", sc("getxattrat", CWD, None, EMPTY, b"user.x", xargs, 16))
show("listxattrat fd NULL EMPTY", sc("listxattrat", fd, None, EMPTY, buf, 64))
show("listxattrat CWD NULL EMPTY", sc("listxattrat", CWD, None, EMPTY, buf, 64))
show("listxattrat CWD '' EMPTY", sc("listxattrat", CWD, b"", EMPTY, buf, 64))
show("file_getattr fd NULL EMPTY", sc("file_getattr", fd, None, buf, 24, EMPTY))
show("fchownat fd NULL EMPTY", sc("fchownat", fd, None, -1, -1, EMPTY))
show("linkat fd NULL EMPTY", sc("linkat", fd, None, CWD, b"l2", EMPTY))
show("utimensat fd NULL 0", sc("utimensat", fd, None, None, 0))
show("utimensat CWD NULL EMPTY|0x8000", sc("utimensat", CWD, None, None, EMPTY | 0x8000))
# Both times UTIME_OMIT: 0 before the path, the dirfd or the flags are looked at.
omit = ctypes.create_string_buffer(struct.pack("<qqqq", 0, (1 << 30) - 2, 0, (1 << 30) - 2))
show("utimensat OMIT missing/", sc("utimensat", CWD, b"missing/", omit, 0))
show("utimensat OMIT '' 0", sc("utimensat", CWD, b"", omit, 0))
show("utimensat OMIT f flags=0x4000", sc("utimensat", CWD, b"f", omit, 0x4000))
show("utimensat OMIT 999", sc("utimensat", 999, b"f", omit, 0))
show("utimensat OMIT bad path", sc("utimensat", CWD, ctypes.c_void_p(1), omit, 0))
# name_to_handle_at writes the mount id, and the header, on EOVERFLOW too.
mnt = ctypes.create_string_buffer(b"\xee" * 8, 8)
handle = ctypes.create_string_buffer(b"\0" * 4 + b"\xee" * 132, 136)
rc = sc("name_to_handle_at", CWD, b"f", handle, mnt, 0)
show("name_to_handle_at hb=0", (rc, handle.raw[:8].hex(), mnt.raw != b"\xee" * 8))
mnt2 = ctypes.create_string_buffer(8)
handle2 = ctypes.create_string_buffer(struct.pack("<I", 128), 136)
rc = sc("name_to_handle_at", CWD, b"f", handle2, mnt2, 0)
show("name_to_handle_at hb=128", (rc, mnt.raw[:4] == mnt2.raw[:4]))
handle = ctypes.create_string_buffer(b"\0" * 4 + b"\xee" * 132, 136)
rc = sc("name_to_handle_at", CWD, b"f", handle, None, 0)
show("name_to_handle_at mnt=NULL", (rc, handle.raw[:8].hex()))
# Naming an open file: through /proc/self/fd/N as natively; with AT_EMPTY_PATH a known limit.
tmp = os.open("d", os.O_TMPFILE | os.O_RDWR, 0o640)
proc = f"/proc/self/fd/{tmp}".encode()
show("linkat /proc/self/fd FOLLOW", sc("linkat", CWD, proc, CWD, b"d/t1", FOLLOW))
wr = os.open("f", os.O_RDONLY)
show("LIMIT linkat fd '' EMPTY", sc("linkat", wr, b"", CWD, b"l3", EMPTY))
tmp = os.open("d", os.O_TMPFILE | os.O_RDWR, 0o640)
show("LIMIT linkat O_TMPFILE '' EMPTY", sc("linkat", tmp, b"", CWD, b"d/t2", EMPTY))
show("LIMIT tree", (sorted(os.listdir(".")), sorted(os.listdir("d"))))
"""


def _limits(lines: list[str]) -> tuple[list[str], list[str]]:
    return ([x for x in lines if not x.startswith("LIMIT ")],
            [x for x in lines if x.startswith("LIMIT ")])  # fmt: skip


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
def test_odd_arguments_answer_as_natively(request: pytest.FixtureRequest, who: str) -> None:
    """Flags, masks, NULL paths and what a failed call still writes, natively
    and under ``--enforce`` (lane and Python alone) and virtualize mode; the
    one known limit (README.md) is asserted as what it is."""
    report = Report(request.config)
    with public_dir("unotifyd-args-") as d:
        base = d / "t"
        argv = [*_as(who, d), SYSTEM_PYTHON, "-c", ARGS, str(base)]
        native, native_limits = _limits(_table(argv, None))
        # The controls: each behaviour is the kernel's.
        for line in ("linkat missing flags=0x2 EINVAL", "inotify mask=0 EINVAL",
                     "newfstatat fd NULL EMPTY 0:4", "newfstatat CWD NULL EMPTY 0",
                     "listxattrat CWD NULL EMPTY EBADF", "fchownat fd NULL EMPTY EFAULT",
                     "name_to_handle_at hb=0 ('EOVERFLOW', '08000000ff000000', True)",
                     "name_to_handle_at hb=128 ('0', True)",
                     "name_to_handle_at mnt=NULL ('EFAULT', '00000000eeeeeeee')",
                     "linkat /proc/self/fd FOLLOW 0"):  # fmt: skip
            assert line in native, (line, native)
        def limited(answer: str, made: bool) -> list[str]:
            tree = "(['d', 'f', 'l3'], ['t1', 't2'])" if made else "(['d', 'f'], ['t1'])"
            return [f"LIMIT linkat fd '' EMPTY {answer}",
                    f"LIMIT linkat O_TMPFILE '' EMPTY {answer}", f"LIMIT tree {tree}"]  # fmt: skip

        assert native_limits == limited("0", True)
        runs = _runs(who)
        failures: list[str] = []
        for mode, opts, extra in runs:
            got, limits = _limits(_table(argv, (*opts, "--deny", str(d / "elsewhere")), extra))
            diff = [line for line in difflib.unified_diff(native, got, lineterm="", n=0)
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")]  # fmt: skip
            failures += [f"{mode}: {line}" for line in diff]
            report(f"odd-arguments[{mode}-{who}]", cases=len(native),
                   differences=sum(1 for line in diff if line.startswith("-")))  # fmt: skip
            # linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH when it is
            # made for the program (README.md: the kernel compares credentials
            # as one object): root has it; the others get ENOENT, the kernel's
            # answer to a caller whose credentials differ; the tree above
            # shows no name was made.
            made = who == "root" or mode == "virtualize"
            assert limits == limited("0" if made else "ENOENT", made), (mode, limits)
        assert not failures, failures


#: Names in /proc a program looks at (helper-41's audit), each by ``stat``,
#: ``lstat``, ``readlink``, ``open`` and ``open(O_NOFOLLOW)``, from the main
#: thread and from another, with pids shown as ``PID``/``TID`` and namespace
#: inodes as ``[N]``. ``/proc/1/exe``: a link of a process the program may not
#: ptrace, which it may look at (lstat) but not follow or read
#: (proc_pid_get_link(), proc_pid_readlink()). ``ns/*``: magic links to nsfs
#: files, which have no name (proc_ns_get_link()). ``/proc/self`` and
#: ``/proc/thread-self``: symlinks whose text is the reader's pid (and tid),
#: the program's, never the supervisor's.
PROC_PATHS = [
    "/proc/1/exe", "/proc/1/cwd", "/proc/1/fdinfo/0",
    "/proc/self/ns/mnt", "/proc/self/ns/user", "/proc/thread-self/ns/mnt",
    "/proc/self/ns/pid_for_children", "/proc/self/ns", "/proc/self/ns/mnt/x",
    "/proc/self/task/TID/ns/net",
    "/proc/self", "/proc/thread-self", "/proc/self/", "/proc/thread-self/",
    "/proc/self/root/proc/self", "/proc/self/root/proc/thread-self",
]  # fmt: skip
PROC = r"""
import errno, os, re, stat, sys, threading
PATHS = sys.argv[1:]

def norm(text):
    text = text.replace(f"/{threading.get_native_id()}", "/TID").replace(f"{os.getpid()}", "PID")
    return re.sub(r":\[\d+\]", ":[N]", text)

def attempt(act):
    try:
        return act()
    except OSError as e:
        return errno.errorcode[e.errno]

def kind(p, follow):
    st = os.stat(p) if follow else os.lstat(p)
    return stat.filemode(st.st_mode)[0] + ("" if follow else f" size={st.st_size}")

def opened(p, flags):
    os.close(os.open(p, flags))
    return "opened"

def table(who):
    tid = str(threading.get_native_id())
    for shape in PATHS:
        p = shape.replace("TID", tid)
        print(who, shape, "stat", attempt(lambda: kind(p, True)))
        print(who, shape, "lstat", attempt(lambda: kind(p, False)))
        print(who, shape, "readlink", norm(attempt(lambda: os.readlink(p))))
        print(who, shape, "open", attempt(lambda: opened(p, os.O_RDONLY)))
        print(who, shape, "open-nofollow", attempt(lambda: opened(p, os.O_RDONLY | os.O_NOFOLLOW)))

table("main")
other = threading.Thread(target=table, args=("thread",))
other.start()
other.join()
"""
#: The kernel's own answers, which the bugs changed (checked as the control).
PROC_CONTROLS = (
    "main /proc/1/exe lstat l size=0", "main /proc/1/exe stat EACCES",
    "main /proc/1/exe readlink EACCES", "main /proc/1/exe open-nofollow ELOOP",
    "main /proc/1/fdinfo/0 lstat EACCES",
    "main /proc/self/ns/mnt stat -", "main /proc/self/ns/mnt open opened",
    "thread /proc/thread-self/ns/mnt stat -", "main /proc/self/ns/mnt/x stat ENOTDIR",
    "main /proc/self lstat l size=0", "main /proc/self readlink PID",
    "thread /proc/thread-self readlink PID/task/TID", "main /proc/self open-nofollow ELOOP",
)  # fmt: skip


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
def test_proc_names_answer_as_natively(request: pytest.FixtureRequest, who: str) -> None:
    """Names in ``/proc`` (see PROC), natively and under ``--enforce`` (lane
    and Python alone) and virtualize mode."""
    report = Report(request.config)
    with public_dir("unotifyd-proc-") as d:
        prefix = {"root": (), "root-nocaps": NO_CAPS, "nobody": (*AS_NOBODY, "--")}[who]
        argv = [*prefix, SYSTEM_PYTHON, "-c", PROC, *PROC_PATHS]
        native = _table(argv, None)
        for line in PROC_CONTROLS:
            assert line in native, (line, native)
        runs = _runs(who)
        failures: list[str] = []
        for mode, opts, extra in runs:
            got = _table(argv, (*opts, "--deny", str(d / "elsewhere")), extra)
            diff = [line for line in difflib.unified_diff(native, got, lineterm="", n=0)
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")]  # fmt: skip
            failures += [f"{mode}: {line}" for line in diff]
            report(f"proc-names[{mode}-{who}]", cases=len(native),
                   differences=sum(1 for line in diff if line.startswith("-")))  # fmt: skip
        assert not failures, failures
