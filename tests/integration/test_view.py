"""The file-system view (issue 3): every path call follows the rules as ``open`` does.

``stat``, ``ls -l``, ``test``, ``readlink -f``, ``rm``, ``mv``, ``mkdir``,
``touch``, ``chmod``, ``chown``, ``ln``, ``truncate``: each answers what an
``open`` of the same path would see. Where a native run can stand as the
reference, the view is compared with it: a redirected path against its
target, a read-only tree against a real read-only tmpfs mount, a hidden
path against a directory that never had it. Every test runs in both modes
(``--enforce`` performs every trapped call in the supervisor).

The raw-syscall tables call each system call by number (x86_64), so that
the legacy calls (``stat``, ``rename``, ``utime``...) are exercised as well
as the ``*at`` forms glibc uses.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .conftest import Files
from .helpers import (
    MODES,
    ORIGINAL,
    REDIRECTED,
    describe,
    py,
    run_launch,
    run_native,
    sh,
    write,
)

pytestmark = pytest.mark.kernel


@pytest.fixture(params=["virtualize", "enforce"])
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The launch options of the mode the test runs in."""
    return MODES[str(request.param)]


# --- tools -------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a change could alter under ``root``, by relative name.

    Kind, permissions, owner, link count, contents of files, text of links,
    and the modification time when it is a fixed one set by the test (before
    2001-09, i.e. not "now").
    """
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            detail: object = None
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                detail = p.read_bytes()
            fixed_time = int(st.st_mtime) if st.st_mtime < 1_000_000_000 else None
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                oct(stat.S_IMODE(st.st_mode)),
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                detail,
                fixed_time,
            )
    return out


def checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)
    return proc


def each(commands: Sequence[str]) -> str:
    """A shell script running every command, each followed by its output and status."""
    return "".join(f'echo {shlex.quote("$ " + c)}; ( {c} ) 2>&1; echo "rc=$?"\n' for c in commands)


def outcomes(out: str) -> dict[str, str]:
    """{command: its output and status} from the output of an :func:`each` script."""
    table: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("$ "):
            current = line[2:]
            table[current] = ""
        else:
            table[current] += line + "\n"
    return table


#: Every single-path call of the families, by name (see _RAW).
ONE_PATH_CALLS = (
    # metadata
    "stat",
    "lstat",
    "newfstatat",
    "newfstatat-nofollow",
    "statx",
    "statx-nofollow",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getxattr",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "getxattrat",
    "listxattrat",
    "file_getattr",
    "name_to_handle_at",
    "inotify_add_watch",
    "statfs",
    "access-w",
    "faccessat2-w",
    # changes
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "truncate",
    "utimensat",
    "utimes",
    "utime",
    "futimesat",
    "setxattr",
    "lsetxattr",
    "removexattr",
    "lremovexattr",
    "setxattrat",
    "removexattrat",
    "file_setattr",
    "unlink",
    "unlinkat",
    "rmdir",
    "unlinkat-removedir",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "symlink",
    "symlinkat",
    "chdir",
)
#: Every two-path call, by name: (old, new).
TWO_PATH_CALLS = (
    "rename",
    "renameat",
    "renameat2",
    "renameat2-noreplace",
    "link",
    "linkat",
)

#: Reads ``[[call, path, ...], ...]`` from argv[1]; prints the JSON list of
#: "ok" or the errno name of each raw system call.
_RAW = r"""
import ctypes, errno, json, os, stat, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
AT = L(-100)
NOFOLLOW = L(0x100)
buf = ctypes.create_string_buffer(4096)
start = os.getcwd()
value = ctypes.create_string_buffer(b"v")
get_args = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(buf), 4096, 0))
set_args = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(value), 1, 0))
file_attr = ctypes.create_string_buffer(24)
handle = ctypes.create_string_buffer(8 + 128)
inotify = libc.inotify_init1(os.O_CLOEXEC)

def statfs(p):
    r = sc(137, p, buf)
    # f_flags: ST_RDONLY on a read-only mount
    return r + (" ro" if r == "ok" and struct.unpack_from("<q", buf.raw, 80)[0] & 1 else "")

def name_to_handle(p):
    struct.pack_into("<I", handle, 0, 128)
    return sc(303, AT, p, handle, buf, L(0))

def sc(nr, *args):
    ctypes.set_errno(0)
    if libc.syscall(L(nr), *args) < 0:
        e = ctypes.get_errno()
        return errno.errorcode.get(e, str(e))
    return "ok"

def chdir(p):
    r = sc(80, p)
    if r == "ok":
        os.chdir(start)
    return r

FIFO = L(stat.S_IFIFO | 0o644)
M = L(0o600)
ONE = {
    "stat": lambda p: sc(4, p, buf),
    "lstat": lambda p: sc(6, p, buf),
    "newfstatat": lambda p: sc(262, AT, p, buf, L(0)),
    "newfstatat-nofollow": lambda p: sc(262, AT, p, buf, NOFOLLOW),
    "statx": lambda p: sc(332, AT, p, L(0), L(0xfff), buf),
    "statx-nofollow": lambda p: sc(332, AT, p, NOFOLLOW, L(0xfff), buf),
    "access": lambda p: sc(21, p, L(os.R_OK)),
    "faccessat": lambda p: sc(269, AT, p, L(os.R_OK)),
    "faccessat2": lambda p: sc(439, AT, p, L(os.R_OK), L(0)),
    "readlink": lambda p: sc(89, p, buf, L(4096)),
    "readlinkat": lambda p: sc(267, AT, p, buf, L(4096)),
    "getxattr": lambda p: sc(191, p, b"user.t", buf, L(4096)),
    "lgetxattr": lambda p: sc(192, p, b"user.t", buf, L(4096)),
    "listxattr": lambda p: sc(194, p, buf, L(4096)),
    "llistxattr": lambda p: sc(195, p, buf, L(4096)),
    "getxattrat": lambda p: sc(464, AT, p, L(0), b"user.t", get_args, L(16)),
    "listxattrat": lambda p: sc(465, AT, p, L(0), buf, L(4096)),
    "file_getattr": lambda p: sc(468, AT, p, file_attr, L(24), L(0)),
    "name_to_handle_at": name_to_handle,
    "inotify_add_watch": lambda p: sc(254, L(inotify), p, L(0xfff)),
    "statfs": statfs,
    "access-w": lambda p: sc(21, p, L(os.W_OK)),
    "faccessat2-w": lambda p: sc(439, AT, p, L(os.W_OK), L(0)),
    "chmod": lambda p: sc(90, p, M),
    "fchmodat": lambda p: sc(268, AT, p, M),
    "fchmodat2": lambda p: sc(452, AT, p, M, L(0)),
    "chown": lambda p: sc(92, p, L(0), L(0)),
    "lchown": lambda p: sc(94, p, L(0), L(0)),
    "fchownat": lambda p: sc(260, AT, p, L(0), L(0), L(0)),
    "truncate": lambda p: sc(76, p, L(0)),
    "utimensat": lambda p: sc(280, AT, p, None, L(0)),
    "utimes": lambda p: sc(235, p, None),
    "utime": lambda p: sc(132, p, None),
    "futimesat": lambda p: sc(261, AT, p, None),
    "setxattr": lambda p: sc(188, p, b"user.t", b"v", L(1), L(0)),
    "lsetxattr": lambda p: sc(189, p, b"user.t", b"v", L(1), L(0)),
    "removexattr": lambda p: sc(197, p, b"user.t"),
    "lremovexattr": lambda p: sc(198, p, b"user.t"),
    "setxattrat": lambda p: sc(463, AT, p, L(0), b"user.t", set_args, L(16)),
    "removexattrat": lambda p: sc(466, AT, p, L(0), b"user.t"),
    "file_setattr": lambda p: sc(469, AT, p, file_attr, L(24), L(0)),
    "unlink": lambda p: sc(87, p),
    "unlinkat": lambda p: sc(263, AT, p, L(0)),
    "rmdir": lambda p: sc(84, p),
    "unlinkat-removedir": lambda p: sc(263, AT, p, L(0x200)),
    "mkdir": lambda p: sc(83, p, L(0o755)),
    "mkdirat": lambda p: sc(258, AT, p, L(0o755)),
    "mknod": lambda p: sc(133, p, FIFO, L(0)),
    "mknodat": lambda p: sc(259, AT, p, FIFO, L(0)),
    "symlink": lambda p: sc(88, b"t", p),
    "symlinkat": lambda p: sc(266, b"t", AT, p),
    "chdir": chdir,
}
TWO = {
    "rename": lambda a, b: sc(82, a, b),
    "renameat": lambda a, b: sc(264, AT, a, AT, b),
    "renameat2": lambda a, b: sc(316, AT, a, AT, b, L(0)),
    "renameat2-noreplace": lambda a, b: sc(316, AT, a, AT, b, L(1)),
    "link": lambda a, b: sc(86, a, b),
    "linkat": lambda a, b: sc(265, AT, a, AT, b, L(0)),
}
out = []
for name, *paths in json.loads(sys.argv[1]):
    fn = ONE[name] if len(paths) == 1 else TWO[name]
    out.append(fn(*[os.fsencode(p) for p in paths]))
print(json.dumps(out))
"""


def label(spec: Sequence[str]) -> str:
    return " ".join(spec)


def raw(
    specs: Sequence[Sequence[str]], *opts: str, native: bool = False, **kw: Any
) -> dict[str, str]:
    """Run the raw calls of ``specs`` (under unotifyd with ``opts``, or natively)."""
    argv = py(_RAW, json.dumps([list(s) for s in specs]))
    proc = checked(run_native(argv, **kw) if native else run_launch(*opts, argv=argv, **kw))
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and len(results) == len(specs), describe(proc)
    return {label(s): str(r) for s, r in zip(specs, results, strict=True)}


# --- redirect: the path shows its target ----------------------------------------------


def test_redirect_stat_describes_the_target(files: Files, mode: tuple[str, ...]) -> None:
    files.target.chmod(0o640)
    fmt = "%s %a %F %i %h %u %g %Y"
    script = f"stat -c '{fmt}' {{p}}; stat -L -c '{fmt}' {{p}}; stat -c %s {{p}}"
    view = checked(
        run_launch(*mode, "--redirect", files.redirect, argv=sh(script.format(p=files.src)))
    )
    native = checked(run_native(sh(script.format(p=files.target))))
    assert view.stdout == native.stdout
    assert view.stdout.splitlines()[2] == str(len(REDIRECTED))


#: Prints what the newer path calls say about argv[1]: statfs's f_type, the
#: xattr user.t by getxattrat, name_to_handle_at's handle, and the event
#: an inotify watch on it gets when argv[2] (the real file) is written.
_NEWER_CALLS = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
path, write_to = os.fsencode(sys.argv[1]), sys.argv[2]
buf = ctypes.create_string_buffer(4096)
assert libc.syscall(L(137), path, buf) == 0, ctypes.get_errno()
print("f_type", hex(struct.unpack_from("<q", buf.raw, 0)[0]))
value = ctypes.create_string_buffer(64)
args = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(value), 64, 0))
n = libc.syscall(L(464), L(-100), path, L(0), b"user.t", args, L(16))
print("getxattrat", value.raw[:n] if n >= 0 else os.strerror(ctypes.get_errno()))
handle, mount_id = ctypes.create_string_buffer(8 + 128), ctypes.create_string_buffer(8)
struct.pack_into("<I", handle, 0, 128)
assert libc.syscall(L(303), L(-100), path, handle, mount_id, L(0)) == 0, ctypes.get_errno()
size = struct.unpack_from("<I", handle.raw)[0]
print("handle", handle.raw[: 8 + size].hex())
ifd = libc.inotify_init1(0)
wd = libc.syscall(L(254), L(ifd), path, L(0x2))  # IN_MODIFY
assert wd >= 0, ctypes.get_errno()
with open(write_to, "a") as f:
    f.write("more\n")
event = os.read(ifd, 4096)
print("inotify", struct.unpack_from("<iIII", event)[:2] == (wd, 0x2))
"""


def test_newer_path_calls_see_the_redirect_target(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """statfs, getxattrat, name_to_handle_at and inotify_add_watch of a
    redirected path answer about its target, a file on another file system
    (a tmpfs), as the same calls made natively on the target do; the watch
    sits on the program's own inotify instance and reports the target's
    changes."""
    target_dir = tmp_path / "t"
    target_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target_dir)],
                   check=True, timeout=20)
    try:
        target = write(target_dir / "target", "T\n")
        os.setxattr(target, "user.t", b"on the target")
        src = write(tmp_path / "src", "S\n")
        os.setxattr(src, "user.t", b"on the source")
        view = checked(run_launch(*mode, "--redirect", f"{src}={target}",
                                  argv=py(_NEWER_CALLS, str(src), str(target))))
        native = checked(run_native(py(_NEWER_CALLS, str(target), str(target))))
    finally:
        subprocess.run(["umount", "-l", str(target_dir)], check=False, timeout=20)
    assert view.stdout == native.stdout
    assert "f_type 0x1021994" in view.stdout  # TMPFS_MAGIC
    assert "b'on the target'" in view.stdout and "inotify True" in view.stdout


def test_opens_view_governs_opens_only(files: Files) -> None:
    """``--view opens``: cat of the redirected path reads the target, but
    stat, untrapped, describes the file really there; the filter traps the
    four open calls, and those that change a root or a namespace, nothing else."""
    script = f"cat {files.src}; stat -c %s {files.src}"
    proc = run_launch("--view", "opens", "--stats", "--redirect", files.redirect, argv=sh(script))
    assert proc.returncode == 0 and "(0 gone, 0 internal errors)" in proc.stderr, describe(proc)
    assert proc.stdout == f"{REDIRECTED}{len(ORIGINAL)}\n", describe(proc)
    traps = "chroot, creat, open, openat, openat2, pivot_root, setns, unshare"
    assert f"filter traps 8 system calls: {traps}" in proc.stderr, describe(proc)
    refused = run_launch("--view", "opens", "--enforce", "--redirect", files.redirect,
                         argv=["true"])  # fmt: skip
    assert refused.returncode == 2 and "enforcing mode needs the full view" in refused.stderr


def test_redirect_ls_l_shows_the_target(files: Files, mode: tuple[str, ...]) -> None:
    files.target.chmod(0o604)
    view = checked(
        run_launch(
            *mode,
            "--redirect",
            files.redirect,
            argv=["ls", "-ln", "--time-style=+%s", str(files.src)],
        )
    )
    native = checked(run_native(["ls", "-ln", "--time-style=+%s", str(files.target)]))
    assert view.stdout == native.stdout.replace(str(files.target), str(files.src))
    assert view.stdout.startswith("-rw----r-- ")


def test_redirect_test_follows_the_target(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """``test -e/-f/-d/-r/-s`` of a redirected path answer for its target: a
    missing source with an existing target exists, an existing source with a
    missing target does not."""
    present = write(tmp_path / "present", "X\n")
    directory = tmp_path / "dir"
    directory.mkdir()
    missing = tmp_path / "missing"
    gone = tmp_path / "gone"
    tests = ["-e", "-f", "-d", "-r", "-s"]
    script = " ".join(
        f"test {t} {p} && echo {name}{t}=1 || echo {name}{t}=0;"
        for name, p in (("new", missing), ("old", present), ("dir", gone))
        for t in tests
    )
    view = checked(
        run_launch(
            *mode,
            "--redirect",
            f"{missing}={present}",
            "--redirect",
            f"{present}={tmp_path / 'nothing'}",
            "--redirect",
            f"{gone}={directory}",
            argv=sh(script),
        )
    )
    got = dict(w.split("=") for w in view.stdout.split())
    assert got == {
        "new-e": "1",
        "new-f": "1",
        "new-d": "0",
        "new-r": "1",
        "new-s": "1",
        "old-e": "0",
        "old-f": "0",
        "old-d": "0",
        "old-r": "0",
        "old-s": "0",
        "dir-e": "1",
        "dir-f": "0",
        "dir-d": "1",
        "dir-r": "1",
        "dir-s": "1",
    }
    assert not missing.exists() and present.read_text() == "X\n"


def test_readlink_and_realpath_name_the_target(tmp_path: Path, mode: tuple[str, ...]) -> None:
    src = tmp_path / "src" / "data"  # not on the disk; its directory is
    src.parent.mkdir()
    target = write(tmp_path / "dst" / "target", REDIRECTED)
    a, b = tmp_path / "a", tmp_path / "b"
    write(b / "x", "BX\n")
    a.mkdir()
    script = f"readlink {src}; readlink -f {src}; realpath {src}; realpath {a}/x; readlink -f {a}"
    view = checked(
        run_launch(
            *mode, "--redirect", f"{src}={target}", "--redirect", f"{a}/**={b}/**", argv=sh(script)
        )
    )
    real = os.path.realpath
    assert view.stdout.splitlines() == [
        str(target),
        real(target),
        real(target),
        real(b / "x"),
        real(b),
    ], describe(view)


def test_removing_or_renaming_the_redirected_path_is_ebusy(
    files: Files, mode: tuple[str, ...]
) -> None:
    """The redirected path is where another file is put, like a mount point:
    ``rm`` and ``mv`` of it, or ``mv`` onto it, fail EBUSY and change nothing.
    So does removing the top of a redirected tree."""
    other = write(files.root / "other", "OTHER\n")
    a = files.root / "a"
    b = files.root / "b"
    write(a / "x", "AX\n")
    write(b / "x", "BX\n")
    commands = [
        f"rm {files.src}",
        f"rm -f {files.src}",
        f"mv {files.src} {files.root}/moved",
        f"mv {other} {files.src}",
        f"rmdir {a}",
        f"mv {a} {files.root}/a2",
    ]
    before = snapshot(files.root)
    view = checked(
        run_launch(
            *mode,
            "--redirect",
            files.redirect,
            "--redirect",
            f"{a}/**={b}/**",
            argv=sh(each(commands)),
        )
    )
    got = outcomes(view.stdout)
    for cmd in commands:
        assert "Device or resource busy" in got[cmd], (cmd, got[cmd])
        assert got[cmd].endswith("rc=1\n"), (cmd, got[cmd])
    assert snapshot(files.root) == before
    assert files.src.read_text() == ORIGINAL and files.target.read_text() == REDIRECTED


# --- tree redirect: changes land in the target ---------------------------------------

#: Changes made through ``{d}``; each prints "failed: ..." if it fails.
TREE_CHANGES = (
    "mkdir {d}/new",
    "touch {d}/new/f",
    "touch {d}/f",
    "echo hi > {d}/g",
    "rm {d}/x",
    "mv {d}/only {d}/moved",
    "ln -s moved {d}/sym",
    "ln {d}/g {d}/hard",
    "chmod 600 {d}/g",
    "chown 65534:65534 {d}/moved",
    "truncate -s 3 {d}/sub/y",
    "mkdir {d}/d2",
    "rmdir {d}/d2",
    "mkfifo {d}/fifo",
    "mv {d}/sub {d}/sub2",
    "mkdir -p {d}/p/q/r",
    "rm -r {d}/p",
    "mv {d}/moved {d}/new/",
    "cp {d}/g {d}/copy",
    "ln -sf g {d}/sym",
    "ln -s /nowhere {d}/dl",
    "rm {d}/dl",
    "(cd {d}/new && touch here && mkdir there && mv f f2)",
    "{py} -c 'import os, sys; os.utime(sys.argv[1], (978307200, 978307200))' {d}/copy",
)


def _tree(root: Path, tag: str) -> Path:
    write(root / "x", f"{tag}X\n")
    write(root / "only", f"{tag}-ONLY\n")
    write(root / "sub" / "y", f"{tag}Y{tag}Y{tag}Y\n")
    return root


@pytest.mark.parametrize("naming", ["absolute", "relative"])
def test_tree_redirect_changes_land_in_the_target(
    tmp_path: Path, mode: tuple[str, ...], naming: str
) -> None:
    """The same changes, made natively in one copy of a tree and through a
    redirected tree onto another copy, leave the two copies alike; the
    redirect's source directory is untouched. ``relative`` names the paths
    from the cwd (``a/x``), so every call resolves against the program's cwd."""
    a, ref, tgt = _tree(tmp_path / "a", "A"), _tree(tmp_path / "ref", "B"), tmp_path / "tgt"
    shutil.copytree(ref, tgt, symlinks=True)
    a_before = snapshot(a)

    def script(d: Path) -> list[str]:
        name = d.name if naming == "relative" else str(d)
        lines = (
            f"{{ {c.format(d=name, py=sys.executable)}; }} || echo {shlex.quote('failed: ' + c)}\n"
            for c in TREE_CHANGES
        )
        return sh("".join(lines))

    native = checked(run_native(script(ref), cwd=tmp_path))
    view = checked(
        run_launch(*mode, "--redirect", f"{a}/**={tgt}/**", argv=script(a), cwd=tmp_path)
    )
    assert native.stdout == "", describe(native)
    assert view.stdout == "", describe(view)
    assert snapshot(tgt) == snapshot(ref)
    assert snapshot(a) == a_before


def test_tree_redirect_reads_show_the_target(tmp_path: Path, mode: tuple[str, ...]) -> None:
    a, b = _tree(tmp_path / "a", "A"), _tree(tmp_path / "b", "Bee")
    (b / "only").chmod(0o751)
    (b / "link").symlink_to("only")
    script = (
        "ls {d}; ls -lnA --time-style=+%s {d} {d}/sub;"
        " stat -c '%s %a %F %i' {d}/x {d}/sub {d}/link; stat -L -c %s {d}/link;"
        " readlink {d}/link; cat {d}/sub/y; test -x {d}/only && echo x;"
        " find {d} | sort"
    )
    view = checked(run_launch(*mode, "--redirect", f"{a}/**={b}/**", argv=sh(script.format(d=a))))
    native = checked(run_native(sh(script.format(d=b))))
    assert view.stdout == native.stdout.replace(str(b), str(a))
    assert "BeeYBeeYBeeY" in view.stdout


#: The metadata calls of _RAW, and chdir.
_LOOKS = (*ONE_PATH_CALLS[: ONE_PATH_CALLS.index("chmod")], "chdir")
#: Names in a tree, with trailing slashes, dots and links: each resolves as the kernel says.
_TRICKY = (
    "", ".", "x", "x/", "x/.", "sub", "sub/", "sub/.", "sub/..", "sub/../x", "sub/y/..",
    "missing", "missing/", "link", "link/", "dirlink", "dirlink/", "dirlink/y", "dl", "dl/",
)  # fmt: skip


def test_tree_redirect_resolves_names_as_the_kernel(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """Every metadata call and chdir, on names with trailing slashes, ``.``,
    ``..`` and symlinks inside a redirected tree, answers what the same call
    answers natively on the target tree (``x/`` of a file is ENOTDIR...)."""
    a, b = _tree(tmp_path / "a", "A"), _tree(tmp_path / "b", "B")
    (b / "link").symlink_to("x")
    (b / "dirlink").symlink_to("sub")
    (b / "dl").symlink_to("missing")
    names = list(_TRICKY)
    view = raw([[c, f"a/{n}"] for c in _LOOKS for n in names], *mode,
               "--redirect", f"{a}/**={b}/**", cwd=tmp_path)  # fmt: skip
    native = raw([[c, f"b/{n}"] for c in _LOOKS for n in names], native=True, cwd=tmp_path)
    diff = {
        f"{c} a/{n}": f"got {view[f'{c} a/{n}']}, natively on b {native[f'{c} b/{n}']}"
        for c in _LOOKS
        for n in names
        if view[f"{c} a/{n}"] != native[f"{c} b/{n}"]
    }
    assert diff == {}, "\n".join(f"{k}: {v}" for k, v in sorted(diff.items()))


# --- deny: every call fails with the rule's errno -----------------------------------


#: Calls that act on a final symlink itself, not on what it points to.
_ON_THE_LINK = frozenset(
    {
        "lstat", "newfstatat-nofollow", "statx-nofollow", "readlink", "readlinkat",
        "lgetxattr", "llistxattr", "lchown", "lsetxattr", "lremovexattr", "unlink",
        "unlinkat", "rmdir", "unlinkat-removedir", "mkdir", "mkdirat", "mknod", "mknodat",
        "symlink", "symlinkat", "name_to_handle_at",
    }
)  # fmt: skip


@pytest.mark.parametrize("suffix", ["", ":EPERM", ":ENOENT"], ids=["EACCES", "EPERM", "ENOENT"])
def test_deny_fails_every_path_call(tmp_path: Path, mode: tuple[str, ...], suffix: str) -> None:
    """Every raw system call of the families, on a denied file, on a denied
    tree's top and on a missing name inside it, fails with the rule's errno
    (whatever the call would have said natively: the rule comes first), and
    nothing on the disk changes."""
    f = write(tmp_path / "d" / "f", "F\n")
    sub = write(tmp_path / "d" / "sub" / "g", "G\n").parent
    other = write(tmp_path / "other", "O\n")
    (tmp_path / "to-g").symlink_to(sub / "g")
    (tmp_path / "to-sub").symlink_to(sub)
    specs: list[list[str]] = []
    for call in ONE_PATH_CALLS:
        specs += [[call, str(f)], [call, str(sub)], [call, f"{sub}/new"], [call, f"{sub}/g"]]
        # The same places named otherwise: a trailing slash, dots, a symlink
        # from outside, relative to the cwd.
        specs += [
            [call, f"{sub}/"],
            [call, f"{sub}/./g"],
            [call, f"{sub}/../sub/g"],
            [call, f"{tmp_path}/to-sub/g"],
            [call, "d/f"],
        ]
        if call not in _ON_THE_LINK:
            specs.append([call, f"{tmp_path}/to-g"])
    for call in TWO_PATH_CALLS:
        specs += [
            [call, str(f), f"{tmp_path}/new"],
            [call, str(other), str(f)],
            [call, str(other), f"{sub}/new"],
            [call, f"{sub}/g", f"{tmp_path}/new"],
        ]
    before = snapshot(tmp_path)
    opts = ("--deny", f"{f}{suffix}", "--deny", f"{sub}/**{suffix}")
    got = raw(specs, *mode, *opts, cwd=tmp_path)
    want = suffix[1:] or "EACCES"
    assert {k: v for k, v in got.items() if v != want} == {}
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("suffix", ["", ":ENOENT"], ids=["EACCES", "ENOENT"])
def test_deny_with_coreutils(tmp_path: Path, mode: tuple[str, ...], suffix: str) -> None:
    d = tmp_path / "d"
    f = write(d / "f", "F\n")
    sub = write(d / "sub" / "g", "G\n").parent
    message = "No such file or directory" if suffix else "Permission denied"
    commands = {
        f"stat {f}": message,
        f"ls -l {f}": message,
        f"cat {f}": message,
        f"rm {f}": message,
        f"mv {f} {d}/moved": message,
        f"chmod 600 {f}": message,
        f"chown 65534 {f}": message,
        f"touch {f}": message,
        f"truncate -s0 {f}": message,
        f"ln {f} {d}/hard": message,
        f"ls {sub}": message,
        f"stat {sub}/g": message,
        f"mkdir {sub}/new": message,
        f"rm -r {sub}": message,
        f"rmdir {sub}": message,
        f"touch {sub}/new": message,
        f"cd {sub}": "",
        f"test -e {f}": "",
        f"test -e {sub}": "",
        f"test -e {sub}/g": "",
    }
    before = snapshot(tmp_path)
    view = checked(
        run_launch(
            *mode,
            "--deny",
            f"{f}{suffix}",
            "--deny",
            f"{sub}/**{suffix}",
            argv=sh(each(list(commands))),
        )
    )
    got = outcomes(view.stdout)
    for cmd, msg in commands.items():
        assert not got[cmd].endswith("rc=0\n"), (cmd, got[cmd])
        assert msg in got[cmd], (cmd, got[cmd])
    assert snapshot(tmp_path) == before
    # Natively, as root, each of them works: only the rules refused them.
    assert checked(run_native(sh(f"stat {f} {sub}/g > /dev/null && cd {sub}"))).stdout == ""


# --- deny with ENOENT: the path is hidden ---------------------------------------------


def test_hidden_names_are_absent_from_listings(tmp_path: Path, mode: tuple[str, ...]) -> None:
    d = tmp_path / "d"
    for name in ("a", "b", "secret", "c", ".dot"):
        write(d / name, f"{name}\n")
    write(d / "hdir" / "inner", "I\n")
    write(d / "shown" / "secret", "not hidden: another path\n")
    opts = ("--deny", f"{d}/secret:ENOENT", "--deny", f"{d}/hdir/**:ENOENT")
    script = (
        f"ls -a {d}; echo --; ls {d}/shown; echo --; find {d} | sort; echo --;"
        f" cd {d} && ls -a && echo * .*; echo --;"
        f" {sys.executable} -c 'import os, sys; print(sorted(os.listdir(sys.argv[1])))' {d};"
        f" stat {d}/secret; test -e {d}/hdir || echo hdir-absent; ls {d}/hdir"
    )
    view = run_launch(*mode, *opts, argv=sh(script))
    names = ".\n..\n.dot\na\nb\nc\nshown\n"
    assert view.stdout == (
        f"{names}--\nsecret\n--\n{d}\n{d}/.dot\n{d}/a\n{d}/b\n{d}/c\n{d}/shown\n{d}/shown/secret\n"
        f"--\n{names}a b c shown . .. .dot\n--\n['.dot', 'a', 'b', 'c', 'shown']\nhdir-absent\n"
    ), describe(view)
    assert "stat: cannot statx" in view.stderr and "No such file or directory" in view.stderr
    assert "cannot access" in view.stderr, describe(view)


#: The start of a test program: attempt(f) is "OK" or the errno name f raised.
_ATTEMPT = r"""
import errno, os, sys
def attempt(f):
    try:
        f()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
"""
# Calls through a name and after it: "NAME CALL ERRNAME" (or OK).
_THROUGH = _ATTEMPT + r"""
base = sys.argv[1]
for name in ("/", "/.", "/x", "/x/y", "/.."):
    p = base + name
    calls = [("stat", lambda: os.stat(p)), ("lstat", lambda: os.lstat(p)),
             ("open", lambda: os.close(os.open(p, os.O_RDONLY))), ("chdir", lambda: os.chdir(p)),
             ("exec", lambda: os.execv(p, ["x"]))]
    if "x" in name:  # never makes anything: there is no directory to make it in
        calls += [("creat", lambda: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))),
                  ("mkdir", lambda: os.mkdir(p))]
    for call, f in calls:
        print(name, call, attempt(f))
"""


def test_a_hidden_file_is_absent_through_its_name_too(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """``hidden/``, ``hidden/x``...: natively, with nothing at ``hidden``, every
    call through the name is ENOENT; with the file there, ENOTDIR, which told
    the program the hidden file exists (an audit found it). The control: the
    answers differ natively with and without the file."""
    hidden = tmp_path / "hidden"
    argv = py(_THROUGH, str(hidden))
    absent = run_native(argv)
    write(hidden, "H\n")
    present = run_native(argv)
    assert absent.returncode == present.returncode == 0, describe(present)
    assert "/x stat ENOENT" in absent.stdout and "/x stat ENOTDIR" in present.stdout
    view = run_launch(*mode, "--deny", f"{hidden}:ENOENT", argv=argv)
    assert view.stdout == absent.stdout, describe(view)


def test_a_hidden_directory_is_absent_through_its_dotdot(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """``hidden/..`` names the parent only if ``hidden`` is there: natively
    ENOENT without it, so the view must say ENOENT too, not take the ``..``
    back out of the directory it hides (audit helper-20). The control: OK
    natively with the directory there."""
    hidden = tmp_path / "hidden"
    argv = py(_THROUGH, str(hidden))
    absent = run_native(argv)
    (hidden / "sub").mkdir(parents=True)
    present = run_native(argv)
    assert "/.. stat ENOENT" in absent.stdout and "/.. stat OK" in present.stdout
    view = run_launch(*mode, "--deny", f"{hidden}/**:ENOENT", argv=argv)
    assert view.stdout == absent.stdout, describe(view)


_DANGLING = _ATTEMPT + r"""
for name in ("/.", "/.."):
    p = sys.argv[1] + name
    for call, f in (("stat", lambda: os.stat(p)), ("unlink", lambda: os.unlink(p)),
                    ("rmdir", lambda: os.rmdir(p)), ("mkdir", lambda: os.mkdir(p)),
                    ("rename", lambda: os.rename(p, sys.argv[1] + "-moved"))):
        print(name, call, attempt(f))
"""


def test_a_dangling_link_followed_by_a_dot_is_enoent(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """``link/.``: the link is no last component, so every call follows it,
    and a dangling one is ENOENT; the view said ENOTDIR for the calls that
    make or remove an entry (audit helper-20)."""
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nothing")
    native = run_native(py(_DANGLING, str(link)))
    assert native.stdout.count("ENOENT") == 10, describe(native)  # the control
    view = run_launch(*mode, "--deny", str(tmp_path / "elsewhere"), argv=py(_DANGLING, str(link)))
    assert view.stdout == native.stdout, describe(view)


_GETDENTS = r"""
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
size = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
buf = ctypes.create_string_buffer(size)
names, calls = [], 0
while True:
    n = libc.syscall(ctypes.c_long(217), ctypes.c_long(fd), buf, ctypes.c_long(size))
    calls += 1
    if n < 0 and ctypes.get_errno() == 22 and sys.argv[3:] == ["retry"] and size < 4096:
        size, buf = 4096, ctypes.create_string_buffer(4096)  # as a caller that grows its buffer
        continue
    if n < 0:
        print(json.dumps({"errno": ctypes.get_errno()}))
        sys.exit(0)
    if n == 0:
        break
    data, pos = buf.raw[:n], 0
    while pos < n:
        reclen = struct.unpack_from("<H", data, pos + 16)[0]
        names.append(data[pos + 19 : pos + reclen].split(b"\0")[0].decode())
        pos += reclen
print(json.dumps({"names": names, "calls": calls}))
"""


@pytest.mark.parametrize("bufsize", [48, 4096, 32768], ids=["one-entry", "4k", "32k"])
def test_hidden_names_in_a_large_directory(
    tmp_path: Path, mode: tuple[str, ...], bufsize: int
) -> None:
    """Hidden names spread over many ``getdents64`` calls: every visible
    name comes once, no hidden one comes at all, and a buffer that holds a
    single entry, which the hidden name alone would fill, does not end the
    listing early (a call that finds only hidden names must read on, not
    return 0, which means end of directory)."""
    d = tmp_path / "big"
    d.mkdir()
    names = [f"e{i:04d}" for i in range(1500)]
    for name in names:
        (d / name).touch()
    hidden = {"e0000", "e0001", "e0002", "e0750", "e1499"}
    opts = [a for h in sorted(hidden) for a in ("--deny", f"{d}/{h}:ENOENT")]
    view = checked(run_launch(*mode, *opts, argv=py(_GETDENTS, str(d), str(bufsize))))
    got = json.loads(view.stdout)
    assert "names" in got, describe(view)
    listed = [n for n in got["names"] if n not in (".", "..")]
    assert sorted(listed) == sorted(set(names) - hidden)
    assert len(listed) == len(set(listed))


def test_a_hidden_name_too_long_for_the_buffer_is_not_told(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """A buffer too small for a hidden entry's record: natively (the
    control) getdents64 is EINVAL when it comes to that entry, which tells
    the name is there; hidden, it is left out and the listing goes on, each
    visible entry once (audit helper-56)."""
    d = tmp_path / "dir"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).touch()
    long_name = "x" * 200  # a record of 224 bytes
    (d / long_name).touch()
    native = json.loads(run_native(py(_GETDENTS, str(d), "24")).stdout)
    assert native == {"errno": errno.EINVAL}, native
    view = checked(run_launch(*mode, "--deny", f"{d}/{long_name}:ENOENT",
                              argv=py(_GETDENTS, str(d), "24")))  # fmt: skip
    got = json.loads(view.stdout)
    assert sorted(got.get("names", [])) == [".", "..", "a", "b", "c"], describe(view)


def test_a_visible_name_too_long_for_the_buffer_is_found_with_a_bigger_one(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """EINVAL for a visible entry too big for the buffer leaves the offset
    where it was, as natively: a caller that retries with a bigger buffer
    lists every name once (audit helper-59: the read made for a hidden
    entry had moved it past the chunk)."""
    d = tmp_path / "dir"
    d.mkdir()
    names = [f"{i:03d}" + "y" * (i % 7) * 30 for i in range(120)]
    for name in names:
        (d / name).touch()
    (d / "hidden").touch()
    native = json.loads(run_native(py(_GETDENTS, str(d), "24", "retry")).stdout)
    assert sorted(native["names"]) == sorted([".", "..", "hidden", *names]), native
    view = checked(run_launch(*mode, "--deny", f"{d}/hidden:ENOENT",
                              argv=py(_GETDENTS, str(d), "24", "retry")))  # fmt: skip
    got = json.loads(view.stdout)
    assert sorted(got.get("names", [])) == sorted([".", "..", *names]), describe(view)


# --- read-only: as a real read-only mount -------------------------------------------


@pytest.fixture
def tmpfs_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two tmpfs mounts with the same tree: (writable one, read-only one)."""
    mounts: list[Path] = []
    try:
        for name in ("rw", "ro"):
            m = tmp_path / name
            m.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(m)],
                check=True,
                timeout=20,
            )
            mounts.append(m)
            write(m / "f", "DATA\n")
            write(m / "sub" / "g", "G\n")
            (m / "e").mkdir()
            (m / "l").symlink_to("f")
            (m / "dl").symlink_to("missing")
            os.setxattr(m / "f", "user.t", b"v")
        subprocess.run(["mount", "-o", "remount,ro", str(mounts[1])], check=True, timeout=20)
        yield mounts[0], mounts[1]
    finally:
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False, timeout=20)


_RO_NAMES = ("f", "sub", "e", "sub/g", "missing", "nodir/x", "f/x", "l", "dl")
_RO_PAIRS = (
    ("f", "new"),
    ("f", "sub/g"),
    ("f", "e"),
    ("missing", "new"),
    ("sub", "new"),
    ("e", "sub"),
    ("f", "nodir/x"),
    ("sub", "e"),
    ("l", "new"),
)


def test_readonly_raw_calls_match_a_read_only_mount(
    tmpfs_pair: tuple[Path, Path], mode: tuple[str, ...]
) -> None:
    """Every raw call of the families on every kind of name (file, directory,
    empty directory, missing, missing parent, symlink, dangling symlink)
    gets under ``--readonly`` the errno a ``mount -o ro`` tmpfs gives, and
    the tree is unchanged."""
    rw, ro = tmpfs_pair
    specs = [[c, n] for c in ONE_PATH_CALLS for n in _RO_NAMES]
    specs += [[c, a, b] for c in TWO_PATH_CALLS for a, b in _RO_PAIRS]
    before = snapshot(rw)
    native = raw(specs, native=True, cwd=ro)
    view = raw(specs, *mode, "--readonly", f"{rw}/**", cwd=rw)
    diff = {
        k: f"got {view[k]}, ro mount {native[k]}"
        for k in specs_labels(specs)
        if view[k] != native[k]
    }
    assert diff == {}, "\n".join(f"{k}: {v}" for k, v in sorted(diff.items()))
    assert snapshot(rw) == before
    assert "EROFS" in native.values()


def specs_labels(specs: Sequence[Sequence[str]]) -> list[str]:
    return [label(s) for s in specs]


#: Coreutils commands run in the tree's top directory.
RO_COMMANDS = (
    "cat f",
    "ls",
    "ls -l f l | cut -d' ' -f1,5",
    "stat -c '%s %F' f sub e l",
    "rm f",
    "rm missing",
    "rm -f missing",
    "rm -f f",
    "rm -r sub",
    "rm -rf e",
    "rmdir e",
    "rmdir missing",
    "rmdir f",
    "mv f g",
    "mv f sub/",
    "mv missing g",
    "mkdir new",
    "mkdir sub",
    "mkdir -p sub/x",
    "mkdir -p e",
    "touch f",
    "touch new",
    "touch -c missing",
    "touch sub/g",
    "chmod 600 f",
    "chmod 600 missing",
    "chmod -R 700 sub",
    "chown 65534 f",
    "chgrp 65534 f",
    "chown -h 65534 l",
    "ln f h",
    "ln -s f s",
    "ln -sf f l",
    "ln missing h",
    "truncate -s0 f",
    "truncate -s0 -c missing",
    "truncate -s0 missing",
    "mkfifo p",
    "cp f c",
    "cp f sub/g",
    "echo x >> f",
    "echo x > new",
    "unlink f",
    "unlink l",
    "test -e f",
    "test -d sub",
    "test -L l",
    "test -w f",
    "test -w sub",
    "test -w missing",
    "test -w l",
    "python3 -c 'import os; print(os.statvfs(\"sub\").f_flag & os.ST_RDONLY)'",
    "readlink l",
    "readlink -f dl",
    "realpath l",
    "cd sub && ls && touch here",
)


def test_readonly_coreutils_match_a_read_only_mount(
    tmpfs_pair: tuple[Path, Path], mode: tuple[str, ...]
) -> None:
    rw, ro = tmpfs_pair
    before = snapshot(rw)
    native = run_native(sh(each(RO_COMMANDS)), cwd=ro)
    view = run_launch(*mode, "--readonly", f"{rw}/**", argv=sh(each(RO_COMMANDS)), cwd=rw)
    # readlink -f and realpath print the top directory's own name.
    n = outcomes(native.stdout.replace(str(ro), "TOP"))
    v = outcomes(view.stdout.replace(str(rw), "TOP"))
    assert len(n) == len(RO_COMMANDS), describe(native)
    diff = {c: f"got {v.get(c)!r}, ro mount {n[c]!r}" for c in RO_COMMANDS if v.get(c) != n[c]}
    assert diff == {}, "\n".join(f"{k}: {d}" for k, d in diff.items()) + describe(view)
    assert snapshot(rw) == before
    assert "Read-only file system" in n["rm f"]
    assert "File exists" in n["mkdir sub"] and "No such file" in n["rm missing"]
