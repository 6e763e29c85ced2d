"""Trees deeper than PATH_MAX, reached by short relative names (issue 16).

The kernel takes a path of at most 4 096 bytes in one string, but a program
goes as deep as it likes one relative name at a time (``mkdir d; cd d``), and
``find``, ``du``, ``tar`` and ``rm -rf`` walk such trees with ``openat``.
``/proc`` cannot read back a name that long (ENAMETOOLONG), so the supervisor
finds a deep directory's name as getcwd(3) does (kernel/program.long_name)
and opens long names in pieces (kernel/program._open_long). Before, every
trapped call there failed with ENAMETOOLONG, in every mode, and so did
those in a removed cwd that deep, which has no name at all. Each case runs
natively first; the answers and the tree afterwards must be the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import describe, py, run_launch, run_native

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",), "opens": ("--view", "opens")}

CASES = """
import errno, os, sys
os.chdir(sys.argv[1])

def r(what, fn):
    try:
        out = fn()
    except OSError as e:
        out = errno.errorcode[e.errno]
    print(what, out)

name = "d" * 200
for _ in range(25):
    os.mkdir(name)
    os.chdir(name)
r("cwd deeper than PATH_MAX", lambda: len(os.getcwd()) > 4096)
r("create", lambda: os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644)))
r("stat", lambda: os.stat("f").st_size)
r("stat missing", lambda: os.stat("nope"))
r("mkdir", lambda: os.mkdir("sub"))
r("chdir", lambda: os.chdir("sub"))
r("chdir ..", lambda: os.chdir(".."))
r("rename", lambda: os.rename("f", "g"))
r("chmod", lambda: os.chmod("g", 0o600))
r("fstat", lambda: os.fstat(os.open("g", os.O_RDONLY)).st_mode & 0o777)
r("listdir", lambda: sorted(os.listdir(".")))
r("unlink", lambda: os.unlink("g"))
r("open ../missing", lambda: os.open("../missing", os.O_RDONLY))
r("rmdir", lambda: os.rmdir("sub"))
# A removed cwd that deep: /proc cannot read back even "X (deleted)".
os.mkdir("gone")
os.chdir("gone")
os.rmdir("../gone")
r("removed: stat .", lambda: os.stat(".").st_nlink)
r("removed: listdir .", lambda: os.listdir("."))
r("removed: open .", lambda: os.close(os.open(".", os.O_RDONLY)))
r("removed: access .", lambda: os.access(".", os.R_OK))
r("removed: create", lambda: os.open("x", os.O_CREAT | os.O_WRONLY, 0o644))
r("removed: mkdir", lambda: os.mkdir("x"))
r("removed: rmdir .", lambda: os.rmdir("."))
r("removed: stat ../missing", lambda: os.stat("../missing"))
r("removed: create ../new", lambda: os.close(os.open("../new", os.O_CREAT | os.O_WRONLY)))
r("removed: mkdir ../nd", lambda: os.mkdir("../nd"))
r("removed: rename ../new", lambda: os.rename("../new", "../nd/moved"))
r("removed: parent", lambda: sorted(os.listdir("..")) + sorted(os.listdir("../nd")))
"""

TOOLS = r"""
set -e
cd "$1"
n=$(printf 'n%.0s' $(seq 100))
mkdir -p src
cd src
for i in $(seq 60); do mkdir "$n"; cd "$n"; done
echo bottom > file
cd "$1"
echo "find: $(find src | wc -l) $(find src -name file | wc -c)"
echo "du: $(du -s src | cut -f1)"
echo "tar: $(tar cf - src | tar tf - | wc -l)"
rm -rf src
echo "rm: $(ls -A | wc -l)"
"""


@pytest.mark.parametrize("mode", list(MODES))
def test_calls_deeper_than_path_max_answer_as_natively(tmp_path: Path, mode: str) -> None:
    (tmp_path / "native").mkdir()
    native = run_native(py(CASES, str(tmp_path / "native")))
    assert native.returncode == 0, describe(native)
    assert "cwd deeper than PATH_MAX True" in native.stdout
    assert "stat 0" in native.stdout, describe(native)
    (tmp_path / "under").mkdir()
    proc = run_launch(*MODES[mode], "--deny", str(tmp_path / "elsewhere"),
                      argv=py(CASES, str(tmp_path / "under")))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == native.stdout.splitlines()


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_tools_walk_a_tree_deeper_than_path_max(tmp_path: Path, mode: str) -> None:
    native = run_native(["bash", "-c", TOOLS, "tools", str(tmp_path)])
    assert native.returncode == 0 and native.stderr == "", describe(native)
    lines = native.stdout.splitlines()
    assert (lines[0], lines[2:]) == ("find: 62 6069", ["tar: 62", "rm: 0"]), describe(native)
    proc = run_launch(*MODES[mode], "--deny", str(tmp_path / "elsewhere"),
                      argv=["bash", "-c", TOOLS, "tools", str(tmp_path)])  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, native.stdout, ""), describe(proc)


REOPEN = """
import errno, os, sys
os.chdir(sys.argv[1])
for _ in range(25):
    os.chdir("d" * 200)
fd = os.open("f", os.O_RDONLY)

def attempt(fn):
    try:
        fn()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]

print("read", attempt(lambda: os.close(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY))),
      "write", attempt(lambda: os.close(os.open(f"/proc/self/fd/{fd}", os.O_WRONLY))))
"""


def test_a_file_too_deep_to_name_is_judged_through_its_magic_link(tmp_path: Path) -> None:
    """Reopening a file deeper than PATH_MAX through
    ``/proc/self/fd/N``: a magic link, decided on as such, then judged by
    the name of what it reached, which cannot be read back. So it fails
    closed wherever a rule might name the file (policy.paths.judge_too_deep).
    Before, the judge failed on ENAMETOOLONG (EPERM and a traceback)."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(25):  # one name at a time: the whole path is too long
        os.mkdir("d" * 200, dir_fd=fd)
        step = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = step
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)
    argv = py(REOPEN, str(tmp_path))
    native = run_native(argv)
    assert native.stdout == "read OK write OK\n", describe(native)
    expect = {
        # Only read-only rules: a read is as good as the fd the program holds.
        ("--readonly", f"{tmp_path}/**"): "read OK write EROFS\n",
        # Any rule that might name the file, anywhere: fail closed.
        ("--deny", f"{tmp_path}-elsewhere"): "read EACCES write EACCES\n",
    }
    for rule, want in expect.items():
        proc = run_launch("--enforce", *rule, argv=argv)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, want, ""), describe(proc)
