"""The terminal behaves as if the program ran alone: Ctrl-C reaches it exactly once.

unotifyd and the program share the terminal's foreground process group, so
the terminal's SIGINT reaches both. unotifyd must not forward that one (the
program would get it twice), while a SIGINT that another process sends to
unotifyd must be forwarded.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Callable

import pytest

from .helpers import env, launch_cmd

pytestmark = pytest.mark.kernel

# Counts SIGINTs for a while after saying it is ready, then reports them.
COUNTER = """
import signal, sys, time, os
n = 0
def on_int(sig, frame):
    global n
    n += 1
signal.signal(signal.SIGINT, on_int)
print("tty" if os.isatty(0) and os.isatty(1) else "no-tty", "ready", flush=True)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    time.sleep(0.05)
print("ints", n, flush=True)
sys.exit(3)
"""


def _run_in_pty(argv: list[str], when_ready: Callable[[int, int], None]) -> tuple[str, int]:
    """Run ``argv`` on a new pty; once it printed "ready", call ``when_ready(pid, master)``.

    Returns the terminal's output and the exit status.
    """
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs
        try:
            os.execvpe(argv[0], argv, env())
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 20
    typed = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not chunk:
                    break
                out += chunk
            if not typed and b"ready" in out:
                when_ready(pid, master)
                typed = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _ints(output: str) -> int:
    # The terminal echoes Ctrl-C as "^C" in front of the program's line.
    found = re.search(r"ints (\d+)", output)
    assert found, f"no count in {output!r}"
    return int(found.group(1))


def _type_ctrl_c(_pid: int, master: int) -> None:
    os.write(master, b"\x03")


def test_ctrl_c_reaches_the_program_once_as_natively() -> None:
    native, native_status = _run_in_pty([sys.executable, "-c", COUNTER], _type_ctrl_c)
    assert "tty ready" in native and native_status == 3
    assert _ints(native) == 1
    argv = launch_cmd("--deny", "/nonexistent", argv=[sys.executable, "-c", COUNTER])
    out, status = _run_in_pty(argv, _type_ctrl_c)
    assert "tty ready" in out, out  # the program's stdin and stdout are the terminal
    assert status == 3, out  # unotifyd survived Ctrl-C and returned the program's status
    assert _ints(out) == 1, out  # exactly once: not forwarded on top of the terminal's


def test_sigint_from_another_process_is_forwarded_once() -> None:
    argv = launch_cmd("--deny", "/nonexistent", argv=[sys.executable, "-c", COUNTER])
    # pid is unotifyd itself: kill() gives an SI_USER signal, not the terminal's.
    out, status = _run_in_pty(argv, lambda pid, _master: os.kill(pid, signal.SIGINT))
    assert status == 3, out
    assert _ints(out) == 1, out
