"""No confused deputy: the root supervisor does for a program only what it could do itself.

The programs here run as ``nobody`` (``setpriv --reuid=65534 --regid=65534
--clear-groups``) under a supervisor that runs as root. Whatever the rule
(a redirect to ``/etc/shadow``, a tree redirect onto ``/etc``, a private
tree, a content rule whose memfd lives in the supervisor), nobody reads no
byte it could not read natively, and changes nothing it could not change;
``stat``/``access``/``cd``/``rm``... answer exactly what they answer
natively for nobody. Both modes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .helpers import AS_NOBODY, MODES, describe, py, run_launch, run_native, sh, write

pytestmark = pytest.mark.kernel

SHADOW = Path("/etc/shadow")
#: Something every line of /etc/shadow has and no other output here has.
SHADOW_MARK = SHADOW.read_text().splitlines()[0].split(":")[0] + ":"


@pytest.fixture(params=["virtualize", "enforce"])
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The launch options of the mode the test runs in."""
    return MODES[str(request.param)]


@pytest.fixture
def pub() -> Iterator[Path]:
    """A root-owned directory that nobody may enter (pytest's tmp_path is 0700).

    Inside: ``rootdir`` (0755, root's: nobody may read, not write) holding
    ``f`` (0644) and ``secret`` (0600); ``closed`` (0700, root's) holding
    ``s`` and an executable ``echo``; ``mine`` (0755, nobody's) holding ``n``.
    """
    d = Path(tempfile.mkdtemp(prefix="unotifyd-deputy-"))
    try:
        d.chmod(0o755)
        write(d / "rootdir" / "f", "ROOT FILE\n")
        write(d / "rootdir" / "secret", "ROOT SECRET\n").chmod(0o600)
        (d / "rootdir" / "sub").mkdir()
        write(d / "closed" / "s", "CLOSED SECRET\n")
        shutil.copy("/bin/echo", d / "closed" / "echo")
        (d / "closed").chmod(0o700)
        write(d / "mine" / "n", "NOBODY'S\n")
        for p in (d / "mine", d / "mine" / "n"):
            os.chown(p, 65534, 65534)
        (d / "view-with-a-long-name").mkdir()
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def nobody(argv: Sequence[str]) -> list[str]:
    """``argv`` run as nobody through setpriv (for programs outside /root)."""
    return [*AS_NOBODY, *argv]


def py_as_nobody(code: str, *args: str) -> list[str]:
    """Python ``code`` run as nobody: it drops root itself, since the Python
    that runs the tests lives under /root, where nobody may not go."""
    # Modules are imported first: nobody may not read them under /root.
    drop = "import errno, json, os, sys\nos.setgroups([])\nos.setgid(65534)\nos.setuid(65534)\n"
    return py(drop + textwrap.dedent(code), *args)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)
    return proc


#: For each path in argv[1:]: opens it for reading and stats it; prints JSON
#: {path: contents or errno name, "stat " + path: "ok" or errno name}. In a
#: path "{ppid}" stands for the parent's pid (the supervisor, under unotifyd)
#: and stays so in the keys; "{fds}" expands to each fd number 0..63.
_READER = """
import errno, json, os, sys
ppid = os.getppid()
out = {"ppid_cmdline": open(f"/proc/{ppid}/cmdline", "rb").read().decode(errors="replace")}
def attempt(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        return os.read(fd, 4096).decode(errors="replace") or "opened"
    except OSError as e:
        return "opened:" + errno.errorcode[e.errno]
    finally:
        os.close(fd)
def stat(path):
    try:
        os.stat(path)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
for spec in sys.argv[1:]:
    keys = [spec.replace("{fds}", str(n)) for n in range(64)] if "{fds}" in spec else [spec]
    for key in keys:
        p = key.replace("{ppid}", str(ppid))
        out[key] = attempt(p)
        out["stat " + key] = stat(p)
print(json.dumps(out))
"""


def read_as_nobody(*opts: str, paths: Sequence[str], native: bool = False) -> dict[str, str]:
    argv = py_as_nobody(_READER, *paths)
    proc = ok(run_native(argv) if native else run_launch(*opts, argv=argv))
    got: dict[str, str] = json.loads(proc.stdout)
    cmdline = got.pop("ppid_cmdline")
    assert native or "unotifyd" in cmdline, "the program's parent is the supervisor"
    return got


def test_nobody_cannot_read_shadow_through_any_rule(pub: Path, mode: tuple[str, ...]) -> None:
    """Direct, through a file redirect, through a tree redirect onto /etc,
    through /proc/self/root and the supervisor's /proc/PID/root, cwd and fds
    (one of which is a content rule's memfd): every open of a secret fails
    and no byte of it comes back. What nobody gets from the supervisor's
    /proc/PID is what it gets natively from another root process's (its
    parent's, then pytest)."""
    secret_content = write(pub / "closed" / "content-source", "MEMFD-SECRET\n")
    opts = (
        *mode,
        "--redirect",
        f"{pub}/x=/etc/shadow",
        "--redirect",
        f"{pub}/tree/**=/etc/**",
        "--redirect",
        f"{pub}/closedview/**={pub}/closed/**",
        "--content",
        f"{pub}/content={secret_content}",
    )
    proc_paths = [
        "/proc/self/root/etc/shadow",
        "/proc/{ppid}/root/etc/shadow",
        "/proc/{ppid}/cwd",
        "/proc/{ppid}/environ",
        "/proc/{ppid}/fd/{fds}",
        "/proc/{ppid}/mem",
        "/etc/shadow",
    ]
    paths = [
        *proc_paths,
        f"{pub}/x",
        f"{pub}/tree/shadow",
        f"{pub}/tree/hostname",
        f"{pub}/closedview/s",
        f"{pub}/closed/s",
        f"{pub}/rootdir/secret",
    ]
    got = read_as_nobody(*opts, paths=paths)
    leaks = {k: v for k, v in got.items() if SHADOW_MARK in v or "SECRET" in v}
    assert leaks == {}
    base = read_as_nobody(paths=proc_paths, native=True)
    assert {k: got[k] for k in base if got[k] != base[k]} == {}, "differs from native"
    assert base["/proc/{ppid}/fd/0"] == "EACCES"
    for p in (
        f"{pub}/x",
        f"{pub}/tree/shadow",
        f"{pub}/closedview/s",
        f"{pub}/closed/s",
        f"{pub}/rootdir/secret",
    ):
        assert got[p] == "EACCES", (p, got[p])
    # Natively nobody may stat a file it cannot read, not one in a closed directory.
    assert got[f"stat {pub}/x"] == got["stat /etc/shadow"] == "ok"
    assert got[f"stat {pub}/closedview/s"] == got[f"stat {pub}/closed/s"] == "EACCES"
    # A file nobody may read, through the same rules, still reads.
    assert got[f"{pub}/tree/hostname"] == Path("/etc/hostname").read_text()


def test_nobody_gains_nothing_from_a_private_tree(pub: Path, mode: tuple[str, ...]) -> None:
    """Links from a private tree (whose backing directory the supervisor
    created as root) to /etc/shadow read nothing; a hard link, which the
    kernel refuses to nobody (protected_hardlinks), is not made on its behalf."""
    priv = pub / "priv"
    code = """
        import errno, os, sys
        priv = sys.argv[1]
        for make in (lambda: os.symlink("/etc/shadow", priv + "/sym"),
                     lambda: os.link("/etc/shadow", priv + "/hard"),
                     lambda: os.link("/etc/shadow", sys.argv[2])):
            try:
                make()
                print("made")
            except OSError as e:
                print(errno.errorcode[e.errno])
        for name in ("sym", "hard"):
            try:
                print(open(os.path.join(priv, name)).read())
            except OSError as e:
                print(errno.errorcode[e.errno])
    """
    hard = pub / "mine" / "hard"
    # Natively, outside any rule, the kernel refuses the hard link: EPERM
    # (protected_hardlinks), or EXDEV where /tmp is a file system of its own
    # (a tmpfs, as on Debian 13). Under unotifyd it must answer the same.
    native = run_native(py_as_nobody(code, str(pub / "mine"), str(hard)))
    refused = native.stdout.splitlines()[2:3]
    (pub / "mine" / "sym").unlink(missing_ok=True)  # what the control made
    assert refused in (["EPERM"], ["EXDEV"]), describe(native)
    proc = run_launch(
        *mode, "--private", f"{priv}/**", argv=py_as_nobody(code, str(priv), str(hard))
    )
    assert SHADOW_MARK not in proc.stdout, describe(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 5, describe(proc)
    assert lines[1] != "made" and lines[2:3] == refused, describe(proc)
    # Through the links nobody gets an error (which one is the private tree's
    # business: see test_exec_view), never the file.
    assert lines[3].startswith("E") and lines[4].startswith("E"), describe(proc)
    assert not os.path.lexists(hard)


# --- metadata and changes answer as natively ------------------------------------------

#: Run as nobody with {d} the directory's name (natively: pub/rootdir; under
#: unotifyd: a redirected view of it) and {c} pub/closed, {m} pub/mine.
_COMMANDS = (
    "test -r {d}/f",
    "test -w {d}/f",
    "test -x {d}/f",
    "test -r {d}/secret",
    "test -e {d}/secret",
    "test -w {d}",
    "test -r /etc/shadow",
    "test -w /etc/shadow",
    "test -r /etc/passwd",
    "test -w /etc/passwd",
    "test -x /bin/sh",
    "stat -c '%s %a %U' /etc/shadow {d}/secret {d}/f",
    "ls {c}",
    "stat {c}/s",
    "test -e {c}/s",
    "cd {c}",
    "cd {d}/sub && ls",
    "cat {d}/secret",
    "rm -f {d}/f",
    "rm -f {d}/secret",
    "rmdir {d}/sub",
    "mkdir {d}/new",
    "touch {d}/new2",
    "touch {d}/f",
    "chmod 777 {d}/f",
    "chown 65534 {d}/f",
    "ln -s x {d}/lnk",
    "ln {d}/f {d}/hard",
    "mv {d}/f {d}/g",
    "truncate -s0 {d}/f",
    "mkfifo {d}/fifo",
    "echo x >> {d}/f",
    "{c}/echo RAN",
    "ls {m}",
    "touch {m}/n {m}/new",
    "chmod 600 {m}/n",
    "rm {m}/new",
    "mv {m}/n {m}/n2 && mv {m}/n2 {m}/n",
    "ln -s n {m}/lnk && rm {m}/lnk",
    "mkdir {m}/dd && rmdir {m}/dd",
    "chmod 644 {m}/n",
)


def each(commands: Sequence[str]) -> str:
    return "".join(f'echo {shlex.quote("$ " + c)}; ( {c} ) 2>&1; echo "rc=$?"\n' for c in commands)


def state(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_nlink, data)
    return out


@pytest.mark.parametrize("through", ["direct", "tree-redirect"])
def test_nobody_gets_native_answers(pub: Path, mode: tuple[str, ...], through: str) -> None:
    """Every command of the list, run as nobody, prints and returns exactly
    what it does natively (nothing may be changed in root's directories,
    nobody's own directory works), directly or through a tree redirect onto
    root's directory; and the disk ends up as natively."""
    native_copy = pub / "native"
    shutil.copytree(pub / "rootdir", native_copy)
    rule_opts = (
        ("--redirect", f"{pub}/view-with-a-long-name/**={pub}/rootdir/**")
        if through == "tree-redirect"
        else ("--redirect", f"{pub}/unrelated=/etc/hostname")
    )
    view_dir = pub / "view-with-a-long-name" if through == "tree-redirect" else pub / "rootdir"
    fmt = {"c": str(pub / "closed"), "m": str(pub / "mine")}

    def script(d: Path) -> list[str]:
        return nobody(sh(each([c.format(d=d, **fmt) for c in _COMMANDS])))

    mine_before = state(pub / "mine")
    native = run_native(script(native_copy))
    assert native.returncode == 0, describe(native)
    assert state(pub / "mine") == mine_before
    view = run_launch(*mode, "--exec", "/**", *rule_opts, argv=script(view_dir))
    assert view.returncode == 0, describe(view)
    want = native.stdout.replace(str(native_copy), "DIR").split("$ ")
    got = view.stdout.replace(str(view_dir), "DIR").split("$ ")
    assert len(got) == len(want) == len(_COMMANDS) + 1, describe(view)
    diff = [f"got: {g!r}\n     native: {w!r}" for g, w in zip(got, want, strict=True) if g != w]
    assert diff == [], "\n".join(diff)
    assert state(pub / "rootdir") == state(native_copy)
    assert state(pub / "mine") == mine_before
    assert "rc=0" in native.stdout and "Permission denied" in native.stdout


def test_redirect_to_a_file_nobody_may_read_works(pub: Path, mode: tuple[str, ...]) -> None:
    opts = (
        *mode,
        "--redirect",
        f"{pub}/x={pub}/rootdir/f",
        "--redirect",
        f"{pub}/y={pub}/mine/n",
        "--redirect",
        f"{pub}/z=/etc/hostname",
    )
    script = f"cat {pub}/x {pub}/y {pub}/z; test -r {pub}/x && echo readable; echo more >> {pub}/y"
    proc = ok(run_launch(*opts, argv=nobody(sh(script))))
    assert proc.stdout == f"ROOT FILE\nNOBODY'S\n{Path('/etc/hostname').read_text()}readable\n"
    assert (pub / "mine" / "n").read_text() == "NOBODY'S\nmore\n"


def test_nobody_cannot_exec_through_a_redirect_what_it_cannot_exec(
    pub: Path, mode: tuple[str, ...]
) -> None:
    """The target of an exec redirect is run with nobody's rights: one in a
    directory nobody cannot enter fails EACCES (status 126), as natively."""
    opts = (
        *mode,
        "--exec",
        "/**",
        "--redirect",
        f"{pub}/run-with-a-long-name={pub}/closed/echo",
        "--redirect",
        f"{pub}/ok=/bin/echo",
    )
    script = f"{pub}/run-with-a-long-name RAN; echo rc=$?; {pub}/ok OK"
    proc = run_launch(*opts, argv=nobody(sh(script)), errors="replace")
    assert proc.stdout == "rc=126\nOK\n", describe(proc)
    assert "Permission denied" in proc.stderr
    native = run_native(nobody(sh(f"{pub}/closed/echo RAN; echo rc=$?")))
    assert native.stdout == "rc=126\n", describe(native)


def test_a_program_that_dropped_a_group_does_not_get_it_back(tmp_path: Path) -> None:
    """A supervisor without the capabilities that override file permissions
    acts with its groups where the program's are the same: but a program of
    its uid may have dropped one (here with ``setgroups``, which the
    capabilities it shares with us allow). Under --enforce the read of a
    file of that group (an emulated open: a read-only tree) must fail as
    natively. Before, the groups were taken to be ours: it read the file
    (an audit found it)."""
    secret = write(tmp_path / "tree" / "secret", "GROUP SECRET\n")
    os.chown(secret, 1234, 4242)  # not ours: the group decides
    secret.chmod(0o640)
    tmp_path.chmod(0o755)
    (tmp_path / "tree").chmod(0o755)
    # Root without the DAC capabilities, in group 4242: it reads the file by its group.
    weaker = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
              "--bounding-set=-dac_override,-dac_read_search", "--groups=4242", "--"]  # fmt: skip
    prog = py("""
        import os, sys
        os.setgroups([])
        try:
            print(open(sys.argv[1]).read(), end="")
        except OSError as e:
            print(e.strerror)
    """, str(secret))  # fmt: skip
    native = run_native([*weaker, *prog])
    assert native.stdout == "Permission denied\n", describe(native)
    proc = run_native(
        [*weaker, sys.executable, "-m", "unotifyd", "launch", "--enforce", "--readonly",
         f"{tmp_path}/tree/**", "--", *prog]
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "Permission denied\n"), describe(proc)


#: Run by root: becomes ruid 65534, euid 1000 (saved 0), then reads and
#: asks access(2) about a file of each, with its fsuid the real uid and then
#: the effective one (setfsuid(2), 122 on x86_64: it takes the real uid
#: without CAP_SETUID).
_FSUID_PROBE = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 1000, 0)
for fsuid in (65534, 1000):
    libc.syscall(122, fsuid)
    assert libc.syscall(122, -1) == fsuid
    for name in ("nobodys", "k1000s"):
        try:
            with open(os.path.join(d, name)) as f:
                got = f.read().strip()
        except OSError as e:
            got = errno.errorcode[e.errno]
        print(fsuid, name, got, os.access(os.path.join(d, name), os.R_OK), flush=True)
"""


@pytest.mark.parametrize("opts", [(), ("--enforce",), ("--view", "opens")],
                         ids=["virtualize", "enforce", "opens"])  # fmt: skip
def test_a_program_whose_fsuid_is_not_its_euid(opts: tuple[str, ...]) -> None:
    """Opens are judged by the fsuid, access(2) by the real uid: each as
    natively, also when neither is the effective uid (the supervisor once
    answered EPERM there: it could not take such an fsuid itself)."""
    d = Path(tempfile.mkdtemp(prefix="unotifyd-fsuid-"))
    try:
        d.chmod(0o755)
        for name, owner in (("nobodys", 65534), ("k1000s", 1000)):
            write(d / name, name.upper() + "\n").chmod(0o600)
            os.chown(d / name, owner, owner)
        native = run_native([sys.executable, "-c", _FSUID_PROBE, str(d)])
        # The control: the fsuid decides the open, the real uid access().
        assert native.stdout.splitlines() == [
            "65534 nobodys NOBODYS True", "65534 k1000s EACCES False",
            "1000 nobodys EACCES True", "1000 k1000s K1000S False",
        ], describe(native)  # fmt: skip
        rule = ("--redirect", f"{d}/none={d}/nobodys")
        proc = run_launch(*opts, *rule, argv=[sys.executable, "-c", _FSUID_PROBE, str(d)])
        assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)
