"""``unotifyd serve`` on the real kernel, driven through its command line and socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from unotifyd.calls.registry import trapped
from unotifyd.daemon.protocol import (
    MAX_FRAME,
    Abort,
    Ack,
    Direction,
    ErrorReply,
    FilterReply,
    HandOver,
    LaunchRequest,
    Message,
    StatusRequest,
    decode_record,
    encode,
)
from unotifyd.daemon.server import (
    MAX_CONVERSATIONS,
    MAX_CONVERSATIONS_PER_UID,
    MAX_PROGRAMS_PER_UID,
)
from unotifyd.policy.config import parse_policy

from ..security.support import NO_CAPS
from .helpers import (
    AS_NOBODY,
    ATTEMPT,
    PYTHON_CLIENT,
    SYSTEM_PYTHON,
    TIMEOUT,
    describe,
    env,
    env_for_copy,
    importable_copy,
    kernel_refuses_rights,
    locale_free_env,
    py,
    run_native,
    write,
)

pytestmark = pytest.mark.kernel

NOBODY = 65534
#: Whether the daemon's connections refuse fds before the hand-over here.
_REFUSES_RIGHTS = kernel_refuses_rights()


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    socket: str
    config: Path
    dir: Path
    src: Path  # redirected to red.txt by profile "red", to blue.txt by "blue"

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "unotifyd", *args]

    def launch_cmd(
        self, profile: str, argv: Sequence[str], python: str = sys.executable, client: str = "cli"
    ) -> list[str]:
        """``unotifyd launch --daemon`` (client "cli": the C client where it
        was built), or the Python client alone (client "python")."""
        if client == "python":
            return [python, "-c", PYTHON_CLIENT, self.socket, profile, *argv]
        return [python, "-m", "unotifyd", "launch", "--daemon", self.socket,
                "--profile", profile, "--", *argv]  # fmt: skip

    def launch(
        self, profile: str, argv: Sequence[str], python: str = sys.executable,
        client: str = "cli", **kw: Any,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("capture_output", True)
        kw.setdefault("env", env())
        return subprocess.run(
            self.launch_cmd(profile, argv, python, client),
            text=True, timeout=TIMEOUT, check=False, **kw,
        )

    def popen(
        self, profile: str, argv: Sequence[str], client: str = "cli", **kw: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.launch_cmd(profile, argv, client=client),
            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env(), **kw,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cmd(*args, "--daemon", self.socket), text=True, capture_output=True,
            timeout=TIMEOUT, check=False, env=env(),
        )

    def status(self) -> dict[str, Any]:
        proc = self.run("status", "--json")
        assert proc.returncode == 0, describe(proc)
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    def wait_idle(self) -> dict[str, Any]:
        """The status once no program is served any more."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            report = self.status()
            if report["programs_running"] == 0 or time.monotonic() > deadline:
                return report
            time.sleep(0.05)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def fd_names(self) -> list[str]:
        """What each of the daemon's fds is (for a failure's message)."""
        names = []
        for fd in sorted(os.listdir(f"/proc/{self.proc.pid}/fd"), key=int):
            try:
                names.append(f"{fd}:{os.readlink(f'/proc/{self.proc.pid}/fd/{fd}')}")
            except OSError:
                names.append(f"{fd}:?")  # closed meanwhile
        return names

    def log(self) -> str:
        """The daemon's stderr so far (it goes to a file)."""
        return (self.dir / "daemon.log").read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None


def _policy(path: Path, src: Path, target: Path) -> Path:
    return write(path, f'version = 1\n[[redirect]]\nfrom = "{src}"\nto = "{target}"\n')


def _config(d: Path, profiles: dict[str, str], uids: str = "[0]") -> str:
    text = "version = 1\n"
    for name, policy in profiles.items():
        text += f'\n[[profile]]\nname = "{name}"\npolicy = "{policy}"\nuids = {uids}\n'
    return text


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    # Not in tmp_path: pytest makes that 0700, and a test runs a client as
    # `nobody`, which must reach the socket.
    d = Path(tempfile.mkdtemp(prefix="unotifyd-test-"))
    d.chmod(0o755)
    src = write(d / "src.txt", "ORIGINAL\n")
    write(d / "red.txt", "RED\n")
    write(d / "blue.txt", "BLUE\n")
    _policy(d / "red.toml", src, d / "red.txt")
    _policy(d / "blue.toml", src, d / "blue.txt")
    config = write(d / "unotifyd.toml", _config(d, {"red": "red.toml", "blue": "blue.toml"}))
    sock = str(d / "unotifyd.sock")
    with open(d / "daemon.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unotifyd", "serve", "--socket", sock, "--config",
             str(config), "--stop-timeout", "1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env(), text=True,
        )
    daemon = Daemon(proc, sock, config, d, src)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(sock):
            assert proc.poll() is None, f"the daemon exited: {daemon.log()}"
            assert time.monotonic() < deadline, "the daemon did not create its socket"
            time.sleep(0.02)
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["cli", "python"])
def client(request: pytest.FixtureRequest) -> str:
    """Which client launches: ``unotifyd launch --daemon`` (which runs the C
    client, test_daemon_clients.py checks it was built), or the Python one."""
    value: str = request.param
    return value


def converse(path: str, *msgs: Message | bytes, fds: Sequence[int] = ()) -> list[Message | None]:
    """Send each of ``msgs`` (raw bytes as they are) and read a reply after each.

    ``fds`` go with the last message. None stands for "connection closed".
    """
    replies: list[Message | None] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        for i, msg in enumerate(msgs):
            data = msg if isinstance(msg, bytes) else encode(msg)
            if i == len(msgs) - 1 and fds:
                socket.send_fds(s, [data], list(fds))
            else:
                s.send(data)
            record = s.recv(MAX_FRAME)
            replies.append(decode_record(record, Direction.REPLY) if record else None)
            if record == b"":
                break
    return replies


# --- The fast path ----------------------------------------------------------------


def test_launch_through_the_daemon_redirects_and_keeps_pid_and_status(
    daemon: Daemon, client: str
) -> None:
    code = "import os, sys; print(os.getpid()); print(open(sys.argv[1]).read(), end=''); " \
           "sys.exit(7)"
    proc = daemon.popen("red", [sys.executable, "-c", code, str(daemon.src)], client=client)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 7, err
    pid, content = out.split("\n", 1)
    assert int(pid) == proc.pid  # exec'd in place: the client's own pid
    assert content == "RED\n"


def test_each_profile_has_its_own_view(daemon: Daemon, client: str) -> None:
    red = daemon.launch("red", ["cat", str(daemon.src)], client=client)
    blue = daemon.launch("blue", ["cat", str(daemon.src)], client=client)
    assert (red.returncode, red.stdout) == (0, "RED\n"), describe(red)
    assert (blue.returncode, blue.stdout) == (0, "BLUE\n"), describe(blue)


def test_killed_by_a_signal_and_not_found(daemon: Daemon, client: str) -> None:
    killed = daemon.launch("red", ["sh", "-c", "kill -TERM $$"], client=client)
    assert killed.returncode == -signal.SIGTERM, describe(killed)
    missing = daemon.launch("red", ["/nonexistent/prog"], client=client)
    assert missing.returncode == 127, describe(missing)


def test_64_programs_at_once_on_two_profiles(daemon: Daemon) -> None:
    # Each program opens its redirected file many times while all the
    # others run, then prints what it read.
    code = ATTEMPT + """
import sys, time
results = set()
for _ in range(50):
    results.add(attempt(sys.argv[1], os.O_RDONLY))
    time.sleep(0.002)
print(*sorted(results), end="")
"""
    procs = []
    for i in range(64):
        profile = "red" if i % 2 else "blue"
        procs.append((profile, daemon.popen(profile, py(code, str(daemon.src)))))
    peak = daemon.status()["programs_running"]
    for profile, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out == ("RED\n" if profile == "red" else "BLUE\n"), (profile, out, err)
    report = daemon.wait_idle()
    assert peak > 1  # they did overlap
    assert report["profiles"]["red"]["started"] == 32
    assert report["profiles"]["blue"]["started"] == 32
    assert report["profiles"]["red"]["decisions"]["redirect"] >= 32 * 50
    assert report["programs_running"] == 0
    assert daemon.alive()


def test_status_counts_programs_and_refusals(daemon: Daemon) -> None:
    for _ in range(3):
        assert daemon.launch("red", ["cat", str(daemon.src)]).stdout == "RED\n"
    assert daemon.launch("nope", ["true"]).returncode == 125
    report = daemon.wait_idle()
    red = report["profiles"]["red"]
    assert (red["started"], red["running"]) == (3, 0)
    assert red["decisions"]["redirect"] == 3
    assert red["notifications"] >= 3
    assert report["profiles"]["blue"]["started"] == 0
    assert report["refusals"] == {"unknown-profile": 1}
    assert report["programs_finished"] == 3
    assert report["uptime"] > 0
    text = daemon.run("status")
    assert text.returncode == 0, describe(text)
    assert "programs: 0 running, 3 finished" in text.stdout
    assert any(line.split()[:3] == ["red", "0", "3"] for line in text.stdout.splitlines())


def test_status_lists_a_running_program(daemon: Daemon) -> None:
    proc = daemon.popen("blue", ["sleep", "30"])
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (programs := daemon.status()["programs"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert programs[0]["name"] == f"blue:{proc.pid}"
        assert programs[0]["command"] == "sleep"
        # The filter it was handed is its profile's (see test_restart).
        assert programs[0]["filter_behind"] is False
    finally:
        proc.kill()
        proc.communicate()
    assert daemon.wait_idle()["programs_running"] == 0


# --- Refusals ---------------------------------------------------------------------


def test_unknown_profile_is_refused(daemon: Daemon, client: str) -> None:
    proc = daemon.launch("green", ["echo", "ran"], client=client)
    assert proc.returncode == 125, describe(proc)
    assert proc.stdout == ""
    assert "unknown profile 'green' (you may use: red, blue)" in proc.stderr


@pytest.fixture(scope="module")
def as_nobody() -> Iterator[dict[str, Any]]:
    """How to run ``python -m unotifyd`` as nobody: the system Python on a
    world-readable copy (the clone and its venv may sit in /root, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="unotifyd-nobody-"))
    try:
        d.chmod(0o755)
        copy = importable_copy(d / "site")
        yield {"python": SYSTEM_PYTHON, "user": NOBODY, "group": NOBODY, "extra_groups": [],
               "cwd": "/", "env": env_for_copy(copy)}  # fmt: skip
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_an_unauthorized_uid_is_refused(
    daemon: Daemon, client: str, as_nobody: dict[str, Any]
) -> None:
    proc = daemon.launch("red", ["echo", "ran"], **as_nobody, client=client)
    assert proc.returncode == 125, describe(proc)
    assert proc.stdout == ""
    assert f"uid {NOBODY} is not allowed to use this daemon" in proc.stderr
    # status and reload are for admins only.
    status = subprocess.run(
        [SYSTEM_PYTHON, "-m", "unotifyd", "status", "--daemon", daemon.socket], user=NOBODY,
        group=NOBODY, extra_groups=[], cwd="/", env=as_nobody["env"], capture_output=True,
        text=True, timeout=TIMEOUT, check=False,
    )
    assert status.returncode == 1
    assert "not allowed" in status.stderr
    assert daemon.status()["refusals"] == {"unauthorized": 2}


def test_a_uid_allowed_one_profile_may_not_use_another(
    daemon: Daemon, client: str, as_nobody: dict[str, Any]
) -> None:
    text = daemon.config.read_text().replace(
        'name = "blue"\npolicy = "blue.toml"\nuids = [0]', f'name = "blue"\npolicy = '
        f'"blue.toml"\nuids = [0, {NOBODY}]'
    )
    daemon.config.write_text(text)
    assert daemon.run("reload").returncode == 0
    red = daemon.launch("red", ["cat", str(daemon.src)], **as_nobody, client=client)
    assert red.returncode == 125
    assert f"uid {NOBODY} may not use profile 'red'" in red.stderr
    blue = daemon.launch("blue", ["cat", str(daemon.src)], **as_nobody, client=client)
    assert (blue.returncode, blue.stdout) == (0, "BLUE\n"), describe(blue)


def test_bad_clients_get_errors_and_leak_nothing(daemon: Daemon) -> None:
    r, w = os.pipe()
    try:
        baseline = daemon.open_fds()
        cases: list[tuple[tuple[Message | bytes, ...], Sequence[int], str]] = [
            ((b"garbage",), (), "too-large"),  # "garb" read as a length
            ((b"\x00\x00\x00\x07garbage",), (), "bad-message"),
            ((b"\x00\x00\x00\x05{}",), (), "bad-message"),
            ((b"\x00\x01\x00\x00" + b"x" * 4000,), (), "too-large"),
            ((b"x" * 5000,), (), "too-large"),
            ((encode(HandOver()),), (), "bad-message"),
            # Where the kernel lets the daemon refuse fds before the hand-over
            # (SO_PASSRIGHTS), the client's sendmsg fails instead.
            *(() if _REFUSES_RIGHTS else (
                ((StatusRequest(),), (r, w), "bad-fds"),
                ((StatusRequest(),), (r,) * 6, "bad-fds"),
            )),
            ((LaunchRequest("red", "x"), HandOver()), (r,) * 6, "bad-fds"),
            ((LaunchRequest("red", "x"), HandOver()), (r,), "not-a-listener"),
            ((LaunchRequest("red", "x"), HandOver()), (), "bad-fds"),
            ((LaunchRequest("red", "x"), HandOver()), (r, w), "bad-fds"),
            ((LaunchRequest("red", "x"), StatusRequest()), (), "bad-message"),
            # strerror() of it raised OverflowError, which ended the daemon.
            ((LaunchRequest("red", "x"), encode(Abort(2**31))), (), "bad-message"),
        ]
        if _REFUSES_RIGHTS:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(daemon.socket)
                with pytest.raises(PermissionError):
                    socket.send_fds(s, [encode(StatusRequest())], [r, w])
        # 72 rounds of 12 or 14 bad conversations and 2 vanishing clients.
        for _ in range(72):
            for msgs, fds, code in cases:
                replies = converse(daemon.socket, *msgs, fds=fds)
                last = replies[-1]
                assert isinstance(last, ErrorReply), (msgs, replies)
                assert last.code == code, (msgs, last)
                if len(msgs) > 1:
                    assert isinstance(replies[0], FilterReply)
            # Clients that vanish mid-conversation: before and after the filter.
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(daemon.socket)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(daemon.socket)
                s.send(encode(LaunchRequest("red", "x")))
                assert isinstance(decode_record(s.recv(MAX_FRAME), Direction.REPLY), FilterReply)
        assert daemon.alive()
        ok = daemon.launch("red", ["cat", str(daemon.src)])
        assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)
        daemon.wait_idle()
        deadline = time.monotonic() + TIMEOUT
        while daemon.open_fds() != baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.open_fds() == baseline, os.listdir(f"/proc/{daemon.proc.pid}/fd")
    finally:
        os.close(r)
        os.close(w)
    assert "refused (not-a-listener)" in daemon.log()


def test_a_program_whose_name_is_not_utf8(daemon: Daemon, client: str) -> None:
    """Its name travels as os.fsdecode makes it (lone surrogates): naming its
    listener for a successor raised UnicodeEncodeError, which ended the
    daemon and every user's service."""
    prog = daemon.dir / os.fsdecode(b"cat-\xff")
    shutil.copy("/usr/bin/cat", prog)
    native = run_native([str(prog), str(daemon.src)])
    assert (native.returncode, native.stdout) == (0, "ORIGINAL\n"), describe(native)
    proc = daemon.launch("red", [str(prog), str(daemon.src)], client=client)
    assert (proc.returncode, proc.stdout) == (0, "RED\n"), describe(proc)
    assert daemon.alive(), daemon.log()
    ok = daemon.launch("blue", ["cat", str(daemon.src)])
    assert (ok.returncode, ok.stdout) == (0, "BLUE\n"), describe(ok)


#: A child that installs a filter trapping getppid only (which it never
#: calls), sends its listener on the socket whose fd is its argument and
#: sleeps until killed.
_LISTENER_CHILD = """
import ctypes, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
prog = [(0x20, 0, 0, 0), (0x15, 0, 1, 110), (0x06, 0, 0, 0x7FC00000), (0x06, 0, 0, 0x7FFF0000)]
code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(code)))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
fd = libc.syscall(317, 1, 1 << 3, fprog)  # seccomp(SET_MODE_FILTER, NEW_LISTENER)
assert fd >= 0, ctypes.get_errno()
socket.send_fds(socket.socket(fileno=int(sys.argv[1])), [b"l"], [fd])
time.sleep(3600)
"""


def test_one_uid_may_not_take_every_program_slot(
    daemon: Daemon, as_nobody: dict[str, Any]
) -> None:
    """One listener handed over again and again (a program each time): the
    uid is told busy at MAX_PROGRAMS_PER_UID, another uid is still served,
    and the daemon gives back every fd once the listener's process ends."""
    daemon.config.write_text(_config(daemon.dir, {"red": "red.toml"}, uids=f"[0, {NOBODY}]"))
    assert daemon.run("reload").returncode == 0
    baseline = daemon.open_fds()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    child = subprocess.Popen([sys.executable, "-c", _LISTENER_CHILD, str(theirs.fileno())],
                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)  # fmt: skip
    theirs.close()
    try:
        ours.settimeout(TIMEOUT)
        _, (listener,), _, _ = socket.recv_fds(ours, 1, 1)
        try:
            for _ in range(MAX_PROGRAMS_PER_UID):
                replies = converse(daemon.socket, LaunchRequest("red", "x"), HandOver(),
                                   fds=[listener])  # fmt: skip
                assert isinstance(replies[-1], Ack), replies
            # Refused at the request, before any filter is sent.
            (busy,) = converse(daemon.socket, LaunchRequest("red", "x"))
            assert isinstance(busy, ErrorReply) and busy.code == "busy", busy
            assert f"the most one uid may have ({MAX_PROGRAMS_PER_UID})" in busy.message
        finally:
            os.close(listener)
        other = daemon.launch("red", ["cat", str(daemon.src)], **as_nobody)
        assert (other.returncode, other.stdout) == (0, "RED\n"), describe(other)
    finally:
        child.kill()
        child.wait()
        ours.close()
    daemon.wait_idle()
    deadline = time.monotonic() + TIMEOUT
    while daemon.open_fds() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.open_fds() == baseline, daemon.fd_names()


@contextlib.contextmanager
def _at_the_hand_over(daemon: Daemon) -> Iterator[socket.socket]:
    """A connection that asked to launch under "red" and got its filter:
    the daemon waits for the listener."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
        c.settimeout(TIMEOUT)
        c.connect(daemon.socket)
        c.send(encode(LaunchRequest("red", "x")))
        assert isinstance(decode_record(c.recv(MAX_FRAME), Direction.REPLY), FilterReply)
        yield c


def test_fds_sent_after_a_refused_hand_over_are_not_taken(daemon: Daemon) -> None:
    """Past the hand-over message the connection refuses fds again, a bad
    hand-over included (helper-43's audit: the refusal's drain took every
    fd the client kept sending, 253 a record, until the daemon had none)."""
    baseline = daemon.open_fds()
    r, w = os.pipe()
    try:
        with _at_the_hand_over(daemon) as c:
            socket.send_fds(c, [encode(HandOver())], [r] * 5)
            most, sent, deadline = 0, 0, time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    socket.send_fds(c, [b"x"], [r] * 250)
                    sent += 250
                except OSError:
                    break
                most = max(most, daemon.open_fds())
            reply = decode_record(c.recv(MAX_FRAME), Direction.REPLY)
        assert isinstance(reply, ErrorReply) and reply.code == "bad-fds", reply
        assert most < baseline + 300, f"the daemon took {most - baseline} fds ({sent} sent)"
    finally:
        os.close(r)
        os.close(w)
    deadline = time.monotonic() + TIMEOUT
    while daemon.open_fds() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.open_fds() == baseline, daemon.fd_names()


def _lingering_socket(linger: int) -> tuple[socket.socket, list[socket.socket]]:
    """A loopback TCP socket whose last close waits ``linger`` seconds: its
    send queue is full, its peer never reads, and SO_LINGER is on
    (tcp_close(), sk_stream_wait_close()); and what keeps it so (to close
    after)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a = socket.socket()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.connect(srv.getsockname())
    b, _ = srv.accept()
    a.setblocking(False)
    for _ in range(2):  # the peer's window fills after a first round trip
        with contextlib.suppress(BlockingIOError):
            while a.send(b"x" * 65536):
                pass
        time.sleep(0.2)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, linger))
    return a, [b, srv]


def test_an_fd_whose_close_waits_stalls_no_other_client(daemon: Daemon) -> None:
    """A client's fd is closed off the event loop: handed over in place of a
    listener, a socket whose close waits (helper-37's audit: it froze the
    daemon for everyone for as long as it lingered) delays nobody else."""
    # The control: closing such a socket really waits.
    a, keep = _lingering_socket(1)
    t0 = time.monotonic()
    a.close()
    assert time.monotonic() - t0 > 0.8
    for k in keep:
        k.close()
    a, keep = _lingering_socket(8)
    try:
        with _at_the_hand_over(daemon) as c:
            socket.send_fds(c, [encode(HandOver())], [a.fileno()])
            a.close()  # not the last reference: the one in flight is, then the daemon's
            t0 = time.monotonic()
            ok = daemon.launch("red", ["cat", str(daemon.src)])
            took = time.monotonic() - t0
            reply = decode_record(c.recv(MAX_FRAME), Direction.REPLY)
        assert isinstance(reply, ErrorReply) and reply.code == "not-a-listener", reply
        assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)
        assert took < 4, f"another client waited {took:.1f}s"
        # Before the hand-over, a client has no fd to give: the kernel
        # refuses it (SO_PASSRIGHTS, Linux 6.16), so none can be dropped.
        if not _REFUSES_RIGHTS:
            return  # an older kernel: the thread that closes is all there is
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
            c.connect(daemon.socket)
            with pytest.raises(PermissionError):
                socket.send_fds(c, [encode(StatusRequest())], [keep[0].fileno()])
    finally:
        for k in keep:
            k.close()
    assert daemon.alive()


def _connect_as(uid: int, path: str, n: int) -> tuple[list[socket.socket], int]:
    """``n`` connections to ``path`` made by a child of uid ``uid`` (their
    SO_PEERCRED is the child's: taken at connect(2), unix(7)), passed back to us;
    and the child's exit status."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            ours.close()
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(n):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                c.connect(path)
                socket.send_fds(theirs, [b"c"], [c.fileno()])
                c.close()
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    got: list[socket.socket] = []
    with ours:
        while len(got) < n:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
            if not fds:
                break
            got.append(socket.socket(fileno=fds[0]))
    _, status = os.waitpid(pid, 0)
    return got, status


def test_a_flood_of_connections_is_told_busy_and_leaks_nothing(daemon: Daemon) -> None:
    """One uid holding idle connections gets "busy" past its own share, with
    the limit named; another uid's launches go on meanwhile."""
    baseline, before = daemon.open_fds(), daemon.fd_names()
    extra = 8
    flood, status = _connect_as(NOBODY, daemon.socket, MAX_CONVERSATIONS_PER_UID + extra)
    busy: list[str] = []
    try:
        assert status == 0 and len(flood) == MAX_CONVERSATIONS_PER_UID + extra
        for s in flood[MAX_CONVERSATIONS_PER_UID:]:
            s.settimeout(TIMEOUT)
            reply = decode_record(s.recv(MAX_FRAME), Direction.REPLY)
            if isinstance(reply, ErrorReply) and reply.code == "busy":
                busy.append(reply.message)
        # Root is another uid: served while nobody's connections are held.
        ok = daemon.launch("red", ["cat", str(daemon.src)])
        served = int(ok.stdout == "RED\n")
        print(f"RESULT flood: connections={len(flood)} busy={len(busy)} other_uid_served={served}")
        assert len(busy) == extra
        assert f"uid {NOBODY} has {MAX_CONVERSATIONS_PER_UID} conversations" in busy[0]
        assert f"({MAX_CONVERSATIONS_PER_UID})" in busy[0]
        assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)
    finally:
        for s in flood:
            s.close()
    # Once the flood is gone, programs are served and nothing leaked.
    ok = daemon.launch("red", ["cat", str(daemon.src)])
    assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)
    daemon.wait_idle()
    deadline = time.monotonic() + TIMEOUT
    while daemon.open_fds() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.open_fds() == baseline, f"before: {before}; now: {daemon.fd_names()}"


def test_the_daemon_holds_at_most_its_number_of_conversations(daemon: Daemon) -> None:
    """Past MAX_CONVERSATIONS in all, every uid is told "busy" (the limit named)."""
    uids = range(1000, 1000 + MAX_CONVERSATIONS // MAX_CONVERSATIONS_PER_UID + 1)
    # Allowed to launch, so that each idle connection holds its conversation
    # until the handshake timeout: a refused one ends within half a second,
    # and on a loaded machine the first would end before the last connect.
    daemon.config.write_text(_config(daemon.dir, {"red": "red.toml"}, uids=str(list(uids))))
    assert daemon.run("reload").returncode == 0
    held: list[socket.socket] = []
    try:
        for uid in uids:
            got, status = _connect_as(uid, daemon.socket, MAX_CONVERSATIONS_PER_UID)
            held += got
            assert status == 0
        over = held[MAX_CONVERSATIONS:]
        assert len(over) == MAX_CONVERSATIONS_PER_UID
        over[0].settimeout(TIMEOUT)
        reply = decode_record(over[0].recv(MAX_FRAME), Direction.REPLY)
        assert isinstance(reply, ErrorReply) and reply.code == "busy", reply
        assert f"({MAX_CONVERSATIONS})" in reply.message, reply.message
    finally:
        for s in held:
            s.close()


def test_a_slow_client_times_out_without_stalling_others(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as idle:
        idle.connect(daemon.socket)
        # While that client sends nothing, others are served.
        ok = daemon.launch("red", ["cat", str(daemon.src)])
        assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)


def test_a_client_killed_mid_hand_over(daemon: Daemon) -> None:
    # The client holds the filter it got and is killed before it hands over
    # its listener: nothing is served for it, nobody else is bothered.
    code = """
import os, socket, sys
from unotifyd.daemon.protocol import *
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(encode(LaunchRequest("red", "victim")))
s.recv(MAX_FRAME)
os.kill(os.getpid(), 9)
"""
    for _ in range(5):
        victim = subprocess.run(py(code, daemon.socket), env=env(), timeout=TIMEOUT, check=False)
        assert victim.returncode == -signal.SIGKILL
    ok = daemon.launch("red", ["cat", str(daemon.src)])
    assert (ok.returncode, ok.stdout) == (0, "RED\n"), describe(ok)
    assert daemon.wait_idle()["programs_running"] == 0


# --- Reload and stop -----------------------------------------------------------------


def test_reload_with_a_bad_config_keeps_the_old_one(daemon: Daemon) -> None:
    good = daemon.config.read_text()
    daemon.config.write_text(good + '\n[[profile]]\nname = "green"\npolicy = "red.toml"\nuid = 1\n')
    bad_line = good.count("\n") + 5
    proc = daemon.run("reload")
    assert proc.returncode == 1
    assert f"unotifyd.toml:{bad_line}: unknown key 'uid'" in proc.stderr
    assert "the old config stays in force" in proc.stderr
    report = daemon.status()
    assert report["reloads"] == 0
    assert set(report["profiles"]) == {"red", "blue"}
    ok = daemon.launch("red", ["cat", str(daemon.src)])
    assert ok.stdout == "RED\n", describe(ok)
    # SIGHUP reloads too, and refuses the same way.
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + TIMEOUT
    while "SIGHUP: reload refused" not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)


def test_reload_applies_to_new_programs_only(daemon: Daemon) -> None:
    ready = daemon.dir / "ready"
    go = daemon.dir / "go"
    # Reads the file, waits for `go`, reads it again.
    code = """
import os, sys, time
print(open(sys.argv[1]).read(), end="", flush=True)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
print(open(sys.argv[1]).read(), end="")
"""
    running = daemon.popen("red", py(code, str(daemon.src), str(ready), str(go)))
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists():
            assert time.monotonic() < deadline and running.poll() is None
            time.sleep(0.01)
        # Now "red" shows blue.txt, and a new profile appears.
        daemon.config.write_text(
            _config(daemon.dir, {"red": "blue.toml", "blue": "blue.toml", "green": "red.toml"})
        )
        proc = daemon.run("reload")
        assert proc.returncode == 0, describe(proc)
        assert proc.stdout == "reloaded: profiles red, blue, green\n"
        go.touch()
        out, err = running.communicate(timeout=TIMEOUT)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 0, err
    assert out == "RED\nRED\n"  # the running program kept its profile
    assert daemon.launch("red", ["cat", str(daemon.src)]).stdout == "BLUE\n"
    assert daemon.launch("green", ["cat", str(daemon.src)]).stdout == "RED\n"
    assert daemon.status()["reloads"] == 1


def test_reload_during_load(daemon: Daemon) -> None:
    procs = [daemon.popen("red" if i % 2 else "blue", ["cat", str(daemon.src)])
             for i in range(16)]
    for _ in range(5):
        assert daemon.run("reload").returncode == 0
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert out == ("RED\n" if i % 2 else "BLUE\n")


def test_sigterm_exits_0_with_programs_running(daemon: Daemon) -> None:
    # The program keeps opening its redirected file; once the daemon is
    # gone the kernel fails those opens with ENOSYS: it must not hang.
    code = ATTEMPT + """
import sys
seen = []
while True:
    r = attempt(sys.argv[1], os.O_RDONLY)
    if not seen or seen[-1] != r:
        seen.append(r)
        print(repr(r), flush=True)
    if r == "ENOSYS":
        break
"""
    proc = daemon.popen("red", py(code, str(daemon.src)))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "'RED\\n'\n"
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(TIMEOUT) == 0, daemon.log()
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "'ENOSYS'\n"
    assert not os.path.exists(daemon.socket)
    log = daemon.log()
    assert "SIGTERM: stopping" in log
    assert "stopping: 1 program(s) running" in log
    assert log.rstrip().endswith("unotifyd: stopped")


def test_sigterm_when_idle_exits_0_at_once(daemon: Daemon) -> None:
    assert daemon.launch("red", ["true"]).returncode == 0
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(TIMEOUT) == 0, daemon.log()
    assert time.monotonic() - start < 1.0
    refused = daemon.launch("red", ["true"])
    assert refused.returncode == 125
    assert "no daemon socket" in refused.stderr


def test_a_second_daemon_on_the_same_socket_is_refused(daemon: Daemon) -> None:
    proc = subprocess.run(
        daemon.cmd("serve", "--socket", daemon.socket, "--config", str(daemon.config)),
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert proc.returncode == 125
    assert "a daemon already serves" in proc.stderr
    assert daemon.launch("red", ["true"]).returncode == 0


def test_serve_refuses_a_bad_config_with_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path / "d.toml", "version = 1\n[[profile]]\nname = 3\npolicy = 'p.toml'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "unotifyd", "serve", "--socket", str(tmp_path / "s"),
         "--config", str(config)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert proc.returncode == 2
    assert f"{config}:3: 'name' in [[profile]] #1 must be a string" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_launch_client_imports_no_trio_dataclasses_typing_or_socket(daemon: Daemon) -> None:
    # The Python client's whole hand-over, lazy imports included. -S: the
    # site hooks of the environment running the tests are not the client's
    # (env() puts the working tree on PYTHONPATH).
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", PYTHON_CLIENT, daemon.socket, "red",
         "true"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert proc.returncode == 0, describe(proc)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "unotifyd.kernel.filter" in imported
    heavy = ("trio", "pyseccomp", "dataclasses", "inspect", "typing", "socket")
    assert not [m for m in imported if m.split(".")[0] in heavy]


@pytest.mark.parametrize("spelling", ["plain", "argparse"])
def test_launch_daemon_becomes_the_c_client(daemon: Daemon, spelling: str) -> None:
    """``unotifyd launch --daemon`` imports none of the Python client: it execs
    the C one, whichever parser read the command line (an abbreviation goes
    through argparse)."""
    option = "--daemon" if spelling == "plain" else "--daem"
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-m", "unotifyd", "launch", option,
         daemon.socket, "--profile", "red", "--", "cat", str(daemon.src)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "RED\n"), describe(proc)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "unotifyd.daemon.quick" in imported
    python_client = {"unotifyd.daemon.client", "unotifyd.daemon.protocol"}
    # The full parser's own imports include json (daemon/cli.py), the plain path's do not.
    assert not imported & (python_client | ({"json"} if spelling == "plain" else set()))


def test_launch_daemon_refuses_local_rules(daemon: Daemon) -> None:
    proc = subprocess.run(
        daemon.cmd("launch", "--daemon", daemon.socket, "--profile", "red", "--redirect",
                   "/a=/b", "--", "true"),
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )
    assert proc.returncode == 2
    assert "--redirect cannot be used" in proc.stderr


def test_the_daemon_gives_its_programs_the_kernels_backstop(daemon: Daemon, client: str) -> None:
    """A profile's Landlock ruleset is built by the client and holds: an enforcing
    profile's program may not signal its parent outside the sandbox, and with an
    exec allow-list a binary outside it does not run. And it may dump no core
    (unotifyd.kernel.coredump): its hard RLIMIT_CORE is 0, set by either
    client when the daemon's filter reply says no_core_dumps."""
    copy = daemon.dir / "true-copy"
    shutil.copy("/usr/bin/true", copy)
    write(daemon.dir / "locked.toml", 'version = 1\nmode = "enforce"\n'
          '[[exec]]\npath = "/usr/**"\n')  # fmt: skip
    daemon.config.write_text(
        _config(daemon.dir, {"red": "red.toml", "blue": "blue.toml", "locked": "locked.toml"})
    )
    assert daemon.run("reload").returncode == 0
    script = f'kill -0 "$PPID" 2>/dev/null && echo sent || echo refused; {copy}; echo rc=$?; '
    script += "ulimit -H -c"
    native = run_native(["sh", "-c", script])
    assert native.stdout.startswith("sent\nrc=0\n"), describe(native)
    assert native.stdout != "sent\nrc=0\n0\n", "natively no core may be dumped: no control"
    proc = daemon.launch("locked", ["sh", "-c", script], client=client)
    assert proc.stdout == "refused\nrc=126\n0\n", describe(proc)
    proc = daemon.launch("red", ["sh", "-c", "ulimit -H -c"], client=client)
    assert (proc.returncode, proc.stdout) == (0, native.stdout.splitlines()[-1] + "\n")


def test_an_enforcing_profile_that_traps_sendmsg_gets_its_listener(
    daemon: Daemon, client: str
) -> None:
    """The listener travels by sendmsg, which an enforcing profile with a
    redirect traps: sent by the thread under the new filter, it would wait
    forever for the supervisor it is handing over. Each client sends it from
    a thread started before the filter (which does not cover it)."""
    text = f'version = 1\nmode = "enforce"\n[[redirect]]\nfrom = "{daemon.src}"\n' \
           f'to = "{daemon.dir / "red.txt"}"\n'
    write(daemon.dir / "strict.toml", text)
    assert "sendmsg" in trapped(parse_policy(text, "strict.toml"))  # the control
    daemon.config.write_text(_config(daemon.dir, {"strict": "strict.toml"}))
    assert daemon.run("reload").returncode == 0
    proc = daemon.launch("strict", ["cat", str(daemon.src)], client=client)
    assert (proc.returncode, proc.stdout) == (0, "RED\n"), describe(proc)


def test_the_program_gets_the_signal_dispositions_it_would_natively(
    daemon: Daemon, client: str
) -> None:
    # Python ignores SIGPIPE and SIGXFSZ for itself; subprocess gives a
    # child the defaults back, so natively nothing is ignored here.
    status = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
    native = run_native(status)
    assert "SigIgn:\t0000000000000000" in native.stdout, describe(native)
    proc = daemon.launch("red", status, client=client)
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)


def test_the_program_gets_the_environment_it_would_natively(daemon: Daemon, client: str) -> None:
    # Not LC_CTYPE=C.UTF-8, which Python puts in its own environment here.
    bare = locale_free_env()
    native = run_native(["env"], env=bare)
    assert "LC_CTYPE" not in native.stdout, describe(native)
    proc = daemon.launch("red", ["env"], client=client, env=bare)
    assert proc.returncode == 0, describe(proc)
    assert sorted(proc.stdout.splitlines()) == sorted(native.stdout.splitlines())


@pytest.mark.parametrize("view", ["full", "opens", "enforce"])
@pytest.mark.parametrize("who", ["root-nocaps", "nobody"])
def test_each_identity_gets_its_profile_and_a_native_start(
    daemon: Daemon, client: str, as_nobody: dict[str, Any], who: str, view: str
) -> None:
    """As root without capabilities and as nobody, through either client and
    with a profile of each view: the redirect holds, and the program starts
    as it would natively, with the environment (no LC_CTYPE coerced in), the
    signal dispositions and the credentials it was run with."""
    top = {"full": "", "opens": 'view = "opens"\n', "enforce": 'mode = "enforce"\n'}[view]
    write(daemon.dir / "p.toml", f'version = 1\n{top}[[redirect]]\nfrom = "{daemon.src}"\n'
          f'to = "{daemon.dir / "red.txt"}"\n')  # fmt: skip
    daemon.config.write_text(_config(daemon.dir, {"p": "p.toml"}, uids=f"[0, {NOBODY}]"))
    assert daemon.run("reload").returncode == 0
    if who == "nobody":
        python = as_nobody["python"]
        bare = locale_free_env(as_nobody["env"], python)
        as_who = {k: v for k, v in as_nobody.items() if k not in ("python", "env")}
        prefix: tuple[str, ...] = ()
        native = run_native([*AS_NOBODY, "--", "sh", "-c", _SELF], env=bare, cwd="/")
        uid = f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}\n"
    else:
        python, bare, as_who, prefix = sys.executable, locale_free_env(), {}, NO_CAPS
        native = run_native([*prefix, "sh", "-c", _SELF], env=bare)
        uid = "Uid:\t0\t0\t0\t0\n"
    # The controls: the identity is the one meant, with no capability, and
    # no LC_CTYPE (Python would add one: locale_free_env checks that).
    assert native.returncode == 0, describe(native)
    assert uid in native.stdout and "CapEff:\t0000000000000000\n" in native.stdout, native.stdout
    assert "LC_CTYPE" not in native.stdout
    argv = ["sh", "-c", f"cat {daemon.src}; {_SELF}"]
    proc = subprocess.run(
        [*prefix, *daemon.launch_cmd("p", argv, python, client)], env=bare,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
        check=False, **as_who,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "RED\n" + native.stdout, describe(proc)


#: What a program's start is made of, printed in a stable order: its
#: environment but for what the shell sets itself, its ids and capabilities,
#: and its signal sets.
_SELF = (
    "env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | LC_ALL=C sort; "
    "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|Sig(Ign|Blk)):' /proc/self/status"
)
