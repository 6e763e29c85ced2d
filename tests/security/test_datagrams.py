"""Datagrams to a socket path, raced: the address flips to a denied socket's meanwhile.

``progs/dgramrace.c`` sends datagrams (``sendmsg`` and ``sendto`` in turn) to an
allowed socket path while a second thread, or another process through a
``MAP_SHARED`` page, keeps flipping that path in its memory to a denied
socket's. Natively (the control) the denied socket receives a share of them.
Under ``--enforce --deny DENIED`` it must receive none: the supervisor makes
each send from the address it read and decided on, never letting the kernel
read it again (calls/sends.py). Prints a ``RESULT`` line per case.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..integration.helpers import describe, run_launch, run_native
from .support import IDENTITIES, Report, build_c, directory

pytestmark = pytest.mark.kernel

TRIES = 10_000
NATIVE_TRIES = 20_000  # natively the sends take ~2 us each: a wider window for the control


@pytest.fixture(scope="session")
def dgramrace_bin(public: Path) -> Path:
    return build_c(directory(public / "dgramrace", owner=0), "dgramrace")


@contextmanager
def _counting(paths: dict[str, Path]) -> Iterator[dict[str, int]]:
    """Receivers bound at ``paths`` (writable by anyone), counting what arrives until the end."""
    counts = dict.fromkeys(paths, 0)
    socks = {}
    for name, path in paths.items():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(path))
        path.chmod(0o777)
        s.setblocking(False)
        socks[s] = name
    done = threading.Event()

    def drain() -> None:
        while True:
            ready, _, _ = select.select(list(socks), [], [], 0.05)
            for s in ready:
                while True:
                    try:
                        s.recv(16)
                    except BlockingIOError:
                        break
                    counts[socks[s]] += 1
            if done.is_set() and not ready:
                return

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        yield counts
    finally:
        done.set()
        t.join(10)
        for s in socks:
            s.close()


def _race(argv: list[str], options: tuple[str, ...], tries: int) -> dict[str, int]:
    proc = (
        run_launch(*options, argv=argv, timeout=600) if options else run_native(argv, timeout=600)
    )
    match = re.fullmatch(r"(sent=\d+ refused=\d+ other=\d+ tries=\d+)\n", proc.stdout)
    assert proc.returncode == 0 and match, describe(proc)
    figures = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    assert figures["tries"] == tries
    return figures


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("kind", ["thread", "shared"])
def test_a_raced_datagram_never_reaches_a_denied_socket(
    public: Path, dgramrace_bin: Path, report: Report, kind: str, who: str
) -> None:
    identity = IDENTITIES[who]
    ws = public / f"dgram-{kind}-{who}"
    ws.mkdir(mode=0o755)
    directory(ws / "a", owner=0)
    directory(ws / "d", owner=0)
    paths = {"allowed": ws / "a" / "s", "denied": ws / "d" / "s"}
    argv = [*identity.prefix, str(dgramrace_bin), kind]
    targets = [str(paths["allowed"]), str(paths["denied"])]

    with _counting(paths) as native:
        sender = _race([*argv, str(NATIVE_TRIES), *targets], (), NATIVE_TRIES)
    assert native["denied"] > 0, f"the flip never sent a datagram to the denied socket: {native}"
    assert sender["sent"] == NATIVE_TRIES, sender

    for path in paths.values():
        path.unlink()
    with _counting(paths) as enforced:
        sender = _race([*argv, str(TRIES), *targets], ("--enforce", "--deny", f"{ws}/d/**"), TRIES)
    report(
        f"datagram-race[{kind}-{who}]",
        native=f"{native['denied']}/{NATIVE_TRIES}",
        enforce=f"{enforced['denied']}/{TRIES}",
        allowed=enforced["allowed"],
        refused=sender["refused"],
        escapes=enforced["denied"],
    )
    assert enforced["denied"] == 0
    assert sender["other"] == 0, sender
    assert enforced["allowed"] == sender["sent"] > 0, (enforced, sender)
