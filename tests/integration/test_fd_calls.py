"""A call on an fd is about the open file, not a name (issue 16), except where the file's
own nature counts: a read-only tree, and the files exec rules allow (issue 14).

glibc's ``fstat(fd)`` is ``newfstatat(fd, "", AT_EMPTY_PATH)``; each case runs natively
first (the control), then in both modes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unotifyd.kernel.opener import Start, parent_from

from .helpers import (
    AS_NOBODY,
    SYSTEM_PYTHON,
    TIMEOUT,
    describe,
    env,
    launch_cmd,
    public_dir,
    py,
    run_launch,
    run_native,
)

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",)}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return MODES[str(request.param)]


def _with_stdout(argv: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """``argv > out``, the redirection made by us (outside any sandbox), as a shell does."""
    with open(out, "w") as f:
        return subprocess.run(
            argv, stdout=f, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            timeout=TIMEOUT, env=env(), check=False,
        )  # fmt: skip


def test_output_into_a_denied_tree_opened_before_the_sandbox(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """``unotifyd launch --deny 'D/**' -- cat /etc/hostname > D/out``: the shell opened it."""
    denied = tmp_path / "D"
    denied.mkdir()
    native = _with_stdout(["cat", "/etc/hostname"], denied / "native")
    assert native.returncode == 0, native.stderr
    proc = _with_stdout(
        launch_cmd(*mode, "--deny", f"{denied}/**", argv=["cat", "/etc/hostname"]),
        denied / "out",
    )
    assert proc.returncode == 0, proc.stderr
    assert (denied / "out").read_text() == (denied / "native").read_text()


FSTAT = """
import os, sys
st = os.fstat(int(sys.argv[1]))
print(st.st_size, oct(st.st_mode))
"""


def test_fstat_of_an_inherited_fd_of_a_denied_file(tmp_path: Path, mode: tuple[str, ...]) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    fd = os.open(secret, os.O_RDONLY)
    try:
        native = run_native(py(FSTAT, str(fd)), pass_fds=(fd,))
        assert native.returncode == 0, describe(native)
        proc = run_launch(*mode, "--deny", str(secret), argv=py(FSTAT, str(fd)), pass_fds=(fd,))
    finally:
        os.close(fd)
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)


CHANGES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_EMPTY_PATH = 0x1000
fd = os.open(sys.argv[1], os.O_RDONLY)
def report(what, rc):
    print(what, "OK" if rc == 0 else os.strerror(ctypes.get_errno()))
report("fchmodat2", libc.syscall(452, fd, b"", 0o600, AT_EMPTY_PATH))
report("fchownat", libc.syscall(260, fd, b"", os.getuid(), os.getgid(), AT_EMPTY_PATH))
report("utimensat", libc.syscall(280, fd, None, None, 0))
report("fchmod", libc.fchmod(fd, 0o600))
report("fchown", libc.fchown(fd, os.getuid(), os.getgid()))
report("fsetxattr", libc.fsetxattr(fd, b"user.x", b"1", 1, 0))
report("fremovexattr", libc.fremovexattr(fd, b"user.x"))
# chattr: the flags it has, set again (FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS);
# then with junk in the command's upper half, which the kernel drops; then
# FS_IOC_FSSETXATTR with what FS_IOC_FSGETXATTR gave.
flags = ctypes.c_long(0)
libc.ioctl(fd, ctypes.c_ulong(0x80086601), ctypes.byref(flags))
report("setflags", libc.syscall(16, fd, ctypes.c_ulong(0x40086602), ctypes.byref(flags)))
junk = ctypes.c_ulong(0x40086602 | 1 << 32)
report("setflags-junk", libc.syscall(16, fd, junk, ctypes.byref(flags)))
fsx = ctypes.create_string_buffer(28)
libc.ioctl(fd, ctypes.c_ulong(0x801C581F), fsx)
report("fssetxattr", libc.syscall(16, fd, ctypes.c_ulong(0x401C5820), fsx))
os.fstat(fd)
print("fstat OK")
"""


def test_changes_through_an_fd_in_a_read_only_tree_are_erofs(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """As on a read-only mount (the control: a read-only bind mount in a mount namespace);
    outside the tree, each change is made (the same flags set again)."""
    tree = tmp_path / "ro"
    tree.mkdir()
    (tree / "f").write_text("x\n")
    mounted = (
        f"mount --bind {tree} {tree} && mount -o remount,ro,bind {tree} && "
        f'exec "$0" "$@"'
    )
    native = run_native(["unshare", "-m", "sh", "-c", mounted, *py(CHANGES, str(tree / "f"))])
    assert native.returncode == 0, describe(native)
    assert native.stdout.splitlines()[:10] == [
        f"{call} Read-only file system"
        for call in ("fchmodat2", "fchownat", "utimensat", "fchmod", "fchown", "fsetxattr",
                     "fremovexattr", "setflags", "setflags-junk", "fssetxattr")
    ], native.stdout
    proc = run_launch(*mode, "--readonly", f"{tree}/**", argv=py(CHANGES, str(tree / "f")))
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    assert (tree / "f").stat().st_mode & 0o777 != 0o600

    (tmp_path / "rw").write_text("x\n")
    native = run_native(py(CHANGES, str(tmp_path / "rw")))
    assert native.stdout.count(" OK\n") == 11, describe(native)
    proc = run_launch(*mode, "--readonly", f"{tree}/**", argv=py(CHANGES, str(tmp_path / "rw")))
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)


#: The calls of CHANGES that are about its fd alone (utimensat with a NULL path).
_ON_THE_FD = ("fchmod", "fchown", "fsetxattr", "fremovexattr", "ioctl", "utimensat")


def _trapped_calls(stderr: str) -> dict[str, int]:
    """``--stats``' notifications by system call."""
    line = next(line for line in stderr.splitlines() if "stats: by system call:" in line)
    items = line.split("by system call:", 1)[1].split(",")
    return {name: int(count) for name, count in (item.split() for item in items)}


@pytest.mark.parametrize("rule", ["--redirect", "--deny"])
def test_changes_through_an_fd_are_left_to_the_kernel_where_no_rule_can_refuse_them(
    tmp_path: Path, mode: tuple[str, ...], rule: str
) -> None:
    """A redirect or a deny is about names, and a program's fd is none
    (decide_on_fd): the filter traps no change made through one, and the
    kernel answers as natively. Enforcing mode traps them all the same, to
    refuse a system setting's chmod on an fd (serve/decide.py,
    _changes_the_system): this file is none, and each answers as natively.
    The control: under a read-only tree, which refuses them (EROFS), each
    is trapped, also on a file outside it."""
    (tmp_path / "rw").write_text("x\n")
    (tmp_path / "ro").mkdir()
    native = run_native(py(CHANGES, str(tmp_path / "rw")))
    assert native.stdout.count(" OK\n") == 11, describe(native)
    value = f"{tmp_path}/a={tmp_path}/b" if rule == "--redirect" else f"{tmp_path}/a"
    proc = run_launch(*mode, "--stats", rule, value, argv=py(CHANGES, str(tmp_path / "rw")))
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    trapped = _trapped_calls(proc.stderr)
    if "--enforce" in mode:
        assert set(_ON_THE_FD) <= set(trapped), trapped
    else:
        assert not set(_ON_THE_FD) & set(trapped), trapped
    # Their AT_EMPTY_PATH forms have a path argument: trapped (fchownat here).
    assert trapped.get("fchmodat2", 0) >= 1, trapped

    proc = run_launch(
        *mode, "--stats", "--readonly", f"{tmp_path}/ro/**", argv=py(CHANGES, str(tmp_path / "rw"))
    )
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    trapped = _trapped_calls(proc.stderr)
    assert set(_ON_THE_FD) <= set(trapped), trapped


MEMFD_EXEC = """
import os, sys
fd = os.memfd_create("payload")
with open(sys.argv[1], "rb") as f:
    os.write(fd, f.read())
try:
    os.execve(fd, [sys.argv[1], "escaped"], {})
except OSError as e:
    print("execveat", e.strerror)
"""


def test_an_exec_allow_list_is_not_escaped_through_a_memfd(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    echo = "/bin/echo"
    native = run_native(py(MEMFD_EXEC, echo))
    assert (native.returncode, native.stdout) == (0, "escaped\n"), describe(native)
    allowed = str(Path(sys.executable).resolve().parent) + "/**"
    proc = run_launch(*mode, "--exec", allowed, argv=py(MEMFD_EXEC, echo))
    assert (proc.returncode, proc.stdout) == (0, "execveat Permission denied\n"), describe(proc)


LINK_OUT = """
import ctypes, os, sys
d = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
def report(what, rc):
    print(what, "OK" if rc == 0 else os.strerror(ctypes.get_errno()))
report("link", libc.link(f"{d}/ro/f".encode(), f"{d}/out/by-name".encode()))
fd = os.open(f"{d}/ro/f", os.O_RDONLY)
report("linkat-fd", libc.linkat(fd, b"", -100, f"{d}/out/by-fd".encode(), 0x1000))
"""


def test_a_file_of_a_read_only_tree_cannot_be_linked_out(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """Writing through a new name outside would change it; a ro mount says EXDEV (issue 14)."""
    (tmp_path / "ro").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "ro" / "f").write_text("x\n")
    tree = tmp_path / "ro"
    mounted = f'mount --bind {tree} {tree} && mount -o remount,ro,bind {tree} && exec "$0" "$@"'
    native = run_native(["unshare", "-m", "sh", "-c", mounted, *py(LINK_OUT, str(tmp_path))])
    assert native.stdout == "link Invalid cross-device link\nlinkat-fd Invalid cross-device link\n"
    proc = run_launch(*mode, "--readonly", f"{tree}/**", argv=py(LINK_OUT, str(tmp_path)))
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    assert not list((tmp_path / "out").iterdir())


NO_NAME = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(64)
def report(what, rc):
    print(what, rc, os.strerror(ctypes.get_errno()) if rc < 0 else "")
report("readlink", libc.syscall(89, b"", buf, 64))
report("readlinkat", libc.syscall(267, -100, b"", buf, 64))
report("utime", libc.syscall(132, None, None))
report("utimes", libc.syscall(235, None, None))
report("utimensat", libc.syscall(280, -100, None, None, 0))
"""


def test_no_name_with_at_fdcwd_is_no_file(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """An empty or NULL path means dirfd's file only for a real fd; with AT_FDCWD the kernel
    fails (ENOENT, EFAULT) rather than acting on the cwd, even a redirected one."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = (tmp_path / "b").stat().st_mtime_ns
    native = run_native(py(NO_NAME), cwd=tmp_path / "a")
    assert native.stdout.count(" -1 ") == 5 and native.returncode == 0, describe(native)
    tree = f"{tmp_path}/a/**={tmp_path}/b/**"
    proc = run_launch(*mode, "--redirect", tree, argv=py(NO_NAME), cwd=tmp_path / "a")
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    assert (tmp_path / "b").stat().st_mtime_ns == before


RUN_SCRIPT = """
import os, sys
try:
    os.execv(sys.argv[1], [sys.argv[1]])
except OSError as e:
    print("exec", e.strerror)
"""


def test_a_scripts_interpreter_must_be_allowed_too(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """``#!INTERP`` runs INTERP: an exec rule on the script alone must not let it run (issue 14)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "scripts").mkdir()
    echo = tmp_path / "bin" / "echo"
    echo.write_bytes(Path("/bin/echo").read_bytes())
    echo.chmod(0o755)
    script = tmp_path / "scripts" / "hello"
    script.write_text(f"#!{echo} interpreted\n")
    script.chmod(0o755)
    native = run_native(py(RUN_SCRIPT, str(script)))
    assert native.stdout == f"interpreted {script}\n", describe(native)
    here = str(Path(sys.executable).resolve().parent)
    allowed = ("--exec", f"{here}/**", "--exec", f"{tmp_path}/scripts/**")
    proc = run_launch(*mode, *allowed, argv=py(RUN_SCRIPT, str(script)))
    assert (proc.returncode, proc.stdout) == (0, "exec Permission denied\n"), describe(proc)
    # With its interpreter allowed too, it runs.
    proc = run_launch(*mode, *allowed, "--exec", str(echo), argv=py(RUN_SCRIPT, str(script)))
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)


FIONREAD = """
import fcntl, os, termios
r, w = os.pipe()
os.write(w, b"abc")
print(int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\\0" * 4), "little"))
"""


def test_only_the_ioctls_that_change_a_file_are_trapped(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """The filter compares ioctl's command: a pipe's FIONREAD is never notified."""
    opts = (*mode, "--readonly", f"{tmp_path}/**", "--trace")
    proc = run_launch(*opts, argv=py(FIONREAD))
    assert (proc.returncode, proc.stdout) == (0, "3\n"), describe(proc)
    assert "ioctl" in proc.stderr.split("\n", 1)[0], describe(proc)  # the filter traps some
    assert "] ioctl(" not in proc.stderr, describe(proc)


NAMELESS = """
import errno, os, sys
base = sys.argv[1]

def r(what, fn):
    try:
        out = fn()
    except OSError as e:
        out = errno.errorcode[e.errno]
    print(what, out)

os.chdir(base)
fd = os.open("del", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"deleted")
os.unlink("del")
m = os.memfd_create("m")
os.write(m, b"memfd")
t = os.open(base, os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(t, b"tmpfile")
for name, n in (("deleted", fd), ("memfd", m), ("tmpfile", t)):
    link = f"/proc/self/fd/{n}"
    r(name + " open", lambda: os.read(os.open(link, os.O_RDONLY), 16))
    r(name + " stat", lambda: os.stat(link).st_size)
    r(name + " chmod", lambda: os.chmod(link, 0o640))
    r(name + " access", lambda: os.access(link, os.R_OK | os.W_OK))
# A removed cwd: what names it is ".", "./." or nothing at all.
os.mkdir("gone")
os.setxattr("gone", "user.k", b"v")
os.chdir("gone")
os.rmdir("../gone")
# The cwd itself by AT_FDCWD and an empty name (AT_EMPTY_PATH), which the
# kernel looks up whatever the call's follow flag.
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L, AT_FDCWD, EMPTY, NOFOLLOW = ctypes.c_long, -100, 0x1000, 0x100
def call(*args):
    ctypes.set_errno(0)
    if libc.syscall(*args) < 0:
        raise OSError(ctypes.get_errno(), "")
out = ctypes.create_string_buffer(256)
xargs = (ctypes.c_uint64 * 2)(ctypes.addressof(out), 16)
r("cwd itself getxattrat", lambda: (call(L(464), L(AT_FDCWD), b"", L(EMPTY), b"user.k", xargs,
                                         L(16)), out.raw[:1]))
r("cwd itself file_getattr", lambda: (call(L(468), L(AT_FDCWD), b"", out, L(24), L(EMPTY)),
                                      out.raw[:24]))
handle = (ctypes.c_uint32 * 34)(128)
r("cwd itself name_to_handle_at", lambda: (call(L(303), L(AT_FDCWD), b"", handle,
                                                ctypes.byref(ctypes.c_int()), L(EMPTY)),
                                           handle[0], handle[1]))
# nlink and mode of struct stat
r("cwd itself lstat", lambda: (call(L(262), L(AT_FDCWD), b"", out, L(EMPTY | NOFOLLOW)),
                               out.raw[16:28]))
r("cwd stat .", lambda: os.stat(".").st_nlink)
r("cwd listdir .", lambda: os.listdir("./."))
r("cwd open .", lambda: os.close(os.open(".", os.O_RDONLY | os.O_DIRECTORY)))
r("cwd access .", lambda: os.access(".", os.X_OK))
r("cwd create", lambda: os.open("x", os.O_CREAT | os.O_WRONLY))
r("cwd mkdir", lambda: os.mkdir("d"))
r("cwd stat ..", lambda: os.stat("..").st_nlink > 1)
"""


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_files_without_a_name_answer_as_natively(
    tmp_path: Path, mode: tuple[str, ...], who: str
) -> None:
    """Files reached through ``/proc/self/fd/N`` that have no name (a deleted
    file, a memfd, an ``O_TMPFILE``) and a cwd that was removed (issue 16):
    under enforce every one of these was ENOENT (the supervisor looked them
    up by ``/proc``'s text, ``"X (deleted)"``). The removed cwd itself by
    AT_FDCWD and an empty name, under enforce (audit helper-46): getxattrat
    and file_getattr were EBADF (made on an O_PATH fd, which they take as
    an fd), name_to_handle_at and the lstat acted on /proc's link."""
    with public_dir("unotifyd-nameless-") as d:
        base = d / "w"
        base.mkdir()
        prefix: tuple[str, ...] = ()
        if who == "nobody":
            os.chown(base, 65534, 65534)
            prefix = AS_NOBODY
        argv = [*prefix, SYSTEM_PYTHON, "-c", NAMELESS, str(base)]
        native = run_native(argv)
        assert native.returncode == 0, describe(native)
        assert "deleted open b'deleted'" in native.stdout, describe(native)
        assert "cwd stat . 0" in native.stdout, describe(native)
        for leftover in base.iterdir():
            leftover.unlink()
        proc = run_launch(*mode, "--deny", str(d / "elsewhere"), argv=argv)
        assert proc.returncode == 0, describe(proc)
        assert proc.stdout.splitlines() == native.stdout.splitlines()


THROUGH_THE_PARENT = """
import errno, os, sys
secret, work = sys.argv[1], sys.argv[2]
os.chdir(work)
os.mkdir("w")
os.chdir("w")
os.rmdir("../w")
# In the old parent, a link whose name is /proc's text for the removed
# cwd, leading through a magic link (our fast lookup cannot follow it).
os.symlink("/proc/self/root" + secret, "../w (deleted)")
try:
    with open("../w (deleted)") as f:
        print("read", f.read())
except OSError as e:
    print("read", errno.errorcode[e.errno])
"""


def test_a_name_in_a_removed_cwds_parent_is_not_the_cwd(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """``../X (deleted)`` from a removed cwd ``X`` is an entry of its old
    parent, whatever its name: here a link to a denied file. The supervisor
    once walked from ``/proc``'s text for the cwd and took that entry for
    the cwd itself, so in virtualize mode no rule saw the file the kernel
    then read (an audit found it)."""
    secret = tmp_path / "secret"
    secret.write_text("secret")
    (tmp_path / "work").mkdir()
    argv = py(THROUGH_THE_PARENT, str(secret), str(tmp_path / "work"))
    native = run_native(argv)
    assert native.stdout == "read secret\n", describe(native)
    (tmp_path / "work" / "w (deleted)").unlink()
    proc = run_launch(*mode, "--deny", str(secret), argv=argv)
    assert (proc.returncode, proc.stdout) == (0, "read EACCES\n"), describe(proc)



CWD_ITSELF = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
buf = ctypes.create_string_buffer(256)
def show(what, rc):
    print(what, errno.errorcode.get(ctypes.get_errno(), "?") if rc < 0 else "ok")
    ctypes.set_errno(0)
show("cwd", libc.syscall(L(262), L(AT_FDCWD), b"", buf, L(AT_EMPTY_PATH)))
show("statx cwd", libc.syscall(L(332), L(AT_FDCWD), b"", L(AT_EMPTY_PATH), L(0xFFF), buf))
# A name with the flag: the kernel looks it up.
show("a name", libc.syscall(L(262), L(AT_FDCWD), b"f", buf, L(AT_EMPTY_PATH)))
# AT_FDCWD with junk in the register's upper half: the kernel reads an int.
junk = AT_FDCWD & 0xFFFFFFFF | 1 << 32
show("cwd, junk above", libc.syscall(L(262), L(junk), b"", buf, L(AT_EMPTY_PATH)))
# The other reads the filter lets through with AT_EMPTY_PATH on an fd:
# getxattrat, listxattrat, file_getattr, name_to_handle_at.
args = (ctypes.c_uint64 * 4)(ctypes.addressof(buf), 0, 256, 0)  # struct xattr_args
show("getxattrat cwd", libc.syscall(L(464), L(AT_FDCWD), b"", L(AT_EMPTY_PATH), b"user.x", args,
                                    L(16)))
show("listxattrat cwd", libc.syscall(L(465), L(AT_FDCWD), b"", L(AT_EMPTY_PATH), buf, L(256)))
show("file_getattr cwd", libc.syscall(L(468), L(AT_FDCWD), b"", buf, L(24), L(AT_EMPTY_PATH)))
handle = (ctypes.c_uint32 * 34)(128)  # struct file_handle: 128 bytes of room
mount = ctypes.c_int()
show("name_to_handle_at cwd", libc.syscall(L(303), L(AT_FDCWD), b"", handle, ctypes.byref(mount),
                                           L(AT_EMPTY_PATH)))
fd = os.open("/etc/hostname", os.O_RDONLY)
show("an open file", libc.syscall(L(262), L(fd), b"", buf, L(AT_EMPTY_PATH)))
"""


def test_a_stat_of_the_cwd_itself_is_judged_by_its_name_in_both_modes(tmp_path: Path) -> None:
    """``newfstatat(AT_FDCWD, "", AT_EMPTY_PATH)`` is about the cwd, which the
    rules judge by its name: a program started in a denied directory is
    refused it, in virtualize mode as under --enforce (whose filter traps
    every such read). Virtualize mode lets a read with AT_EMPTY_PATH through
    in the filter only where dirfd is a real fd (fstat of an open file)."""
    denied = tmp_path / "D"
    denied.mkdir()
    (denied / "f").write_text("f\n")
    os.setxattr(denied, "user.x", b"1")
    argv = [SYSTEM_PYTHON, "-c", CWD_ITSELF]
    native = run_native(argv, cwd=denied)
    names = ["cwd", "statx cwd", "a name", "cwd, junk above", "getxattrat cwd",
             "listxattrat cwd", "file_getattr cwd", "name_to_handle_at cwd",
             "an open file"]  # fmt: skip
    # listxattrat takes no cwd for an empty name (EBADF: path_listxattrat()
    # wants an fd there), where getxattrat does.
    assert native.stdout.splitlines() == [
        f"{n} {'EBADF' if n.startswith('listxattrat') else 'ok'}" for n in names
    ], describe(native)
    rules = ("--deny", str(denied), "--deny", f"{denied}/**")
    for mode, extra in (("virtualize", {}), ("virtualize-python", {"UNOTIFYD_PASSTHROUGH": "0"}),
                        ("enforce", {})):  # fmt: skip
        flags = ("--enforce",) if mode == "enforce" else ()
        proc = run_launch(*flags, *rules, argv=argv, cwd=denied, env=env(extra))
        assert proc.returncode == 0, describe(proc)
        want = [f"{n} {'EBADF' if n.startswith('listxattrat') else 'EACCES'}" for n in names[:-1]]
        want.append("an open file ok")
        assert proc.stdout.splitlines() == want, (mode, describe(proc))


UNREACHABLE = """
import ctypes, errno, fcntl, os, sys
def r(what, fn):
    try:
        print(what, fn())
    except OSError as e:
        print(what, errno.errorcode[e.errno])
r("stat f", lambda: os.stat("f").st_size)
r("stat absolute", lambda: os.stat(sys.argv[1]).st_size)  # P is in the way
r("stat .", lambda: os.stat(".").st_nlink)
# ".." is A, which only the directory it leaves (the cwd) must let search.
r("stat ..", lambda: os.stat("..").st_mode & 0o777)
r("access ..", lambda: os.access("..", os.F_OK))
r("listdir ..", lambda: os.listdir(".."))  # A's own mode refuses it
r("rmdir ..", lambda: os.rmdir(".."))
r("mkdir ..", lambda: os.mkdir(".."))
r("creat ..", lambda: os.open("..", os.O_CREAT | os.O_WRONLY))
r("readlink ..", lambda: os.readlink(".."))
r("readlink .", lambda: os.readlink("."))
def nofollow():
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NOFOLLOW)
r("open . nofollow", nofollow)
r("open f", lambda: open("f").read().strip())
r("listdir .", lambda: sorted(os.listdir(".")))
r("xattr .", lambda: os.getxattr(".", "user.x"))
r("create g", lambda: os.close(os.open("g", os.O_CREAT | os.O_WRONLY, 0o644)))
r("mkdir d", lambda: os.mkdir("d"))
r("symlink d/s", lambda: os.symlink("../f", "d/s"))
r("readlink d/s", lambda: os.readlink("d/s"))
r("open d/s", lambda: open("d/s").read().strip())
r("rename g d/h", lambda: os.rename("g", "d/h"))
r("link d/h k", lambda: os.link("d/h", "k"))
r("chmod k", lambda: os.chmod("k", 0o600))
r("unlink", lambda: [os.unlink(n) for n in ("k", "d/h", "d/s")] and None)
r("rmdir d", lambda: os.rmdir("d"))
r("rmdir .", lambda: os.rmdir("."))
r("creat .", lambda: os.open(".", os.O_CREAT | os.O_WRONLY))
r("open nodir/f", lambda: open("nodir/f"))
r("mkdir nodir/x", lambda: os.mkdir("nodir/x"))
r("read secret", lambda: open("secret").read().strip())
r("write ro/x", lambda: open("ro/x", "w").close())
r("mkdir ro/d", lambda: os.mkdir("ro/d"))
r("write ro/nodir/x", lambda: open("ro/nodir/x", "w").close())
r("mkdir ro/nodir/x", lambda: os.mkdir("ro/nodir/x"))
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
os.chdir("/")
r("at fd: stat f", lambda: os.stat("f", dir_fd=fd).st_size)
r("at fd: open f", lambda: os.read(os.open("f", os.O_RDONLY, dir_fd=fd), 9))
r("at fd: create m", lambda: os.close(os.open("m", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)))
r("at fd: unlink m", lambda: os.unlink("m", dir_fd=fd))
# Deeper than PATH_MAX below the cwd: /proc cannot print the cwd's name.
os.fchdir(fd)
while os.path.isdir("d" * 200):
    os.chdir("d" * 200)
r("deep: stat f", lambda: os.stat("f").st_size)
r("deep: listdir .", lambda: os.listdir("."))
# A process's own /proc/PID/fd lets in its thread group alone once it is
# not dumpable (proc_fd_permission()): changes there fail as natively.
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
r("proc fd: unlink", lambda: os.unlink("/proc/self/fd/0"))
r("proc fd: mkdir", lambda: os.mkdir("/proc/self/fd/77"))
"""


#: Root without capabilities: the 0700 directories are another user's.
ROOT_WITHOUT_CAPS = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")


@pytest.mark.parametrize("who", [AS_NOBODY, ROOT_WITHOUT_CAPS], ids=["nobody", "root-nocaps"])
@pytest.mark.parametrize("view", [*MODES, "opens"])
def test_relative_names_from_a_cwd_the_program_cannot_reach_by_name(
    view: str, who: tuple[str, ...]
) -> None:
    """A program whose cwd lies below directories it may not search (``cd
    /root/work && setpriv --reuid=nobody …``) looks its relative names up
    from the cwd, or from a dirfd, never through those (but for ``..``,
    which only the directory it leaves must let search). Under --enforce
    the supervisor walks the decided name from the root as the program, is
    refused, and walks it from the program's cwd or dirfd instead
    (kernel/opener.parent_from): the same answers as natively, errno for
    errno, but where the rules speak (a deny, a read-only tree, whose
    errno needs a look at what is there), and an absolute name stays
    refused."""

    def tree(d: Path) -> Path:
        cwd = d / "P" / "A" / "Q"
        (cwd / "ro").mkdir(parents=True)
        for name in ("f", "secret"):
            (cwd / name).write_text("hi\n")
            (cwd / name).chmod(0o644)
        for where in (cwd, cwd / "ro"):
            where.chmod(0o777)
        os.setxattr(cwd, "user.x", b"1")
        here = os.open(cwd, os.O_PATH)
        for _ in range(21):  # 21 x 201 bytes: past PATH_MAX (4096)
            os.mkdir("d" * 200, 0o755, dir_fd=here)
            below = os.open("d" * 200, os.O_PATH, dir_fd=here)
            os.close(here)
            here = below
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=here))
        os.close(here)
        for closed in (d / "P", d / "P" / "A"):
            closed.chmod(0o700)
            os.chown(closed, 65533, 65533)
        return cwd

    def run(opts: tuple[str, ...] | None) -> subprocess.CompletedProcess[str]:
        """Natively (``opts`` None), or under unotifyd with ``opts``."""
        with public_dir("unotifyd-unreachable-") as d:
            cwd = tree(d)
            argv = [*who, "--", SYSTEM_PYTHON, "-c", UNREACHABLE, str(cwd / "f")]
            if opts is None:
                return run_native(argv, cwd=cwd)
            rules = ("--deny", str(cwd / "secret"), "--readonly", f"{cwd / 'ro'}/**")
            return run_launch(*opts, *rules, argv=argv, cwd=cwd)

    native = run(None)
    lines = native.stdout.splitlines()
    # The control: natively every relative name works (or fails as a name
    # does), the absolute one and a listing of A do not.
    assert lines == [
        "stat f 3", "stat absolute EACCES", "stat . 4", "stat .. 448", "access .. True",
        "listdir .. EACCES", "rmdir .. ENOTEMPTY", "mkdir .. EEXIST", "creat .. EISDIR",
        "readlink .. EINVAL", "readlink . EINVAL", "open . nofollow True",
        "open f hi", f"listdir . {['d' * 200, 'f', 'ro', 'secret']}", "xattr . b'1'",
        "create g None",
        "mkdir d None", "symlink d/s None", "readlink d/s ../f", "open d/s hi",
        "rename g d/h None", "link d/h k None", "chmod k None", "unlink None", "rmdir d None",
        "rmdir . EINVAL", "creat . EISDIR", "open nodir/f ENOENT", "mkdir nodir/x ENOENT",
        "read secret hi", "write ro/x None", "mkdir ro/d None", "write ro/nodir/x ENOENT",
        "mkdir ro/nodir/x ENOENT", "at fd: stat f 3", "at fd: open f b'hi\\n'",
        "at fd: create m None", "at fd: unlink m None", "deep: stat f 0", "deep: listdir . ['f']",
        "proc fd: unlink EPERM", "proc fd: mkdir ENOENT",
    ], describe(native)  # fmt: skip
    ruled = {"read secret": "EACCES", "write ro/x": "EROFS", "mkdir ro/d": "EROFS"}
    if view == "opens":
        del ruled["mkdir ro/d"]  # that view traps the open family alone
    want = [
        f"{what} {ruled[what]}" if what in ruled else line
        for line in lines
        for what in [line.rpartition(" ")[0]]
    ]
    proc = run(("--view", "opens") if view == "opens" else MODES[view])
    assert (proc.returncode, proc.stdout.splitlines()) == (0, want), describe(proc)


OTHER_MOUNT = """
import errno, os, sys
fd = int(sys.argv[1])
def r(what, fn):
    try:
        print(what, fn())
    except OSError as e:
        print(what, errno.errorcode[e.errno])
r("read g", lambda: os.read(os.open("g", os.O_RDONLY, dir_fd=fd), 16))
r("append g", lambda: os.close(os.open("g", os.O_WRONLY | os.O_APPEND, dir_fd=fd)))
os.fchdir(fd)
r("cwd: read g", lambda: open("g").read().strip())
r("cwd: stat g", lambda: os.stat("g").st_size)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs CAP_SYS_ADMIN")
def test_a_dirfd_of_another_mount_does_not_lead_past_the_rules() -> None:
    """A dirfd handed over from another mount namespace (SCM_RIGHTS, or
    inherited) is the same directory as one of ours, on another mount,
    below which other files may be mounted: here ``secret`` over ``g``.
    Its name is ours (d_path), so the rules see ``.../D/g``, which no rule
    names; the walk from it (the name from the root is refused: ``H`` is
    closed to the program) must not be taken for ours (audit helper-47):
    under --enforce the program is refused where natively it reads the
    denied file."""
    with public_dir("unotifyd-other-mount-") as d:
        where = d / "H" / "D"
        where.mkdir(parents=True)
        where.chmod(0o777)
        (where / "g").write_text("")
        secret = d / "secret"
        secret.write_text("SECRET\n")
        os.chown(secret, 65534, 65534)
        secret.chmod(0o600)
        (d / "H").chmod(0o700)
        os.chown(d / "H", 65533, 65533)
        holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {secret} {where}/g && echo ready && exec sleep 60"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            fd = os.open(f"/proc/{holder.pid}/root{where}", os.O_RDONLY | os.O_DIRECTORY)
            try:
                argv = [*AS_NOBODY, "--", SYSTEM_PYTHON, "-c", OTHER_MOUNT, str(fd)]
                native = run_native(argv, pass_fds=(fd,))
                proc = run_launch("--enforce", "--deny", str(secret), argv=argv, pass_fds=(fd,))
            finally:
                os.close(fd)
        finally:
            holder.kill()
            holder.wait()
            assert holder.stdout is not None
            holder.stdout.close()
    # The control: through that mount, the program reads and writes the secret.
    assert native.stdout.splitlines() == [
        "read g b'SECRET\\n'", "append g None", "cwd: read g SECRET", "cwd: stat g 7"
    ], describe(native)  # fmt: skip
    assert proc.stdout.splitlines() == [
        "read g EACCES", "append g EACCES", "cwd: read g EACCES", "cwd: stat g EACCES"
    ], describe(proc)  # fmt: skip


COVERED = """
import errno, os, subprocess, sys
from unotifyd.kernel.opener import Start, parent_from
here = sys.argv[1]
pin = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
start = Start(os.getpid(), pin, lambda: True)
def reach(path):
    try:
        fd, name = parent_from(start, path, 0)
    except OSError as e:
        return errno.errorcode[e.errno]
    ino = os.fstat(fd).st_ino
    os.close(fd)
    return name.decode(), ino
print("before", reach(f"{here}/f"), os.stat(here).st_ino)
subprocess.run(["mount", "-t", "tmpfs", "none", here], check=True)
print("covered", reach(f"{here}/f"), reach(here))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs CAP_SYS_ADMIN")
def test_a_walk_from_the_program_start_reaches_only_what_the_name_leads_to(
    tmp_path: Path,
) -> None:
    """kernel/opener.parent_from walks from the program's cwd or dirfd, whose
    name is only what /proc prints. Where the name leads elsewhere now (here
    a file system mounted over the start directory after it was pinned), the
    walk would reach a directory that the decision was never about: refused."""
    covered = tmp_path / "A"
    covered.mkdir()
    (covered / "f").write_text("covered\n")
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", COVERED, str(covered)],
        capture_output=True, text=True, env=env(), timeout=TIMEOUT, check=False,
    )  # fmt: skip
    ino = covered.stat().st_ino
    # The control: before the mount, the walk reaches the start itself.
    assert proc.stdout.splitlines() == [
        f"before ('f', {ino}) {ino}", "covered EACCES EACCES"
    ], describe(proc)


def test_a_directory_reached_by_dotdot_from_the_start_is_not_looked_up_again(
    tmp_path: Path,
) -> None:
    """For a name above the program's start (``..``), kernel/opener.parent_from
    gives the directory it checked itself, not the start and ``..``: the
    start may be renamed into another directory between the check and the
    call, and ``..`` would then lead there (audit helper-48: a --readonly
    directory chmod'ed, a --deny'd one listed, by racing renames)."""
    (tmp_path / "W" / "Q").mkdir(parents=True)
    (tmp_path / "A").mkdir()
    pin = os.open(tmp_path / "W" / "Q", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, name = parent_from(Start(os.getpid(), pin, lambda: True), str(tmp_path / "W"), 0)
    finally:
        os.close(pin)
    try:
        (tmp_path / "W" / "Q").rename(tmp_path / "A" / "Q")  # the start moves
        # What a call made on the place (fd, name) now reaches.
        reached = os.stat(name, dir_fd=fd) if name else os.fstat(fd)
    finally:
        os.close(fd)
    assert reached.st_ino == (tmp_path / "W").stat().st_ino != (tmp_path / "A").stat().st_ino
