"""Processes and threads under unotifyd: children, orphans, threads, signals, fds."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Files
from .helpers import (
    REDIRECTED,
    TIMEOUT,
    describe,
    env,
    launch_cmd,
    py,
    run_launch,
    run_native,
)

pytestmark = pytest.mark.kernel


# --- children, orphans, threads ----------------------------------------------------


def test_forked_child_sees_the_redirect(files: Files) -> None:
    code = """
        import os, sys
        pid = os.fork()
        if pid == 0:
            with open(sys.argv[1]) as f:
                os.write(1, ("child:" + f.read()).encode())
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent:", os.waitstatus_to_exitcode(status))
    """
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "child:" + REDIRECTED + "parent: 0\n"


def test_exec_in_a_child_sees_the_redirect(files: Files) -> None:
    proc = run_launch(
        "--redirect",
        files.redirect,
        argv=["sh", "-c", f"sh -c 'cat {files.src}' && cat {files.src}"],
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED * 2


def test_orphan_outliving_the_program_stays_supervised(files: Files, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The orphan's stdio goes elsewhere so that only unotifyd itself holds our
    # pipes: subprocess.run returns when unotifyd exits, not when the orphan does.
    script = f"(exec >/dev/null 2>&1 </dev/null; sleep 0.3; cat {files.src} > {out}) & exit 5"
    start = time.monotonic()
    proc = run_launch("--redirect", files.redirect, argv=["sh", "-c", script])
    elapsed = time.monotonic() - start
    # unotifyd exits with the program's status, but only after the orphan is done.
    assert proc.returncode == 5, describe(proc)
    assert out.read_text() == REDIRECTED
    assert elapsed >= 0.3


def test_thread_pool_opens_concurrently(files: Files) -> None:
    code = """
        import sys
        from concurrent.futures import ThreadPoolExecutor
        path, want = sys.argv[1], sys.argv[2]

        def work(_: int) -> tuple[int, list[str]]:
            ok, bad = 0, []
            for _ in range(200):
                try:
                    with open(path) as f:
                        got = f.read()
                except OSError as e:
                    bad.append(repr(e))
                    continue
                if got == want:
                    ok += 1
                else:
                    bad.append(repr(got))
            return ok, bad

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
        print(sum(ok for ok, _ in results), [b for _, bad in results for b in bad][:5])
    """
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src), REDIRECTED), timeout=60
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "1600 []\n"


def test_threads_with_different_paths_get_their_own_answers(files: Files, tmp_path: Path) -> None:
    # Each thread opens its own redirected file: answers must not cross threads.
    opts: list[str] = []
    for i in range(8):
        (tmp_path / f"s{i}").write_text("S\n")
        (tmp_path / f"t{i}").write_text(f"T{i}\n")
        opts += ["--redirect", f"{tmp_path}/s{i}={tmp_path}/t{i}"]
    code = """
        import sys, threading
        root, errors = sys.argv[1], []
        def work(i):
            for _ in range(100):
                got = open(f"{root}/s{i}").read()
                if got != f"T{i}\\n":
                    errors.append((i, got))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(errors[:5])
    """
    proc = run_launch(*opts, argv=py(code, str(tmp_path)), timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "[]\n"


# --- exit status and signals -------------------------------------------------------


def test_exit_status_is_propagated() -> None:
    proc = run_launch("--deny", "/nonexistent", argv=["sh", "-c", "exit 7"])
    assert proc.returncode == 7, describe(proc)


def test_death_by_sigterm_is_128_plus_15() -> None:
    proc = run_launch("--deny", "/nonexistent", argv=["sh", "-c", "kill -TERM $$"])
    assert proc.returncode == 128 + signal.SIGTERM, describe(proc)


def test_death_by_sigkill_is_137() -> None:
    proc = run_launch("--deny", "/nonexistent", argv=["sh", "-c", "kill -KILL $$"])
    assert proc.returncode == 128 + signal.SIGKILL, describe(proc)


def _default_signals() -> None:
    """HUP and INT unblocked, with their default action, whatever the runner
    left: one under ``nohup`` ignores HUP, and an ignored signal stays
    ignored across exec, where a shell may not even trap it (POSIX, ``trap``),
    natively too; a blocked one stays blocked."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGINT})


def _signal_states(pgid: int) -> str:
    """The signal state of each process of group ``pgid`` and its threads, for a
    failure's message (proc(5): pending, blocked, ignored, caught)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    fields = dict(line.split(":\t", 1) for line in f.read().splitlines()
                                  if ":\t" in line)  # fmt: skip
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                keys = ("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
                out.append(f"{pid}/{tid} {name}: " + " ".join(f"{k}={fields.get(k)}" for k in keys))
        except OSError:
            continue
    return "\n".join(out)


def _start(argv: list[str]) -> subprocess.Popen[str]:
    """Start unotifyd on ``argv``, which prints "ready" once it may be signalled.

    In a process group of its own, so that a failure can end the program too
    (see _finish).
    """
    p = subprocess.Popen(
        launch_cmd("--deny", "/nonexistent", argv=argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        close_fds=True,
        process_group=0,
        preexec_fn=_default_signals,  # noqa: PLW1509 - two sigactions and a sigprocmask, no lock
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if line != "ready\n":
        p.kill()
        _, err = p.communicate(timeout=TIMEOUT)
        pytest.fail(f"program did not start: {line!r} {err}")
    return p


def _finish(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # The whole group: a program left behind (unotifyd gone first)
        # would hold the pipes open, and the wait for their end forever.
        states = _signal_states(p.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=TIMEOUT)
        pytest.fail(f"unotifyd or its program did not exit after the signal: {out} {err}\n{states}")
    return p.returncode, out, err


def test_sigterm_to_unotifyd_is_forwarded() -> None:
    p = _start(["sh", "-c", "echo ready; exec sleep 30"])
    os.kill(p.pid, signal.SIGTERM)
    rc, out, err = _finish(p)
    assert rc == 128 + signal.SIGTERM, (rc, out, err)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 3), (signal.SIGHUP, 4)])
def test_trapped_signal_to_unotifyd_reaches_the_program(sig: signal.Signals, code: int) -> None:
    p = _start(
        [
            "sh",
            "-c",
            "trap 'exit 3' INT; trap 'exit 4' HUP; echo ready; while :; do sleep 0.05; done",
        ]
    )
    os.kill(p.pid, sig)
    rc, out, err = _finish(p)
    assert rc == code, (rc, out, err)


def test_signal_program_handles_and_survives() -> None:
    # The program catches SIGUSR1 and goes on: unotifyd stays until it exits.
    code = """
        import signal, sys, time
        got = []
        signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
        print("ready", flush=True)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        print("caught" if got else "timeout", flush=True)
        sys.exit(9)
    """
    p = _start(py(code))
    os.kill(p.pid, signal.SIGUSR1)
    rc, out, err = _finish(p)
    assert (rc, out) == (9, "caught\n"), err


# --- the program's fds -------------------------------------------------------------

#: Prints {fd: what it points to} for the process, and for a grandchild.
_FDS = """
import json, os, re, subprocess, sys

def fds():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the directory fd listdir used
        out[name] = re.sub(r"^(pipe|socket):\\[\\d+\\]$", r"\\1", target)
    return out

if sys.argv[1:] == ["child"]:
    print(json.dumps(fds()))
else:
    grandchild = subprocess.run([sys.executable, "-c", sys.argv[1], "child"],
                                capture_output=False, stdout=subprocess.PIPE,
                                close_fds=False, text=True).stdout
    print(json.dumps({"self": fds(), "grandchild": json.loads(grandchild)}))
"""


def _fd_tables(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    assert proc.returncode == 0, describe(proc)
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def _assert_no_supervisor_fd(tables: dict[str, dict[str, str]]) -> None:
    for who, table in tables.items():
        for fd, target in table.items():
            assert "seccomp" not in target, (who, fd, target)
            assert not target.startswith("socket"), (who, fd, target)
            assert "anon_inode" not in target, (who, fd, target)


def test_fd_set_is_the_same_as_a_native_run(files: Files) -> None:
    argv = py(_FDS, _FDS)
    native = _fd_tables(run_native(argv, pass_fds=()))
    proc = _fd_tables(run_launch("--redirect", files.redirect, argv=argv, pass_fds=()))
    assert proc == native
    _assert_no_supervisor_fd(proc)


def test_fd_set_with_inherited_fds_and_tracing(files: Files, tmp_path: Path) -> None:
    # An fd the caller passes on reaches the program (like running it alone);
    # the trace file unotifyd writes does not.
    extra = os.open(files.target, os.O_RDONLY)
    try:
        argv = py(_FDS, _FDS)
        native = _fd_tables(run_native(argv, pass_fds=(extra,)))
        proc = _fd_tables(
            run_launch(
                "--trace",
                "--trace-json",
                str(tmp_path / "trace.jsonl"),
                "--redirect",
                files.redirect,
                argv=argv,
                pass_fds=(extra,),
            )
        )
    finally:
        os.close(extra)
    assert str(extra) in native["self"]
    assert proc == native
    _assert_no_supervisor_fd(proc)


def test_no_supervisor_fd_in_a_late_orphan(files: Files, tmp_path: Path) -> None:
    # A grandchild that lists its fds after the program exited.
    out = tmp_path / "fds"
    script = f"(exec >/dev/null 2>&1 </dev/null; sleep 0.2; ls -l /proc/self/fd/ > {out}) & exit 0"
    proc = run_launch("--redirect", files.redirect, argv=["sh", "-c", script])
    assert proc.returncode == 0, describe(proc)
    listing = out.read_text()
    assert "seccomp" not in listing
    assert "socket" not in listing
    targets = re.findall(r" (\d+) -> (.*)$", listing, re.M)
    # 0 and 2 from the subshell, 1 the output file, 3 the directory ls reads.
    assert [fd for fd, _ in targets] == ["0", "1", "2", "3"], listing
    assert [t for _, t in targets[:3]] == ["/dev/null", str(out), "/dev/null"], listing


# --- blocking opens and full fd tables ---------------------------------------------


def test_fifo_open_does_not_stall_other_opens(files: Files, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fifo_src = tmp_path / "fifo-src"
    code = """
        import os, sys, threading, time
        fifo_src, reg_src, fifo = sys.argv[1:4]
        got = []
        def reader():
            with open(fifo_src) as f:   # redirected to the FIFO: blocks for a writer
                got.append(f.read())
        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)                 # the reader is now blocked in its open
        start = time.monotonic()
        with open(reg_src) as f:        # must not wait for the FIFO
            print("regular:", f.read(), end="", flush=True)
        print("fast" if time.monotonic() - start < 2 else "slow", flush=True)
        print("reader alive:", t.is_alive(), flush=True)
        with open(fifo, "w") as w:      # now a writer comes
            w.write("THROUGH FIFO\\n")
        t.join(10)
        print("reader got:", got)
    """
    proc = run_launch(
        "--redirect",
        f"{fifo_src}={fifo}",
        "--redirect",
        files.redirect,
        argv=py(code, str(fifo_src), str(files.src), str(fifo)),
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == (
        "regular: " + REDIRECTED + "fast\nreader alive: True\nreader got: ['THROUGH FIFO\\n']\n"
    )


def test_fifo_open_nonblock_for_writing_without_reader_is_enxio(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    src = tmp_path / "src"
    code = """
        import errno, os, sys
        try:
            os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            print(errno.errorcode[e.errno])
        fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)  # never blocks
        print("nonblock read open ok", fd > 2)
    """
    proc = run_launch("--redirect", f"{src}={fifo}", argv=py(code, str(src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "ENXIO\nnonblock read open ok True\n"


def test_full_fd_table_gets_emfile_not_a_hang(files: Files) -> None:
    code = """
        import errno, os, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        while True:
            try:
                held.append(os.dup(0))
            except OSError as e:
                assert e.errno == errno.EMFILE
                break
        for attempt in range(2):
            try:
                fd = os.open(sys.argv[1], os.O_RDONLY)
                print("opened", os.read(fd, 100).decode(), end="")
                os.close(fd)
            except OSError as e:
                print(errno.errorcode[e.errno])
            os.close(held.pop())   # make room: the next attempt succeeds
    """
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "EMFILE\nopened " + REDIRECTED


def test_program_exiting_during_a_pending_fifo_open_does_not_hang_unotifyd(
    tmp_path: Path,
) -> None:
    # A thread is blocked in a redirected open of a FIFO nobody will ever
    # write; the program exits anyway. Its status comes back at once: the
    # supervisor must not wait for an open that can no longer matter.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    src = tmp_path / "src"
    code = """
        import os, sys, threading, time
        threading.Thread(target=lambda: open(sys.argv[1]), daemon=True).start()
        time.sleep(0.3)
        os._exit(6)
    """
    start = time.monotonic()
    proc = run_launch("--redirect", f"{src}={fifo}", argv=py(code, str(src)), timeout=8)
    assert proc.returncode == 6, describe(proc)
    assert time.monotonic() - start < 5


INTERRUPTED_FIFO_OPENS = """
    import ctypes, errno, os, signal, subprocess, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    fifo = sys.argv[1].encode()

    def fifo_open(*, restart, helper):
        # The helper is another process: this one keeps a single thread.
        signal.siginterrupt(signal.SIGALRM, not restart)
        side = subprocess.Popen(["sh", "-c", helper])
        t = time.monotonic()
        ctypes.set_errno(0)
        fd = libc.open(fifo, os.O_RDONLY)
        err = ctypes.get_errno()
        if fd < 0:
            side.kill()  # its writer would wait for a reader forever
        side.wait()
        took = "soon" if time.monotonic() - t < 3 else "late"  # a hang is never soon
        return ("fd" if fd >= 0 else errno.errorcode[err]) + " " + took

    signal.signal(signal.SIGALRM, lambda *a: None)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    print("alarm", fifo_open(restart=False, helper="sleep 1.5; exec 3>%s" % sys.argv[1]))
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    print("alarm+SA_RESTART", fifo_open(restart=True, helper="sleep 0.8; exec 3>%s" % sys.argv[1]))
    # Stopped and continued while it waits: the open goes on waiting after.
    # SIGSTOP: a SIGTSTP to a process of an orphaned process group (a test
    # runner's, often) is discarded (signal(7)).
    me = os.getpid()
    stop = (f"sleep 0.3; kill -STOP {me}; sleep 0.3; cut -d' ' -f3 /proc/{me}/stat >&2;"
            f" kill -CONT {me}; sleep 0.3; exec 3>{sys.argv[1]}")
    print("stopped", fifo_open(restart=True, helper=stop))
    # Interrupted while another process waits on the same FIFO, outside:
    # that one must go on waiting (no reader came for it).
    signal.siginterrupt(signal.SIGALRM, True)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    ctypes.set_errno(0)
    fd = libc.open(sys.argv[2].encode(), os.O_WRONLY)
    print("writer", "fd" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
"""


@contextlib.contextmanager
def _waiting_writer(fifo: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process outside any sandbox that waits to open ``fifo`` for writing
    (killed at the end, whatever happened)."""
    writer = subprocess.Popen(["sh", "-c", f"exec 3>{fifo}"])
    try:
        time.sleep(0.2)
        assert writer.poll() is None
        yield writer
    finally:
        writer.kill()
        writer.wait()


def _release(writer: subprocess.Popen[bytes], fifo: Path) -> bool:
    """Whether ``writer`` still waited; it is released (a reader comes) either way."""
    waited = writer.poll() is None
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer.wait(5)
    finally:
        os.close(fd)
    return waited


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_signal_ends_a_waiting_fifo_open_as_natively(tmp_path: Path, mode: str) -> None:
    """A FIFO open waiting for a writer, performed by the supervisor (a
    redirect), ends as the program's own would (issue 16): a handler
    without SA_RESTART gets EINTR at once, one with it waits on, and a stop
    stops the program; another process waiting on the same FIFO waits on.
    Before, ``WAIT_KILLABLE_RECV`` kept the program waiting for our open:
    it hung until killed."""
    fifo, src, other, alias = (tmp_path / n for n in ("fifo", "src", "other", "alias"))
    os.mkfifo(fifo)
    os.mkfifo(other)
    want = "alarm EINTR soon\nalarm+SA_RESTART fd soon\nstopped fd soon\nwriter EINTR\n"
    with _waiting_writer(other) as writer:
        native = run_native(py(INTERRUPTED_FIFO_OPENS, str(fifo), str(other)), timeout=20)
        assert (native.stdout, native.stderr) == (want, "T\n"), describe(native)
        assert _release(writer, other), "natively, the other writer went on waiting"
    opts = ["--redirect", f"{src}={fifo}", "--redirect", f"{alias}={other}"]
    opts += ["--enforce"] if mode == "enforce" else []
    with _waiting_writer(other) as writer:
        proc = run_launch(*opts, argv=py(INTERRUPTED_FIFO_OPENS, str(src), str(alias)),
                          timeout=20)  # fmt: skip
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, want, "T\n"), describe(proc)
        assert _release(writer, other), "the program's signal released another process's open"


def test_many_concurrent_processes(files: Files) -> None:
    script = f"for i in $(seq 40); do cat {files.src} & done; wait"
    proc = run_launch("--redirect", files.redirect, argv=["sh", "-c", script], timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED * 40


def test_sigterm_while_only_an_orphan_remains_is_not_ignored(tmp_path: Path) -> None:
    # The program exits at once; an orphan keeps unotifyd serving. A SIGTERM
    # to unotifyd then must still have an effect (forwarded to what is left
    # of the program, or ending unotifyd): it must not be dropped, leaving
    # unotifyd to be killed only with SIGKILL.
    pidfile = tmp_path / "orphan.pid"
    code = """
        import os, subprocess, sys
        orphan = subprocess.Popen(["sleep", "6"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(sys.argv[1], "w") as f:
            f.write(str(orphan.pid))
        print("ready", flush=True)
    """
    p = _start(py(code, str(pidfile)))
    orphan = int(pidfile.read_text())
    try:
        time.sleep(0.3)  # the program has exited by now; only the orphan remains
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail("unotifyd ignored SIGTERM while an orphan kept it running")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def test_ctrl_c_on_the_terminal_reaches_the_program_once() -> None:
    # unotifyd and the program share the terminal's foreground process group:
    # the terminal's SIGINT reaches the program directly, and unotifyd must
    # not forward a second copy.
    code = """
        import signal, sys, time
        count = []
        signal.signal(signal.SIGINT, lambda *a: count.append(1))
        print("ready", flush=True)
        deadline = time.monotonic() + 10
        while not count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)   # time for a duplicate to arrive
        print("SIGINTs:", len(count), flush=True)
    """
    master, slave = os.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        p = subprocess.Popen(
            launch_cmd("--deny", "/nonexistent", argv=py(code)),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            start_new_session=True,
            preexec_fn=controlling_tty,  # noqa: PLW1509
        )
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        os.write(master, b"\x03")  # ^C
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 0, err
    assert out == "SIGINTs: 1\n", err


def test_stdin_stdout_stderr_are_the_programs(files: Files) -> None:
    proc = run_launch(
        "--redirect",
        files.redirect,
        argv=["sh", "-c", "cat; echo to-stderr >&2"],
        stdin=None,
        input="from stdin\n",
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "from stdin\n"
    assert proc.stderr == "to-stderr\n"
