"""The daemon's two clients, side by side, against a scripted daemon.

``unotifyd launch --daemon`` runs the C client (``unotifyd-launch``, from
``unotifyd/daemon/launch.c``) where it was built, and the Python one
(``unotifyd/daemon/client.py``) where it was not. Both must send the same
requests, refuse every malformed or unexpected reply with the same words
and exit status, and hand over a real listener. The daemon here is a
script on a socket: it sends what a real daemon never would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from unotifyd.daemon import quick
from unotifyd.daemon.protocol import (
    MAX_FRAME,
    Abort,
    Direction,
    HandOver,
    LaunchRequest,
    Message,
    decode_record,
)

from .helpers import PYTHON_CLIENT, TIMEOUT, env, public_dir

pytestmark = pytest.mark.kernel

Argv = Sequence[str | bytes]
CLIENTS: dict[str, Callable[[str, str | bytes, Argv], list[str | bytes]]] = {
    "c": lambda sock, profile, argv: [quick.COMPILED_CLIENT, "--daemon", sock, "--profile",
                                      profile, "--", *argv],
    "python": lambda sock, profile, argv: [sys.executable, "-c", PYTHON_CLIENT, sock, profile,
                                           *argv],
}  # fmt: skip

# struct sock_filter {BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW}: a filter
# that lets everything through, so that the listener never has a call.
ALLOW_ALL = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)
# An opcode the kernel's checker refuses (EINVAL).
BAD_OPCODE = struct.pack("<HBBI", 0xFFFF, 0, 0, 0)


def raw(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def frame(obj: object) -> bytes:
    return raw(json.dumps(obj).encode())


def filter_reply(**changes: object) -> dict[str, object]:
    reply: dict[str, object] = {
        "v": 3, "type": "filter", "program": "p",
        "bpf": base64.b64encode(ALLOW_ALL).decode(), "exec_allowed": None,
        "scope_signals": False, "no_core_dumps": False,
    }  # fmt: skip
    reply.update(changes)
    return {k: v for k, v in reply.items() if v is not _DROP}


_DROP = object()
ERROR = {"v": 3, "type": "error", "code": "refused", "message": "refused: you know why"}
ACK = {"v": 3, "type": "ack", "program": "p"}


@dataclass
class Seen:
    """What the scripted daemon received."""

    request: Message | None = None
    record: bytes = b""  # the request as it came
    second: Message | None = None
    fds: list[str] = field(default_factory=list)  # what each fd that came is


class Script:
    """A daemon that answers one connection: ``first`` to the launch request,
    then, if ``second`` is not None, ``second`` to the hand-over (a reply's
    bytes, or b"" to close instead); ``delay`` seconds before the first."""

    def __init__(
        self, path: str, first: bytes, second: bytes | None, delay: float = 0.0
    ) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(TIMEOUT)
        self.first, self.second, self.delay = first, second, delay
        self.seen = Seen()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self.seen.record = conn.recv(MAX_FRAME)
                self.seen.request = decode_record(self.seen.record, Direction.REQUEST)
                time.sleep(self.delay)
                if not self._answer(conn, self.first):
                    return
                msg, fds, _, _ = socket.recv_fds(conn, MAX_FRAME, 4)
                for fd in fds:
                    self.seen.fds.append(os.readlink(f"/proc/self/fd/{fd}"))
                    os.close(fd)
                if msg:
                    self.seen.second = decode_record(msg, Direction.REQUEST)
                if self.second is not None:
                    self._answer(conn, self.second)
        except BaseException as e:  # handed to the test by join()
            self.error = e
        finally:
            self.sock.close()

    @staticmethod
    def _answer(conn: socket.socket, reply: bytes) -> bool:
        if not reply:
            return False  # close, by leaving the with block
        conn.send(reply)
        return True

    def join(self) -> Seen:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the scripted daemon is still waiting"
        if self.error is not None:
            raise self.error
        return self.seen


@pytest.fixture(scope="module")
def compiled() -> str:
    """The C client, which the install must have built (setup.py; gcc is in
    both README commands): without it these tests would test one client."""
    assert os.access(quick.COMPILED_CLIENT, os.X_OK), (
        f"{quick.COMPILED_CLIENT} was not built: run `python setup.py build_ext --inplace`"
    )
    return quick.COMPILED_CLIENT


@pytest.fixture
def where(compiled: str) -> Iterator[Path]:
    with public_dir("unotifyd-clients-") as d:
        yield d


@contextlib.contextmanager
def scripted(
    where: Path, first: bytes, second: bytes | None = None, delay: float = 0.0
) -> Iterator[tuple[str, Script]]:
    """A :class:`Script` on a socket in ``where``: its path and itself, the
    socket file removed after."""
    path = str(where / "unotifyd.sock")
    script = Script(path, first, second, delay)
    try:
        yield path, script
    finally:
        os.unlink(path)


def converse(
    where: Path, client: str, first: bytes, second: bytes | None = None, *,
    argv: Argv = ("true",), profile: str | bytes = "p",
) -> tuple[subprocess.CompletedProcess[bytes], Seen]:  # fmt: skip
    with scripted(where, first, second) as (path, script):
        proc = subprocess.run(
            CLIENTS[client](path, profile, argv), capture_output=True, env=env(),
            stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False,
        )
        return proc, script.join()


def both(
    where: Path, first: bytes, second: bytes | None = None
) -> dict[str, tuple[int, str, Seen]]:
    """Each client's exit status, stderr and what the script saw of it."""
    out = {}
    for client in CLIENTS:
        proc, seen = converse(where, client, first, second)
        out[client] = (proc.returncode, proc.stderr.decode(errors="replace"), seen)
    return out


# A name a socket that is not the daemon's could send to write on the user's
# terminal, and one that turns text around: both quoted as Python's repr().
_ESCAPES = "\x1b]0;owned\x07\x1b[2J\rsudo password:"
_REORDERS = "caf\u00e9 '\u202e\u0085 x"

_REFUSALS: list[tuple[str, bytes, bytes | None, str]] = [
    ("error", frame(ERROR), None, "refused: you know why"),
    ("closed", b"", None, "the daemon closed the connection without an answer"),
    ("short header", b"\0\0", None,
     "bad answer from the daemon: truncated frame: 2 bytes, no complete header"),
    ("cut short", frame(ERROR)[:-3], None, "bad answer from the daemon: truncated frame: "
     f"header announces {len(frame(ERROR)) - 4} bytes of payload, the message holds "
     f"{len(frame(ERROR)) - 7}"),
    ("bytes after", frame(ERROR) + b"  ", None,
     "bad answer from the daemon: 2 bytes after the frame"),
    ("oversized", struct.pack("!I", MAX_FRAME) + b"{}", None,
     f"bad answer from the daemon: frame of {MAX_FRAME + 4} bytes exceeds the limit of "
     f"{MAX_FRAME}"),
    ("not UTF-8", raw(b'{"\xff":1}'), None,
     "bad answer from the daemon: payload is not UTF-8 (byte 2)"),
    ("not an object", frame([1]), None, "bad answer from the daemon: payload is not a JSON object"),
    ("no version", frame({"type": "ack", "program": "p"}), None,
     "bad answer from the daemon: missing protocol version 'v'"),
    ("a bool version", frame({"v": True, "type": "ack", "program": "p"}), None,
     "bad answer from the daemon: missing protocol version 'v'"),
    ("version 4", frame({**ACK, "v": 4}), None,
     "bad answer from the daemon: unsupported protocol version 4 (this unotifyd speaks 3)"),
    # A daemon of the version before, whose filter reply has no no_core_dumps.
    ("version 2", frame({**ACK, "v": 2}), None,
     "bad answer from the daemon: unsupported protocol version 2 (this unotifyd speaks 3)"),
    ("unknown type", frame({"v": 3, "type": "hello"}), None,
     "bad answer from the daemon: unknown reply type 'hello' (expected one of: ack, error, "
     "filter, reloaded, status)"),
    ("a request's type", frame({"v": 3, "type": "launch", "profile": "p", "program": "p"}), None,
     "bad answer from the daemon: unknown reply type 'launch' (expected one of: ack, error, "
     "filter, reloaded, status)"),
    ("unknown field", frame({**filter_reply(), "zzz": 1}), None,
     "bad answer from the daemon: filter: unknown field 'zzz'"),
    ("another type's field", frame({**filter_reply(), "code": "x"}), None,
     "bad answer from the daemon: filter: unknown field 'code'"),
    ("missing field", frame(filter_reply(bpf=_DROP)), None,
     "bad answer from the daemon: filter: missing field 'bpf'"),
    ("not base64", frame(filter_reply(bpf="!!!!")), None,
     "bad answer from the daemon: filter: field 'bpf' must be a base64 string"),
    ("exec_allowed 5", frame(filter_reply(exec_allowed=5)), None,
     "bad answer from the daemon: filter: field 'exec_allowed' must be null or an array of "
     "strings"),
    ("exec_allowed of numbers", frame(filter_reply(exec_allowed=[1])), None,
     "bad answer from the daemon: filter: field 'exec_allowed' must be null or an array of "
     "strings"),
    ("scope_signals 1", frame(filter_reply(scope_signals=1)), None,
     "bad answer from the daemon: filter: field 'scope_signals' must be true or false"),
    ("no_core_dumps null", frame(filter_reply(no_core_dumps=None)), None,
     "bad answer from the daemon: filter: field 'no_core_dumps' must be true or false"),
    ("program a number", frame(filter_reply(program=1.5)), None,
     "bad answer from the daemon: filter: field 'program' must be a string"),
    ("duplicate key", raw(b'{"v":3,"v":3,"type":"error"}'), None,
     "bad answer from the daemon: duplicate key 'v'"),
    ("a type that is a terminal's escape", frame({"v": 3, "type": _ESCAPES}), None,
     f"bad answer from the daemon: unknown reply type {_ESCAPES!r} (expected one of: ack, "
     "error, filter, reloaded, status)"),
    ("a field that reorders text", frame({**ACK, _REORDERS: 1}), None,
     f"bad answer from the daemon: ack: unknown field {_REORDERS!r}"),
    ("an ack first", frame(ACK), None, "unexpected 'ack' answer from the daemon"),
    ("a status report", frame({"v": 3, "type": "status", "report": {"a": [1, {}]}}), None,
     "unexpected 'status' answer from the daemon"),
    ("a filter of 12 bytes", frame(filter_reply(bpf=base64.b64encode(bytes(12)).decode())),
     None, "the daemon sent an invalid filter: a BPF program is a non-empty array of 8-byte "
     "instructions"),
    ("an empty filter", frame(filter_reply(bpf="")), None, "the daemon sent an invalid filter: "
     "a BPF program is a non-empty array of 8-byte instructions"),
    # After the hand-over:
    ("refused at the hand-over", frame(filter_reply()), frame(ERROR), "refused: you know why"),
    ("closed at the hand-over", frame(filter_reply()), b"",
     "the daemon closed the connection before acknowledging the hand-over"),
    ("a filter for an ack", frame(filter_reply()), frame(filter_reply()),
     "unexpected 'filter' answer from the daemon"),
    ("a bad ack", frame(filter_reply()), frame({**ACK, "program": None}),
     "bad answer from the daemon: ack: field 'program' must be a string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("first", "second", "said"), [case[1:] for case in _REFUSALS], ids=[c[0] for c in _REFUSALS]
)
def test_both_clients_refuse_a_bad_answer_alike(
    where: Path, first: bytes, second: bytes | None, said: str
) -> None:
    answers = both(where, first, second)
    for client, (rc, err, seen) in answers.items():
        assert (rc, err) == (125, f"unotifyd: {said}\n"), client
        assert isinstance(seen.request, LaunchRequest), client
        if second is not None:  # the listener came, and only it
            assert seen.second == HandOver(), client
            assert seen.fds == ["anon_inode:seccomp notify"], client


def test_a_syntax_error_is_refused_by_both(where: Path) -> None:
    # The words after that are the json module's in the Python client.
    answers = both(where, raw(b'{"v":3,'))
    for client, (rc, err, _) in answers.items():
        assert rc == 125, client
        assert err.startswith("unotifyd: bad answer from the daemon: invalid JSON: "), (client, err)


def test_both_clients_hand_over_a_listener_and_exec_in_place(where: Path) -> None:
    script = 'echo "$$"; grep NoNewPrivs /proc/$$/status'
    for client, command in CLIENTS.items():
        with scripted(where, frame(filter_reply()), frame(ACK)) as (path, daemon):
            proc = subprocess.Popen(
                command(path, "p", ["sh", "-c", script]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env(),
            )
            out, err = proc.communicate(timeout=TIMEOUT)
            seen = daemon.join()
        assert (proc.returncode, err) == (0, b""), client
        # The same process (pid), now under the filter (no_new_privs).
        assert out.decode().split() == [str(proc.pid), "NoNewPrivs:", "1"], client
        assert seen.second == HandOver(), client
        assert seen.fds == ["anon_inode:seccomp notify"], client


def test_a_filter_the_kernel_refuses_is_aborted_by_both(where: Path) -> None:
    answers = both(where, frame(filter_reply(bpf=base64.b64encode(BAD_OPCODE).decode())))
    for client, (rc, err, seen) in answers.items():
        assert (rc, err) == (125, "unotifyd: cannot install the seccomp filter: Invalid argument\n")
        assert seen.second == Abort(22), client  # EINVAL, told to the daemon
        assert seen.fds == [], client


@pytest.mark.parametrize(
    "argv0",
    [
        "cat",
        'a "quoted" \\ name\nwith\ttabs\x7f and \x01',
        "é€😀 and a name" * 30,  # past the 256 characters shown in status
        b"not \xff UTF-8 \xed\xa0\x80 \xc3",
    ],
    ids=["plain", "escapes", "long", "not UTF-8"],
)
def test_both_clients_send_the_same_request(where: Path, argv0: str | bytes) -> None:
    profile = b"pr\xf6file \"x\"" if isinstance(argv0, bytes) else "profile \u00e9"
    seen = {}
    for client in CLIENTS:
        proc, seen[client] = converse(where, client, frame(ERROR), argv=[argv0], profile=profile)
        assert proc.returncode == 125, (client, proc.stderr)
    # Byte for byte: the daemon reads at most MAX_REQUEST bytes of it.
    assert seen["c"].record == seen["python"].record
    request = seen["c"].request
    assert isinstance(request, LaunchRequest)
    assert request.profile == os.fsdecode(profile)
    assert request.program == os.fsdecode(argv0)[:256]


def test_both_clients_fail_a_missing_program_as_env_does(where: Path) -> None:
    for client in CLIENTS:
        for argv, rc in (
            (["/nonexistent/prog"], 127), ([os.devnull], 126), (["nonexistent-x"], 127), ([""], 127)
        ):
            proc, _ = converse(where, client, frame(filter_reply()), frame(ACK), argv=argv)
            native = subprocess.run(["env", *argv], capture_output=True, check=False)
            assert proc.returncode == native.returncode == rc, (client, argv, proc.stderr)
            assert proc.stderr.startswith(f"unotifyd: {argv[0]}: ".encode()), (client, argv)


def test_the_c_client_passes_ignored_signals_on_as_an_exec_does(where: Path) -> None:
    """Run directly by a parent that ignores SIGPIPE (this test's Python, with
    restore_signals=False), PROG ignores it too, as it would natively; with
    --reset-signals (what `unotifyd launch --daemon` passes, its Python having
    ignored it for itself) it gets the default."""
    status = ["grep", "SigIgn", "/proc/self/status"]
    native = subprocess.run(status, capture_output=True, text=True, restore_signals=False,
                            check=True).stdout  # fmt: skip
    assert native != "SigIgn:\t0000000000000000\n"  # the control: something is ignored
    for extra, want in ([], native), (["--reset-signals"], "SigIgn:\t0000000000000000\n"):
        with scripted(where, frame(filter_reply()), frame(ACK)) as (path, daemon):
            proc = subprocess.run(
                [quick.COMPILED_CLIENT, "--daemon", path, "--profile", "p", *extra, "--",
                 *status],
                capture_output=True, text=True, env=env(), restore_signals=False,
                timeout=TIMEOUT, check=False,
            )  # fmt: skip
            daemon.join()
        assert (proc.returncode, proc.stdout) == (0, want), (extra, proc.stderr)


def test_a_client_stopped_and_continued_while_it_waits_goes_on(where: Path) -> None:
    """A stop and continue (Ctrl-Z and fg, a cgroup freezer) makes a socket
    call with a timeout fail with EINTR even without a handler (signal(7));
    neither client takes that for a lost connection."""
    for client, command in CLIENTS.items():
        with scripted(where, frame(filter_reply()), frame(ACK), delay=1.0) as (path, daemon):
            proc = subprocess.Popen(
                command(path, "p", ["echo", "ran"]), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env(),
            )  # fmt: skip
            deadline = time.monotonic() + TIMEOUT
            while daemon.seen.request is None:  # it waits for its filter now
                assert time.monotonic() < deadline and proc.poll() is None, client
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGSTOP)
            while _state(proc.pid) != "T":  # the control: it was stopped
                time.sleep(0.001)
            os.kill(proc.pid, signal.SIGCONT)
            out, err = proc.communicate(timeout=TIMEOUT)
            daemon.join()
        assert (proc.returncode, out, err) == (0, b"ran\n", b""), client


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]
