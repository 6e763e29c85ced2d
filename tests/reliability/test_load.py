"""64 programs x 10 000 redirected opens under one daemon: nothing lost,
duplicated or misattributed; the daemon's RSS and fd count stay flat over
1 000 000 notifications.

A short calibration round with the same 64 programs comes first: if the
full run would take longer than BUDGET seconds on this machine, both counts
are scaled down and the RESULT line says so (with the estimate).
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from unotifyd.daemon.lanes import LINGER
from unotifyd.kernel.passthrough import MAX_LANES

from ..integration.helpers import TIMEOUT
from .support import (
    Daemon,
    Procs,
    Report,
    build_c,
    kv,
    public_dir,
    read_line,
    start_daemon,
    write,
)

pytestmark = pytest.mark.kernel

PROGRAMS = 64
REDIRECTED_OPENS = 10_000
# Pass-through opens (CONTINUE) on top, so that the loops alone make
# 1 000 000 notifications: 64 x (10 000 + 5 625).
PASS_OPENS = 5_625
#: Seconds the full run may take, estimated from a short calibration round
#: first; beyond it both counts are scaled down, and the output says so.
#: A minute: on CI's two CPUs that is ~150 000 notifications, plenty to see
#: memory or fds grow, and it leaves the suite room in its 15 minutes.
BUDGET = 60.0


@dataclass
class Round:
    lines: list[str]
    secs: float
    samples: list[tuple[float, int, int]]  # (time, daemon RSS kB, daemon fds)
    notifications: int


def _round(daemon: Daemon, wl: Path, d: Path, n_red: int, n_pass: int) -> Round:
    """Run 64 programs at once, each n_red redirected + n_pass pass-through opens."""
    before = daemon.status()["profiles"]["load"]["notifications"]
    programs = [
        daemon.popen("load", [str(wl), "load", f"p{i}", str(d / "src" / f"p{i}"), str(n_red),
                              str(d / "pass.txt"), str(n_pass)], stdin=subprocess.PIPE)
        for i in range(PROGRAMS)
    ]
    # Wait until all 64 are served (exec'd, waiting for EOF on stdin).
    deadline = time.monotonic() + 60
    while daemon.status()["programs_running"] < PROGRAMS:
        assert time.monotonic() < deadline, "not every program got started"
        time.sleep(0.1)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), daemon.rss_kb(), daemon.fds()))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    t0 = time.monotonic()
    sampler.start()
    for p in programs:
        assert p.stdin is not None
        p.stdin.close()
    try:
        lines = [read_line(p, timeout=BUDGET * 2) for p in programs]
    finally:
        stop.set()
        sampler.join()
    secs = time.monotonic() - t0
    for p in programs:
        p.wait(30)
    status = daemon.wait_idle()
    return Round(lines, secs, samples, status["profiles"]["load"]["notifications"] - before)


def test_64_programs_10000_opens_each_nothing_lost_and_flat_memory(
    procs: Procs, bin_dir: Path, report: Report
) -> None:
    wl = build_c(bin_dir, "workload")
    with public_dir("unotifyd-rel-load-") as d:
        (d / "src").mkdir()
        for i in range(PROGRAMS):
            write(d / "dst" / f"p{i}", f"p{i}\n")
        write(d / "pass.txt", "PASS\n")
        policy = f'version = 1\n[[redirect]]\nfrom = "{d}/src/**"\nto = "{d}/dst/**"\n'
        with start_daemon(procs, {"load": policy}) as daemon:
            fds_idle = daemon.settled_fds()
            rss_idle = daemon.rss_kb()
            cal = _round(daemon, wl, d, 400, 225)
            full = PROGRAMS * (REDIRECTED_OPENS + PASS_OPENS)
            estimate = cal.secs * full / cal.notifications
            scale = min(1.0, BUDGET / estimate)
            n_red = round(REDIRECTED_OPENS * scale)
            n_pass = round(PASS_OPENS * scale)
            run = _round(daemon, wl, d, n_red, n_pass)
            status = daemon.status()
            fds_end = daemon.fds()
            rss_end = daemon.rss_kb()
            alive = daemon.alive()
            # The programs' lane (its thread, trio loop and fds) ends once idle.
            deadline = time.monotonic() + 2 * LINGER + TIMEOUT
            while daemon.fds() != fds_idle and time.monotonic() < deadline:
                time.sleep(0.05)
            fds_after_lanes = daemon.fds()
    results = [kv(line) for line in run.lines]
    ok = sum(int(r.get("ok", 0)) for r in results)
    lost = sum(int(r.get("lost", 0)) for r in results) + sum(1 for r in results if not r)
    wrong = sum(int(r.get("wrong", 0)) for r in results)
    moved = sum(int(r.get("fd_moved", 0)) for r in results)
    pass_fail = sum(int(r.get("pass_fail", 0)) for r in results)
    misattributed_ids = sorted(
        r.get("id", "?") for i, r in enumerate(results) if r.get("id") != f"p{i}"
    )
    internal = status["profiles"]["load"]["internal_errors"]
    samples = run.samples
    start, mid, last = samples[0], samples[len(samples) // 2], samples[-1]
    report(
        "load-64x10000",
        programs=PROGRAMS, opens_each=n_red, redirected_ok=ok, lost=lost, wrong=wrong,
        duplicated_fds=moved, pass_fail=pass_fail, notifications=run.notifications,
        internal_errors=internal, secs=round(run.secs, 1),
        notif_per_s=round(run.notifications / run.secs),
        scaled=("no" if scale == 1.0 else
                f"{scale:.2f}(calibration-estimate-{estimate:.0f}s>budget-{BUDGET:.0f}s)"),
    )
    report(
        "load-64x10000-daemon",
        rss_kb_idle=rss_idle, rss_kb_start=start[1], rss_kb_mid=mid[1], rss_kb_end=last[1],
        rss_kb_after=rss_end, fds_idle=fds_idle, fds_start=start[2], fds_mid=mid[2],
        fds_end=last[2], fds_after=fds_end, fds_after_lanes=fds_after_lanes,
        samples=len(samples),
    )
    assert ok == PROGRAMS * n_red, run.lines
    assert (lost, wrong, moved, pass_fail) == (0, 0, 0, 0), run.lines
    assert misattributed_ids == []
    assert run.notifications >= PROGRAMS * (n_red + n_pass)
    assert internal == 0
    assert alive
    # Flat: no growth with the number of notifications served.
    assert last[1] - start[1] < 16 * 1024, samples
    # A pass-through lane starts for a program once it is busy and holds a
    # few fds while it runs: its socket pair and eventfd; for each of its two
    # threads (pt_run: the follower's wake and end eventfds) /proc/self/fd,
    # and the /proc/TID directory and pidfd of each thread it served (these
    # programs have one). At most MAX_LANES run at once, whatever is served.
    lane_fds = MAX_LANES * (3 + 2 + 2 * (1 + 2))
    assert max(s[2] for s in samples) <= start[2] + 4 + lane_fds, samples
    assert fds_after_lanes == fds_idle
