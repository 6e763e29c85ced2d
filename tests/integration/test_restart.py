"""Restarting the daemon while programs trap calls: no call may fail.

Two ways: under systemd (this test plays systemd: a datagram socket as
``NOTIFY_SOCKET`` that keeps the fds sent with ``FDSTORE=1``, then a new
daemon started with them in ``LISTEN_FDS``) and without it (SIGUSR2: the
daemon starts its successor and hands everything over).

The load: programs started through the daemon open a redirected file in a
loop, from before the restart until after it, and report every open that
did not give the redirect target's contents.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .helpers import TIMEOUT, describe, env, py, write

pytestmark = pytest.mark.kernel

#: Programs under load, and how long each opens its file in a loop.
PROGRAMS = 6
LOAD_SECONDS = 3.0

#: Opens ``argv[1]`` in a loop for ``argv[2]`` seconds; prints one JSON line:
#: opens, failures (errors or wrong contents, with the first few), and the
#: slowest open (a call trapped while no daemon ran waits for the next one).
LOOP = """
import json, os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
opens = 0; failures = []; slowest = 0.0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 100)
        finally:
            os.close(fd)
        if data != b"RED\\n":
            failures.append(repr(data))
    except OSError as e:
        failures.append(str(e))
    slowest = max(slowest, time.monotonic() - t)
    opens += 1
print(json.dumps({"opens": opens, "failures": len(failures), "first": failures[:5],
                  "slowest": slowest}))
"""

#: Puts the fds named on its command line at 3, 4, ... and execs the rest of
#: it with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set, as systemd does for a
#: service it starts (sd_listen_fds(3)). The names come in $TEST_FDNAMES.
LISTEN_EXEC = """
import fcntl, os, sys
sep = sys.argv.index("--")
fds = [int(a) for a in sys.argv[1:sep]]
# Out of the way first: a source may sit where another must go.
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_FDNAMES"] = os.environ.pop("TEST_FDNAMES")
os.execv(sys.argv[sep + 1], sys.argv[sep + 1:])
"""


@dataclass
class World:
    dir: Path
    src: Path
    config: Path
    sock: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # started by a daemon, not by us

    def daemon(
        self, log: str, extra_env: dict[str, str] | None = None,
        prefix: Sequence[str] = (), pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[str]:
        with open(self.dir / log, "a") as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "unotifyd", "serve", "--socket", self.sock,
                 "--config", str(self.config), "--stop-timeout", "2"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env(extra_env),
                text=True, pass_fds=pass_fds,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.dir / name).read_text()

    def launch_load(self, n: int = PROGRAMS) -> list[subprocess.Popen[str]]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "unotifyd", "launch", "--daemon", self.sock, "--profile",
                 "red", "--", *py(LOOP, str(self.src), str(LOAD_SECONDS))],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env(), text=True,
            )
            for _ in range(n)
        ]
        self.procs += procs
        return procs

    def launch(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "unotifyd", "launch", "--daemon", self.sock, "--profile",
             "red", "--", "cat", str(self.src)],
            capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
        )

    def hand_over(self, old: subprocess.Popen[str], log: str = "daemon.log") -> int:
        """SIGUSR2 to the daemon ``old``: the pid of the successor it handed
        everything to, once ``old`` has exited (0)."""
        old.send_signal(signal.SIGUSR2)
        wait_until("a successor", lambda: _SUCCESSOR.search(self.log(log)) is not None)
        match = _SUCCESSOR.search(self.log(log))
        assert match
        self.pids.append(int(match.group(1)))
        assert old.wait(TIMEOUT) == 0, self.log(log)
        return int(match.group(1))

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "unotifyd", "status", "--json", "--daemon", self.sock],
            capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
        )
        assert proc.returncode == 0, describe(proc)
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


@pytest.fixture
def world() -> Iterator[World]:
    d = Path(tempfile.mkdtemp(prefix="unotifyd-restart-"))
    d.chmod(0o755)
    src = write(d / "src.txt", "ORIGINAL\n")
    red = write(d / "red.txt", "RED\n")
    write(d / "red.toml", f'version = 1\n[[redirect]]\nfrom = "{src}"\nto = "{red}"\n')
    config = write(d / "unotifyd.toml",
                   'version = 1\n[[profile]]\nname = "red"\npolicy = "red.toml"\nuids = [0]\n')
    w = World(d, src, config, str(d / "unotifyd.sock"))
    try:
        yield w
    finally:
        for pid in w.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in w.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=TIMEOUT)
        shutil.rmtree(d, ignore_errors=True)


def wait_until(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def check_load(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Every program's report; fails the test on any failed open."""
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT + LOAD_SECONDS)
        assert proc.returncode == 0, f"status {proc.returncode}: {err}"
        report: dict[str, Any] = json.loads(out)
        assert report["failures"] == 0, report
        assert report["opens"] > 100, report
        reports.append(report)
    print("load:", [(r["opens"], round(r["slowest"], 3)) for r in reports])
    return reports


# --- Playing systemd --------------------------------------------------------------------


class FakeSystemd:
    """The service manager's side of sd_notify, with an fd store (sd_pid_notify_with_fds(3)).

    A thread reads the socket all the time, as PID 1 does: a sender finds
    the queue full after 10 unread datagrams (net.unix.max_dgram_qlen).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []
        self.store: dict[str, int] = {}  # name -> our copy of the fd
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(TIMEOUT)
        self.sock.close()
        for fd in self.store.values():
            os.close(fd)
        self.store.clear()

    def _reader(self) -> None:
        while not self._done.is_set():
            try:
                self._receive()
            except BaseException as e:
                self.errors.append(e)
                return

    def _receive(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(253 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except TimeoutError:
            return
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % 4])
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        with self.lock:
            self._apply(msg, fds)

    def _apply(self, msg: dict[str, str], fds: array.array[int]) -> None:
        self.messages.append(msg)
        if msg.get("FDSTORE") == "1":
            assert len(fds) == 1, msg
            name = msg.get("FDNAME", "stored")
            if name in self.store:
                os.close(self.store[name])
            self.store[name] = fds[0]
        else:
            assert not fds, msg
            if msg.get("FDSTOREREMOVE") == "1":
                with contextlib.suppress(KeyError):
                    os.close(self.store.pop(msg["FDNAME"]))

    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert not self.errors, self.errors
            with self.lock:
                if cond():
                    return
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.messages}"
            time.sleep(0.01)

    def drain(self) -> None:
        time.sleep(0.2)
        assert not self.errors, self.errors

    def seen(self, key: str, value: str | None = None) -> int:
        return sum(1 for m in self.messages if key in m and (value is None or m[key] == value))

    def listeners(self) -> list[str]:
        return [name for name in self.store if name.startswith("listener/")]

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.store)


def test_restart_under_systemd_keeps_every_program_served(world: World) -> None:
    manager = FakeSystemd(str(world.dir / "notify"))
    try:
        _restart_under_systemd(world, manager)
    finally:
        manager.close()


def _restart_under_systemd(world: World, manager: FakeSystemd) -> None:
    notify = {"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "400000"}
    first = world.daemon("first.log", notify)
    manager.wait_for("READY=1", lambda: manager.seen("READY", "1") == 1)
    ready = next(m for m in manager.messages if m.get("READY") == "1")
    assert "serving 0 program(s)" in ready["STATUS"]
    # It bound the control socket itself: kept in the store for the next start.
    manager.wait_for("the control socket", lambda: "control" in manager.store)

    load = world.launch_load()
    manager.wait_for("the listeners", lambda: len(manager.listeners()) == PROGRAMS)
    assert all(name.startswith("listener/red/") for name in manager.listeners())
    manager.wait_for("pings", lambda: manager.seen("WATCHDOG", "1") >= 2)
    manager.wait_for("STATUS", lambda: any(
        f"serving {PROGRAMS} program(s)" in m.get("STATUS", "") for m in manager.messages
    ))
    time.sleep(0.5)  # the programs are busy opening

    # Stop it. The listeners stay in the store: it leaves at once, without
    # waiting --stop-timeout for its programs, and removes nothing.
    t0 = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(TIMEOUT) == 0, world.log("first.log")
    assert time.monotonic() - t0 < 2.0, world.log("first.log")
    manager.drain()
    assert manager.seen("STOPPING", "1") == 1
    assert manager.seen("FDSTOREREMOVE") == 0
    assert len(manager.listeners()) == PROGRAMS
    # A client connecting meanwhile waits in the backlog of the kept socket.
    waiting = subprocess.Popen(
        [sys.executable, "-m", "unotifyd", "launch", "--daemon", world.sock, "--profile",
         "red", "--", "cat", str(world.src)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        text=True,
    )
    world.procs.append(waiting)
    time.sleep(0.3)  # the programs' calls wait in the kernel

    # Start it again with the store in LISTEN_FDS, as systemd does.
    stored = manager.snapshot()
    names = list(stored)
    fds = [stored[n] for n in names]
    second = world.daemon(
        "second.log", {**notify, "TEST_FDNAMES": ":".join(names)},
        prefix=[*py(LISTEN_EXEC, *map(str, fds)), "--"], pass_fds=fds,
    )
    ready_before = manager.seen("READY", "1")
    manager.wait_for("READY=1 again", lambda: manager.seen("READY", "1") > ready_before)
    assert f"took back {PROGRAMS} running program(s)" in world.log("second.log")

    out, err = waiting.communicate(timeout=TIMEOUT)
    assert (waiting.returncode, out) == (0, "RED\n"), err
    reports = check_load(load)
    # Their calls did wait for the new daemon rather than fail.
    assert max(r["slowest"] for r in reports) > 0.2, reports

    # Finished programs leave the store; the status counts the restored ones.
    manager.wait_for("the store emptied", lambda: not manager.listeners())
    report = world.status()
    assert report["pid"] == second.pid
    assert report["profiles"]["red"]["started"] == PROGRAMS + 1
    assert report["profiles"]["red"]["decisions"]["redirect"] > 0
    assert world.launch().stdout == "RED\n"

    # Reload: RELOADING=1, then READY=1 again.
    reloads = manager.seen("RELOADING", "1")
    second.send_signal(signal.SIGHUP)
    manager.wait_for("RELOADING=1", lambda: manager.seen("RELOADING", "1") > reloads)

    def ready_after_reload() -> bool:
        last = max(i for i, m in enumerate(manager.messages) if "RELOADING" in m)
        return any(m.get("READY") == "1" for m in manager.messages[last:])

    manager.wait_for("READY=1 after the reload", ready_after_reload)

    second.send_signal(signal.SIGTERM)
    assert second.wait(TIMEOUT) == 0, world.log("second.log")


# --- SIGUSR2 ------------------------------------------------------------------------------

_SUCCESSOR = re.compile(r"handing over to a new daemon, pid (\d+)")


def test_sigusr2_hands_everything_to_a_new_daemon(world: World) -> None:
    old = world.daemon("daemon.log")
    wait_until("the socket", lambda: os.path.exists(world.sock))
    load = world.launch_load()
    wait_until("the programs", lambda: world.status()["programs_running"] == PROGRAMS)
    time.sleep(0.5)

    # The old one exits, and only after the new one took over.
    new_pid = world.hand_over(old)
    log = world.log("daemon.log")
    assert f"pid {new_pid} serves {PROGRAMS} program(s) now" in log, log
    assert f"took back {PROGRAMS} running program(s)" in log, log
    # The same config: the programs' filter is still their profile's.
    assert "now needs other calls trapped" not in log, log
    assert not any(p["filter_behind"] for p in world.status()["programs"])

    reports = check_load(load)
    assert sum(r["opens"] for r in reports) > PROGRAMS * 100
    report = world.status()
    assert report["pid"] == new_pid
    assert report["profiles"]["red"]["started"] == PROGRAMS
    assert world.launch().stdout == "RED\n"
    # The control socket is the same one, still at its path.
    assert os.path.exists(world.sock)
    os.kill(new_pid, signal.SIGTERM)
    wait_until("the new daemon to stop", lambda: not os.path.exists(f"/proc/{new_pid}"))


def test_sigusr2_with_a_broken_config_keeps_the_old_daemon(world: World) -> None:
    old = world.daemon("daemon.log")
    wait_until("the socket", lambda: os.path.exists(world.sock))
    load = world.launch_load(2)
    wait_until("the programs", lambda: world.status()["programs_running"] == 2)
    world.config.write_text("version = 1\n[[profile]]\nname = 3\n")

    old.send_signal(signal.SIGUSR2)
    wait_until("the refusal", lambda: "hand-over failed" in world.log("daemon.log"))
    assert old.poll() is None
    check_load(load)
    assert world.status()["pid"] == old.pid
    assert world.launch().stdout == "RED\n"


def tries(setup: str, first: str) -> str:
    """A program that, after ``setup``, tries ``first`` and an open of
    ``argv[1]`` once at the start and once after each line read from stdin,
    printing the errno of each (0: it worked)."""
    return f"""
import os, sys
{setup}
def tries():
    out = []
    for act in (lambda: {first}, lambda: os.close(os.open(sys.argv[1], 0))):
        try:
            act()
            out.append(0)
        except OSError as e:
            out.append(e.errno)
    return out
print(*tries(), flush=True)
for line in sys.stdin:
    print(*tries(), flush=True)
"""


#: Opens ``argv[1]`` to read, then changes its mode through that fd (fchmod).
CHANGE_THROUGH_FD = tries("fd = os.open(sys.argv[1], os.O_RDONLY)", "os.fchmod(fd, 0o600)")


@contextlib.contextmanager
def talking(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``argv`` run with pipes to talk to; killed if still running at the end."""
    prog = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env(), text=True)
    try:
        yield prog
    finally:
        if prog.poll() is None:
            prog.kill()
        prog.wait(TIMEOUT)
        for pipe in (prog.stdin, prog.stdout, prog.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_program_whose_profile_is_gone_may_change_nothing(world: World, mode: str) -> None:
    """A program taken back after its profile left the config is refused every
    call it is trapped for, those on fds it holds too: under its old
    read-only profile a fchmod through an fd of a file in the tree was
    EROFS, and with a deny of every path alone it went through. Whatever
    the profile's mode: the refusal comes before any decision."""
    tree = world.dir / "tree"
    tree.mkdir()
    target = write(tree / "f", "data\n")
    target.chmod(0o644)
    write(world.dir / "ro.toml",
          f'version = 1\nmode = "{mode}"\n[[readonly]]\npath = "{tree}/**"\n')  # fmt: skip
    both = world.config.read_text() + '[[profile]]\nname = "ro"\npolicy = "ro.toml"\nuids = [0]\n'
    world.config.write_text(both)
    argv = ["--", *py(CHANGE_THROUGH_FD, str(target))]

    # Natively the change is made: it is one a profile must stop.
    native = subprocess.run(argv[1:], input="", capture_output=True, text=True,
                            timeout=TIMEOUT, env=env(), check=False)
    assert native.stdout.split() == ["0", "0"], describe(native)
    assert target.stat().st_mode & 0o777 == 0o600
    target.chmod(0o644)

    world.daemon("daemon.log")
    wait_until("the socket", lambda: os.path.exists(world.sock))
    with talking([sys.executable, "-m", "unotifyd", "launch", "--daemon", world.sock,
                  "--profile", "ro", *argv]) as prog:
        _through_the_hand_over(world, prog, target, both)


def _through_the_hand_over(
    world: World, prog: subprocess.Popen[str], target: Path, config: str
) -> None:
    old = world.procs[-1]
    assert prog.stdin is not None and prog.stdout is not None
    # Under its profile: the change is a read-only tree's EROFS, the read is let through.
    assert prog.stdout.readline().split() == [str(errno.EROFS), "0"]

    # Its profile goes, and a new daemon takes it back.
    world.config.write_text(config.split('[[profile]]\nname = "ro"', maxsplit=1)[0])
    world.hand_over(old)
    assert "profile 'ro' is gone from the config" in world.log("daemon.log")

    prog.stdin.write("again\n")
    prog.stdin.flush()
    assert prog.stdout.readline().split() == [str(errno.EACCES), str(errno.EACCES)]
    assert target.stat().st_mode & 0o777 == 0o644
    prog.stdin.close()
    assert prog.wait(TIMEOUT) == 0


#: A stat and an open of ``argv[1]``.
STAT_AND_OPEN = tries("", "os.stat(sys.argv[1])")


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_profile_that_needs_more_than_a_running_programs_filter_is_said_so(
    world: World, mode: str,
) -> None:
    """A filter cannot change under a running program, so a restart that finds
    its profile needing calls trapped that its filter lets through says so:
    the profile went from a read-only tree (opens and changes trapped) to a
    deny of a file in it (stat trapped too). The program taken back has its
    open refused by the new rule, its stat goes unseen, as the log says; a
    program started afresh has both refused. In either mode: neither traps
    stat for a read-only tree alone."""
    tree = world.dir / "tree"
    tree.mkdir()
    secret = write(tree / "secret", "data\n")
    policy = world.dir / "ro.toml"
    first = f'version = 1\nmode = "{mode}"\n[[readonly]]\npath = "{tree}/**"\n'
    write(policy, first)
    config = world.config.read_text() + (
        '[[profile]]\nname = "ro"\npolicy = "ro.toml"\nuids = [0]\n')
    world.config.write_text(config)
    argv = ["--", *py(STAT_AND_OPEN, str(secret))]
    launch = [sys.executable, "-m", "unotifyd", "launch", "--daemon", world.sock,
              "--profile", "ro", *argv]

    # Natively, and under the first profile, the file is there to stat and read.
    native = subprocess.run(argv[1:], input="", capture_output=True, text=True,
                            timeout=TIMEOUT, env=env(), check=False)
    assert native.stdout.split() == ["0", "0"], describe(native)
    world.daemon("daemon.log")
    wait_until("the socket", lambda: os.path.exists(world.sock))
    old = world.procs[-1]
    with talking(launch) as prog:
        # The profile now denies the file.
        denied = first + f'[[deny]]\npath = "{secret}"\nerrno = "EACCES"\n'
        _taken_back_under_more(world, old, prog, policy, denied)
    fresh = subprocess.run(launch, input="", capture_output=True, text=True, timeout=TIMEOUT,
                           env=env(), check=False)
    assert fresh.stdout.split() == [str(errno.EACCES), str(errno.EACCES)], describe(fresh)


def _taken_back_under_more(
    world: World, old: subprocess.Popen[str], prog: subprocess.Popen[str], policy: Path,
    text: str,
) -> None:
    assert prog.stdin is not None and prog.stdout is not None
    assert prog.stdout.readline().split() == ["0", "0"]

    # The profile becomes ``text``; a new daemon takes the program back.
    write(policy, text)
    world.hand_over(old)
    log = world.log("daemon.log")
    said = re.search(r"ro:\d+: profile 'ro' in \S+ now needs other calls trapped or refused "
                     r"than the filter this program started with \(([0-9a-f]{16}), now "
                     r"([0-9a-f]{16})\)", log)
    assert said is not None and said.group(1) != said.group(2), log
    assert "start the program again to give it the profile's filter" in log
    (shown,) = world.status()["programs"]
    assert shown["profile"] == "ro" and shown["filter_behind"] is True, shown
    shown_text = subprocess.run(
        [sys.executable, "-m", "unotifyd", "status", "--daemon", world.sock],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert "(filter behind its profile)" in shown_text.stdout, describe(shown_text)

    prog.stdin.write("again\n")
    prog.stdin.flush()
    assert prog.stdout.readline().split() == ["0", str(errno.EACCES)]
    prog.stdin.close()
    assert prog.wait(TIMEOUT) == 0
