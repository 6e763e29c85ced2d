"""Calls the filter never traps cannot route around the rules under --enforce.

Each route is one run of ``progs/surface.c``: an io_uring open of a denied
file, a chroot or a bind mount in a new user namespace, a detached mount
tree, a forged file handle, ``acct`` of a denied file, ``ptrace`` of a
process of the same uid outside the sandbox... For each route and identity
(root; nobody, where the kernel lets nobody do it natively):

1. natively the attack works -- it reads the denied file's bytes, or the call
   succeeds (the control: proves the attack program works and the route is
   real on this kernel);
2. under ``unotifyd launch --enforce --deny ...`` the first step the filter
   refuses fails with the errno of the surface table
   (:mod:`unotifyd.policy.surface`), and the attack gets nothing: an *escape*
   is an outcome that went as far as the native one.

Each test prints ``RESULT surface[ROUTE-IDENTITY]: native=... enforce=...
escapes=N``. A route whose kernel feature is missing (io_uring disabled by
``kernel.io_uring_disabled``, user namespaces disabled, Yama's ptrace
scope) is skipped with the feature named.

Runs that may mount (as root) are wrapped, supervisor included, in a private
mount namespace (``unshare --mount --propagation private``) so that a mount
that gets through never reaches the host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..integration.helpers import describe, py, run_launch, run_native
from .support import IDENTITIES, Identity, Report, Workspace, build_c, directory, put

pytestmark = pytest.mark.kernel

SECRET = "SECRET\n"
#: Options of ``unotifyd launch`` for a workspace.
Options = Callable[[Path], Sequence[str]]


@pytest.fixture(scope="session")
def surface_bin(public: Path) -> Path:
    """``progs/surface.c``, built once, executable by nobody."""
    return build_c(public, "surface")


# --- Routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One attack: ``call`` (the op and its arguments; ``{w}`` is the
    workspace, ``{pid}``/``{addr}`` a victim process and a buffer in it,
    ``{handle}`` a file handle of the denied file made outside), the
    identities it applies to, what it answers natively (``native``: the
    outcome or its first word), and what the filter answers (``refused``).

    ``setup``: ``mountns`` runs it (and the supervisor) in a private mount
    namespace; ``mountpoint`` also mounts a tmpfs on ``{w}/mnt`` there;
    ``victim`` starts a process of the same identity to attack.
    ``feature``: what the kernel must allow (see :func:`missing`).
    """

    label: str
    call: tuple[str, ...]
    refused: str
    who: tuple[str, ...] = ("root", "user")
    native: str = "OK"
    setup: str = ""
    feature: str = ""


#: The bytes of the denied file, as surface.c reports a read of them.
READ = "OK n=7 "

ROUTES = (
    Route("uring-open", ("uring-read", "{w}/secret"), "io_uring_setup=ENOSYS",
          native=READ, feature="io_uring"),
    Route("uring-unlink", ("uring-unlink", "{w}/ro/file"), "io_uring_setup=ENOSYS",
          feature="io_uring"),
    Route("userns-chroot", ("chroot", "unshare", "{w}", "/secret"), "unshare=EPERM",
          native=READ, feature="userns"),
    Route("clone-userns-chroot", ("chroot", "clone", "{w}", "/secret"), "clone=EPERM",
          native=READ, feature="userns"),
    Route("chroot", ("chroot", "direct", "{w}", "/secret"), "chroot=EPERM",
          who=("root",), native=READ),
    Route("userns-bind-mount", ("bind-mount", "unshare", "{w}", "secret", "{w}/to"),
          "unshare=EPERM", native=READ, feature="userns"),
    Route("bind-mount", ("bind-mount", "direct", "{w}", "secret", "{w}/to"), "mount=EPERM",
          who=("root",), native=READ, setup="mountns"),
    Route("userns-tree-clone", ("tree-clone", "unshare", "{w}", "secret"), "unshare=EPERM",
          native=READ, feature="userns"),
    Route("tree-clone", ("tree-clone", "direct", "{w}", "secret"), "open_tree=ENOSYS",
          who=("root",), native=READ),
    Route("tree-open", ("tree-open", "{w}/secret"), "open_tree=ENOSYS", native="OK size=7"),
    Route("move-mount", ("move-mount", "direct", "{w}", "secret", "{w}/to"),
          "open_tree=ENOSYS", who=("root",), native=READ, setup="mountns"),
    Route("userns-fsmount", ("fsmount", "unshare"), "unshare=EPERM", feature="userns"),
    Route("fsmount", ("fsmount", "direct"), "fsopen=ENOSYS", who=("root",)),
    Route("umount", ("umount", "{w}/mnt"), "umount2=EPERM", who=("root",),
          setup="mountpoint"),
    Route("pivot-root", ("pivot-root", "{w}/mnt"), "pivot_root=EPERM", who=("root",),
          setup="mountpoint"),
    Route("setns", ("setns",), "setns=EPERM", who=("root",)),
    Route("open-by-handle", ("open-handle", "{w}", "{handle}"), "open_by_handle_at=EPERM",
          who=("root",), native=READ),
    Route("fanotify", ("fanotify", "{w}/secret"), "fanotify_init=EPERM"),
    Route("acct", ("acct", "{w}/acct"), "acct=EPERM", who=("root",)),
    # A file that is no swap area: natively swapon opens it, then says EINVAL.
    Route("swapon", ("swapon", "{w}/secret"), "swapon=EPERM", who=("root",),
          native="swapon=EINVAL"),
    Route("ptrace", ("ptrace", "{pid}"), "ptrace=EPERM", setup="victim", feature="ptrace"),
    Route("vm-write", ("vm-write", "{pid}", "{addr}"), "process_vm_writev=EPERM",
          setup="victim", feature="ptrace"),
    Route("vm-read", ("vm-read", "{pid}", "{addr}"), "process_vm_readv=EPERM",
          setup="victim", feature="ptrace"),
    Route("pidfd-getfd", ("getfd", "{pid}"), "pidfd_getfd=EPERM", setup="victim",
          feature="ptrace"),
    Route("userfaultfd", ("userfaultfd",), "userfaultfd=EPERM"),
    # The device is root's, 0600: natively nobody's open is EACCES.
    Route("uffd-dev", ("uffd-dev",), "ioctl=EPERM", who=("root",), feature="uffd-dev"),
    # Another process's limits (a supervisor's RLIMIT_CPU would kill it):
    # set to what they were, so the victim goes on as it was.
    Route("prlimit", ("prlimit", "{pid}"), "prlimit=EPERM", setup="victim"),
    # The denied file's name looked up: ENOTBLK says it is there (ENOENT not).
    Route("quotactl", ("quotactl", "{w}/secret"), "quotactl=EPERM", native="quotactl=ENOTBLK"),
    Route("bpf", ("bpf",), "bpf=EPERM", who=("root",)),
    Route("clone3", ("clone3",), "clone3=ENOSYS"),
)  # fmt: skip

CASES = [(route, who) for route in ROUTES for who in route.who]


def _sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", name).read_text())
    except (OSError, ValueError):
        return None


def missing(feature: str, identity: Identity) -> str | None:
    """Why the kernel here would refuse the route natively, or None."""
    unprivileged = identity.uid != 0
    if feature == "io_uring":
        disabled = _sysctl("kernel/io_uring_disabled") or 0
        if disabled == 2 or (disabled == 1 and unprivileged):
            return f"io_uring is disabled here (kernel.io_uring_disabled = {disabled})"
    if feature == "userns":
        if _sysctl("user/max_user_namespaces") == 0:
            return "user namespaces are disabled here (user.max_user_namespaces = 0)"
        if unprivileged and _sysctl("kernel/unprivileged_userns_clone") == 0:
            return "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone)"
        if unprivileged and _sysctl("kernel/apparmor_restrict_unprivileged_userns") == 1:
            return "AppArmor restricts unprivileged user namespaces here"
    if feature == "uffd-dev" and not Path("/dev/userfaultfd").exists():
        return "no /dev/userfaultfd here (Linux 6.1+, CONFIG_USERFAULTFD)"
    if feature == "ptrace":
        scope = _sysctl("kernel/yama/ptrace_scope") or 0
        if scope >= 3 or (scope >= 1 and unprivileged):
            return f"Yama forbids ptrace of a non-descendant (kernel.yama.ptrace_scope = {scope})"
    return None


# --- Running ------------------------------------------------------------------------------


def build_workspace(ws: Workspace, who: Identity) -> None:
    """``secret`` (the denied file), ``acct`` (denied too), ``ro/file`` (in a
    read-only tree), ``to`` and ``mnt`` (mount points): the program's own."""
    put(ws.real / "secret", SECRET, owner=who.uid)
    put(ws.real / "acct", "", owner=who.uid)
    put(directory(ws.real / "ro", owner=who.uid) / "file", "RO\n", owner=who.uid)
    directory(ws.real / "to", owner=who.uid)
    directory(ws.real / "mnt", owner=who.uid)


def enforce_options(ws: Path) -> tuple[str, ...]:
    return ("--enforce", "--deny", f"{ws}/secret", "--deny", f"{ws}/acct",
            "--readonly", f"{ws}/ro/**")  # fmt: skip


#: Runs the rest of its arguments in a private mount namespace (with "$1"
#: mounted as a tmpfs first when it is not "-").
_MOUNT_FIRST = '[ "$1" = - ] || mount -t tmpfs none "$1" || exit 99; shift; exec "$@"'
_MOUNTNS = ("unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_FIRST, "sh")


def around(route: Route, ws: Path) -> tuple[str, ...]:
    if route.setup == "mountns":
        return (*_MOUNTNS, "-")
    if route.setup == "mountpoint":
        return (*_MOUNTNS, f"{ws}/mnt")
    return ()


@contextmanager
def victim(binary: Path, who: Identity, wanted: bool) -> Iterator[Mapping[str, str]]:
    """A process of ``who`` outside any sandbox: its pid and a buffer's address."""
    if not wanted:
        yield {}
        return
    argv = [*who.prefix, str(binary), "victim", "victim"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        assert addr.startswith("0x"), f"victim said {addr!r}"
        yield {"pid": str(proc.pid), "addr": addr}
    finally:
        proc.kill()
        proc.wait()


def file_handle(binary: Path, secret: Path) -> str:
    """A handle of ``secret``, made outside the sandbox: what a program forges."""
    proc = run_native([str(binary), "handle", "handle", str(secret)])
    words = proc.stdout.split()
    assert proc.returncode == 0 and words[:2] == ["handle", "OK"], describe(proc)
    return words[2]


def outcome(proc: subprocess.CompletedProcess[str], label: str) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(label + " ")]
    assert proc.returncode == 0 and len(lines) == 1, describe(proc)
    return lines[0][len(label) + 1 :]


def attack(
    lab_dir: Path, binary: Path, route: Route, who: Identity, launch: Options | None
) -> tuple[str, Workspace]:
    """Run ``route`` as ``who`` in a fresh workspace, natively (``launch`` None)
    or under ``unotifyd launch`` with the options ``launch(workspace)``;
    return its outcome and the workspace."""
    ws = Workspace.make(lab_dir)
    build_workspace(ws, who)
    names = {"w": str(ws.real)}
    if "{handle}" in route.call:
        names["handle"] = file_handle(binary, ws.real / "secret")
    with victim(binary, who, route.setup == "victim") as target:
        names.update(target)
        argv = [*who.prefix, str(binary), route.label, *(a.format(**names) for a in route.call)]
        if launch is None:
            proc = run_native([*around(route, ws.real), *argv], cwd="/")
        else:
            cmd = ["unotifyd", "launch", *launch(ws.real), "--", *argv]
            proc = run_native([*around(route, ws.real), *cmd], cwd="/")
    return outcome(proc, route.label), ws


@pytest.mark.parametrize(("route", "who"), CASES, ids=[f"{r.label}-{w}" for r, w in CASES])
def test_route_is_closed_under_enforce(
    lab_dir: Path, surface_bin: Path, report: Report, route: Route, who: str
) -> None:
    identity = IDENTITIES[who]
    reason = missing(route.feature, identity)
    if reason:
        pytest.skip(reason)
    native, native_ws = attack(lab_dir, surface_bin, route, identity, None)
    enforced, ws = attack(lab_dir, surface_bin, route, identity, enforce_options)
    escaped = enforced == native or enforced.startswith("OK")
    report(f"surface[{route.label}-{who}]", native=native.replace(" ", "/"),
           enforce=enforced, escapes=int(escaped))  # fmt: skip
    assert native.startswith(route.native), f"native control does not hold: {native!r}"
    side_effects(route, native_ws, ws)
    assert not escaped, f"escape under --enforce: {enforced!r} (natively {native!r})"
    assert enforced == route.refused


def side_effects(route: Route, native: Workspace, enforced: Workspace) -> None:
    """What the attack changed on the disk: natively, and never under --enforce."""
    if route.label == "acct":
        assert (native.real / "acct").stat().st_size > 0, "natively acct wrote no record"
        assert (enforced.real / "acct").stat().st_size == 0
    if route.label == "uring-unlink":
        assert not (native.real / "ro" / "file").exists(), "natively the unlink did nothing"
        assert (enforced.real / "ro" / "file").exists()


@pytest.fixture
def lab_dir(public: Path) -> Path:
    scratch = public / "surface-ws"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return scratch


# --- What stays open: ordinary programs, virtualize mode, allow_syscalls -------------------

ORDINARY = (
    ["sh", "-c", "ls / | wc -l"],
    ["python3", "-c", 'import subprocess; subprocess.run(["true"], check=True); print("ran")'],
    # pthread_create: glibc tries clone3 first and falls back to clone on ENOSYS.
    ["python3", "-c", 'import threading as t; x = t.Thread(target=print, args=("thread",)); '
     "x.start(); x.join()"],
)  # fmt: skip


@pytest.mark.parametrize("who", ["root", "user"])
def test_ordinary_programs_still_work(lab_dir: Path, surface_bin: Path, who: str) -> None:
    """fork, threads, pipes, unshare(CLONE_FILES) and an O_PATH open keep
    working under --enforce: only namespace flags and clone3 are refused."""
    identity = IDENTITIES[who]
    ws = Workspace.make(lab_dir)
    build_workspace(ws, identity)
    for argv in ORDINARY:
        native = run_native([*identity.prefix, *argv], cwd="/")
        proc = run_launch(*enforce_options(ws.real), argv=[*identity.prefix, *argv], cwd="/")
        assert proc.returncode == 0, describe(proc)
        assert proc.stdout == native.stdout, describe(proc)
    argv = [*identity.prefix, str(surface_bin), "ordinary", "ordinary", str(ws.real)]
    proc = run_launch(*enforce_options(ws.real), argv=argv, cwd="/")
    assert outcome(proc, "ordinary") == "OK"


def test_virtualize_refuses_io_uring_only(lab_dir: Path, surface_bin: Path) -> None:
    """In virtualize mode with a rule, io_uring is refused (ENOSYS: its opens
    would show the real files instead of the view); the rest of the surface
    (here a user namespace and a chroot) is not."""
    identity = IDENTITIES["user"]
    uring = Route("uring-open", ("uring-read", "{w}/secret"), "io_uring_setup=ENOSYS")
    chroot = Route("userns-chroot", ("chroot", "unshare", "{w}", "/secret"), "")
    for route in (uring, chroot):
        reason = missing("io_uring" if route is uring else "userns", identity)
        if reason:
            pytest.skip(reason)

    def redirect(ws: Path) -> tuple[str, ...]:
        return ("--redirect", f"{ws}/other={ws}/secret")

    got, _ = attack(lab_dir, surface_bin, uring, identity, redirect)
    assert got == "io_uring_setup=ENOSYS"
    got, _ = attack(lab_dir, surface_bin, chroot, identity, redirect)
    assert got.startswith(READ)
    # With no rule there is no view to bypass: nothing is refused.
    got, _ = attack(lab_dir, surface_bin, uring, identity, lambda ws: ())
    assert got.startswith(READ)


def test_allow_syscall_reopens_a_route_and_says_so(
    lab_dir: Path, surface_bin: Path, report: Report
) -> None:
    """--allow-syscall lets the named calls through (here io_uring, which
    then reads the denied file) and prints one warning line per call."""
    identity = IDENTITIES["user"]
    reason = missing("io_uring", identity)
    if reason:
        pytest.skip(reason)
    ws = Workspace.make(lab_dir)
    build_workspace(ws, identity)
    allow = ("--allow-syscall", "io_uring_setup", "--allow-syscall", "io_uring_enter")
    argv = [*identity.prefix, str(surface_bin), "uring", "uring-read", f"{ws.real}/secret"]
    proc = run_launch(*enforce_options(ws.real), *allow, argv=argv, cwd="/")
    assert outcome(proc, "uring").startswith(READ)
    warnings = [line for line in proc.stderr.splitlines() if "is allowed by the policy" in line]
    assert [line.split()[2] for line in warnings] == ["io_uring_enter", "io_uring_setup"]
    assert all(line.startswith("unotifyd: warning: io_uring_") for line in warnings)
    assert "never reach the filter" in warnings[0]


def test_policy_file_allow_syscalls(lab_dir: Path) -> None:
    """``allow_syscalls`` in a policy file works like the flag; a name that is
    not refused is an error naming the file and the line, with a suggestion."""
    ws = Workspace.make(lab_dir)
    policy = ws.real / "p.toml"
    policy.write_text(
        f'version = 1\nmode = "enforce"\nallow_syscalls = ["ptrace"]\n\n'
        f'[[deny]]\npath = "{ws.real}/secret"\n'
    )
    proc = run_launch("--policy", str(policy), argv=["true"])
    assert proc.returncode == 0, describe(proc)
    assert "unotifyd: warning: ptrace is allowed by the policy: " in proc.stderr
    policy.write_text('version = 1\nallow_syscalls = [\n  "ptrace",\n  "io_uring_setpu",\n]\n')
    proc = run_launch("--policy", str(policy), argv=["true"])
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.startswith(
        f"unotifyd: {policy}:4: 'io_uring_setpu' is not a system call unotifyd refuses "
        "(did you mean io_uring_setup"
    ), describe(proc)


TIOCSTI = """
import fcntl, os, sys, termios
tty = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
try:
    fcntl.ioctl(tty, termios.TIOCSTI, b"X")
    print("TIOCSTI OK")
except OSError as e:
    print("TIOCSTI", e.strerror)
"""


def test_enforce_types_nothing_into_a_terminal() -> None:
    """TIOCSTI pushes a byte into a terminal's input, which a shell outside reads as
    typed. Natively root may (it holds CAP_SYS_ADMIN); under --enforce the filter
    says EPERM, as the kernel does without the capability, and nothing arrives."""
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        native = run_native(py(TIOCSTI, name))
        assert native.stdout == "TIOCSTI OK\n", describe(native)
        assert os.read(master, 10) == b"X"  # the control: it did reach the terminal
        enforced = run_launch("--enforce", argv=py(TIOCSTI, name))
        assert enforced.stdout == "TIOCSTI Operation not permitted\n", describe(enforced)
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.read(master, 10)
    finally:
        os.close(master)
        os.close(slave)
