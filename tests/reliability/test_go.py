"""A Go program: many goroutines opening redirected files under CPU load.

Go preempts long-running goroutines with SIGURG and parks threads blocked
in syscalls, so its threads are signalled while their opens wait for the
supervisor: the classic way a supervisor double-serves or fails a call. The
test adds its own SIGURG to every thread of the program, ~2000 a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .support import PROGS, Procs, Report, descendants, kv, launch_cmd, read_line, write

pytestmark = pytest.mark.kernel

_SYS_TGKILL = 234  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)

OPENS = 60_000  # ~1 minute on CI's two CPUs under the spinning load
WORKERS = 32
BUSY = 4  # spinning goroutines: GOMAXPROCS=4 on 2 cores keeps every CPU busy


def _go_build(tmp: Path) -> Path:
    exe = tmp / "goopen"
    # One stdlib-only file, built by name: no module, no download.
    genv = {
        **os.environ,
        "GOCACHE": str(tmp / "gocache"),
        "GOPATH": str(tmp / "gopath"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    proc = subprocess.run(
        ["go", "build", "-o", str(exe), str(PROGS / "goopen" / "main.go")],
        env=genv, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"go build failed:\n{proc.stderr}"
    return exe


def _tgkill_flood(pid: int, stop: threading.Event, sent: list[int]) -> None:
    rng = random.Random(1)
    n = 0
    while not stop.is_set():
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            break
        for tid in rng.sample(tids, min(len(tids), 4)):
            if _libc.syscall(_SYS_TGKILL, pid, tid, signal.SIGURG) == 0:
                n += 1
        time.sleep(0.002)
    sent.append(n)


def test_go_goroutines_under_load_never_fail_an_open(
    procs: Procs, tmp_path: Path, report: Report
) -> None:
    exe = _go_build(tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(16):
        write(dst / f"w{i}", f"w{i}\n")
    sup = procs.popen(
        launch_cmd("--redirect", f"{src}/**={dst}/**",
                   argv=[str(exe), str(src), str(WORKERS), str(OPENS), str(BUSY)]),
        env={**os.environ, "GOMAXPROCS": "4"},
    )
    # The Go program is a descendant of unotifyd: find it by its executable.
    deadline = time.monotonic() + 10
    go_pid = 0
    while not go_pid and time.monotonic() < deadline:
        for pid in descendants(sup.pid):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe") == str(exe):
                    go_pid = pid
        time.sleep(0.01)
    assert go_pid, "the Go program did not start"
    stop = threading.Event()
    sent: list[int] = []
    flooder = threading.Thread(target=_tgkill_flood, args=(go_pid, stop, sent))
    flooder.start()
    t0 = time.monotonic()
    try:
        line = read_line(sup, timeout=240)
    finally:
        stop.set()
        flooder.join()
    wall = time.monotonic() - t0
    sup.wait(30)
    assert sup.stderr is not None
    err = sup.stderr.read()
    r = kv(line)
    report("go-goroutines", opens=r.get("opens"), failures=r.get("failures"),
           wrong=r.get("wrong"), workers=WORKERS, busy=BUSY, gomaxprocs=4,
           sigurg_sent=sent[0], secs=r.get("secs"),
           opens_per_s=round(OPENS / float(r.get("secs", wall))))
    assert r.get("opens") == str(OPENS), (line, err)
    assert (r["failures"], r["wrong"]) == ("0", "0"), (line, err)
    assert sup.returncode == 0, err
    assert sent[0] > 0
    assert "internal error" not in err, err
