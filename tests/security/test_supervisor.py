"""The program cannot take over its supervisor.

Under ``unotifyd launch`` the supervisor is the program's parent. A process
that may ptrace another (same uid, dumpable, no capability it lacks) can
copy its fds with ``pidfd_getfd`` -- the seccomp listener among them, and
then answer its own notifications -- and read or write its memory with
``process_vm_readv``/``process_vm_writev``. The supervisor must refuse both
to the program, whoever runs it:

* ``nobody`` runs ``unotifyd launch`` for a program of its own (the same
  uid: only the supervisor being non-dumpable protects it);
* root runs it for a root program without capabilities (the capability
  check protects it).

The native control is the same program under a parent of the same identity
that is an ordinary process (a shell): there it takes the fds and reads the
memory, which proves the attack works.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ..integration.helpers import (
    MODES,
    SYSTEM_PYTHON,
    TIMEOUT,
    describe,
    env_for_copy,
    run_launch,
    run_native,
)
from .support import IDENTITIES, Report, put

pytestmark = pytest.mark.kernel

def _run_as_nobody_supervisor(site: Path, opts: Sequence[str], argv: Sequence[str]
                              ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``unotifyd launch OPTS -- ARGV`` run by nobody, with the system Python."""
    env = env_for_copy(site)
    cmd = [*IDENTITIES["user"].prefix, SYSTEM_PYTHON, "-m", "unotifyd", "launch", *opts, "--",
           *argv]  # fmt: skip
    return subprocess.run(cmd, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=TIMEOUT, check=False, env=env, cwd="/")  # fmt: skip


def _fields(proc: subprocess.CompletedProcess[str], label: str) -> dict[str, str]:
    assert proc.returncode == 0, describe(proc)
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(" ")
        if name == label:
            return dict(word.split("=", 1) for word in rest.split())
    raise AssertionError(f"no {label} line\n{describe(proc)}")


#: Who runs ``unotifyd launch`` -> who the program runs as.
PROGRAM_OF = {"nobody": IDENTITIES["user"], "root": IDENTITIES["root-nocaps"]}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("runner", list(PROGRAM_OF))
def test_the_program_cannot_take_over_its_supervisor(
    attack_bin: Path, site: Path, report: Report, runner: str, mode: str
) -> None:
    """pidfd_getfd of every fd of the supervisor and process_vm_readv of its
    memory fail with EPERM for the program; natively, against a shell of the
    same identity, both work. A denied file read in the same run proves that
    the supervisor was serving the program."""
    program = PROGRAM_OF[runner]
    denied = put(attack_bin.parent / f"denied-{runner}-{mode}", "DENIED\n", owner=0)
    attack = [str(attack_bin), "denied", "read", str(denied), ";", "parent", "parent"]

    native = _fields(
        run_native([*program.prefix, "sh", "-c", '"$@"; :', "sh", *attack], cwd="/"), "parent"
    )
    assert native == {"parent": "other", "getfd": "OK", "listener": "no", "vm": "OK"}, (
        f"native control: {native}"
    )

    opts = (*MODES[mode], "--deny", str(denied))
    if runner == "nobody":
        proc = _run_as_nobody_supervisor(site, opts, attack)
    else:
        proc = run_launch(*opts, argv=[*program.prefix, *attack], cwd="/")
    assert "denied EACCES\n" in proc.stdout, describe(proc)
    got = _fields(proc, "parent")
    assert got["parent"] == "unotifyd", describe(proc)
    # vm=EFAULT: the access check passed (the address tried was not mapped).
    escapes = int(got["getfd"] != "EPERM") + int(got["vm"] != "EPERM")
    report(f"supervisor[{mode}-{runner}]", runs=2, escapes=escapes,
           getfd=got["getfd"], listener=got["listener"], vm=got["vm"])  # fmt: skip
    if escapes:
        pytest.fail(f"the program reached into its supervisor (run by {runner}): getfd="
                    f"{got['getfd']} (the listener among the fds: {got['listener']}), "
                    f"process_vm_readv={got['vm']}", pytrace=False)  # fmt: skip


def test_system_python_runs_the_supervisor(site: Path) -> None:
    """The premise of the test above: nobody can run ``unotifyd launch`` from the copy."""
    proc = _run_as_nobody_supervisor(site, ("--redirect", "/nonexistent=/etc/hostname"),
                                     ["cat", "/nonexistent"])  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == Path("/etc/hostname").read_text()


#: The modes the FIFO open is made in: a redirect is emulated in each.
_SIGNAL_MODES = {**MODES, "opens": ("--view", "opens")}


@pytest.mark.parametrize("mode", list(_SIGNAL_MODES))
def test_a_program_cannot_signal_the_supervisor_acting_for_it(
    attack_bin: Path, report: Report, mode: str
) -> None:
    """A root supervisor parks a thread in a FIFO open it makes for a program
    of nobody's; the program tries to signal every supervisor thread meanwhile.

    The thread acts with the program's effective and fs ids, but keeps our
    real and saved uid, which decide who may signal it (kill_ok_by_cred(),
    kernel/signal.c): otherwise the program could SIGSTOP or SIGKILL it and
    with it every other program's calls. Natively, a parent shell of the
    same uid can be signalled (the control: the probe works). Only a
    program of another uid is tried: root, with or without capabilities,
    may signal a root supervisor natively too (it is killable by design).
    """
    program = IDENTITIES["user"]
    where = attack_bin.parent / f"signal-{mode}"
    where.mkdir(mode=0o755)
    fifo = where / "fifo"
    os.mkfifo(fifo, 0o666)
    os.chown(fifo, program.uid, program.uid)

    probe = [str(attack_bin), "signal", "signal"]
    native = _fields(
        run_native([*program.prefix, "sh", "-c", '"$@"; :', "sh", *probe, str(fifo)], cwd="/"),
        "signal",
    )
    assert native == {"signal": "OK", "fifo": "OK"}, f"native control: {native}"

    # Through a redirect the supervisor makes the open itself, in every mode.
    alias = where / "alias"
    opts = (*_SIGNAL_MODES[mode], "--redirect", f"{alias}={fifo}")
    proc = run_launch(*opts, argv=[*program.prefix, *probe, str(alias)], cwd="/")
    got = _fields(proc, "signal")
    assert got["fifo"] == "OK", describe(proc)  # the open was made, and waited for a writer
    escapes = int(got["signal"] == "OK")
    report(f"signal[{mode}-user]", runs=1, escapes=escapes, signal=got["signal"])
    if escapes:
        pytest.fail("a program of nobody's may signal its root supervisor's threads",
                    pytrace=False)  # fmt: skip


UNDUMPABLE = """
import ctypes, os
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0, as ssh-agent does
for _ in range(3):
    try:
        open("/etc/hostname").close()
        print("open OK")
    except OSError as e:
        print("open", e.strerror)
"""


def test_an_undumpable_program_is_told_once_not_per_call(site: Path) -> None:
    """An unprivileged supervisor may not read the memory of a program that made
    itself non-dumpable: each trapped call fails with EPERM (never let through),
    and unotifyd says why in one line, with no traceback."""
    proc = _run_as_nobody_supervisor(
        site, ("--deny", "/nonexistent"), [SYSTEM_PYTHON, "-c", UNDUMPABLE]
    )
    assert proc.stdout == "open Operation not permitted\n" * 3, describe(proc)
    assert proc.stderr.count("made itself non-dumpable") == 1, describe(proc)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    # The control: the same program under a root supervisor is served.
    native = run_launch("--deny", "/nonexistent", argv=[SYSTEM_PYTHON, "-c", UNDUMPABLE])
    assert native.stdout == "open OK\n" * 3, describe(native)
