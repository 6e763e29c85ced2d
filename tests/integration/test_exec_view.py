"""Exec, chdir, content and private rules in the file-system view (issue 3).

* ``execve``/``execveat`` are trapped for an ``--exec`` rule, and for any
  rule that changes what a path is: redirects and denies apply to running a
  program (``tests/security/test_exec_rules.py``), and with exec rules only
  what one covers may run (EACCES otherwise, as on ``noexec``).
* ``chdir`` into a redirected directory goes to its target; into a denied
  one fails with the rule's errno.
* ``--content PATH=FILE`` serves FILE's contents (read once at start) at
  PATH, read-only; ``--private TREE/**`` gives each sandbox an empty tree
  of its own whose writes vanish at exit.

Every test runs in both modes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .helpers import MODES, describe, py, run_launch, run_native, sh, write

pytestmark = pytest.mark.kernel


@pytest.fixture(params=["virtualize", "enforce"])
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The launch options of the mode the test runs in."""
    return MODES[str(request.param)]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)
    return proc


def copy_exe(src: str, dst: Path) -> Path:
    """A copy of the executable ``src`` at ``dst`` (outside /usr)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    dst.chmod(0o755)
    return dst


def listing(root: Path) -> dict[str, bytes | str | None]:
    """{relative name: contents of a file, text of a link, None for a directory}."""
    out: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            entry: bytes | str | None = None
            if stat.S_ISLNK(mode):
                entry = os.readlink(p)
            elif stat.S_ISREG(mode):
                entry = p.read_bytes()
            out[str(p.relative_to(root))] = entry
    return out


# --- exec through a redirect ---------------------------------------------------------


def test_exec_runs_the_redirect_target(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """Running a redirected path runs its target: a path with nothing on
    the disk, a path holding another program (``false``), the program
    launch itself starts, a tree redirect found through ``PATH``."""
    ghost = tmp_path / "bin" / "ghost"
    impostor = copy_exe("/bin/false", tmp_path / "bin" / "impostor")
    tools = tmp_path / "tools"
    tools.mkdir()
    # A target whose name is longer than the path run (the name cannot be
    # rewritten in place in the program's memory).
    far = copy_exe("/bin/echo", tmp_path / ("far-away-" * 8) / "echo")
    near = tmp_path / "n"
    opts = (
        *mode,
        "--exec",
        "/**",
        "--redirect",
        f"{ghost}=/bin/echo",
        "--redirect",
        f"{impostor}=/bin/echo",
        "--redirect",
        f"{tools}/**=/usr/bin/**",
        "--redirect",
        f"{near}={far}",
    )
    script = (
        f"{ghost} ghost; echo rc=$?; {impostor} impostor; echo rc=$?;"
        f" {tools}/printf '%s\\n' tree; env PATH={tools} printf '%s\\n' path-search; {near} near"
    )
    proc = ok(run_launch(*opts, argv=sh(script)))
    assert proc.stdout == "ghost\nrc=0\nimpostor\nrc=0\ntree\npath-search\nnear\n", describe(proc)
    direct = ok(run_launch(*opts, argv=[str(impostor), "direct"]))
    assert direct.stdout == "direct\n"
    assert not ghost.exists() and not (tools / "printf").exists()


_EXEC_TWICE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
bad, good = sys.argv[1], sys.argv[2]
buf = ctypes.create_string_buffer(bad.encode(), 512)
arg = ctypes.create_string_buffer(b"ARGUMENT", 64)
argv = (ctypes.c_char_p * 3)(b"x", ctypes.cast(arg, ctypes.c_char_p), None)
libc.execve(buf, argv, None)
print("errno", ctypes.get_errno(), "path-kept", buf.value.decode() == bad,
      "arg-kept", arg.value == b"ARGUMENT", flush=True)
os.execv(good, ["echo", "A", "B"])
"""


def test_a_failed_exec_through_a_redirect_leaves_the_program_as_it_was(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """An exec through a redirect whose target cannot run (not executable:
    EACCES) fails as natively, and the program's memory is as it was: the
    path it passed still reads as it wrote it, its arguments too, and a
    later exec through another redirect gets its arguments intact."""
    plain = write(tmp_path / "plain", "not a program\n")
    bad = tmp_path / "bad-with-a-name-longer-than-its-target"
    ok_path = tmp_path / "ok"
    opts = (
        *mode,
        "--exec",
        "/**",
        "--redirect",
        f"{bad}={plain}",
        "--redirect",
        f"{ok_path}=/bin/echo",
    )
    proc = run_launch(*opts, argv=py(_EXEC_TWICE, str(bad), str(ok_path)), errors="replace")
    assert proc.stdout == "errno 13 path-kept True arg-kept True\nA B\n", describe(proc)
    shell = run_launch(*opts, argv=sh(f"{bad} X; {ok_path} A B"), errors="replace")
    assert shell.stdout == "A B\n", describe(shell)
    assert f"{bad}: Permission denied" in shell.stderr, describe(shell)


# --- the exec allow-list -------------------------------------------------------------

#: An exec rule for the directory of the Python that runs the test programs.
PYTHON_TREE = f"{Path(os.path.realpath(sys.executable)).parent}/**"

_FEXECVE = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.execve(fd, ["echo", "RAN"], {})
except OSError as e:
    print(type(e).__name__, e.errno)
"""


def test_exec_allow_list(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """With ``--exec '/usr/**'``, programs under /usr run (also when named
    through the /bin symlink), a copy of ``true`` in a temporary directory
    does not: sh reports "Permission denied", status 126. ``fexecve``
    (execveat of an fd) is held to the same list."""
    copy = copy_exe("/bin/true", tmp_path / "true-copy")
    echo = copy_exe("/bin/echo", tmp_path / "echo-copy")
    opts = (*mode, "--exec", "/usr/**", "--exec", PYTHON_TREE)
    script = (
        f"{copy}; echo rc=$?; /usr/bin/true && echo usr-ok; /bin/true && echo bin-ok;"
        f" {echo} RAN; echo rc=$?"
    )
    proc = run_launch(*opts, argv=sh(script))
    assert proc.stdout == "rc=126\nusr-ok\nbin-ok\nrc=126\n", describe(proc)
    assert proc.stderr.count("Permission denied") == 2, describe(proc)
    fexec = ok(run_launch(*opts, argv=py(_FEXECVE, str(echo))))
    assert fexec.stdout == f"PermissionError {13}\n", describe(fexec)
    allowed = ok(run_launch(*opts, argv=py(_FEXECVE, "/usr/bin/echo")))
    assert allowed.stdout == "RAN\n", describe(allowed)


def test_launching_a_program_the_allow_list_refuses(tmp_path: Path, mode: tuple[str, ...]) -> None:
    echo = copy_exe("/bin/echo", tmp_path / "echo-copy")
    proc = run_launch(*mode, "--exec", "/usr/**", "--exec", PYTHON_TREE, argv=[str(echo), "RAN"])
    assert proc.returncode == 126, describe(proc)
    assert "RAN" not in proc.stdout
    assert "Permission denied" in proc.stderr, describe(proc)


@pytest.mark.parametrize(
    ("suffix", "status", "message"),
    [
        ("", 126, "Permission denied"),
        (":EPERM", 126, "Operation not permitted"),
        (":ENOENT", 127, "not found"),
    ],
    ids=["EACCES", "EPERM", "ENOENT"],
)
def test_deny_on_an_executable(
    tmp_path: Path, mode: tuple[str, ...], suffix: str, status: int, message: str
) -> None:
    """With an exec rule present, a denied executable does not run, with the rule's errno."""
    echo = copy_exe("/bin/echo", tmp_path / "d" / "echo-copy")
    other = copy_exe("/bin/echo", tmp_path / "echo-other")
    proc = run_launch(
        *mode,
        "--exec",
        "/**",
        "--deny",
        f"{echo}{suffix}",
        argv=sh(f"{echo} RAN; echo rc=$?; {other} OTHER"),
    )
    assert proc.stdout == f"rc={status}\nOTHER\n", describe(proc)
    assert message in proc.stderr, describe(proc)
    tree = run_launch(
        *mode,
        "--exec",
        "/**",
        "--deny",
        f"{echo.parent}/**{suffix}",
        argv=sh(f"{echo} RAN; echo rc=$?"),
    )
    assert tree.stdout == f"rc={status}\n", describe(tree)


# --- chdir ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["b", "target-" * 8], ids=["same-length", "longer"])
def test_chdir_into_a_redirected_directory(
    tmp_path: Path, mode: tuple[str, ...], target: str
) -> None:
    """``cd`` into a redirected directory (a tree's top, a directory in
    it, a file redirect naming a directory) goes to the target: ``pwd -P``
    and ``ls`` show it. ``longer``: the target's name is longer than the
    path given (it cannot be rewritten in place in the program's memory)."""
    a, b, door = tmp_path / "a", tmp_path / target, tmp_path / "door"
    write(a / "x", "AX\n")
    write(b / "x", "BX\n")
    write(b / "sub" / "y", "BY\n")
    (b / "only-b").touch()
    script = (
        f"cd {a} && pwd -P && ls && cat x && cd sub && pwd -P && cat y;"
        f" cd {door} && pwd -P && ls;"
        f" cd {tmp_path} && cd a/sub && pwd -P;"
        f" {sys.executable} -c 'import os, sys; os.chdir(sys.argv[1]); print(os.getcwd())' {a}"
    )
    proc = ok(
        run_launch(
            *mode, "--redirect", f"{a}/**={b}/**", "--redirect", f"{door}={b}", argv=sh(script)
        )
    )
    real_b = os.path.realpath(b)
    assert proc.stdout.splitlines() == [
        real_b,
        "only-b",
        "sub",
        "x",
        "BX",
        f"{real_b}/sub",
        "BY",
        real_b,
        "only-b",
        "sub",
        "x",
        f"{real_b}/sub",
        real_b,
    ], describe(proc)


_CHDIR = """
import errno, os, sys
for p in sys.argv[1:]:
    try:
        os.chdir(p)
        print(p, "ok", os.getcwd())
    except OSError as e:
        print(p, errno.errorcode[e.errno])
"""


@pytest.mark.parametrize("suffix", ["", ":ENOENT"], ids=["EACCES", "ENOENT"])
def test_chdir_into_a_denied_directory(tmp_path: Path, mode: tuple[str, ...], suffix: str) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    free = tmp_path / "free"
    free.mkdir()
    err = suffix[1:] or "EACCES"
    proc = ok(
        run_launch(
            *mode,
            "--deny",
            f"{d}/**{suffix}",
            argv=py(_CHDIR, str(d), f"{d}/sub", f"{d}/sub/..", str(free)),
        )
    )
    assert proc.stdout.splitlines() == [
        f"{d} {err}",
        f"{d}/sub {err}",
        f"{d}/sub/.. {err}",
        f"{free} ok {free}",
    ], describe(proc)
    shell = run_launch(
        *mode, "--deny", f"{d}/**{suffix}", argv=sh(f"cd {d}; echo rc=$?; cd {free} && pwd")
    )
    assert shell.stdout == f"rc=2\n{free}\n", describe(shell)


# --- content -------------------------------------------------------------------------


def test_content_rule(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """A content path reads as the file given at start (a later change to
    that file is not seen), has its length, and refuses writes with EROFS;
    what is on the disk at the path is neither read nor changed."""
    source = write(tmp_path / "src" / "motd", "CONTENT-V1\n")
    other = write(tmp_path / "src" / "other", "OTHER\n")
    on_disk = write(tmp_path / "etc" / "motd", "ON DISK\n")
    absent = tmp_path / "etc" / "absent"
    script = f"""
        cat {on_disk}; stat -c '%s %F' {on_disk}; ls -l {on_disk} | cut -d' ' -f5
        cat {absent}; stat -c %s {absent}; test -f {absent} && echo is-file
        echo CHANGED > {source}; cat {on_disk}
        echo x > {on_disk}; echo rc=$?
        echo x >> {on_disk}; echo rc=$?
        truncate -s0 {on_disk}; echo rc=$?
        {sys.executable} -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' {absent} \
            2>&1 | tail -1
        rm -f {on_disk}; echo rc=$?
        mv {on_disk} {tmp_path}/moved; echo rc=$?
        cat {on_disk}
    """
    proc = run_launch(
        *mode, "--content", f"{on_disk}={source}", "--content", f"{absent}={other}", argv=sh(script)
    )
    lines = proc.stdout.splitlines()
    assert lines[:10] == [
        "CONTENT-V1",
        "11 regular file",
        "11",
        "OTHER",
        "6",
        "is-file",
        "CONTENT-V1",
        "rc=2",
        "rc=2",
        "rc=1",
    ], describe(proc)
    assert "Read-only file system" in lines[10], describe(proc)
    assert lines[11] != "rc=0" and lines[12] != "rc=0", describe(proc)
    assert lines[13:] == ["CONTENT-V1"], describe(proc)
    assert proc.stderr.count("Read-only file system") >= 3, describe(proc)
    assert on_disk.read_text() == "ON DISK\n"
    assert not absent.exists() and not (tmp_path / "moved").exists()


def test_content_rules_from_a_policy_file(tmp_path: Path, mode: tuple[str, ...]) -> None:
    source = write(tmp_path / "source", "FROM FILE\n")
    text_path, file_path = tmp_path / "etc" / "text", tmp_path / "etc" / "file"
    policy = write(
        tmp_path / "policy.toml",
        (
            "version = 1\n"
            f'[[content]]\npath = "{text_path}"\ntext = "INLINE TEXT\\n"\n'
            f'[[content]]\npath = "{file_path}"\nfile = "{source}"\n'
        ),
    )
    proc = ok(
        run_launch(
            *mode,
            "--policy",
            str(policy),
            argv=sh(f"cat {text_path} {file_path}; stat -c %s {text_path}"),
        )
    )
    assert proc.stdout == "INLINE TEXT\nFROM FILE\n12\n", describe(proc)


# --- private -------------------------------------------------------------------------


def test_private_tree(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """A private tree starts empty; what the program (and its children)
    write there is visible to them during the run; the real directory is
    untouched, and the scratch directory that held the writes is gone
    after exit."""
    # Named long enough for the scratch directory's name to fit over it:
    # `cd` into a directory made in the tree is a chdir to a name that
    # exists only there (issue 3's gap, test_private_tree_that_does_not_
    # exist_on_disk), and that name holds the supervisor's pid and start
    # time, whose digits grow with the machine's uptime.
    real = tmp_path / ("real" + "-" * 32)
    write(real / "real-file", "REAL\n")
    write(real / "sub" / "deep", "DEEP\n")
    before = listing(real)
    script = f"""
        ls -A {real}; echo --
        cat {real}/real-file; echo rc=$?
        echo hi > {real}/new && cat {real}/new
        mkdir {real}/d && touch {real}/d/x && ls {real}/d && ls {real}
        sh -c 'cat {real}/new; ls {real}/d'
        ln -s new {real}/l && cat {real}/l
        mv {real}/new {real}/moved && cat {real}/moved && test ! -e {real}/new && echo moved
        chmod 600 {real}/moved && stat -c %a {real}/moved
        cd {real}/d && ls && cd /
        exec 3<{real}/moved; readlink /proc/self/fd/3
    """
    proc = ok(run_launch(*mode, "--private", f"{real}/**", argv=sh(script)))
    lines = proc.stdout.splitlines()
    assert lines[:-1] == [
        "--",
        "rc=1",
        "hi",
        "x",
        "d",
        "new",
        "hi",
        "x",
        "hi",
        "hi",
        "moved",
        "600",
        "x",
    ], describe(proc)
    scratch = lines[-1]
    assert scratch.startswith("/") and scratch.endswith("/moved"), describe(proc)
    assert not scratch.startswith(f"{real}/"), describe(proc)
    assert not os.path.lexists(scratch), "the scratch directory outlived the sandbox"
    assert not os.path.lexists(os.path.dirname(scratch))
    assert listing(real) == before
    again = ok(run_launch(*mode, "--private", f"{real}/**", argv=sh(f"ls -A {real}; echo end")))
    assert again.stdout == "end\n", "a new sandbox starts empty"


def test_private_tree_symlinks_are_held_to_the_rules(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """A link made in a private tree is followed in the program's view, so
    the rules apply where it leads: to a denied file it is denied, to a
    redirected one it is redirected, and a loop is ELOOP."""
    secret = write(tmp_path / "secret", "SECRET\n")
    src, dst = tmp_path / "src", write(tmp_path / "dst", "REDIRECTED\n")
    p = tmp_path / "p"
    script = (
        f"ln -s {secret} {p}/s; cat {p}/s; echo rc=$?;"
        f" ln -s ../src {p}/r; cat {p}/r; ln -s loop {p}/loop; cat {p}/loop; echo rc=$?"
    )
    proc = run_launch(*mode, "--private", f"{p}/**", "--deny", str(secret),
                      "--redirect", f"{src}={dst}", argv=sh(script))  # fmt: skip
    assert proc.stdout == "rc=1\nREDIRECTED\nrc=1\n", describe(proc)
    assert "Permission denied" in proc.stderr and "Too many levels" in proc.stderr
    assert "SECRET" not in proc.stdout + proc.stderr


def test_private_tree_that_does_not_exist_on_disk(tmp_path: Path, mode: tuple[str, ...]) -> None:
    ghost = tmp_path / "ghost"
    script = (
        f"ls -A {ghost}; echo rc=$?; mkdir -p {ghost}/a/b && echo X > {ghost}/a/b/f; find {ghost}"
    )
    proc = ok(run_launch(*mode, "--private", f"{ghost}/**", argv=sh(script)))
    assert proc.stdout.splitlines() == [
        "rc=0",
        str(ghost),
        f"{ghost}/a",
        f"{ghost}/a/b",
        f"{ghost}/a/b/f",
    ], describe(proc)
    assert not ghost.exists()


def test_a_binary_made_in_a_private_tree_runs(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """Running a file made in a private tree runs it, from the scratch
    directory (natively, from the directory the tree stands for); the real
    disk has no such file. The scratch name does not fit in the program's
    path, so the file is run as ``/dev/fd/N``: a binary named by 11 bytes or
    more (see the next test for the rest)."""
    p = tmp_path / "p"
    script = f"cp /bin/echo {p}/echo && {p}/echo ran; echo rc=$?"
    p.mkdir()
    native = run_native(sh(script))
    assert native.stdout == "ran\nrc=0\n", describe(native)
    shutil.rmtree(p)
    proc = ok(run_launch(*mode, "--private", f"{p}/**", argv=sh(script)))
    assert proc.stdout == "ran\nrc=0\n", describe(proc)
    assert not p.exists()


def test_a_script_made_in_a_private_tree_runs(mode: tuple[str, ...]) -> None:
    """A gap (conftest): where the scratch name is longer than the program's
    (a short name such as ``/tmp/x/s`` or ``./e``, the tree on the disk as
    ``/tmp`` is), a script, or a name shorter than ``/dev/fd/N``, cannot be
    run from a private tree: ENAMETOOLONG."""
    p = Path(tempfile.mkdtemp(dir="/tmp", prefix="u"))  # a short name, on the disk
    try:
        script = (
            f"printf '#!/bin/sh\\necho script-ran\\n' > {p}/s && chmod +x {p}/s && {p}/s;"
            f" cp /bin/echo {p}/e && cd {p} && ./e short-name"
        )
        native = run_native(sh(script))
        assert native.stdout == "script-ran\nshort-name\n", describe(native)
        for name in ("s", "e"):
            (p / name).unlink()
        proc = run_launch(*mode, "--private", f"{p}/**", argv=sh(script))
        assert proc.stdout == native.stdout, describe(proc)
    finally:
        shutil.rmtree(p)


def test_private_tree_from_a_policy_file(tmp_path: Path, mode: tuple[str, ...]) -> None:
    real = tmp_path / "p"
    write(real / "old", "OLD\n")
    policy = write(tmp_path / "policy.toml", f'version = 1\n[[private]]\npath = "{real}/**"\n')
    code = """
        import json, os, sys
        p = sys.argv[1]
        with open(os.path.join(p, "w"), "w") as f:
            f.write("W")
        print(json.dumps(sorted(os.listdir(p))))
    """
    proc = ok(run_launch(*mode, "--policy", str(policy), argv=py(code, str(real))))
    assert json.loads(proc.stdout) == ["w"], describe(proc)
    assert listing(real) == {"old": b"OLD\n"}


def test_private_tree_symlinks_lead_where_they_point(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """As on a tmpfs mounted there: a symlink made in a private tree to a
    file outside it, absolute or relative, leads to that file."""
    outside = write(tmp_path / "outside", "OUTSIDE\n")
    p = tmp_path / "p"
    script = (
        f"ln -s {outside} {p}/abs && cat {p}/abs; ln -s ../outside {p}/rel && cat {p}/rel;"
        f" readlink {p}/abs; test -f {p}/abs && echo is-file"
    )
    proc = ok(run_launch(*mode, "--private", f"{p}/**", argv=sh(script)))
    assert proc.stdout == f"OUTSIDE\nOUTSIDE\n{outside}\nis-file\n", describe(proc)
