"""A Unix socket is a file: connect(2) to one by its path follows the rules (issue 14).

Natively, connecting to a socket in a tree works (the control); under unotifyd a deny
there refuses it with its errno, a redirect connects to the target socket, and addresses
that name no file (abstract, TCP) connect as natively, in both modes.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import AS_NOBODY, describe, public_dir, py, run_launch, run_native

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",)}

CONNECT = """
import errno, socket, sys
family = {"unix": socket.AF_UNIX, "tcp": socket.AF_INET}[sys.argv[1]]
address = sys.argv[2] if family == socket.AF_UNIX else ("127.0.0.1", int(sys.argv[2]))
s = socket.socket(family, socket.SOCK_STREAM)
try:
    s.connect(address.replace("@", "\\0") if isinstance(address, str) else address)
    s.sendall(b"ping")
    print("connected", s.recv(10).decode())
except OSError as e:
    print("connect", errno.errorcode[e.errno])
"""


def _serve(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(10)
            conn.sendall(b"pong")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A listening socket at tmp/d/sock, an abstract one, and a TCP one."""
    (tmp_path / "d").mkdir()
    socks = []
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "d" / "sock"))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Abstract names are per network namespace, not per session: the pid
    # keeps another pytest (or what a killed one left) from holding ours.
    name = f"unotifyd-test-{os.getpid()}-{tmp_path.name}"
    abstract.bind("\0" + name)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    for s in (unix, abstract, tcp):
        s.listen(16)
        socks.append(s)
        threading.Thread(target=_serve, args=(s,), daemon=True).start()
    yield {"unix": str(tmp_path / "d" / "sock"), "abstract": "@" + name,
           "tcp": str(tcp.getsockname()[1])}  # fmt: skip
    for s in socks:
        s.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_connect_to_a_socket_path_follows_the_rules(
    tmp_path: Path, servers: dict[str, str], mode: str
) -> None:
    sock = servers["unix"]
    native = run_native(py(CONNECT, "unix", sock))
    assert native.stdout == "connected pong\n", describe(native)
    denied = run_launch(*MODES[mode], "--deny", f"{tmp_path}/d/**", argv=py(CONNECT, "unix", sock))
    assert (denied.returncode, denied.stdout) == (0, "connect EACCES\n"), describe(denied)
    alias = str(tmp_path / "alias")
    redirected = run_launch(
        *MODES[mode], "--redirect", f"{alias}={sock}", argv=py(CONNECT, "unix", alias)
    )
    assert (redirected.returncode, redirected.stdout) == (0, "connected pong\n"), describe(
        redirected
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", ["abstract", "tcp", "unix"])
def test_other_connects_are_made_as_natively(
    tmp_path: Path, servers: dict[str, str], mode: str, kind: str
) -> None:
    family = "tcp" if kind == "tcp" else "unix"
    argv = py(CONNECT, family, servers[kind])
    assert run_native(argv).stdout == "connected pong\n"
    proc = run_launch(*MODES[mode], "--deny", f"{tmp_path}/elsewhere/**", argv=argv)
    assert (proc.returncode, proc.stdout) == (0, "connected pong\n"), describe(proc)


def test_enforce_makes_a_connect_from_the_address_it_read(
    tmp_path: Path, servers: dict[str, str]
) -> None:
    """CONTINUE would let the kernel read the address again, which another thread of the
    program could have changed to a denied socket's path since our look: never in enforce."""
    argv = py(CONNECT, "unix", servers["abstract"])
    proc = run_launch("--enforce", "--trace", "--deny", f"{tmp_path}/d/**", argv=argv)
    assert proc.stdout == "connected pong\n", describe(proc)
    connects = [line for line in proc.stderr.splitlines() if " connect(" in line]
    assert connects and all(": emulate" in line for line in connects), proc.stderr


# --- bind ------------------------------------------------------------------------------

BIND = """
import errno, os, socket, stat, sys
os.umask(0o027)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.bind(sys.argv[1].replace("@", "\\0"))
    print("bind OK", end="")
    if not sys.argv[1].startswith("@"):
        st = os.lstat(sys.argv[1])
        print(f" mode={stat.filemode(st.st_mode)} uid={st.st_uid}", end="")
    # The socket itself is as it was (its inode's mode is what bind masks).
    print(f" sock={stat.filemode(os.fstat(s.fileno()).st_mode)}")
except OSError as e:
    print("bind", errno.errorcode[e.errno])
"""

@pytest.fixture
def public() -> Iterator[Path]:
    with public_dir("unotifyd-bind-") as d:
        yield d


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("mode", list(MODES))
def test_bind_to_a_socket_path_follows_the_rules(public: Path, mode: str, who: str) -> None:
    """bind(2) makes a file: natively it is made (with the umask and the caller's
    uid; nobody may not in root's directory); under unotifyd a deny refuses it,
    a read-only tree says EROFS, a redirect makes it at the target."""
    tmp_path = public
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    for name in ("d", "ro", "denied", "target"):
        (tmp_path / name).mkdir(mode=0o777)
        (tmp_path / name).chmod(0o777)
    (tmp_path / "roots").mkdir()  # root's alone: nobody may not make a file there
    native = run_native([*prefix, *py(BIND, str(tmp_path / "d" / "s"))])
    uid = 65534 if who == "nobody" else 0
    assert native.stdout == f"bind OK mode=srwxr-x--- uid={uid} sock=srwxrwxrwx\n", describe(native)
    theirs = run_native([*prefix, *py(BIND, str(tmp_path / "roots" / "s"))])
    assert theirs.stdout == ("bind EACCES\n" if who == "nobody" else native.stdout)
    (tmp_path / "d" / "s").unlink()
    (tmp_path / "roots" / "s").unlink(missing_ok=True)

    opts = (
        *MODES[mode], "--readonly", f"{tmp_path}/ro/**", "--deny", f"{tmp_path}/denied/**",
        "--redirect", f"{tmp_path}/view/**={tmp_path}/target/**",
    )  # fmt: skip
    expected = {
        "d": native.stdout,
        "roots": theirs.stdout,
        "ro": "bind EROFS\n",
        "denied": "bind EACCES\n",
        "view": native.stdout,
        "@abstract": "bind OK sock=srwxrwxrwx\n",
    }
    for name, want in expected.items():
        path = name.replace("@", f"@unotifyd-{tmp_path.name}-") if name[0] == "@" else (
            str(tmp_path / name / "s")
        )
        proc = run_launch(*opts, argv=[*prefix, *py(BIND, path)])
        assert proc.stdout == want, f"{name}: {describe(proc)}"
    assert (tmp_path / "target" / "s").is_socket()
    assert not (tmp_path / "ro" / "s").exists() and not (tmp_path / "denied" / "s").exists()


TAKEN = """
import errno, os, socket, sys
os.chdir(sys.argv[1])
for call in ("bind", "connect"):
    for name in (".", "..", "d/.", "d", "f", "ro/d", "ro/f"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            getattr(s, call)(name)
            print(call, name, "OK")
        except OSError as e:
            print(call, name, errno.errorcode[e.errno])
        s.close()
"""


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_name_that_is_taken_answers_as_natively(public: Path, mode: str, who: str) -> None:
    """bind(2) to a name something has (a directory, a file, ``.``, ``..``)
    is EADDRINUSE: unix_bind_bsd() answers filename_create()'s EEXIST so,
    in a read-only tree too (EEXIST comes before EROFS). connect(2) to a
    file that is no socket checks write permission first (EACCES for one
    the caller may not write), then ECONNREFUSED (unix_find_bsd())."""
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    for where in (public, public / "ro"):
        (where / "d").mkdir(parents=True)
        (where / "f").write_text("")
    public.chmod(0o777)
    argv = [*prefix, *py(TAKEN, str(public))]
    native = run_native(argv)
    # The scratch directory and /tmp may be written by anyone; the rest
    # (root's 0755 and 0644) by root alone.
    refused = "EACCES" if who == "nobody" else "ECONNREFUSED"
    names = (".", "..", "d/.", "d", "f", "ro/d", "ro/f")
    assert native.stdout.splitlines() == [
        *(f"bind {n} EADDRINUSE" for n in names),
        "connect . ECONNREFUSED", "connect .. ECONNREFUSED",
        *(f"connect {n} {refused}" for n in names[2:]),
    ], describe(native)  # fmt: skip
    proc = run_launch(*MODES[mode], "--readonly", f"{public}/ro/**", argv=argv)
    assert (proc.returncode, proc.stdout) == (0, native.stdout), describe(proc)
