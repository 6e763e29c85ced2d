"""Helpers of the reliability suite: C/Go builds, a daemon, /proc sampling, figures.

Builds on :mod:`tests.integration.helpers` (environment, launch command
lines, timeouts). Every process a test starts is put in a session of its
own and tracked by :class:`Procs`, which kills the whole process group at
teardown, so a test that fails half-way leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from ..integration.helpers import TIMEOUT, describe, env, launch_cmd, write

__all__ = [
    "NOBODY",
    "PROGS",
    "TIMEOUT",
    "Daemon",
    "Procs",
    "Report",
    "build_c",
    "descendants",
    "describe",
    "env",
    "fd_count",
    "fd_targets",
    "kv",
    "launch_cmd",
    "listener_holders",
    "public_dir",
    "read_line",
    "rss_kb",
    "start_daemon",
    "write",
]

#: Sources of the C and Go programs the tests build.
PROGS = Path(__file__).resolve().parent / "progs"
NOBODY = 65534
#: What /proc/PID/fd/N links to for a seccomp listener (kernel/seccomp.c).
LISTENER_LINK = "anon_inode:seccomp notify"

_RESULTS_KEY = pytest.StashKey[list[str]]()


class Report:
    """Prints a test's figures as ``RESULT name: k=v ...`` lines.

    Each line goes to the terminal at once (even under output capture) and
    again in a summary at the end of the run, so that ``.ci/run`` shows them.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __call__(self, name: str, **figures: object) -> str:
        text = " ".join(f"{k}={v}" for k, v in figures.items())
        line = f"RESULT {name}: {text}"
        self._config.stash.setdefault(_RESULTS_KEY, []).append(line)
        capman = self._config.pluginmanager.getplugin("capturemanager")
        cm = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with cm:
            sys.stdout.write(f"\n{line}\n")
            sys.stdout.flush()
        return line


def collected_results(config: pytest.Config) -> list[str]:
    return config.stash.get(_RESULTS_KEY, [])


#: How a race runs under ``--enforce``: answered by the compiled lane where
#: it may (the default), or by Python alone. Both must hold the line.
SERVING = ("lane", "python")


def serving_env(serving: str) -> dict[str, str]:
    """The launch environment for one of :data:`SERVING`."""
    return env({"UNOTIFYD_PASSTHROUGH": "0"} if serving == "python" else None)


def lane_answered(stderr: str) -> int:
    """How many calls the pass-through lane answered, by ``--stats`` (0 if none)."""
    found = re.search(r"(\d+) answered by the pass-through lane", stderr)
    return int(found.group(1)) if found else 0


def check_served(serving: str, proc: subprocess.CompletedProcess[str]) -> int:
    """How many calls the lane answered, by ``--stats``; and the control: the
    way asked for really served (the lane is built wherever the tests run:
    the README's test command installs gcc)."""
    assert re.search(r"\(\d+ gone, 0 internal errors\)", proc.stderr), describe(proc)
    answered = lane_answered(proc.stderr)
    if serving == "lane":
        assert answered > 1000, describe(proc)
    else:
        assert answered == 0, describe(proc)
    return answered


def without_stats(stderr: str) -> str:
    """``stderr`` without the ``--stats`` lines (which count "internal errors")."""
    return "".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith("unotifyd: stats:")
    )


def kv(line: str) -> dict[str, str]:
    """``a=1 b=x`` -> {"a": "1", "b": "x"}."""
    out = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    return out


# --- Processes ---------------------------------------------------------------------


@dataclass
class Procs:
    """Starts processes in sessions of their own; kills every group at the end."""

    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("env", env())
        kw.setdefault("text", True)
        kw.setdefault("start_new_session", True)
        p: subprocess.Popen[str] = subprocess.Popen(list(argv), **kw)
        self.started.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        for p in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(TIMEOUT)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()


_readers: weakref.WeakKeyDictionary[subprocess.Popen[str], queue.Queue[str]] = (
    weakref.WeakKeyDictionary()
)


def _pump(stream: IO[str], q: queue.Queue[str]) -> None:
    for line in stream:
        q.put(line)
    q.put("")


def read_line(p: subprocess.Popen[str], timeout: float = TIMEOUT) -> str:
    """The next line of ``p``'s stdout ("" at EOF), or fail after ``timeout`` seconds.

    A thread per process reads its stdout, so that lines that arrived
    together are not stuck in a buffer that ``select`` cannot see.
    """
    assert p.stdout is not None
    # Keyed by the object itself, not id(p): an id is reused once p is freed,
    # and a later process would read the old one's leftover EOF.
    q = _readers.get(p)
    if q is None:
        q = _readers[p] = queue.Queue()
        threading.Thread(target=_pump, args=(p.stdout, q), daemon=True).start()
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line from pid {p.pid} within {timeout}s") from None


def fd_targets(pid: int) -> list[str]:
    """What each fd of ``pid`` points to (fds closed meanwhile are skipped)."""
    out = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (through /proc/PID/task/TID/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def listener_holders(pids: Sequence[int]) -> dict[int, int]:
    """{pid: how many seccomp listener fds it holds} for those of ``pids`` that hold one."""
    holders = {}
    for pid in pids:
        n = sum(1 for t in fd_targets(pid) if t == LISTENER_LINK)
        if n:
            holders[pid] = n
    return holders


@contextlib.contextmanager
def public_dir(prefix: str, parent: str | None = None) -> Iterator[Path]:
    """A temporary directory that any user may enter (pytest's tmp_path is 0700),
    in ``parent`` (default: the system's temporary directory)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def setuid_capable_dir() -> str:
    """A world-writable temporary directory whose file system honours setuid bits.

    Debian 13 mounts /tmp as a tmpfs with ``nosuid`` (systemd's tmp.mount),
    where a setuid binary runs with the caller's ids (mount(8)): a test of
    what setuid gains must put its binary elsewhere.
    """
    for candidate in (tempfile.gettempdir(), "/var/tmp"):
        if os.path.isdir(candidate) and not os.statvfs(candidate).f_flag & os.ST_NOSUID:
            return candidate
    raise AssertionError("no temporary directory without nosuid (tried /tmp and /var/tmp)")


# --- Builds ------------------------------------------------------------------------


def build_c(out_dir: Path, name: str, *extra: str) -> Path:
    """Compile ``progs/NAME.c`` into ``out_dir`` (once per session) and return the binary."""
    exe = out_dir / name
    if not exe.exists():
        proc = subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(exe),
             str(PROGS / f"{name}.c"), *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, f"gcc {name}.c failed:\n{proc.stderr}"
    return exe


# --- The daemon --------------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    socket: str
    dir: Path
    procs: Procs

    def launch_argv(self, profile: str, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "unotifyd", "launch", "--daemon", self.socket,
                "--profile", profile, "--", *argv]

    def popen(self, profile: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        """Start ``argv`` under ``profile``; the process *is* the program (exec in place)."""
        return self.procs.popen(self.launch_argv(profile, argv), **kw)

    def run(self, profile: str, argv: Sequence[str], timeout: float = TIMEOUT,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        p = self.popen(profile, argv, **kw)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "unotifyd", "status", "--json", "--daemon", self.socket],
            text=True, capture_output=True, timeout=TIMEOUT, check=False, env=env(),
        )
        assert proc.returncode == 0, describe(proc)
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    def wait_idle(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            report = self.status()
            if report["programs_running"] == 0:
                return report
            assert time.monotonic() < deadline, f"programs still served: {report}"
            time.sleep(0.05)

    def fds(self) -> int:
        return fd_count(self.proc.pid)

    def settled_fds(self, quiet: float = 0.5, timeout: float = TIMEOUT) -> int:
        """The daemon's fd count once it stayed the same for ``quiet`` seconds.

        A baseline taken right after start-up can catch the daemon before it
        opened its steady set (trio's epoll and wake-up sockets): 4 once,
        against 9-10 a moment later.
        """
        deadline = time.monotonic() + timeout
        last, since = self.fds(), time.monotonic()
        while time.monotonic() - since < quiet:
            assert time.monotonic() < deadline, f"fd count never settled (last {last})"
            time.sleep(0.05)
            now = self.fds()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def start_daemon(
    procs: Procs, policies: Mapping[str, str], *, uids: str = "[0]", stop_timeout: float = 1
) -> Iterator[Daemon]:
    """Run ``unotifyd serve`` with one profile per ``policies`` entry (name -> policy TOML)."""
    with public_dir("unotifyd-rel-") as d:
        config = "version = 1\n"
        for name, text in policies.items():
            write(d / f"{name}.toml", text)
            config += f'\n[[profile]]\nname = "{name}"\npolicy = "{name}.toml"\nuids = {uids}\n'
        write(d / "unotifyd.toml", config)
        sock = str(d / "unotifyd.sock")
        with open(d / "daemon.log", "w") as log:
            proc = procs.popen(
                [sys.executable, "-m", "unotifyd", "serve", "--socket", sock, "--config",
                 str(d / "unotifyd.toml"), "--stop-timeout", str(stop_timeout)],
                stdout=log, stderr=log,
            )
        daemon = Daemon(proc, sock, d, procs)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not os.path.exists(sock):
                assert proc.poll() is None, f"the daemon exited: {daemon.log()}"
                assert time.monotonic() < deadline, "the daemon did not create its socket"
                time.sleep(0.02)
            yield daemon
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(TIMEOUT)
