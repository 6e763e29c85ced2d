"""Running a path is one more way to use it: deny and redirect rules govern exec
without any exec rule.

Issue 14 saw a ``--deny`` on a binary not stop an ``execve`` of it when the
policy had no exec rule (the filter trapped exec for exec rules only). A
program, as each identity, runs a denied binary (``progs/ran.c``, static:
it prints RAN) every way it can name it (:data:`_WAYS`), and every way the
kernel runs it without being named to a call: as a ``#!`` script's
interpreter (two scripts deep too) and as another binary's loader
(``PT_INTERP`` patched into a copy of ``true``). Natively (no rules) each
way runs it, which is the control that the ways are real and the identity
may run the file; under a deny, in virtualize and enforcing mode, none
does, and each answers the deny's errno. Audits found the interpreter and
loader ways open at first, then those through an fd (``fexecve`` of the
program's own script or binary naming the denied one), five scripts deep,
an execute-only binary and a binary whose ``EI_CLASS`` says 32-bit.
``launch`` itself is refused the denied program the same way (126, as for a
program it may not run). An exec through a redirect runs its target, as an
open of the same name opens it; under ``--enforce`` not a denied one, nor
one a symlink in the target tree leads to. Under ``--enforce`` no
interpreter can be registered with binfmt_misc.

Without an ``--exec`` list a deny is kept against a program that names the
file, not against one that races its own exec (a thread flipping the path
after our check, or a symlink swapped): that is the allow-list's job, which
Landlock keeps (``test_backstop.py``; README, "The limits of enforcing mode").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..integration.helpers import MODES, describe, public_dir, run_launch, run_native
from .support import IDENTITIES, Identity, Report, Workspace, build_c, directory

pytestmark = pytest.mark.kernel

#: The interpreter of the program: the system's, which every identity may run.
PYTHON = "/usr/bin/python3"

#: Runs $1 (a binary that prints RAN) each way, each in a child of its own,
#: from the working directory $2; prints "WAY: RAN" when it ran, else "WAY:
#: ERRNAME" for the exec (or the open it needs) that failed, or "WAY: nothing".
_WAYS = r"""
import errno, os, shutil, struct, sys
target, work = sys.argv[1], sys.argv[2]
parent, name = os.path.split(target)
os.symlink(target, f"{work}/link")
ARGS = ["x", "arg"]

def script(path, interpreter):
    with open(path, "w") as f:
        f.write(f"#!{interpreter}\n")
    os.chmod(path, 0o755)
    return path

def with_loader(path, loader):
    # A copy of true whose PT_INTERP names `loader` (no longer than the old name).
    shutil.copy("/usr/bin/true", path)
    with open(path, "r+b") as f:
        elf = f.read()
        phoff, = struct.unpack_from("<Q", elf, 32)
        phnum, = struct.unpack_from("<H", elf, 56)
        for i in range(phnum):
            kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", elf, phoff + 56 * i)
            if kind == 3:
                f.seek(offset)
                f.write(loader.encode().ljust(size, b"\0"))
    return path

def in_parent(path):
    os.chdir(parent)
    os.execv(path, ARGS)

def run_fd(path):  # fexecve: the interpreter opens /dev/fd/N, so N must stay open
    fd = os.open(path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    os.execve(fd, ARGS, {})

def chain(last, n):  # n scripts, each the interpreter of the next
    for i in range(n):
        last = script(f"{work}/c{i}", last)
    return last

def exec_only(path):
    os.chmod(path, 0o111)
    return path

def class32(path):  # binfmt_elf reads e_machine, not EI_CLASS
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(b"\1")
    return path

short = f"/tmp/.u{os.getpid()}"  # fits in true's PT_INTERP
os.symlink(target, short)
ways = {
    "direct": lambda: os.execv(target, ARGS),
    "symlink": lambda: os.execv(f"{work}/link", ARGS),
    "relative": lambda: in_parent(f"./{name}"),
    "dotdot": lambda: os.execv(f"{parent}/../{os.path.basename(parent)}/{name}", ARGS),
    "proc-cwd": lambda: in_parent(f"/proc/self/cwd/{name}"),
    "path-search": lambda: os.execvpe(name, ARGS, {"PATH": parent}),
    "fexecve": lambda: os.execve(os.open(target, os.O_PATH), ARGS, {}),
    "shebang": lambda: os.execv(script(f"{work}/s1", target), ARGS),
    "shebang-link": lambda: os.execv(script(f"{work}/s2", f"{work}/link"), ARGS),
    "nested-shebang": lambda: os.execv(script(f"{work}/s3", script(f"{work}/s4", target)), ARGS),
    "loader": lambda: os.execv(with_loader(f"{work}/t", short), ARGS),
    "fexecve-script": lambda: run_fd(script(f"{work}/s5", target)),
    "fexecve-loader": lambda: run_fd(with_loader(f"{work}/t2", short)),
    "chain5-loader": lambda: os.execv(chain(with_loader(f"{work}/t3", short), 5), ARGS),
    "exec-only-loader": lambda: os.execv(exec_only(with_loader(f"{work}/t4", short)), ARGS),
    "class32-loader": lambda: os.execv(class32(with_loader(f"{work}/t5", short)), ARGS),
}
try:
    for way, run in ways.items():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(w, 1)
            try:
                run()
            except OSError as e:
                os.write(1, errno.errorcode[e.errno].encode())
            os._exit(0)
        os.close(w)
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        os.close(r)
        os.waitpid(pid, 0)
        said = out.decode().strip()
        print(f"{way}: {'RAN' if 'RAN' in said else said or 'nothing'}", flush=True)
finally:
    os.unlink(short)
"""
WAYS = (
    "direct", "symlink", "relative", "dotdot", "proc-cwd", "path-search", "fexecve", "shebang",
    "shebang-link", "nested-shebang", "loader", "fexecve-script", "fexecve-loader",
    "chain5-loader", "exec-only-loader", "class32-loader",
)  # fmt: skip


@pytest.fixture(scope="session")
def ran_bin(public: Path) -> Path:
    """``progs/ran.c``, static."""
    return build_c(directory(public / "ran", owner=0), "ran", "-static-pie", "-nostdlib")


@pytest.fixture
def ws(public: Path) -> Path:
    scratch = public / "exec-rules-ws"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return Workspace.make(scratch).real


def _run_each_way(who: Identity, target: Path, work: Path, options: tuple[str, ...] | None) -> (
    dict[str, str]
):
    argv = [*who.prefix, PYTHON, "-c", _WAYS, str(target), str(work)]
    proc = run_launch(*options, argv=argv) if options is not None else run_native(argv)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    found = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert sorted(found) == sorted(WAYS), describe(proc)
    return found


@pytest.mark.parametrize("who", list(IDENTITIES))
@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_denied_binary_runs_no_way_it_is_named(
    ws: Path, ran_bin: Path, report: Report, mode: str, who: str
) -> None:
    identity = IDENTITIES[who]
    bin_dir = directory(ws / "bin", owner=0)
    target = bin_dir / "denied"
    shutil.copy(ran_bin, target)
    native_work = directory(ws / "native", owner=identity.uid)
    work = directory(ws / "work", owner=identity.uid)

    native = _run_each_way(identity, target, native_work, None)
    assert native == dict.fromkeys(WAYS, "RAN"), native
    options = (*MODES[mode], "--deny", str(target))
    got = _run_each_way(identity, target, work, options)
    ran = [way for way, out in got.items() if out == "RAN"]
    report(f"deny-exec[{mode}-{who}]", native=f"{len(WAYS)}/{len(WAYS)}",
           ran=f"{len(ran)}/{len(WAYS)}", escapes=len(ran))  # fmt: skip
    assert got == dict.fromkeys(WAYS, "EACCES"), got

    # ENOENT hides it: every way answers as if nothing were there.
    hidden = _run_each_way(identity, target, directory(ws / "w2", owner=identity.uid),
                           (*MODES[mode], "--deny", f"{target}:ENOENT"))  # fmt: skip
    assert hidden == dict.fromkeys(WAYS, "ENOENT"), hidden


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_launch_does_not_start_a_denied_program(ws: Path, mode: str) -> None:
    target = ws / "denied-echo"
    shutil.copy("/usr/bin/echo", target)
    native = run_native([str(target), "RAN"])
    assert native.stdout == "RAN\n", describe(native)
    proc = run_launch(*MODES[mode], "--deny", str(target), argv=[str(target), "RAN"])
    assert proc.returncode == 126 and proc.stdout == "", describe(proc)
    assert f"{target}: Permission denied" in proc.stderr, describe(proc)


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_an_exec_through_a_redirect_runs_its_target_without_exec_rules(
    ws: Path, mode: str, who: str
) -> None:
    identity = IDENTITIES[who]
    alias = ws / "alias"  # nothing there on the disk
    target = ws / "real-echo"
    shutil.copy("/usr/bin/echo", target)
    argv = [*identity.prefix, "sh", "-c", f'{alias} RAN; echo "rc=$?"']
    native = run_native(argv)
    assert native.stdout == "rc=127\n", describe(native)  # the control: not found
    proc = run_launch(*MODES[mode], "--redirect", f"{alias}={target}", argv=argv)
    assert proc.stdout == "RAN\nrc=0\n", describe(proc)
    assert not alias.exists()


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_redirect_runs_no_denied_file_under_enforce(
    ws: Path, ran_bin: Path, report: Report, mode: str, who: str
) -> None:
    """A redirect whose target is denied, or whose target tree holds a link
    the program made to a denied file: under --enforce the exec fails as
    the open of the same name does (EACCES); in virtualize mode both run it,
    as the open reads it (the view maps names, the deny is on the target's).
    The control: natively the link runs it."""
    identity = IDENTITIES[who]
    denied = ws / "denied"
    shutil.copy(ran_bin, denied)
    alias, source_tree = ws / "alias", ws / "a"
    target_tree = directory(ws / "b", owner=identity.uid)
    # The link named first: after an exec through the redirect, dash's next
    # command can reuse the memory the target's name was written in, and get
    # the redirected name back (README: the vfork parent's bytes).
    script = f"""
        ln -s {denied} {target_tree}/link
        {target_tree}/link >/dev/null 2>&1; echo "named $?"
        {alias} >/dev/null 2>&1; echo "alias $?"
        {source_tree}/link >/dev/null 2>&1; echo "planted $?"
    """
    argv = [*identity.prefix, "sh", "-c", script]
    native = run_native(argv)
    assert "named 0" in native.stdout.splitlines(), describe(native)  # the control
    (target_tree / "link").unlink()
    rules = ("--redirect", f"{alias}={denied}", "--redirect", f"{source_tree}/**={target_tree}/**",
             "--deny", str(denied))  # fmt: skip
    proc = run_launch(*MODES[mode], *rules, argv=argv)
    got = dict(line.split() for line in proc.stdout.splitlines())
    report(f"redirect-exec[{mode}-{who}]", **got)
    # 126: the shell's answer to EACCES; the denied name itself never runs.
    want = "126" if mode == "enforce" else "0"
    assert got == {"alias": want, "planted": want, "named": "126"}, describe(proc)


BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


@pytest.fixture
def binfmt_misc() -> Iterator[Path]:
    """binfmt_misc mounted where systemd mounts it (unmounted after, if we mounted it)."""
    mounted = (BINFMT_MISC / "register").exists()
    if not mounted:
        proc = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_MISC)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"binfmt_misc cannot be mounted here: {proc.stderr.strip()}")
    try:
        yield BINFMT_MISC
    finally:
        if not mounted:
            subprocess.run(["umount", str(BINFMT_MISC)], check=False)


def test_enforce_refuses_registering_a_binfmt_misc_interpreter(
    ws: Path, ran_bin: Path, binfmt_misc: Path, report: Report
) -> None:
    """binfmt_misc runs a registered interpreter for every file it matches,
    with no call of the program's to trap: root without capabilities may
    register one (the kernel asks only for write permission on
    ``register``) and run a denied binary through it (audit helper-20).
    The control: natively the entry is made and the denied binary runs; under
    ``--enforce`` the write is refused and nothing is registered."""
    denied = ws / "denied"
    shutil.copy(ran_bin, denied)
    magic = ws / "magic"
    magic.write_bytes(b"UNOTIFYDMAGIC\n")
    magic.chmod(0o755)
    entry = binfmt_misc / f"unotifyd-test-{os.getpid()}"
    script = f"""
        echo ':{entry.name}:M::UNOTIFYDMAGIC::{denied}:' > {binfmt_misc}/register
        echo "register $?"
        {magic} >/dev/null 2>&1; echo "magic $?"
    """
    argv = [*IDENTITIES["root-nocaps"].prefix, "sh", "-c", script]
    try:
        native = run_native(argv)
        assert native.stdout.split() == ["register", "0", "magic", "0"], describe(native)
    finally:
        if entry.exists():
            entry.write_text("-1")
    proc = run_launch("--enforce", "--deny", str(denied), argv=argv)
    made = entry.exists()
    if made:
        entry.write_text("-1")
    report("binfmt-misc[enforce-root-nocaps]", native="ran", registered=int(made),
           escapes=int("magic 0" in proc.stdout))  # fmt: skip
    lines = proc.stdout.split("\n")
    assert not made and "register 0" not in lines and "magic 0" not in lines, describe(proc)
    assert "register: Permission denied" in proc.stderr, describe(proc)


#: A sysctl that runs a program as root with every capability (a pipe
#: core_pattern, for each crash), and a sysfs setting; each written back
#: with what it holds, so the control changes nothing.
SETTINGS = (
    Path("/proc/sys/kernel/core_pattern"), Path("/sys/module/printk/parameters/time"),
    Path("/proc/irq/default_smp_affinity"),
)  # fmt: skip


@pytest.mark.parametrize("who", ["root", "root-nocaps"])
@pytest.mark.parametrize("setting", SETTINGS, ids=["core_pattern", "sysfs", "proc_irq"])
def test_enforce_refuses_writing_a_system_setting(
    setting: Path, who: str, report: Report
) -> None:
    """Root without capabilities may write sysctl and sysfs files (the
    kernel asks only for write permission, which uid 0 has as the owner):
    ``|/path`` in core_pattern had the kernel run a program as root with
    every capability at the next crash, past RLIMIT_CORE 0 (audit
    helper-58). The control: natively the write is made; under --enforce
    it is refused (EACCES, as for an unprivileged user) and reading works.
    As root the write is the pass-through lane's to refuse, which serves
    the threads whose credentials are ours (the opens before it start it)."""
    if not setting.exists():
        pytest.skip(f"{setting} is missing here")
    # Opens first, so that the pass-through lane serves the write (START_AFTER).
    warm = 'i=0; while [ $i -lt 64 ]; do : < /etc/hostname; i=$((i+1)); done; '
    script = warm + f'v=$(cat {setting}); printf "%s\\n" "$v" > {setting}; echo "write $?"'
    argv = [*IDENTITIES[who].prefix, "sh", "-c", script]
    before = setting.read_text()
    native = run_native(argv)
    assert native.stdout == "write 0\n", describe(native)
    proc = run_launch("--enforce", "--deny", "/nonexistent", argv=argv)
    assert setting.read_text() == before
    report(f"system-setting[enforce-{who}-{setting.name}]", native="written",
           escapes=int(proc.stdout == "write 0\n"))  # fmt: skip
    assert proc.stdout == "write 2\n", describe(proc)  # sh: cannot create
    assert "Permission denied" in proc.stderr, describe(proc)
    # Nor changed otherwise: a sysfs file's owner may chmod it (0666 would
    # let anyone outside write it), by name or on an fd it may open.
    chmod = (f'chmod 0644 {setting}; echo "chmod $?"; '
             f'python3 -c "import os; os.chmod(os.open(\'{setting}\', os.O_RDONLY), 0o644)" '
             '2>/dev/null; echo "fchmod $?"')  # fmt: skip
    chmod_argv = [*IDENTITIES[who].prefix, "sh", "-c", warm + chmod]
    natively = run_native(chmod_argv)
    enforced = run_launch("--enforce", "--deny", "/nonexistent", argv=chmod_argv)
    if setting.parts[1] == "sys":  # sysfs: its owner may; a sysctl refuses every chmod
        assert natively.stdout == "chmod 0\nfchmod 0\n", describe(natively)
    assert enforced.stdout == "chmod 1\nfchmod 1\n", describe(enforced)
    # Nor through a redirect whose target is a link to the setting: the file
    # opened is judged again, by its own name (audit helper-59).
    with public_dir("settings-") as ws:
        (ws / "b").mkdir()
        (ws / "b" / "link").symlink_to(setting)
        via = f'v=$(cat {setting}); printf "%s\\n" "$v" > {ws}/a/link; echo "write $?"'
        natively = run_native([*IDENTITIES[who].prefix, "sh", "-c", via.replace("/a/", "/b/")])
        assert natively.stdout == "write 0\n", describe(natively)
        redirected = run_launch("--enforce", "--redirect", f"{ws}/a/**={ws}/b/**",
                                argv=[*IDENTITIES[who].prefix, "sh", "-c", via])  # fmt: skip
        assert redirected.stdout == "write 2\n", describe(redirected)
        assert setting.read_text() == before
    as_user = run_launch("--enforce", "--deny", "/nonexistent",
                         argv=[*IDENTITIES["user"].prefix, "sh", "-c", script])  # fmt: skip
    natively = run_native([*IDENTITIES["user"].prefix, "sh", "-c", script])
    assert (as_user.stdout, natively.stdout) == ("write 2\n", "write 2\n"), describe(as_user)
