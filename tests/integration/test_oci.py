"""``unotifyd serve --oci-socket``: containers of the real runc and crun.

Each container is a static busybox as the whole (read-only) root file
system, with a seccomp profile that sends the open family to the agent.
Every runtime runs under ``timeout -k`` (a runtime whose agent never
answers would hang), and every container is ``delete -f``'d afterwards.

crun refuses this machine's hybrid cgroup layout, so it runs in a private
mount namespace without the cgroup2 mount and without a cgroup manager.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unotifyd.daemon.client import call
from unotifyd.daemon.protocol import StatusReply, StatusRequest
from unotifyd.oci.state import PROFILE_ANNOTATION

from .helpers import TIMEOUT, env, write

pytestmark = pytest.mark.kernel

RUNTIMES = ("runc", "crun")
#: Seconds one container may take, start to exit (they take ~0.1 s).
RUN_TIMEOUT = 20
NOTIFY = ["open", "openat", "openat2", "creat"]
CONTAINER_PASSWD = "root:x:0:0:container:/:/bin/sh\n"
CONTAINER_GROUP = "containergroup:x:0:\n"
SECRET = "SECRET\n"
NOBODY = 65534
_ids = itertools.count()


def _wait_for(what: str, cond: Callable[[], object], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- A root file system and a spec, shared by every test of the module ------------


def _root_is_a_mount_point() -> bool:
    """Whether this process's / is a mount point of its own (proc_pid_mountinfo(5):
    the fifth field is the mount point, relative to the process's root)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/" for line in f)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    for tool in ("runc", "crun", "busybox", "unshare", "timeout"):
        # Never skip (tests/conftest.py): tests/run installs these.
        assert shutil.which(tool), f"{tool} is not installed (tests/run installs it)"
    # What the runtimes need of the machine itself, said once instead of as
    # one obscure runtime error per test.
    assert _root_is_a_mount_point(), (
        "the OCI tests need / to be a mount point (runc and crun pivot_root into the "
        "container's root): in a chroot, bind-mount its directory onto itself first"
    )
    assert os.path.isdir("/sys/fs/cgroup") and os.listdir("/sys/fs/cgroup"), (
        "the OCI tests need a cgroup tree at /sys/fs/cgroup (v2, or v1 controllers: the "
        "runtimes make a cgroup per container), e.g. mount -t cgroup2 none /sys/fs/cgroup"
    )
    d = Path(tempfile.mkdtemp(prefix="unotifyd-oci-"))
    d.chmod(0o755)  # a test connects as nobody
    rootfs = d / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    assert busybox is not None
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for sub in ("proc", "dev", "sys", "tmp"):
        (rootfs / sub).mkdir()
    write(rootfs / "etc" / "passwd", CONTAINER_PASSWD)
    # For the tests of rules in the container's own view: a file to deny, a
    # link to it that exists only in the image, and a group file of its own.
    write(rootfs / "data" / "secret", SECRET)
    (rootfs / "etc" / "alias").symlink_to("/data/secret")
    write(rootfs / "etc" / "group", CONTAINER_GROUP)
    spec = d / "spec"
    spec.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec, check=True, timeout=RUN_TIMEOUT)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Runtimes:
    """Makes bundles and runs containers; deletes every one it created."""

    dir: Path
    created: list[tuple[str, str]] = field(default_factory=list)

    def bundle(
        self,
        listener: str,
        args: Sequence[str],
        metadata: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Path:
        spec: dict[str, Any] = json.loads((self.dir / "spec" / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = list(args)
        spec["root"] = {"path": str(self.dir / "rootfs"), "readonly": True}
        seccomp: dict[str, Any] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": listener,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": NOTIFY, "action": "SCMP_ACT_NOTIFY"}],
        }
        if metadata is not None:
            seccomp["listenerMetadata"] = metadata
        spec["linux"]["seccomp"] = seccomp
        if annotations:
            spec["annotations"] = annotations
        bundle = Path(tempfile.mkdtemp(prefix="bundle-", dir=self.dir))
        write(bundle / "config.json", json.dumps(spec))
        return bundle

    def command(self, runtime: str, bundle: Path, cid: str) -> list[str]:
        self.created.append((runtime, cid))
        guard = ["timeout", "-k", "5", str(RUN_TIMEOUT)]
        if runtime == "runc":
            return [*guard, "runc", "run", "--bundle", str(bundle), cid]
        return [
            *guard, "unshare", "-m", "--propagation", "private", "sh", "-c",
            'umount /sys/fs/cgroup/unified 2>/dev/null; '
            'exec crun --cgroup-manager=disabled run --bundle "$0" "$1"',
            str(bundle), cid,
        ]

    def run(self, runtime: str, bundle: Path, cid: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(runtime, bundle, cid), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=RUN_TIMEOUT + 10, check=False,
        )

    def popen(self, runtime: str, bundle: Path, cid: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(runtime, bundle, cid), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )

    def pid(self, runtime: str, cid: str) -> int | None:
        proc = subprocess.run(
            [runtime, "state", cid], capture_output=True, text=True, timeout=10, check=False
        )
        if proc.returncode != 0:
            return None
        pid: int = json.loads(proc.stdout)["pid"]
        return pid or None

    def kill(self, runtime: str, cid: str) -> None:
        subprocess.run([runtime, "kill", cid, "KILL"], capture_output=True, timeout=10,
                       check=False)

    def cleanup(self) -> None:
        for runtime, cid in self.created:
            subprocess.run(["timeout", "-k", "2", "10", runtime, "delete", "-f", cid],
                           capture_output=True, check=False)
        self.created.clear()


@pytest.fixture
def runtimes(workdir: Path) -> Iterator[Runtimes]:
    r = Runtimes(workdir)
    try:
        yield r
    finally:
        r.cleanup()


def new_id() -> str:
    return f"unotifyd-test-{os.getpid()}-{next(_ids)}"


# --- The daemon --------------------------------------------------------------------


@dataclass
class Agent:
    proc: subprocess.Popen[str]
    dir: Path
    control: str
    oci: str

    def status(self) -> dict[str, Any]:
        reply = call(self.control, StatusRequest())
        assert isinstance(reply, StatusReply), reply
        return dict(reply.report)

    def programs(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.status()["programs"]}

    def wait_idle(self) -> dict[str, Any]:
        report: dict[str, Any] = {}

        def idle() -> bool:
            nonlocal report
            report = self.status()
            return bool(report["programs_running"] == 0)

        _wait_for("the daemon to serve no program", idle)
        return report

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text()

    def trace(self) -> list[dict[str, Any]]:
        path = self.dir / "trace.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def start_agent(d: Path, *extra: str) -> Agent:
    write(d / "red.txt", "RED\n")
    write(d / "blue.txt", "BLUE\n")
    os.mkfifo(d / "fifo")
    # Rule paths are the container's; redirect targets are the host's.
    for name, target in (("red", "red.txt"), ("blue", "blue.txt"), ("stuck", "fifo")):
        write(d / f"{name}.toml",
              f'version = 1\n[[redirect]]\nfrom = "/etc/passwd"\nto = "{d / target}"\n')
    # Paths in the container's view: /etc/alias and this /etc/group exist
    # only in its image.
    write(d / "guard.toml", 'version = 1\n[[deny]]\npath = "/data/secret"\n'
          '[[readonly]]\npath = "/etc/group"\n')
    oci = str(d / "oci.sock")
    config = write(d / "unotifyd.toml", (
        f'version = 1\noci_socket = "{oci}"\noci_default_profile = "blue"\n'
        + "".join(f'[[profile]]\nname = "{n}"\npolicy = "{n}.toml"\nuids = [0]\n'
                  for n in ("red", "blue", "stuck", "guard"))
    ))
    control = str(d / "unotifyd.sock")
    with open(d / "daemon.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unotifyd", "serve", "--socket", control, "--config",
             str(config), "--stop-timeout", "1", "--trace-json", str(d / "trace.jsonl"),
             *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env(), text=True,
        )
    agent = Agent(proc, d, control, oci)
    try:
        _wait_for("the daemon's sockets",
                  lambda: proc.poll() is not None or (
                      os.path.exists(control) and os.path.exists(oci)))
        assert proc.poll() is None, f"the daemon exited: {agent.log()}"
        # The sockets exist before trio installs its signal handlers; a
        # status reply proves those are in place (a SIGTERM earlier kills
        # the daemon with the default action).
        agent.status()
    except BaseException:
        proc.kill()
        proc.wait(TIMEOUT)
        raise
    return agent


@pytest.fixture(scope="module")
def agent(workdir: Path) -> Iterator[Agent]:
    d = workdir / "agent"
    d.mkdir()
    # --oci-socket on the command line, to the same path as the config's.
    a = start_agent(d, "--oci-socket", str(d / "oci.sock"))
    try:
        yield a
    finally:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGTERM)
            try:
                a.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait(TIMEOUT)


def out(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"


# --- Tests -------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cat_etc_passwd_prints_the_redirected_host_file(
    agent: Agent, runtimes: Runtimes, runtime: str
) -> None:
    cid = new_id()
    bundle = runtimes.bundle(agent.oci, ["cat", "/etc/passwd"], metadata="profile=red")
    proc = runtimes.run(runtime, bundle, cid)
    assert (proc.returncode, proc.stdout) == (0, "RED\n"), out(proc)
    # The daemon traces a call just after answering it: the container may
    # be gone before the line is written.
    events: list[dict[str, Any]] = []
    passwd: list[dict[str, Any]] = []

    def traced() -> bool:
        nonlocal events, passwd
        events = [e for e in agent.trace() if e["program"] == f"red:{cid}"]
        passwd = [e for e in events if e["path"] == "/etc/passwd"]
        return bool(passwd)

    _wait_for("the trace of the container's open", traced)
    assert [(e["decision"], e["target"]) for e in passwd] == [
        ("redirect", str(agent.dir / "red.txt"))
    ]
    if runtime == "runc":
        # runc's init traps opens of its own after installing the filter
        # (the exec fifo, /proc/self/fd): served, not hung.
        assert any(e["decision"] == "continue" for e in events), events
    assert f"serving container '{cid}'" in agent.log()
    report = agent.wait_idle()
    assert report["profiles"]["red"]["decisions"]["redirect"] >= 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rules_apply_to_the_containers_own_files(
    agent: Agent, runtimes: Runtimes, runtime: str
) -> None:
    # The container's /etc/alias links to /data/secret inside it: denied,
    # though the host has no /etc/alias. The read-only /etc/group is the
    # container's, opened in its root, not the host's file of that name.
    script = "cat /etc/alias; echo rc=$?; cat /etc/group; echo rc=$?; echo x >> /etc/group"
    bundle = runtimes.bundle(agent.oci, ["sh", "-c", script], metadata="profile=guard")
    proc = runtimes.run(runtime, bundle, new_id())
    assert SECRET not in proc.stdout, out(proc)
    assert proc.stdout == f"rc=1\n{CONTAINER_GROUP}rc=0\n", out(proc)
    assert "Permission denied" in proc.stderr, out(proc)
    assert "Read-only file system" in proc.stderr, out(proc)


def test_two_containers_on_two_profiles_at_once(agent: Agent, runtimes: Runtimes) -> None:
    # Each prints /etc/passwd, then waits for its stdin to close: both are
    # served side by side until the test lets them go.
    args = ["sh", "-c", "cat /etc/passwd; read x; cat /etc/passwd"]
    red_id, blue_id = new_id(), new_id()
    red = runtimes.popen("runc", runtimes.bundle(agent.oci, args, "profile=red"), red_id)
    blue = runtimes.popen("crun", runtimes.bundle(agent.oci, args, "blue"), blue_id)
    try:
        names = {f"red:{red_id}", f"blue:{blue_id}"}
        _wait_for("both containers served", lambda: names <= set(agent.programs()))
        programs = agent.programs()
        assert programs[f"red:{red_id}"]["profile"] == "red"
        assert programs[f"blue:{blue_id}"]["command"].startswith(f"oci container {blue_id} ")
        # Their filters are the runtimes': never compared with a profile's.
        assert all(programs[name]["filter_behind"] is None for name in names)
        results = [p.communicate("go\n", timeout=RUN_TIMEOUT) for p in (red, blue)]
    finally:
        for p in (red, blue):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert (red.returncode, results[0][0]) == (0, "RED\nRED\n"), results[0]
    assert (blue.returncode, results[1][0]) == (0, "BLUE\nBLUE\n"), results[1]
    agent.wait_idle()


@pytest.mark.parametrize(("metadata", "annotations", "expected"), [
    (None, {PROFILE_ANNOTATION: "red"}, "RED\n"),  # the annotation
    ("", {}, "BLUE\n"),  # oci_default_profile
    ("profile=red", {PROFILE_ANNOTATION: "blue"}, "RED\n"),  # metadata wins
])
def test_profile_from_annotation_or_default(
    agent: Agent, runtimes: Runtimes, metadata: str | None,
    annotations: dict[str, str], expected: str,
) -> None:
    bundle = runtimes.bundle(agent.oci, ["cat", "/etc/passwd"], metadata, annotations)
    proc = runtimes.run("runc", bundle, new_id())
    assert (proc.returncode, proc.stdout) == (0, expected), out(proc)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unknown_profile_is_refused_and_leaves_nothing(
    agent: Agent, runtimes: Runtimes, runtime: str
) -> None:
    agent.wait_idle()
    fds = agent.open_fds()
    before = agent.status()["refusals"].get("oci-unknown-profile", 0)
    cid = new_id()
    proc = runtimes.run(runtime, runtimes.bundle(agent.oci, ["cat", "/etc/passwd"],
                                                 "profile=nope"), cid)
    # The listener is closed: every trapped call fails with ENOSYS. runc's
    # init traps calls itself and fails to start; crun's container starts
    # and cannot open /etc/passwd.
    assert proc.returncode != 0, out(proc)
    assert "RED" not in proc.stdout and CONTAINER_PASSWD not in proc.stdout
    if runtime == "crun":
        assert "Function not implemented" in proc.stderr, out(proc)
    report = agent.wait_idle()
    assert report["refusals"]["oci-unknown-profile"] == before + 1
    assert "unknown profile 'nope'" in agent.log()
    _wait_for("the daemon to close the refused fds", lambda: agent.open_fds() <= fds)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_container_killed_mid_notification(
    agent: Agent, runtimes: Runtimes, runtime: str
) -> None:
    """The profile redirects /etc/passwd to a FIFO nobody writes: the open
    blocks in the daemon while the container is killed."""
    agent.wait_idle()
    fds = agent.open_fds()
    cid = new_id()
    stuck = runtimes.popen(runtime, runtimes.bundle(agent.oci, ["cat", "/etc/passwd"],
                                                    "profile=stuck"), cid)
    try:
        def blocked_in_open() -> bool:
            pid = runtimes.pid(runtime, cid)
            if pid is None:
                return False
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                nr = Path(f"/proc/{pid}/syscall").read_text().split()[0]
                return comm == "cat" and nr == "257"  # openat, waiting for us
            return False

        _wait_for("cat blocked in its open of /etc/passwd", blocked_in_open)
        runtimes.kill(runtime, cid)
        stuck.wait(RUN_TIMEOUT)
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()
        for f in (stuck.stdin, stuck.stdout, stuck.stderr):
            if f is not None:
                f.close()
    report = agent.wait_idle()
    assert report["profiles"]["stuck"]["started"] >= 1
    assert report["profiles"]["stuck"]["running"] == 0
    assert f"stuck:{cid}" not in agent.programs()
    # Still serving, and nothing left behind.
    proc = runtimes.run(runtime, runtimes.bundle(agent.oci, ["cat", "/etc/passwd"], "red"),
                        new_id())
    assert (proc.returncode, proc.stdout) == (0, "RED\n"), out(proc)
    agent.wait_idle()
    _wait_for("the daemon to release the killed container's fds",
              lambda: agent.open_fds() <= fds)
    assert agent.proc.poll() is None


def _fake_runtime(path: str, data: bytes, fds: Sequence[int] = ()) -> bytes:
    """Send ``data`` (with ``fds``) like a runtime and keep the connection open
    until the agent closes it; what the agent sent back (nothing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.sendall(data)
        return s.recv(100)  # b"" once the agent closes: it never waits for our EOF


def test_bad_runtime_messages_are_refused_without_waiting_for_eof(agent: Agent) -> None:
    agent.wait_idle()
    fds = agent.open_fds()
    before = agent.status()["refusals"]
    state = {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": os.getpid(),
             "metadata": "profile=red", "state": {"id": "fake", "status": "creating"}}
    r, w = os.pipe()
    try:
        # A complete message whose fd is a pipe, not a listener.
        assert _fake_runtime(agent.oci, json.dumps(state).encode(), [r]) == b""
        # Two fds where 'fds' names one.
        assert _fake_runtime(agent.oci, json.dumps(state).encode(), [r, w]) == b""
    finally:
        os.close(r)
        os.close(w)
    assert _fake_runtime(agent.oci, b'["not", "an", "object"]') == b""
    # Gone without a word (crun does this when it fails before starting the
    # container), and gone in the middle of the message.
    for data in (b"", json.dumps(state).encode()[:30]):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(agent.oci)
            s.sendall(data)
    # A client that is not root asks for a profile only root may use.
    code = (
        "import json, os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
        "r, w = os.pipe()\n"
        "socket.send_fds(s, [sys.argv[2].encode()], [r]); s.settimeout(20)\n"
        "assert s.recv(1) == b''\n"
    )
    # The system Python: ours may live where nobody cannot reach it.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.run([python, "-c", code, agent.oci, json.dumps(state)],
                          user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, out(proc)
    expected = {"oci-not-a-listener": 1, "oci-bad-fds": 1, "oci-bad-state": 2,
                "oci-forbidden": 1, "oci-gone": 1}

    def counted() -> bool:
        after = agent.status()["refusals"]
        return all(after.get(k, 0) == before.get(k, 0) + n for k, n in expected.items())

    # The last two close without waiting for the daemon: it may still be at them.
    _wait_for(f"the refusals {expected}", counted)
    assert agent.status()["programs_running"] == 0
    _wait_for("the daemon to close the refused fds", lambda: agent.open_fds() <= fds)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_agent_not_running_is_the_runtimes_own_error(
    workdir: Path, runtimes: Runtimes, runtime: str
) -> None:
    d = Path(tempfile.mkdtemp(prefix=f"stopped-{runtime}-", dir=workdir))
    # oci_socket from the config file this time.
    agent = start_agent(d)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(TIMEOUT) == 0, agent.log()
    # The daemon left nothing behind: both sockets are gone.
    assert not os.path.exists(agent.oci) and not os.path.exists(agent.control)
    cid = new_id()
    start = time.monotonic()
    proc = runtimes.run(runtime, runtimes.bundle(agent.oci, ["cat", "/etc/passwd"], "red"), cid)
    assert time.monotonic() - start < RUN_TIMEOUT, "the runtime hung"
    assert proc.returncode != 0, out(proc)
    expected = {
        "runc": "failed to connect with seccomp agent",
        "crun": "open seccomp receiver",
    }[runtime]
    assert expected in proc.stderr, out(proc)
    assert "No such file or directory" in proc.stderr or "no such file" in proc.stderr
    assert proc.stdout == ""
