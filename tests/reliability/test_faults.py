"""Faults: a supervisor or a program killed, stopped or flooded with signals mid-call,
a full fd table, a blocked open next to other programs, fd leaks.

Each test counts what happened and prints it (``RESULT`` lines).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ..integration.helpers import py, write
from .support import (
    NOBODY,
    TIMEOUT,
    Daemon,
    Procs,
    Report,
    build_c,
    descendants,
    fd_count,
    kv,
    launch_cmd,
    listener_holders,
    public_dir,
    read_line,
    start_daemon,
)

pytestmark = pytest.mark.kernel


def _redirect_policy(*pairs: tuple[Path | str, Path | str]) -> str:
    text = "version = 1\n"
    for src, dst in pairs:
        text += f'\n[[redirect]]\nfrom = "{src}"\nto = "{dst}"\n'
    return text


def _assert_daemon_healthy(daemon: Daemon) -> None:
    assert daemon.alive(), daemon.log()
    log = daemon.log()
    assert "Traceback" not in log and "internal error" not in log, log


# --- the supervisor dies -------------------------------------------------------------


@pytest.mark.parametrize("front", ["daemon", "launch"])
def test_sigkilled_supervisor_gives_every_program_enosys_within_1s(
    front: str, procs: Procs, bin_dir: Path, report: Report
) -> None:
    """8 programs mid-notification: 4 blocked in a redirected open of a FIFO
    (served by a worker thread), 4 opening a redirected file in a loop. After
    SIGKILL of the supervisor each must see ENOSYS within one second."""
    wl = build_c(bin_dir, "workload")
    with public_dir("unotifyd-rel-kill-") as d:
        fifo = d / "fifo"
        os.mkfifo(fifo)
        reg = write(d / "reg.txt", "REG\n")
        fifo_src, reg_src = d / "fifo-src", d / "reg-src"
        policy = _redirect_policy((fifo_src, fifo), (reg_src, reg))
        argvs = [[str(wl), "block", str(fifo_src)]] * 4 + [[str(wl), "untilerr", str(reg_src)]] * 4

        results: list[dict[str, str]] = []
        if front == "daemon":
            with start_daemon(procs, {"p": policy}) as daemon:
                programs = [daemon.popen("p", argv) for argv in argvs]
                for p in programs:
                    assert read_line(p).startswith("ready"), p.stderr
                time.sleep(0.5)
                t0 = time.monotonic()
                os.kill(daemon.proc.pid, signal.SIGKILL)
                for p in programs:
                    results.append(kv(read_line(p, timeout=5)))
        else:
            script = " ".join(f"{' '.join(a)} &" for a in argvs) + " wait"
            sup = procs.popen(launch_cmd("--policy", str(write(d / "p.toml", policy)),
                                         argv=["sh", "-c", script]))
            for _ in argvs:
                assert read_line(sup).startswith("ready")
            time.sleep(0.5)
            t0 = time.monotonic()
            os.kill(sup.pid, signal.SIGKILL)
            for _ in argvs:
                results.append(kv(read_line(sup, timeout=5)))
    delays = [float(r["t"]) - t0 for r in results]
    enosys = sum(1 for r, dt in zip(results, delays, strict=True)
                 if r["result"] == "ENOSYS" and dt < 1.0)
    report(f"sigkill-supervisor[{front}]", programs=len(argvs), enosys_within_1s=enosys,
           hung=len(argvs) - len(results), max_delay_ms=round(max(delays) * 1000, 1))
    assert enosys == len(argvs), (results, delays)


# --- a program dies, is stopped, or is flooded with signals ---------------------------


def test_program_sigkilled_while_served_leaves_the_supervisor_serving(
    procs: Procs, bin_dir: Path, report: Report
) -> None:
    """Programs killed while a notification is served: one blocked in a worker
    thread (FIFO), and 40 killed at random moments of a redirect loop. The
    daemon keeps serving, its fd count returns to the baseline, a fresh
    program gets the right answer."""
    wl = build_c(bin_dir, "workload")
    with public_dir("unotifyd-rel-pkill-") as d:
        fifo = d / "fifo"
        os.mkfifo(fifo)
        reg = write(d / "reg.txt", "REG\n")
        policy = _redirect_policy((d / "fifo-src", fifo), (d / "reg-src", reg))
        with start_daemon(procs, {"p": policy}) as daemon:
            baseline = daemon.settled_fds()
            blocked = daemon.popen("p", [str(wl), "block", str(d / "fifo-src")])
            assert read_line(blocked).startswith("ready")
            time.sleep(0.5)
            blocked.kill()
            blocked.wait(TIMEOUT)
            rng = random.Random(8)
            killed = 0
            for _ in range(40):
                p = daemon.popen("p", [str(wl), "untilerr", str(d / "reg-src")])
                assert read_line(p).startswith("ready")
                time.sleep(rng.uniform(0, 0.03))
                p.kill()
                p.wait(TIMEOUT)
                killed += p.returncode == -signal.SIGKILL
            status = daemon.wait_idle()
            # The blocked FIFO open is released by the supervisor once it
            # notices (it polls ID_VALID a few times a second).
            deadline = time.monotonic() + 5
            while daemon.fds() != baseline and time.monotonic() < deadline:
                time.sleep(0.05)
            after = daemon.fds()
            check = daemon.run("p", ["cat", str(d / "reg-src")])
            _assert_daemon_healthy(daemon)
    internal = status["profiles"]["p"]["internal_errors"]
    report("sigkill-program", killed=killed + 1, fds_before=baseline, fds_after=after,
           internal_errors=internal, gone=status["profiles"]["p"]["gone"],
           served_after=int(check.stdout == "REG\n"))
    assert killed == 40
    assert after == baseline
    assert internal == 0
    assert (check.returncode, check.stdout) == (0, "REG\n")


def _flood(pid: int, how: str, stop: threading.Event, sent: list[int]) -> None:
    n = 0
    try:
        while not stop.is_set():
            if how == "signals":
                os.kill(pid, signal.SIGUSR1)
                os.kill(pid, signal.SIGCHLD)
                n += 2
                if n % 64 == 0:
                    time.sleep(0.0002)  # let the program make progress too
            else:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.001)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.002)
                n += 1
    except ProcessLookupError:
        pass
    finally:
        sent.append(n)


@pytest.mark.parametrize("how", ["signals", "stop-cont"])
def test_signals_during_opens_cause_no_wrong_answer_and_no_duplicate_effect(
    how: str, procs: Procs, bin_dir: Path, report: Report
) -> None:
    """O_CREAT|O_EXCL through a redirect succeeds exactly once per name (and
    a second try is EEXIST), each O_APPEND write lands once, every read is
    of the redirect target, while the program is flooded with SIGUSR1 and
    SIGCHLD or stopped and continued over and over."""
    wl = build_c(bin_dir, "workload")
    rounds = 1500
    with public_dir("unotifyd-rel-sig-") as d:
        (d / "src").mkdir()
        (d / "dst" / "excl").mkdir(parents=True)
        write(d / "dst" / "log", "")
        write(d / "dst" / "read", "REDIRECTED\n")
        policy = _redirect_policy((f"{d}/src/**", f"{d}/dst/**"))
        with start_daemon(procs, {"p": policy}) as daemon:
            p = daemon.popen("p", [str(wl), "effects", str(d / "src" / "excl"), str(rounds),
                                   str(d / "src" / "log"), str(d / "src" / "read"),
                                   "REDIRECTED\n"])
            assert read_line(p).startswith("ready")
            stop = threading.Event()
            sent: list[int] = []
            flooder = threading.Thread(target=_flood, args=(p.pid, how, stop, sent))
            flooder.start()
            try:
                line = read_line(p, timeout=120)
            finally:
                stop.set()
                flooder.join()
                os.kill(p.pid, signal.SIGCONT) if p.poll() is None else None
            p.wait(TIMEOUT)
            status = daemon.wait_idle()
            check = daemon.run("p", ["cat", str(d / "src" / "read")])
            _assert_daemon_healthy(daemon)
        log_lines = (d / "dst" / "log").read_text().splitlines()
        created = len(os.listdir(d / "dst" / "excl"))
    r = {k: int(v) for k, v in kv(line).items()}
    report(f"signal-flood[{how}]", rounds=rounds, sent=sent[0], caught=r["signals"],
           excl_once=r["excl_ok"], excl_failed=r["excl_fail"], second_eexist=r["again_eexist"],
           second_wrong=r["again_wrong"], files_created=created, append_lines=len(log_lines),
           reads_ok=r["read_ok"], reads_wrong=r["read_wrong"], eintr=r["eintr"],
           internal_errors=status["profiles"]["p"]["internal_errors"])
    assert r["excl_ok"] == rounds and r["excl_fail"] == 0, line
    assert r["again_eexist"] == rounds and r["again_wrong"] == 0, line
    assert created == rounds
    assert r["append_ok"] == rounds
    assert log_lines == [f"line {i}" for i in range(rounds)]
    assert r["read_ok"] == rounds and r["read_wrong"] == 0, line
    assert r["eintr"] == 0
    assert status["profiles"]["p"]["internal_errors"] == 0
    assert (check.returncode, check.stdout) == (0, "REDIRECTED\n")
    if how == "signals":
        assert r["signals"] > 0


# --- a full fd table ---------------------------------------------------------------


_EMFILE = """
import errno, os, resource, sys
src, attempts = sys.argv[1], int(sys.argv[2])
print("start", flush=True)
sys.stdin.readline()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
while True:
    try:
        held.append(os.dup(2))
    except OSError as e:
        assert e.errno == errno.EMFILE
        break
got = {}
for _ in range(attempts):
    try:
        os.close(os.open(src, os.O_RDONLY))
        name = "OK"
    except OSError as e:
        name = errno.errorcode[e.errno]
    got[name] = got.get(name, 0) + 1
os.close(held.pop())
fd = os.open(src, os.O_RDONLY)
after = os.read(fd, 100).decode().strip()
os.close(fd)
print(" ".join(f"{k}={v}" for k, v in sorted(got.items())), f"after={after}", flush=True)
sys.stdin.readline()
# A pass-through open: answered only after the supervisor finished with the
# call before (it closes its copy of an injected fd right after injecting it,
# and serves one notification after the other), so the test can count then.
os.close(os.open("/", os.O_RDONLY | os.O_DIRECTORY))
print("synced", flush=True)
sys.stdin.readline()
"""


def test_full_fd_table_gets_emfile_without_hang_or_leak(
    procs: Procs, tmp_path: Path, report: Report
) -> None:
    src = tmp_path / "src"
    dst = write(tmp_path / "dst", "REDIRECTED\n")
    attempts = 500
    sup = procs.popen(launch_cmd("--redirect", f"{src}={dst}",
                                 argv=py(_EMFILE, str(src), str(attempts))),
                      stdin=subprocess.PIPE)
    assert sup.stdin is not None
    assert read_line(sup).startswith("start")
    before = fd_count(sup.pid)
    t0 = time.monotonic()
    sup.stdin.write("go\n")
    sup.stdin.flush()
    line = read_line(sup, timeout=60)
    secs = time.monotonic() - t0
    sup.stdin.write("sync\n")
    sup.stdin.flush()
    assert read_line(sup) == "synced\n"
    after = fd_count(sup.pid)
    sup.stdin.write("done\n")
    sup.stdin.flush()
    sup.wait(TIMEOUT)
    r = kv(line)
    report("full-fd-table", attempts=attempts, emfile=r.get("EMFILE", 0),
           other=attempts - int(r.get("EMFILE", 0)), supervisor_fds_before=before,
           supervisor_fds_after=after, secs=round(secs, 2), then_opened=r["after"])
    assert r == {"EMFILE": str(attempts), "after": "REDIRECTED"}, line
    assert after == before
    assert sup.returncode == 0


# --- a blocked open next to other programs ---------------------------------------------


@pytest.mark.parametrize("blocked", [1, 48, 1100])
def test_blocked_fifo_open_does_not_delay_other_programs(
    blocked: int, procs: Procs, bin_dir: Path, report: Report
) -> None:
    """One program has ``blocked`` threads stuck in redirected opens of FIFOs
    that never get a writer (each waits in a supervisor worker thread).
    Another program's redirected opens — as root (served inline) and as
    ``nobody`` (served in a worker thread, with its credentials) — must be
    as fast as without the blocked ones. 48 is more than trio's default of
    40 worker threads."""
    wl = build_c(bin_dir, "workload")
    n = 300
    with public_dir("unotifyd-rel-fifo-") as d:
        fifos = []
        for i in range(blocked):
            os.mkfifo(d / f"fifo{i}")
            fifos.append((d / f"fsrc{i}", d / f"fifo{i}"))
        write(d / "reg.txt", "REG\n").chmod(0o644)
        policy = _redirect_policy(*fifos, (d / "reg-src", d / "reg.txt"))
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        measure = [str(wl), "latency", str(d / "reg-src"), str(n), "REG\n"]
        figures: dict[str, object] = {"blocked": blocked}
        with start_daemon(procs, {"p": policy}) as daemon:
            for who, argv in (("root", measure), ("nobody", [*as_nobody, *measure])):
                base = daemon.run("p", argv, timeout=60)
                assert base.returncode == 0, base.stderr
                figures[f"{who}_alone"] = kv(base.stdout)
            code = """
                import sys, threading, time
                for path in sys.argv[1:]:
                    threading.Thread(target=open, args=(path,), daemon=True).start()
                print("ready", flush=True)
                time.sleep(60)
            """
            hog = daemon.popen("p", py(code, *(str(s) for s, _ in fifos)))
            assert read_line(hog).startswith("ready")
            time.sleep(1.0)  # every thread is now blocked in its open
            slow: dict[str, dict[str, str]] = {}
            for who, argv in (("root", measure), ("nobody", [*as_nobody, *measure])):
                try:
                    r = daemon.run("p", argv, timeout=10)
                    slow[who] = kv(r.stdout) if r.returncode == 0 else {"failed": r.stderr}
                except subprocess.TimeoutExpired:
                    slow[who] = {"hung": "10s"}
                figures[f"{who}_while_blocked"] = slow[who]
            hog.kill()
            hog.wait(TIMEOUT)
            daemon.wait_idle()
            _assert_daemon_healthy(daemon)
    report(f"blocked-fifo[{blocked}]", **{k: _fmt(v) for k, v in figures.items()})
    for who in ("root", "nobody"):
        got = slow[who]
        assert "hung" not in got and "failed" not in got, (who, got)
        assert int(got["fails"]) == 0, (who, got)
        assert int(got["max_us"]) < 500_000, (who, got)


def _fmt(v: object) -> str:
    if isinstance(v, dict):
        return "/".join(f"{k}:{x}" for k, x in v.items())
    return str(v)


# --- the listener never leaks ------------------------------------------------------


_TREE = """
import os, subprocess, sys, time
# A child and a grandchild, all alive while the test looks at their fds.
subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], close_fds=False)
print("ready", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("front", ["launch", "daemon"])
def test_listener_fd_never_reaches_programs_or_grandchildren(
    front: str, procs: Procs, tmp_path: Path, report: Report
) -> None:
    src = tmp_path / "src"
    dst = write(tmp_path / "dst", "REDIRECTED\n")
    if front == "launch":
        top = procs.popen(launch_cmd("--redirect", f"{src}={dst}", argv=py(_TREE)))
        assert read_line(top).startswith("ready")
        time.sleep(0.3)
        tree = descendants(top.pid)
        holders = listener_holders(tree)
        supervisor_holds = listener_holders([top.pid]).get(top.pid, 0)
    else:
        with start_daemon(procs, {"p": _redirect_policy((src, dst))}) as daemon:
            top = daemon.popen("p", py(_TREE))
            assert read_line(top).startswith("ready")
            time.sleep(0.3)
            tree = [top.pid, *descendants(top.pid)]
            holders = listener_holders(tree)
            supervisor_holds = listener_holders([daemon.proc.pid]).get(daemon.proc.pid, 0)
    report(f"listener-leak[{front}]", processes_checked=len(tree),
           holding_listener=len(holders), supervisor_listeners=supervisor_holds)
    assert len(tree) >= 4, tree  # program, sh, two sleeps
    assert holders == {}
    assert supervisor_holds == 1
