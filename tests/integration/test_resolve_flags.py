"""openat2(2)'s ``RESOLVE_*`` restrictions where the supervisor makes the open.

A program asks for ``RESOLVE_NO_SYMLINKS``, ``NO_MAGICLINKS``, ``BENEATH``,
``IN_ROOT``, ``NO_XDEV`` or ``CACHED`` for its own safety (a tree another
user can write into): the open we make for it must refuse what the kernel
refuses, with the same errno, and open the file the kernel would open (for
``IN_ROOT``, an absolute name from the dirfd). Each case runs natively (the
oracle), then under ``--enforce`` (every open made by us), as root, root
without capabilities and nobody; and in virtualize mode with a read-only
rule over the tree, which makes every open there ours too (a write then
fails EROFS where it worked natively: the rule's answer, and nothing is
made). Before, the flags were lost wherever the resolver walked by itself:
a symlink followed under ``NO_SYMLINKS``, ``/proc/self/fd/1`` under
``NO_MAGICLINKS``, ``IN_ROOT``'s ``/x`` made at the real ``/x``.
"""

from __future__ import annotations

import os

import pytest

from ..security.support import NO_CAPS
from .helpers import AS_NOBODY, SYSTEM_PYTHON, describe, env, public_dir, run_launch, run_native

pytestmark = pytest.mark.kernel

PROGRAM = r'''
import ctypes, errno, os, shutil, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
NO_XDEV, NO_MAGIC, NO_SYM, BENEATH, IN_ROOT, CACHED = 1, 2, 4, 8, 16, 32
base, step = sys.argv[1], sys.argv[2]  # all; make (the tree only); use (one made)
# d holds a copy of the tree's own path: IN_ROOT's "/<base>/x" from d is
# d/<base>/x, and the real <base>/x when the scope is lost (still ours).
mirror = "d" + base

def fresh():
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base + "/" + mirror)
    for name, text in (("f", "file"), ("d/f", "in d"), (mirror + "/f", "mirror")):
        with open(os.path.join(base, name), "w") as out:
            out.write(text)
    os.symlink("f", base + "/lf")
    os.symlink("d", base + "/ld")
    os.symlink("/f", base + "/d/abs")
    os.symlink(base + "/new-by-link", base + "/d/absnew")
    os.symlink("missing", base + "/dang")

def tree():
    out = []
    for top, dirs, files in os.walk(base):
        dirs.sort()
        out += [os.path.relpath(os.path.join(top, n), base) for n in sorted(dirs + files)]
    return " ".join(out)

def o2(dirfd, path, flags, resolve, mode=0):
    how = struct.pack("QQQ", flags, mode, resolve)
    ctypes.set_errno(0)
    fd = libc.syscall(437, dirfd, path.encode(), how, 24)
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    name = os.readlink(f"/proc/self/fd/{fd}")
    try:
        text = os.pread(fd, 16, 0) if flags & os.O_ACCMODE != os.O_WRONLY else b""
    except OSError as e:
        text = errno.errorcode[e.errno]
    os.close(fd)
    return f"ok {name.replace(base, 'B')} {text!r}"

R, W = os.O_RDONLY, os.O_RDWR | os.O_CREAT
CASES = [
    ("lf", R, NO_SYM), ("ld/f", R, NO_SYM), ("lf", R, 0), ("f", R, NO_SYM),
    ("/proc/self/fd/1", R, NO_MAGIC), ("/proc/self/fd/1", R, NO_SYM),
    ("/proc/self/fd/1", R, BENEATH), ("/proc/self/fd/77", R, NO_MAGIC),
    ("f", W, CACHED), ("f", R | os.O_TRUNC, CACHED), ("f", R, BENEATH | IN_ROOT),
    ("dang", W, NO_SYM), ("dang", W, BENEATH),
    ("D:/f", R, IN_ROOT), ("D:../f", R, IN_ROOT), ("D:abs", R, IN_ROOT),
    ("D:abs", R, BENEATH), ("D:/f", R, BENEATH), ("D:../f", R, BENEATH),
    ("D:../f", R, NO_SYM), ("D:f", R, BENEATH),
    ("D:" + base + "/f", R, IN_ROOT), ("D:" + base + "/new", W, IN_ROOT),
    ("D:absnew", W, IN_ROOT), ("D:new", W, BENEATH), ("D:../new", W, BENEATH),
    ("D:/new", W, BENEATH), ("f", W, NO_XDEV), ("/proc/self/status", R, NO_XDEV),
]
if step == "make":
    fresh()
    sys.exit()
for path, flags, resolve in CASES:
    if step == "all":
        fresh()
    os.chdir(base)
    dirfd = -100
    if path.startswith("D:"):
        dirfd, path = os.open("d", os.O_PATH | os.O_DIRECTORY), path[2:]
    result = o2(dirfd, path, flags, resolve, 0o600 if flags & os.O_CREAT else 0)
    print(path.replace(base, "B"), oct(flags), resolve, "=", result,
          "|", tree().replace(base.lstrip("/"), "B"))
    if dirfd >= 0:
        os.close(dirfd)
    os.chdir("/")
if step == "all":
    shutil.rmtree(base)
'''


def _run(argv: list[str], opts: tuple[str, ...] | None) -> list[str]:
    proc = run_native(argv) if opts is None else run_launch(*opts, argv=argv, env=env())
    assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    return proc.stdout.splitlines()


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
def test_resolve_flags_are_kept_by_the_opens_we_make(who: str) -> None:
    with public_dir("unotifyd-resolve-") as d:
        base = str(d / "t")
        prefix = {"root": (), "root-nocaps": NO_CAPS, "nobody": (*AS_NOBODY, "--")}[who]
        if who == "nobody":
            os.chown(d, 65534, 65534)
        argv = [*prefix, SYSTEM_PYTHON, "-c", PROGRAM, base, "all"]
        native = _run(argv, None)
        # The control: the kernel refuses each of these, and IN_ROOT opens
        # from the dirfd.
        text = "\n".join(native)
        assert "lf 0o0 4 = ELOOP" in text and "/proc/self/fd/1 0o0 2 = ELOOP" in text
        assert "f 0o102 32 = EAGAIN" in text and "../f 0o0 8 = EXDEV" in text
        assert "/f 0o0 16 = ok B/d/f b'in d'" in text
        assert "B/new 0o102 16 = ok B/dB/new" in text
        enforced = _run(argv, ("--enforce", "--deny", str(d / "elsewhere")))
        assert enforced == native
        if who != "root":
            return
        # Virtualize: the read-only tree makes every open there ours (and
        # is made before, natively).
        _run([*argv[:-1], "make"], None)
        virtual = _run([*argv[:-1], "use"], ("--readonly", f"{base}/**"))
        assert len(virtual) == len(native)
        for mine, theirs in zip(virtual, native, strict=True):
            case, result = mine.split(" | ")[0].split(" = ")
            if result != theirs.split(" | ")[0].split(" = ")[1]:
                # Only a write the kernel allowed may differ: the rule refuses it.
                assert theirs.startswith(case + " = ok "), (mine, theirs)
                assert result == "EROFS", (mine, theirs)


TREE_PROGRAM = r'''
import ctypes, errno, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
BENEATH, IN_ROOT = 8, 16
home = sys.argv[1]
dirfd = os.open(home, os.O_PATH | os.O_DIRECTORY)
for path, flags, resolve in (
    (".cache/../../secret", os.O_RDONLY, BENEATH), (".cache/../../secret", os.O_RDONLY, IN_ROOT),
    (".cache/../f", os.O_RDONLY, BENEATH), (".cache/../../f", os.O_RDONLY, IN_ROOT),
    (".cache/../../made", os.O_RDWR | os.O_CREAT, BENEATH), (".cache/../f", os.O_RDONLY, 0),
):
    how = struct.pack("QQQ", flags, 0o600 if flags & os.O_CREAT else 0, resolve)
    fd = libc.syscall(437, dirfd, path.encode(), how, 24)
    if fd < 0:
        result = errno.errorcode[ctypes.get_errno()]
    else:
        result = os.pread(fd, 16, 0).decode()
        os.close(fd)
    print(path, resolve, result, os.path.exists(os.path.join(home, "..", "made")))
'''


@pytest.mark.parametrize("mode", ["enforce", "virtualize"])
def test_a_scoped_lookup_keeps_to_its_dirfd_through_a_tree_of_the_view(mode: str) -> None:
    """``tree/../..`` under RESOLVE_BENEATH or RESOLVE_IN_ROOT, where ``tree``
    is a private tree (in the program's view only): EXDEV, or kept at the
    dirfd, as natively with a real directory there (helper-43's audit: the
    supervisor walked the ``..`` as text, out of the dirfd, to any file).
    And ``tree/../f`` is f in virtualize mode too (it was ENOENT: the
    kernel, let through, found no tree to come back from)."""
    with public_dir("unotifyd-scope-") as d:
        home = d / "home"
        (home / ".cache").mkdir(parents=True)
        (home / "f").write_text("in home")
        (d / "secret").write_text("outside")
        argv = [SYSTEM_PYTHON, "-c", TREE_PROGRAM, str(home)]
        native = _run(argv, None)
        assert native == [  # the control
            ".cache/../../secret 8 EXDEV False", ".cache/../../secret 16 ENOENT False",
            ".cache/../f 8 in home False", ".cache/../../f 16 in home False",
            ".cache/../../made 8 EXDEV False", ".cache/../f 0 in home False",
        ], native  # fmt: skip
        (home / ".cache").rmdir()  # now only in the view
        # In virtualize mode, a rule on the file outside makes its open ours.
        opts = ("--enforce",) if mode == "enforce" else ("--readonly", str(d / "secret"))
        # What is reached through the tree is ours to open in virtualize mode
        # too: the kernel finds no .cache to come back from (ENOENT).
        assert _run(argv, (*opts, "--private", f"{home}/.cache/**")) == native
