"""``unotifyd``, the command as installed: a front in C where it was built.

setup.py installs ``unotifyd`` as a small C program (the end of
``unotifyd/daemon/launch.c``) that makes a plain ``launch --daemon S
--profile P -- PROG`` itself, so that a launch through the daemon starts no
Python, and execs ``unotifyd-python`` (the console script), installed
beside it, for every other command line. Here the command is the one a user
runs: the venv's, first on ``PATH`` (tests/run puts it there). What must
hold:

- it is the C front wherever the C client could be built (gcc is in both
  README commands), and a shell script that runs ``unotifyd-python`` where
  not;
- every command line means what ``python3 -m unotifyd`` makes of it: same
  output, same exit status, and Python started exactly for those that
  :func:`unotifyd.daemon.quick.parse_daemon_launch` does not take;
- PROG gets the caller's signal dispositions, as natively.

Whether a Python started is seen by a ``sitecustomize`` on ``PYTHONPATH``
that notes each start; its control is checked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from unotifyd.daemon import quick

from .helpers import REPO, TIMEOUT, env, public_dir, write

pytestmark = pytest.mark.kernel

ELF = b"\x7fELF"
HOSTNAME = Path("/etc/hostname").read_text()


@dataclass(frozen=True)
class World:
    command: str  # the unotifyd on PATH
    socket: str  # a daemon's, whose profile "red" redirects src to /etc/hostname
    src: str
    marks: Path  # sitecustomize appends a line here for each Python started
    pythonpath: Path  # the directory of that sitecustomize


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    command = shutil.which("unotifyd")
    assert command, "no unotifyd on PATH (tests/run puts its venv's bin first)"
    assert os.access(quick.COMPILED_CLIENT, os.X_OK), f"{quick.COMPILED_CLIENT} was not built"
    with open(command, "rb") as f:
        assert f.read(4) == ELF, (
            f"{command} is not the C front, though the C client was built: "
            "reinstall (pip install -e .) so that setup.py installs it"
        )
    with public_dir("unotifyd-front-") as d:
        src = write(d / "src.txt", "ORIGINAL\n")
        write(d / "red.toml", f'version = 1\n[[redirect]]\nfrom = "{src}"\nto = "/etc/hostname"\n')
        config = write(
            d / "unotifyd.toml",
            'version = 1\n\n[[profile]]\nname = "red"\npolicy = "red.toml"\nuids = [0]\n',
        )
        write(d / "py" / "sitecustomize.py",
              "import os\n"
              "with open(os.environ['UNOTIFYD_TEST_MARKS'], 'a') as f:\n"
              "    f.write(f'{os.getpid()}\\n')\n")  # fmt: skip
        sock = str(d / "unotifyd.sock")
        with open(d / "daemon.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "unotifyd", "serve", "--socket", sock, "--config",
                 str(config), "--stop-timeout", "1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env(),
            )  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT
            while not os.path.exists(sock):
                assert proc.poll() is None, (d / "daemon.log").read_text()
                assert time.monotonic() < deadline, "the daemon did not create its socket"
                time.sleep(0.02)
            yield World(command, sock, str(src), d / "marks", d / "py")
        finally:
            proc.kill()
            proc.wait(TIMEOUT)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    pythons: int  # how many Pythons started

    def answer(self) -> tuple[int, bytes, bytes]:
        return self.returncode, self.stdout, self.stderr


def run(world: World, argv: list[str], restore_signals: bool = True) -> Run:
    """``argv`` with the marking sitecustomize on PYTHONPATH."""
    world.marks.unlink(missing_ok=True)
    e = env({"UNOTIFYD_TEST_MARKS": str(world.marks)})
    e["PYTHONPATH"] = f"{world.pythonpath}{os.pathsep}{e['PYTHONPATH']}"
    proc = subprocess.run(
        argv, env=e, capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT,
        restore_signals=restore_signals, check=False,
    )  # fmt: skip
    marks = world.marks.read_text().split() if world.marks.exists() else []
    return Run(proc.returncode, proc.stdout, proc.stderr, len(marks))


def test_a_launch_through_the_daemon_starts_no_python(world: World) -> None:
    # The control: a Python started is seen (the Python client's launch).
    python = run(world, [sys.executable, "-m", "unotifyd", "launch", "--daemon", world.socket,
                         "--profile", "red", "--", "cat", world.src])  # fmt: skip
    assert python.answer() == (0, HOSTNAME.encode(), b""), python
    assert python.pythons == 1
    front = run(world, [world.command, "launch", "--daemon", world.socket, "--profile", "red",
                        "--", "cat", world.src])  # fmt: skip
    assert front.answer() == (0, HOSTNAME.encode(), b""), front
    assert front.pythons == 0


# Each command line, {sock} and {src} filled in: the front and `python3 -m
# unotifyd` must answer it alike; the front runs Python exactly when
# quick.parse_daemon_launch does not take it.
_LINES: list[tuple[str, list[str]]] = [
    ("plain", ["launch", "--daemon", "{sock}", "--profile", "red", "--", "cat", "{src}"]),
    ("with =", ["launch", "--daemon={sock}", "--profile=red", "cat", "{src}"]),
    ("profile first", ["launch", "--profile", "red", "--daemon", "{sock}", "cat", "{src}"]),
    ("PROG's options", ["launch", "--daemon", "{sock}", "--profile", "red", "--", "cat", "-A",
                        "{src}"]),
    ("PROG fails", ["launch", "--daemon", "{sock}", "--profile", "red", "--", "false"]),
    ("no such PROG", ["launch", "--daemon", "{sock}", "--profile", "red", "--", "/no/such"]),
    ("unknown profile", ["launch", "--daemon", "{sock}", "--profile", "blue", "--", "true"]),
    ("no daemon", ["launch", "--daemon", "{src}.sock", "--profile", "red", "--", "true"]),
    # Not an abstract socket (a NUL first), which anyone may bind: EINVAL.
    ("an empty socket path", ["launch", "--daemon=", "--profile", "red", "--", "true"]),
    # Not taken: argparse decides.
    ("an abbreviation", ["launch", "--daem", "{sock}", "--profile", "red", "--", "cat", "{src}"]),
    ("no profile", ["launch", "--daemon", "{sock}", "--", "true"]),
    ("no PROG", ["launch", "--daemon", "{sock}", "--profile", "red", "--"]),
    ("twice", ["launch", "--daemon", "{sock}", "--daemon", "{sock}", "--profile", "red",
               "true"]),
    ("a value like an option", ["launch", "--daemon", "{sock}", "--profile", "-r", "true"]),
    ("another option", ["launch", "--daemon", "{sock}", "--profile", "red", "--enforce",
                        "true"]),
    ("the client's option", ["launch", "--daemon", "{sock}", "--profile", "red",
                             "--reset-signals", "true"]),
    ("help", ["launch", "--daemon", "{sock}", "--profile", "red", "--help"]),
    ("no command", []),
    ("another command", ["serve", "--help"]),
    ("launch elsewhere", ["--version", "launch", "--daemon", "{sock}", "--profile", "red",
                          "true"]),
    ("a standalone launch", ["launch", "--redirect", "{src}=/etc/hostname", "--", "cat",
                             "{src}"]),
]  # fmt: skip


@pytest.mark.parametrize("line", [line for _, line in _LINES], ids=[name for name, _ in _LINES])
def test_the_front_answers_every_command_line_as_python_does(world: World, line: list[str]) -> None:
    argv = [arg.format(sock=world.socket, src=world.src) for arg in line]
    front = run(world, [world.command, *argv])
    python = run(world, [sys.executable, "-m", "unotifyd", *argv])
    assert front.answer() == python.answer(), (front, python)
    taken = quick.parse_daemon_launch(argv) is not None
    assert front.pythons == (0 if taken else 1), front


def test_every_line_of_the_table_is_meant() -> None:
    """The table holds both kinds, so the test above could fail either way."""
    taken = [quick.parse_daemon_launch(line) is not None for _, line in _LINES]
    assert taken.count(True) == 9 and taken.count(False) == len(_LINES) - 9


def test_prog_keeps_the_callers_ignored_signals(world: World) -> None:
    """A parent that ignores SIGPIPE (this test's Python, restore_signals=False)
    passes that on to what it runs natively; through the front too (there is
    no Python between to undo it)."""
    status = ["grep", "SigIgn", "/proc/self/status"]
    native = subprocess.run(status, capture_output=True, restore_signals=False, check=True)
    ignored = int(native.stdout.split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1)), native.stdout  # the control
    front = run(world, [world.command, "launch", "--daemon", world.socket, "--profile", "red",
                        "--", *status], restore_signals=False)  # fmt: skip
    assert front.answer() == (0, native.stdout, b""), front


def test_a_message_to_a_closed_pipe_ends_in_125_as_from_python(world: World) -> None:
    """With stderr a pipe no one reads, the front's own message (no daemon
    there) ends it with 125, as Python's (which ignores SIGPIPE), not by the
    signal: the front ignores SIGPIPE until it gives it back to PROG."""
    r, w = os.pipe()
    os.close(r)
    try:
        def status(argv: list[str]) -> int:
            return subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w, env=env(),
                timeout=TIMEOUT, check=False,
            ).returncode  # fmt: skip

        # The control: a program that writes there dies of SIGPIPE.
        assert status(["cat", world.src + ".missing"]) == -signal.SIGPIPE
        line = ["launch", "--daemon", world.src + ".sock", "--profile", "red", "--", "true"]
        assert status([world.command, *line]) == 125
        assert status([sys.executable, "-m", "unotifyd", *line]) == 125
    finally:
        os.close(w)


def test_the_front_finds_its_script_through_a_link(world: World) -> None:
    """The README links /usr/local/bin/unotifyd to the venv's: the script is
    found beside the link's target, not beside the link."""
    with public_dir("unotifyd-front-link-") as d:
        link = d / "unotifyd"
        link.symlink_to(world.command)
        version = run(world, [str(link), "--version"])
        assert version.answer() == (0, b"unotifyd 0.1.0\n", b"") and version.pythons == 1
        alone = d / "alone"
        shutil.copy(world.command, alone)  # a front without its script
        missing = run(world, [str(alone), "--version"])
    assert missing.answer() == (
        125, b"", f"unotifyd: cannot run {d}/unotifyd-python: No such file or directory\n".encode()
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="unmounting /proc needs CAP_SYS_ADMIN")
def test_the_front_finds_its_script_without_proc(world: World) -> None:
    """Where /proc is not mounted (a minimal container), /proc/self/exe is
    not there: the front finds itself by the name it was executed by
    (AT_EXECFN), through the link."""
    with public_dir("unotifyd-front-noproc-") as d:
        link = d / "unotifyd"
        link.symlink_to(world.command)
        script = f"umount -l /proc && ! test -e /proc/self/exe && exec {link} --version"
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            capture_output=True, text=True, env=env(), timeout=TIMEOUT, check=False,
        )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "unotifyd 0.1.0\n", ""), proc


def test_without_a_compiler_the_command_runs_the_python_one(tmp_path: Path) -> None:
    """setup.py's build where C cannot be compiled (CC=false): ``unotifyd`` is
    the shell script unotifyd/daemon/unotifyd, which runs ``unotifyd-python``
    beside its target (here the venv's, through a link); with the compiler,
    the front."""
    built = {}
    for name, cc in ("without", "false"), ("with", os.environ.get("CC", "cc")):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out / "lib"),
             "--build-temp", str(out / "temp"), "build_scripts", "--build-dir",
             str(out / "scripts")],
            cwd=REPO, env={**os.environ, "CC": cc}, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(out / "scripts") == ["unotifyd"]
        built[name] = out / "scripts" / "unotifyd"
    assert built["with"].read_bytes().startswith(ELF)
    script = built["without"]
    assert script.read_bytes() == (REPO / "unotifyd" / "daemon" / "unotifyd").read_bytes()
    python = Path(shutil.which("unotifyd-python") or "unotifyd-python")
    (script.parent / "unotifyd-python").symlink_to(python)
    link = tmp_path / "link"
    link.symlink_to(script)
    for way in script, link:
        version = subprocess.run([str(way), "--version"], capture_output=True, check=False)
        assert (version.returncode, version.stdout, version.stderr) == (
            0, b"unotifyd 0.1.0\n", b""
        )  # fmt: skip
