"""A datagram may name its destination: sendto(2), sendmsg(2), sendmmsg(2) to a socket file.

The path in the address is looked up like connect's, so the rules govern it
(issue 14): a deny refuses it, a redirect delivers to the target socket. The
control: natively every datagram arrives. ``sendto`` with an address is
trapped in both modes (the filter sees whether there is one); ``sendmsg`` and
``sendmmsg`` keep their address in memory, so only enforcing mode traps them,
and it makes every such send itself, from what it read once — then the
receiver must still see the program as the sender (``SCM_CREDENTIALS``: its
pid, uid and gid), and the fds it passes (``SCM_RIGHTS``) must be its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import AS_NOBODY, describe, public_dir, py, run_launch, run_native

pytestmark = pytest.mark.kernel

# Sends one datagram per way to each path given: prints "WAY NAME RESULT", then
# "me PID UID GID". sendmsg also passes the read end of a pipe holding "piped".
SEND = r"""
import ctypes, errno, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def attempt(f):
    try:
        return str(f())
    except OSError as e:
        return errno.errorcode[e.errno]
def sendmmsg(s, path, payloads):
    addr = struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0"
    abuf = ctypes.create_string_buffer(addr, len(addr))
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
    iovs = [(ctypes.c_uint64 * 2)(ctypes.addressof(b), len(p)) for b, p in zip(bufs, payloads)]
    vec = ctypes.create_string_buffer(64 * len(payloads))
    for i, iov in enumerate(iovs):
        struct.pack_into("QI4xQQQQi4xI4x", vec, 64 * i, ctypes.addressof(abuf), len(addr),
                         ctypes.addressof(iov), 1, 0, 0, 0, 0)
    n = libc.syscall(307, s.fileno(), vec, len(payloads), 0)
    if n < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    return f"{n}:" + ",".join(str(struct.unpack_from("I", vec, 64 * i + 56)[0]) for i in range(n))
for path in sys.argv[1:]:
    name = os.path.basename(os.path.dirname(path))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    print("sendto", name, attempt(lambda: s.sendto(b"to " + name.encode(), path)))
    r, w = os.pipe()
    os.write(w, b"piped")
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))]
    print("sendmsg", name, attempt(lambda: s.sendmsg([b"msg ", name.encode()], rights, 0, path)))
    print("sendmmsg", name, attempt(lambda: sendmmsg(s, path, [b"mm1 " + name.encode(), b"mm2"])))
print("me", os.getpid(), os.getuid(), os.getgid())
"""

WAYS = ("sendto", "sendmsg", "sendmmsg")


def _ok(way: str, payload: str) -> str:
    return f"2:{len(payload)},3" if way == "sendmmsg" else str(len(payload))


@pytest.fixture
def tree() -> Iterator[Path]:
    with public_dir("unotifyd-dgram-") as d:
        for name in ("open", "denied", "target"):
            (d / name).mkdir()
            (d / name).chmod(0o777)
        yield d


def _receivers(tree: Path) -> dict[str, socket.socket]:
    out = {}
    for name in ("open", "denied", "target"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = tree / name / "s"
        path.unlink(missing_ok=True)
        s.bind(str(path))
        path.chmod(0o777)  # anyone may send to it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        s.setblocking(False)
        out[name] = s
    return out


def _received(s: socket.socket) -> list[tuple[bytes, tuple[int, int, int], bytes]]:
    """(data, (pid, uid, gid), what a passed fd reads) of each datagram waiting."""
    got: list[tuple[bytes, tuple[int, int, int], bytes]] = []
    while True:
        try:
            data, anc, _, _ = s.recvmsg(100, 256)
        except BlockingIOError:
            return got
        creds, piped = (0, -1, -1), b""
        for level, kind, body in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                creds = struct.unpack("iII", body)
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                (fd,) = struct.unpack("i", body[:4])
                piped = os.read(fd, 10)
                os.close(fd)
        got.append((data, creds, piped))


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("mode", ["native", "virtualize", "enforce"])
def test_datagrams_to_a_socket_path_follow_the_rules(tree: Path, mode: str, who: str) -> None:
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    socks = _receivers(tree)
    try:
        paths = [str(tree / "open" / "s"), str(tree / "denied" / "s"), str(tree / "view" / "s")]
        argv = [*prefix, *py(SEND, *paths)]
        opts = ("--deny", f"{tree}/denied/**", "--redirect", f"{tree}/view/**={tree}/target/**")
        if mode == "native":
            proc = run_native(argv)
        else:
            proc = run_launch(*(("--enforce",) if mode == "enforce" else ()), *opts, argv=argv)
        lines = proc.stdout.splitlines()
        assert lines and lines[-1].startswith("me "), describe(proc)
        pid, uid, gid = map(int, lines[-1].split()[1:])
        results = {tuple(line.split()[:2]): line.split()[2] for line in lines[:-1]}
        received = {name: _received(s) for name, s in socks.items()}
    finally:
        for s in socks.values():
            s.close()
    sent = {"sendto": "to ", "sendmsg": "msg ", "sendmmsg": "mm1 "}

    def answer(way: str, name: str) -> str:
        """What the program is told: natively, or as the rules say."""
        payload = sent[way] + name
        if name == "view" and (mode == "native" or (mode == "virtualize" and way != "sendto")):
            return "ENOENT"  # no such socket natively; virtualize governs sendto only
        if name == "denied" and (mode == "enforce" or (mode == "virtualize" and way == "sendto")):
            return "EACCES"
        return _ok(way, payload)

    for way in WAYS:
        for name in ("open", "denied", "view"):
            assert results[(way, name)] == answer(way, name), f"{way} {name}: {describe(proc)}"
    # What each receiver got: the datagrams the program was told were sent, with the
    # program's uid and gid, and a working copy of the fd it passed. Its pid too, where
    # the kernel sent them, or the supervisor did for a program that may name its pid
    # (CAP_SYS_ADMIN: root); else the supervisor's (the kernel wants the sender's).
    expected: dict[str, list[bytes]] = {"open": [], "denied": [], "target": []}
    for way in WAYS:
        for name, at in (("open", "open"), ("denied", "denied"), ("view", "target")):
            if answer(way, name)[0].isdigit():
                expected[at] += [(sent[way] + name).encode()] + (
                    [b"mm2"] if way == "sendmmsg" else []
                )
    for at, want in expected.items():
        assert sorted(d for d, _, _ in received[at]) == sorted(want), f"{at}: {received[at]}"
        made_by_us = mode == "enforce" or (mode == "virtualize" and at == "target")
        for data, creds, piped in received[at]:
            assert creds[1:] == (uid, gid), f"{at} {data!r}: {creds} for {(pid, uid, gid)}"
            if made_by_us and who == "nobody":
                assert creds[0] not in (0, pid), f"{at} {data!r}: pid {creds[0]}"
            else:
                assert creds[0] == pid, f"{at} {data!r}: pid {creds[0]} != {pid}"
            assert piped == (b"piped" if data.startswith(b"msg ") else b""), data
    if mode != "native":
        assert received["open"], "the control of the run: allowed datagrams arrive"


SEND_CONNECTED = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(sys.argv[1])
for _ in range(5):  # net.unix.max_dgram_qlen is 10 here: more would wait, natively too
    s.send(b"x")  # sendto(fd, buf, len, flags, NULL, 0): names no file
print("sent")
"""


def test_a_send_without_an_address_is_not_trapped(tree: Path) -> None:
    """The filter traps sendto only with an address (send(2) is sendto with NULL):
    five sends on a connected socket make no notification."""
    socks = _receivers(tree)
    try:
        proc = run_launch(
            "--stats",
            "--deny",
            f"{tree}/denied/**",
            argv=py(SEND_CONNECTED, str(tree / "open" / "s")),
        )
        got = _received(socks["open"])
    finally:
        for s in socks.values():
            s.close()
    assert proc.stdout == "sent\n", describe(proc)
    assert len(got) == 5
    by_call = next(line for line in proc.stderr.splitlines() if "by system call" in line)
    assert "sendto" not in by_call and "connect 1" in by_call, by_call
    assert "sendto" in next(line for line in proc.stderr.splitlines() if "filter traps" in line)


MARKED_SEND = r"""
import errno, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    # SO_MARK (36) in a control message: CAP_NET_RAW or CAP_NET_ADMIN (sock_cmsg_send()).
    s.sendmsg([b"x"], [(socket.SOL_SOCKET, 36, struct.pack("I", 7))], 0, ("127.0.0.1", 9))
    print("sent")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_a_send_made_for_the_program_lends_it_no_privilege(tree: Path, who: str) -> None:
    """Enforcing mode makes every sendmsg itself, acting as the program: a control
    message that needs a capability the program lacks fails as natively (an audit
    found the sends made as root)."""
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    argv = [*prefix, *py(MARKED_SEND)]
    native = run_native(argv)
    assert native.stdout == ("sent\n" if who == "root" else "EPERM\n"), describe(native)
    proc = run_launch("--enforce", "--deny", f"{tree}/denied/**", "--trace", argv=argv)
    assert proc.stdout == native.stdout, describe(proc)
    assert " sendmsg(" in proc.stderr, "the send was made by the supervisor"


# A datagram send and a stream connect that wait (the receiver's queue is
# full; the listener's backlog is), ended by SIGALRM without SA_RESTART.
WAITS_ENDED_BY_A_SIGNAL = r"""
import ctypes, errno, signal, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGALRM, lambda *a: None)

def ended(what, call, *, stream, restart=False):
    address = struct.pack("H", socket.AF_UNIX) + sys.argv[2 if stream else 1].encode() + b"\0"
    buf = ctypes.create_string_buffer(address, len(address))
    done = 0
    signal.siginterrupt(signal.SIGALRM, not restart)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    start = time.monotonic()
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) if stream else dgram
        ctypes.set_errno(0)
        if call(s.fileno(), buf, len(address)) < 0:
            took = "soon" if time.monotonic() - start < 3 else "late"
            print(what, done, errno.errorcode[ctypes.get_errno()], took, flush=True)
            return
        done += 1

dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
send = lambda fd, a, n: libc.sendto(fd, b"x", 1, 0, a, n)
ended("sendto", send, stream=False)
ended("connect", libc.connect, stream=True)
# With a send timeout, an interrupted wait is EINTR even under SA_RESTART.
dgram.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 3, 0))
ended("sendto with SO_SNDTIMEO, SA_RESTART", send, stream=False, restart=True)
"""


def test_a_send_or_connect_that_waits_ends_for_a_signal_as_natively(tmp_path: Path) -> None:
    """Under --enforce the supervisor makes the send (and the connect) on its
    copy of the program's socket, in a worker thread: a signal to the
    program must end that wait as it ends the program's own, EINTR without
    SA_RESTART (issue 14). Before, it waited on until the receiver made room;
    a ``timeout`` could not end it either."""
    dgram_path, stream_path = tmp_path / "dgram", tmp_path / "stream"

    def run(opts: tuple[str, ...] | None) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver, socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM
        ) as listener:
            receiver.bind(str(dgram_path))
            listener.bind(str(stream_path))
            listener.listen(0)
            argv = py(WAITS_ENDED_BY_A_SIGNAL, str(dgram_path), str(stream_path))
            proc = run_native(argv) if opts is None else run_launch(*opts, argv=argv)
            for path in (dgram_path, stream_path):
                path.unlink()
        assert proc.returncode == 0 and proc.stderr == "", describe(proc)
        return proc.stdout

    native = run(None)
    lines = native.splitlines()
    assert [line.split()[-2:] for line in lines] == [["EINTR", "soon"]] * 3, native
    assert int(lines[0].split()[1]) > 0, native  # some datagrams went first
    assert run(("--enforce", "--deny", str(tmp_path / "elsewhere"))) == native


KILLED_WHILE_SENDING = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while True:
    s.sendto(b"x", sys.argv[1])  # until the receiver's queue is full: then it waits
"""


def test_a_send_for_a_program_killed_meanwhile_is_never_made(tmp_path: Path) -> None:
    """The program is killed while the supervisor's send for it waits for room:
    once the receiver makes room, nothing more may arrive than natively (the
    program sent nothing more). Before, the abandoned worker's send went on
    and delivered one more datagram, from a dead program (an audit found it)."""
    path, dead = tmp_path / "dgram", tmp_path / "dead"
    # The program is killed once its sends wait; the receiver makes room a
    # second after it is dead, while its shell (and so the supervisor)
    # lives on.
    script = f'"$0" -c "$1" {path} & sleep 2; kill -9 $!; wait; touch {dead}; sleep 2'

    def delivered(opts: tuple[str, ...] | None) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            receiver.settimeout(0.1)
            count, done = [0], threading.Event()

            def drain() -> None:
                while not dead.exists() and not done.wait(0.05):
                    pass
                time.sleep(1)
                while not done.is_set():
                    with contextlib.suppress(TimeoutError):
                        receiver.recv(16)
                        count[0] += 1

            drainer = threading.Thread(target=drain)
            drainer.start()
            try:
                argv = ["sh", "-c", script, sys.executable, KILLED_WHILE_SENDING]
                proc = run_native(argv) if opts is None else run_launch(*opts, argv=argv)
            finally:
                done.set()
                drainer.join()
            assert proc.returncode == 0, describe(proc)
            path.unlink()
            dead.unlink()
            return count[0]

    native = delivered(None)
    assert native > 0
    assert delivered(("--enforce", "--deny", str(tmp_path / "elsewhere"))) == native


# Sends naming a socket path on sockets that never look it up: a connected
# stream socket refuses any address, a connected seqpacket one ignores it.
UNLOOKED = r"""
import errno, socket, sys
def attempt(f):
    try:
        return str(f())
    except OSError as e:
        return errno.errorcode[e.errno]
for kind, name in ((socket.SOCK_STREAM, "stream"), (socket.SOCK_SEQPACKET, "seqpacket")):
    s = socket.socket(socket.AF_UNIX, kind)
    s.connect(sys.argv[1] if kind == socket.SOCK_STREAM else sys.argv[2])
    for target in sys.argv[3:]:
        print(name, target.rsplit("/", 1)[1], attempt(lambda: s.sendto(b"x", target)))
"""


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_socket_that_never_looks_its_address_up_ignores_the_rules(
    tmp_path: Path, mode: str
) -> None:
    """A stream or seqpacket socket given a socket path as ``sendto``'s
    address never looks it up (unix_stream_sendmsg(): EISCONN;
    unix_seqpacket_sendmsg(): ignored), so no rule about that path applies
    and the answer is the kernel's, even for a path no lookup could get
    through (``denied/through``: ENOTDIR). Before, a denied path gave the
    deny's EACCES, and under --enforce a missing one ENOENT."""
    stream, seqpacket = tmp_path / "stream", tmp_path / "seqpacket"
    denied, missing = tmp_path / "denied", tmp_path / "missing"

    def run(opts: tuple[str, ...] | None) -> str:
        with contextlib.ExitStack() as stack:
            for path, kind in ((stream, socket.SOCK_STREAM), (seqpacket, socket.SOCK_SEQPACKET),
                               (denied, socket.SOCK_DGRAM)):  # fmt: skip
                s = stack.enter_context(socket.socket(socket.AF_UNIX, kind))
                s.bind(str(path))
                if kind != socket.SOCK_DGRAM:
                    s.listen(4)
                stack.callback(path.unlink)
            argv = py(UNLOOKED, str(stream), str(seqpacket), str(denied), str(missing),
                      f"{denied}/through")  # fmt: skip
            proc = run_native(argv) if opts is None else run_launch(*opts, argv=argv)
        assert proc.returncode == 0 and proc.stderr == "", describe(proc)
        return proc.stdout

    native = run(None)
    assert native.splitlines() == [
        "stream denied EISCONN", "stream missing EISCONN", "stream through EISCONN",
        "seqpacket denied 1", "seqpacket missing 1", "seqpacket through 1",
    ], native  # fmt: skip
    opts = ("--deny", str(denied)) + (("--enforce",) if mode == "enforce" else ())
    assert run(opts) == native


# Sends with bad arguments on every kind of fd: "FD WAY ERRNO". A bad pointer
# is one the kernel accepts as a user address but cannot read (8).
BAD_SENDS = r"""
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    return "OK" if getattr(libc, name)(*args) >= 0 else errno.errorcode[ctypes.get_errno()]
dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
bad = ctypes.c_void_p(8)
to = ctypes.create_string_buffer(b"\x01\x00" + sys.argv[1].encode() + b"\x00", 110)
fds = {"closed": 999, "file": os.open("/", os.O_RDONLY), "o-path": os.open("/", os.O_PATH),
       "dgram": dgram.fileno(), "stream": stream.fileno()}
for label, fd in fds.items():
    print(label, "bad-address", call("sendto", fd, b"x", 1, 0, bad, 110))
    print(label, "bad-length", call("sendto", fd, b"x", 1, 0, to, 200))
    print(label, "bad-msghdr", call("sendmsg", fd, bad, 0))
    if label != "stream":
        print(label, "bad-buffer", call("sendto", fd, bad, 1, 0, to, 110))
"""


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_send_with_bad_arguments_fails_in_the_kernels_order(tmp_path: Path, mode: str) -> None:
    """sockfd_lookup_light() comes first in every send (net/socket.c): no fd
    is EBADF and a file ENOTSOCK before any bad pointer or length is seen.
    Before, the supervisor read the arguments first and answered EFAULT or
    EINVAL (audit helper-18). A stream socket given a bad buffer is left out:
    under --enforce it answers EFAULT where the kernel says EOPNOTSUPP
    first (README, "Datagrams to a socket path")."""
    argv = py(BAD_SENDS, str(tmp_path / "nobody-listens"))
    native = run_native(argv)
    assert native.returncode == 0, describe(native)
    for line in ("closed bad-address EBADF", "file bad-msghdr ENOTSOCK",
                 "o-path bad-length EBADF", "dgram bad-address EFAULT"):  # fmt: skip
        assert line in native.stdout.splitlines(), native.stdout  # the control
    opts = ("--deny", str(tmp_path / "elsewhere"), *(("--enforce",) if mode == "enforce" else ()))
    proc = run_launch(*opts, argv=argv)
    want = native.stdout.splitlines()
    if mode == "enforce":
        # An O_PATH open is answered with a readable fd there (opens.readable_instead).
        want = [line if not line.startswith("o-path") else line.replace("EBADF", "ENOTSOCK")
                for line in want]  # fmt: skip
    assert proc.stdout.splitlines() == want, describe(proc)
