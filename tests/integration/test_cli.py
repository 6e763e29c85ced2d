"""The command line on the real kernel: tracing, policy files, failures to start."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Files
from .helpers import (
    REDIRECTED,
    REPO,
    TIMEOUT,
    describe,
    env,
    launch_cmd,
    locale_free_env,
    py,
    run_launch,
    run_native,
    write,
)

pytestmark = pytest.mark.kernel


# --- tracing -----------------------------------------------------------------------

_TRACE_LINE = re.compile(
    r"^unotifyd\[(?P<pid>\d+)\] (?P<syscall>\w+)\((?P<args>.*)\) -> (?P<resolved>\S+): "
    r"(?P<decision>.*)$"
)


def test_trace_one_line_per_call(files: Files, tmp_path: Path) -> None:
    # The program prints its pid, then opens /etc/passwd through a relative
    # path with a "..": the trace shows the path as given and as resolved.
    code = """
        import os
        print(os.getpid(), flush=True)
        os.chdir("/etc")
        print(open("../etc/passwd").read(), end="")
    """
    jsonl = tmp_path / "trace.jsonl"
    proc = run_launch(
        "--trace",
        "--trace-json",
        str(jsonl),
        "--redirect",
        f"/etc/passwd={files.target}",
        argv=py(code),
    )
    assert proc.returncode == 0, describe(proc)
    pid_line, content = proc.stdout.split("\n", 1)
    assert content == REDIRECTED
    pid = int(pid_line)

    lines = [m for line in proc.stderr.splitlines() if (m := _TRACE_LINE.match(line))]
    hits = [m for m in lines if '"../etc/passwd"' in m["args"]]
    assert len(hits) == 1, describe(proc)
    hit = hits[0]
    assert int(hit["pid"]) == pid
    assert hit["syscall"] == "openat"
    assert hit["resolved"] == "/etc/passwd"
    assert "emulate" in hit["decision"] or "redirect" in hit["decision"]
    assert str(files.target) in hit["decision"]
    assert re.search(r" = \d+\b", hit["decision"]), hit.string
    # Every intercepted call of the program has its line (Python opens many files).
    assert len(lines) > 5

    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(events) == len(lines)
    passwd = [e for e in events if e["path"] == "../etc/passwd"]
    assert len(passwd) == 1
    ev = passwd[0]
    assert ev["pid"] == pid
    assert ev["syscall"] == "openat"
    assert ev["resolved"] == "/etc/passwd"
    assert ev["target"] == str(files.target)
    assert isinstance(ev["result"], int) and ev["result"] >= 3
    assert f" = {ev['result']}" in hit["decision"]


def test_trace_of_cat_etc_passwd(files: Files) -> None:
    proc = run_launch(
        "--trace", "--redirect", f"/etc/passwd={files.target}", argv=["cat", "/etc/passwd"]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED
    hits = [
        m
        for line in proc.stderr.splitlines()
        if (m := _TRACE_LINE.match(line)) and '"/etc/passwd"' in m["args"]
    ]
    assert len(hits) == 1, proc.stderr
    assert hits[0]["syscall"] == "openat"
    assert hits[0]["args"].startswith("AT_FDCWD, ")
    assert hits[0]["resolved"] == "/etc/passwd"
    assert re.search(rf"{re.escape(str(files.target))} = 3\b", hits[0]["decision"]), hits[0].string


def test_trace_json_records_errors_and_pass_through(files: Files, tmp_path: Path) -> None:
    jsonl = tmp_path / "trace.jsonl"
    missing = tmp_path / "missing"
    code = "import sys\nfor p in sys.argv[1:]:\n    try: open(p)\n    except OSError: pass"
    proc = run_launch(
        "--trace-json",
        str(jsonl),
        "--deny",
        f"{files.src}:ENOENT",
        argv=py(code, str(files.src), str(missing), str(files.target)),
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stderr == ""  # --trace-json alone writes nothing on stderr
    events = {e["path"]: e for e in map(json.loads, jsonl.read_text().splitlines())}
    denied = events[str(files.src)]
    assert denied["result"] == -errno.ENOENT
    assert denied["errno"] == "ENOENT"
    # Paths under no rule: the kernel ran the call itself, its result is unknown.
    assert events[str(files.target)]["result"] is None
    assert events[str(missing)]["resolved"] == str(missing)


# --- policy files ------------------------------------------------------------------


def test_bad_policy_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text(
        'version = 1\n\n[[redirect]]\nfrom = "/etc/passwd"\nto = "/etc/hostname"\ncolour = 1\n'
    )
    marker = tmp_path / "ran"
    proc = run_launch("--policy", str(policy), argv=["sh", "-c", f"touch {marker}"])
    assert proc.returncode == 2, describe(proc)
    assert f"{policy}:6:" in proc.stderr
    assert "colour" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not marker.exists()


def test_bad_value_in_policy_is_rejected(tmp_path: Path) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text('version = 1\n[[deny]]\npath = "/etc/shadow"\nerrno = "ENOPE"\n')
    marker = tmp_path / "ran"
    proc = run_launch("--policy", str(policy), argv=["sh", "-c", f"touch {marker}"])
    assert proc.returncode == 2, describe(proc)
    assert f"{policy}:4:" in proc.stderr
    assert not marker.exists()


def test_bad_option_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = run_launch("--redirect", "relative=/etc/hostname", argv=["sh", "-c", f"touch {marker}"])
    assert proc.returncode == 2, describe(proc)
    assert "--redirect" in proc.stderr
    assert not marker.exists()


def test_example_passwd_policy(files: Files) -> None:
    example = REPO / "examples" / "passwd.toml"
    assert example.exists(), "examples/passwd.toml is part of the issue's deliverables"
    proc = run_launch("--policy", str(example), argv=["cat", "/etc/passwd"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == Path("/etc/hostname").read_text()


def test_readme_policy_command_greps_the_host_name() -> None:
    # unotifyd launch --policy examples/passwd.toml -- sh -c 'grep root /etc/passwd; echo $?'
    proc = run_launch(
        "--policy",
        "examples/passwd.toml",
        argv=["sh", "-c", "grep root /etc/passwd; echo $?"],
        cwd=REPO,
    )
    assert proc.returncode == 0, describe(proc)
    hostname = Path("/etc/hostname").read_text()
    expected = (hostname if "root" in hostname else "") + ("0\n" if "root" in hostname else "1\n")
    assert proc.stdout == expected


def test_own_policy_file(files: Files, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'version = 1\n[[redirect]]\nfrom = "{files.src}"\nto = "{files.target}"\n')
    proc = run_launch("--policy", str(policy), argv=["cat", str(files.src)])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_option_replaces_the_policy_files_rule(files: Files, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'version = 1\n[[deny]]\npath = "{files.src}"\n')
    proc = run_launch(
        "--policy", str(policy), "--redirect", files.redirect, argv=["cat", str(files.src)]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


# --- failures to start -------------------------------------------------------------


def test_missing_program_is_127_with_one_message() -> None:
    proc = run_launch("--deny", "/nonexistent", argv=["no-such-program-xyz", "arg"])
    assert proc.returncode == 127, describe(proc)
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no-such-program-xyz" in proc.stderr


def test_missing_program_without_rules_is_127() -> None:
    proc = run_launch(argv=["/no/such/program"])
    assert proc.returncode == 127, describe(proc)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_non_executable_program_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    proc = run_launch("--deny", "/nonexistent", argv=[str(script)])
    assert proc.returncode == 126, describe(proc)
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("mode", [[], ["--enforce"]], ids=["virtualize", "enforce"])
@pytest.mark.parametrize(
    ("prog", "rc"),
    [("/nonexistent/prog", 127), (os.devnull, 126), ("nonexistent-x", 127), ("", 127)],
    ids=["missing path", "not executable", "not on PATH", "empty name"],
)
def test_a_program_that_cannot_run_fails_as_env_does(mode: list[str], prog: str, rc: int) -> None:
    """The same exit status as env(1), the control, and one line naming it
    (the empty name used to end the child silently with 125)."""
    native = subprocess.run(["env", prog], capture_output=True, check=False)
    assert native.returncode == rc, native.stderr
    proc = run_launch(*mode, argv=[prog])
    assert proc.returncode == rc, describe(proc)
    assert proc.stderr.splitlines() == [
        f"unotifyd: {prog}: {os.strerror(errno.ENOENT if rc == 127 else errno.EACCES)}"
    ], proc.stderr


@pytest.mark.parametrize("mode", [[], ["--enforce"]], ids=["virtualize", "enforce"])
def test_the_program_gets_native_signal_dispositions_and_mask(mode: list[str]) -> None:
    """Python ignores SIGPIPE and SIGXFSZ for itself and unotifyd blocks the
    signals it forwards; the program sees neither (execve(2) keeps both)."""
    status = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
    native = subprocess.run(status, capture_output=True, text=True, check=True).stdout
    assert native.count("\n") == 2, native
    proc = run_launch(*mode, argv=status)
    assert (proc.returncode, proc.stdout) == (0, native), describe(proc)


def test_no_program_is_a_usage_error() -> None:
    proc = subprocess.run(
        launch_cmd(argv=[]), capture_output=True, text=True, env=env(), timeout=20, check=False
    )
    assert proc.returncode == 2, describe(proc)


def _no_user_notification() -> None:
    """preexec_fn: make seccomp(2) fail with EOPNOTSUPP, as on a kernel without
    user notification (and for SECCOMP_GET_ACTION_AVAIL of an unknown action)."""
    import pyseccomp  # noqa: PLC0415

    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    f.add_rule(pyseccomp.ERRNO(errno.EOPNOTSUPP), "seccomp")
    f.load()


def test_unsupported_kernel_says_so_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = subprocess.run(
        launch_cmd("--redirect", "/etc/passwd=/etc/hostname", argv=["sh", "-c", f"touch {marker}"]),
        capture_output=True,
        text=True,
        env=env(),
        timeout=20,
        check=False,
        stdin=subprocess.DEVNULL,
        preexec_fn=_no_user_notification,
    )
    assert proc.returncode != 0, describe(proc)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "user notification" in lines[0]
    assert not marker.exists()


def test_a_short_program_is_served_without_importing_trio(files: Files) -> None:
    # serve/bootstrap.py answers the first calls synchronously; a program
    # that is done within that time never pays trio's import (~65 ms).
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "unotifyd", "launch",
         "--redirect", files.redirect, "--", "cat", str(files.src)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, REDIRECTED), describe(proc)
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "unotifyd.serve.dispatch" in imported
    assert "trio" not in imported


def test_a_longer_program_is_served_without_trio_too(files: Files) -> None:
    # Only a call that must wait in a worker thread brings trio in.
    code = "import sys, time\ntime.sleep(0.5)\nprint(open(sys.argv[1]).read(), end='')"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "unotifyd", "launch",
         "--redirect", files.redirect, "--", sys.executable, "-c", code, str(files.src)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, REDIRECTED), describe(proc)
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "trio" not in imported


def test_an_open_that_must_wait_is_served_by_trio(tmp_path: Path) -> None:
    # A redirect to a FIFO: its open blocks until a writer comes, so it runs
    # in a worker thread, which takes trio.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = f'cat /nonexistent-unotifyd-src & sleep 0.2; echo through > {fifo}; wait'
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "unotifyd", "launch",
         "--redirect", f"/nonexistent-unotifyd-src={fifo}", "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=TIMEOUT, env=env(), check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "through\n"), describe(proc)
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "trio" in imported


def test_two_rules_on_one_file_are_refused(tmp_path: Path) -> None:
    real = write(tmp_path / "real", "x\n")
    (tmp_path / "link").symlink_to(real)
    proc = run_launch("--deny", str(tmp_path / "link"), "--readonly", str(real), argv=["true"])
    assert proc.returncode == 2, describe(proc)
    assert "unotifyd:" in proc.stderr and proc.stdout == ""


def test_a_redirect_to_a_missing_target_is_reported_at_start(tmp_path: Path) -> None:
    """Likely a typo: said at start-up, naming the rule; the program still runs."""
    missing = tmp_path / "no" / "such" / "target"
    proc = run_launch("--redirect", f"/etc/passwd={missing}", argv=["echo", "ran"])
    assert (proc.returncode, proc.stdout) == (0, "ran\n"), describe(proc)
    assert (f"unotifyd: warning: redirect /etc/passwd -> {missing} (--redirect): the target "
            f"file {missing} does not exist") in proc.stderr, describe(proc)  # fmt: skip
    ok = run_launch("--redirect", "/etc/passwd=/etc/hostname", argv=["true"])
    assert "warning" not in ok.stderr, describe(ok)


def test_an_exact_deny_or_read_only_rule_on_a_directory_is_reported_at_start(
    tmp_path: Path,
) -> None:
    """An exact rule covers a directory alone, so its files stay readable and
    writable: likely a missing ``/**``, said at start naming the rule; the
    program still runs, under the rule as written."""
    d = tmp_path / "d"
    write(d / "f", "F\n")
    proc = run_launch("--deny", str(d), "--readonly", f"{d}/f", argv=["cat", f"{d}/f"])
    assert (proc.returncode, proc.stdout) == (0, "F\n"), describe(proc)
    assert (f"unotifyd: warning: deny {d} with EACCES (--deny): {d} is a directory, and an "
            f"exact rule covers the directory alone: what lies below it is not covered; "
            f"write {d}/** for the whole tree") in proc.stderr, describe(proc)  # fmt: skip
    assert proc.stderr.count("warning") == 1, describe(proc)  # not for the file
    tree = run_launch("--deny", f"{d}/**", "--readonly", str(d), argv=["true"])
    assert "is a directory" in tree.stderr and tree.stderr.count("warning") == 1, describe(tree)


def test_an_unknown_errno_name_suggests_the_right_one() -> None:
    proc = run_launch("--deny", "/etc/shadow:ENOENTT", argv=["true"])
    assert proc.returncode == 2, describe(proc)
    assert "unknown errno name 'ENOENTT' (did you mean ENOENT" in proc.stderr, describe(proc)


def test_serve_makes_the_sockets_directory_but_not_a_missing_parent(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "version = 1\n")
    sock = tmp_path / "no" / "such" / "s.sock"
    proc = subprocess.run(
        [sys.executable, "-m", "unotifyd", "serve", "--socket", str(sock), "--config",
         str(config)], env=env(), capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode != 0, describe(proc)
    assert f"{tmp_path / 'no'} does not exist (a typo?" in proc.stderr, describe(proc)
    assert not (tmp_path / "no").exists()


# --- start-up ----------------------------------------------------------------------

#: Modules a standalone launch has no use for. Each cost it milliseconds
#: before the program could make its first trapped call (benchmarks/README.md,
#: "Where a standalone launch goes"): dataclasses ~9 ms with inspect (ast,
#: dis, tokenize) and ~0.8 ms per class it made (unotifyd/record.py),
#: pathlib ~7 ms (urllib.parse, ipaddress), traceback ~3 ms (linecache,
#: tokenize), ctypes.util ~6 ms (shutil's archive modules, subprocess,
#: tempfile), the daemon's protocol ~3 ms.
LAUNCH_MUST_NOT_IMPORT = frozenset(
    {"dataclasses", "inspect", "ast", "pathlib", "traceback", "ctypes.util", "tempfile",
     "subprocess", "unotifyd.daemon.protocol"}
)  # fmt: skip


@pytest.mark.parametrize("mode", ["virtualize", "enforce"])
def test_a_launch_imports_only_what_it_serves_with(files: Files, mode: str) -> None:
    # -S: the imports of unotifyd and of what it uses, not those of the
    # site hooks of the environment that runs the tests (an editable
    # install's finder imports pathlib); its packages go on PYTHONPATH.
    import site  # noqa: PLC0415

    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    opts = ["--enforce"] if mode == "enforce" else []
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-m", "unotifyd", "launch", *opts,
         "--redirect", files.redirect, "--", "cat", str(files.src)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=env({"PYTHONPATH": path}), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # The control: the supervisor served the open, so every module it
    # serves with was imported, and the import lines are read.
    assert (proc.returncode, proc.stdout) == (0, REDIRECTED), describe(proc)
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"unotifyd.launch", "unotifyd.serve.run", "pyseccomp", "argparse"} <= imported
    unwanted = imported & LAUNCH_MUST_NOT_IMPORT
    assert not unwanted, f"a standalone launch imports {sorted(unwanted)}"


def test_a_launch_inside_a_launch_says_why_it_cannot_run(files: Files) -> None:
    """The kernel gives a process's filters one listener at most (EBUSY):
    a launch under a supervisor, ours or another's, cannot install its own.
    It says so, and what to do, instead of a bare strerror; the program is
    not run. The control: the same inner launch, alone, runs it."""
    inner = launch_cmd("--redirect", files.redirect, argv=["cat", str(files.src)])
    alone = subprocess.run(inner, capture_output=True, text=True, timeout=TIMEOUT, env=env(),
                           stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert alone.returncode == 0 and alone.stdout == REDIRECTED, describe(alone)
    nested = run_launch("--redirect", files.redirect, argv=inner)
    assert nested.returncode == 125, describe(nested)
    assert nested.stdout == "", describe(nested)
    assert "already served by a seccomp supervisor" in nested.stderr, describe(nested)
    assert "(EBUSY): run unotifyd outside that sandbox" in nested.stderr, describe(nested)


@pytest.mark.parametrize("given", [None, "C.UTF-8"])
@pytest.mark.parametrize("mode", [[], ["--enforce"]])
def test_the_program_gets_the_environment_it_would_natively(
    mode: list[str], given: str | None
) -> None:
    # Not LC_CTYPE=C.UTF-8, which Python puts in its own environment here,
    # unless it was given.
    bare = locale_free_env()
    if given is not None:
        bare["LC_CTYPE"] = given
    native = run_native(["env"], env=bare)
    assert ("LC_CTYPE" in native.stdout) == (given is not None), describe(native)
    proc = run_launch(*mode, "--redirect", "/nonexistent/a=/etc/hostname", argv=["env"], env=bare)
    assert proc.returncode == 0, describe(proc)
    assert sorted(proc.stdout.splitlines()) == sorted(native.stdout.splitlines())
