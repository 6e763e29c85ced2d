"""The kernel's backstop under the rules (Landlock): exec races, and signals out of the sandbox.

**Exec races.** An exec is never performed by the supervisor: it checks the
path and the kernel reads it again. ``progs/execrace.c`` flips the path
between an allowed binary (``true``) and one no exec rule allows (a copy of
``false`` in the workspace) while execve runs, three ways: a second thread
rewriting the bytes, another process rewriting a ``MAP_SHARED`` page, and
another process renaming symlinks. For each way and identity:

1. natively (no rules) the forbidden binary runs (the control: the flips
   happen, and the binary is runnable by that identity);
2. under ``unotifyd launch --enforce --exec ...`` it never runs in
   ``TRIES`` tries, and the allowed one still does (but for the thread
   race: enforcing mode refuses an exec whose path another thread can
   rewrite, see ``serve/rewrite.py``).

Before the Landlock ruleset, the shared-page and symlink races ran the
forbidden binary ~5% and ~20% of the time (issue 14's figures).

**Signals.** Under ``--enforce`` a program may not signal a process of its
own uid outside the sandbox (``LANDLOCK_SCOPE_SIGNAL``, Landlock ABI 6).

**What the ruleset grants**: what the rules name and no more (a rule path with
nothing there grants nothing), and the target of an exec through a redirect.

**/proc of processes outside**: in its domain the program may not open
``mem`` of a process outside, nor follow its fd links; the supervisor, which
acts outside any domain, must not do it for the program either (the answers
with a rule that makes it act equal those of the kernel alone).

The race, signal and /proc tests print a ``RESULT`` line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unotifyd.kernel import landlock

from ..integration.helpers import describe, run_launch, run_native
from .support import IDENTITIES, Identity, Report, Workspace, build_c, directory

pytestmark = pytest.mark.kernel

#: Tries under enforcing mode (the issue asks for at least 10 000), and natively,
#: where a few hundred show that the race is real.
TRIES = 10_000
NATIVE_TRIES = 500
ALLOWED = "/usr/bin/true"


@pytest.fixture(scope="session")
def execrace_bin(public: Path) -> Path:
    """``progs/execrace.c``, alone in a directory the exec rules allow."""
    return build_c(directory(public / "execrace", owner=0), "execrace")


@pytest.fixture
def lab_dir(public: Path) -> Path:
    scratch = public / "backstop-ws"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return scratch


def _needs(version: int) -> None:
    have = landlock.abi_version()
    if have < version:
        pytest.skip(f"needs Landlock ABI {version} (this kernel has {have})")


def _race(
    racer: Path, kind: str, tries: int, who: Identity, ws: Path, *, options: tuple[str, ...] = ()
) -> dict[str, int]:
    forbidden = ws / "forbidden" / "false"
    argv = [*who.prefix, str(racer), kind, str(tries), ALLOWED, str(forbidden), str(ws / "work")]
    if options:
        argv = ["unotifyd", "launch", *options, "--", *argv]
    proc = run_native(argv, cwd="/", timeout=600)
    match = re.fullmatch(r"(forbidden=\d+ allowed=\d+ refused=\d+ other=\d+ tries=\d+)\n",
                         proc.stdout)  # fmt: skip
    assert proc.returncode == 0 and match, describe(proc)
    return {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("kind", ["thread", "shared", "symlink"])
def test_a_racing_exec_never_runs_a_forbidden_binary(
    lab_dir: Path, execrace_bin: Path, report: Report, kind: str, who: str
) -> None:
    _needs(1)
    identity = IDENTITIES[who]
    ws = Workspace.make(lab_dir).real
    directory(ws / "forbidden", owner=0)
    shutil.copy("/usr/bin/false", ws / "forbidden" / "false")
    directory(ws / "work", owner=identity.uid)
    options = ("--enforce", "--exec", "/usr/**", "--exec", f"{execrace_bin.parent}/**")

    native = _race(execrace_bin, kind, NATIVE_TRIES, identity, ws)
    enforced = _race(execrace_bin, kind, TRIES, identity, ws, options=options)
    report(
        f"exec-race[{kind}-{who}]",
        native=f"{native['forbidden']}/{NATIVE_TRIES}",
        enforce=f"{enforced['forbidden']}/{TRIES}",
        allowed=enforced["allowed"],
        escapes=enforced["forbidden"],
    )
    assert native["forbidden"] > 0, f"the race never ran the binary natively: {native}"
    assert enforced["forbidden"] == 0
    assert enforced["other"] == 0, enforced
    if kind != "thread":
        assert enforced["allowed"] > 0, f"the allowed binary never ran: {enforced}"


def _wait_until_it_runs(pid: int, comm: str, uid: int) -> None:
    """Until ``pid`` runs ``comm`` as ``uid`` (setpriv changes its uid, then execs)."""
    deadline = time.monotonic() + 10
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        if fields["Name"].strip() == comm and int(fields["Uid"].split()[1]) == uid:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never ran {comm} as uid {uid}")


#: Signals the process whose pid is $1, and says how it went.
_SIGNAL = 'kill -0 "$1" 2>/dev/null && echo sent || echo refused'


@pytest.mark.parametrize("who", ["root", "user"])
def test_enforce_keeps_signals_inside_the_sandbox(report: Report, who: str) -> None:
    _needs(landlock.SCOPE_ABI)
    identity = IDENTITIES[who]
    outside = subprocess.Popen([*identity.prefix, "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        _wait_until_it_runs(outside.pid, "sleep", identity.uid)
        # An own child is inside: it may be signalled.
        script = f'{_SIGNAL}; sleep 5 & set -- "$!"; {_SIGNAL}; kill "$1"'
        argv = [*identity.prefix, "sh", "-c", script, "sh", str(outside.pid)]
        native = run_native(argv, cwd="/")
        enforced = run_native(["unotifyd", "launch", "--enforce", "--", *argv], cwd="/")
        virtualized = run_native(["unotifyd", "launch", "--", *argv], cwd="/")
    finally:
        outside.kill()
        outside.wait()
    report(f"signal-scope[{who}]", native=native.stdout.split(), enforce=enforced.stdout.split(),
           escapes=int(enforced.stdout.startswith("sent")))  # fmt: skip
    assert native.stdout == "sent\nsent\n", describe(native)
    assert enforced.stdout == "refused\nsent\n", describe(enforced)
    # Virtualize mode is a view, not a boundary: it leaves signals alone.
    assert virtualized.stdout == "sent\nsent\n", describe(virtualized)


@pytest.mark.parametrize("mode", [(), ("--enforce",)], ids=["virtualize", "enforce"])
def test_the_ruleset_grants_what_the_rules_name_and_no_more(
    lab_dir: Path, mode: tuple[str, ...]
) -> None:
    """A rule path that names nothing grants nothing (never the directory above:
    that would let anything there run); an exec through a redirect the exec
    rules allow runs the target, which is granted too."""
    _needs(1)
    ws = Workspace.make(lab_dir).real
    mine = ws / "true-copy"
    shutil.copy("/usr/bin/true", mine)
    assert run_native([str(mine)]).returncode == 0  # the control: it runs natively
    missing = run_launch(*mode, "--exec", "/usr/**", "--exec", f"{ws}/later/x", argv=[str(mine)])
    assert missing.returncode == 126, describe(missing)
    assert f"exec is allowed for {ws}/later/x, which names no such file now" in missing.stderr
    redirected = run_launch(
        *mode, "--exec", "/usr/**", "--redirect", f"/usr/bin/unotifyd-test-tool={mine}",
        argv=["/usr/bin/unotifyd-test-tool"],
    )  # fmt: skip
    assert redirected.returncode == 0, describe(redirected)


#: Opens (and reads a byte of) /proc/$1/ENTRY, reads the links, lists the
#: directories and looks up a name in each, for a process outside the sandbox;
#: then the same for a child of its own.
PROC_PEEK = """
import errno, os, subprocess, sys
def peek(pid):
    out = []
    for e in ["environ", "maps", "mem", "stack", "syscall", "io", "personality", "timers",
              "fdinfo/0", "fd/0", "status"]:
        try:
            with open(f"/proc/{pid}/{e}", "rb") as f:
                f.read(1)
            out.append(e + "=OK")
        except OSError as ex:
            out.append(f"{e}={errno.errorcode[ex.errno]}")
    for e in ["cwd", "exe", "root", "fd/0", "ns/mnt"]:
        try:
            os.readlink(f"/proc/{pid}/{e}")
            out.append("readlink-" + e + "=OK")
        except OSError as ex:
            out.append(f"readlink-{e}={errno.errorcode[ex.errno]}")
    for e, first in [("fd", "0"), ("ns", "mnt"), ("fdinfo", "0"), ("map_files", None)]:
        try:
            os.listdir(f"/proc/{pid}/{e}")
            out.append("list-" + e + "=OK")
        except OSError as ex:
            out.append(f"list-{e}={errno.errorcode[ex.errno]}")
        try:
            if first is not None:  # map_files: see guard.search_guarded
                os.lstat(f"/proc/{pid}/{e}/{first}")
                out.append("lstat-" + e + "=OK")
        except OSError as ex:
            out.append(f"lstat-{e}={errno.errorcode[ex.errno]}")
    return " ".join(out)
child = subprocess.Popen(["sleep", "30"])
print("outside", peek(sys.argv[1]))
print("child", peek(child.pid))
child.kill()
"""


@pytest.mark.parametrize("who", list(IDENTITIES))
def test_the_deputy_opens_no_proc_file_the_programs_domain_refuses(
    report: Report, who: str
) -> None:
    """In its Landlock domain (enforcing mode) a program may not open ``mem`` or
    follow the fd links of a process outside the sandbox. When a rule makes the
    supervisor perform its opens, the supervisor, outside any domain, must not
    open them for it either: the answers are those of the kernel alone (no rule,
    nothing trapped), entry for entry; its own child stays within reach."""
    _needs(landlock.SCOPE_ABI)
    identity = IDENTITIES[who]
    outside = subprocess.Popen([*identity.prefix, "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        _wait_until_it_runs(outside.pid, "sleep", identity.uid)
        argv = [*identity.prefix, sys.executable, "-c", PROC_PEEK, str(outside.pid)]
        native = run_native(argv, cwd="/")
        kernel = run_launch("--enforce", argv=argv, cwd="/")
        deputy = run_launch("--enforce", "--deny", "/nonexistent/**", argv=argv, cwd="/")
    finally:
        outside.kill()
        outside.wait()
    lines = {name: _fields(proc) for name, proc in
             (("native", native), ("kernel", kernel), ("deputy", deputy))}  # fmt: skip
    report(f"proc-reach[{who}]", native_mem=lines["native"]["mem"],
           kernel_mem=lines["kernel"]["mem"], deputy_mem=lines["deputy"]["mem"],
           escapes=int(deputy.stdout != kernel.stdout))  # fmt: skip
    # The control: natively mem opens (a read at 0 is EIO: nothing mapped there).
    assert lines["native"]["mem"] == "EIO", describe(native)
    assert lines["kernel"]["mem"] == "EACCES", describe(kernel)
    # In its domain the program lists the process's fd directory and looks
    # names up there, but may not look into fdinfo (see guard.search_guarded).
    assert lines["kernel"]["list-fd"] == lines["kernel"]["lstat-fd"] == "OK", describe(kernel)
    assert lines["kernel"]["lstat-fdinfo"] == "EACCES", describe(kernel)
    assert deputy.returncode == 0 and deputy.stdout == kernel.stdout, describe(deputy)
    child = deputy.stdout.splitlines()[1]
    assert child.startswith("child environ=OK") and "readlink-fd/0=OK" in child, child


def _fields(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``ENTRY=ANSWER`` of the first line (the process outside)."""
    first = proc.stdout.splitlines()[0].split()
    return dict(kv.split("=", 1) for kv in first[1:])
