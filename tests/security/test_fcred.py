"""A file the supervisor opens must not carry the supervisor's credentials.

The kernel checks some files' permissions when they are read, against the
credentials of whoever *opened* them (``file->f_cred``), or at open against
the opener's capabilities rather than its fsuid: ``/proc/kallsyms`` shows
real addresses only to an opener with ``CAP_SYSLOG`` (with
``perf_event_paranoid`` > 1), ``/proc/self/pagemap`` shows physical frame
numbers only to one with ``CAP_SYS_ADMIN``, ``/dev/kmsg`` opens only for
``CAP_SYSLOG`` under ``dmesg_restrict``, and ``/proc/PID/{maps,
smaps_rollup, numa_maps, timers, environ, mem, stack}`` of a root process
only for a process that may ptrace it. A fd the supervisor opens and
injects must give the program exactly what its own open would have.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import (
    ENFORCE,
    IDENTITIES,
    Attack,
    Family,
    Identity,
    Lab,
    Mode,
    Workspace,
    natively,
)

pytestmark = pytest.mark.kernel


def build(ws: Workspace, who: Identity, native: bool) -> None:
    """Nothing: these attacks read the kernel's files, not the workspace."""


def _proc(
    label: str, name: str, root: str, unprivileged: str = "EACCES", *,
    nocaps: str | None = None, in_domain: str | None = None,
) -> Attack:  # fmt: skip
    """Open and read ``/proc/SLEEPER/NAME``, the file of a root process."""
    return Attack(label, ("peek", f"/proc/{{sleeper}}/{name}"),
                  natively(root, unprivileged, nocaps=nocaps), opens=True,
                  in_domain=in_domain)  # fmt: skip


ATTACKS = (
    Attack("kallsyms", ("kallsyms",), natively("OK addresses=real", "OK addresses=hidden"),
           opens=True, reveals=("addresses=real",)),
    Attack("pagemap", ("pagemap",), natively("OK pfn=real", "OK pfn=hidden"),
           opens=True, reveals=("pfn=real",)),
    Attack("kmsg", ("kmsg",), natively("OK read", "EPERM"), opens=True),
    _proc("maps", "maps", "OK nonempty"),
    _proc("smaps-rollup", "smaps_rollup", "OK nonempty"),
    _proc("numa-maps", "numa_maps", "OK nonempty"),
    # In its Landlock domain (enforcing mode) a program may not open these of a
    # process outside, even as root: the supervisor does not open them for it.
    _proc("timers", "timers", "OK empty", in_domain="EACCES"),
    _proc("environ", "environ", "OK nonempty"),
    _proc("mem", "mem", "OK read=EIO", in_domain="EACCES"),
    # Mode 0400: root without capabilities opens it (it is the owner), and the
    # read checks CAP_SYS_ADMIN in the opener's credentials.
    # Read, it checks ptrace access again, for the reader: Landlock refuses
    # it to a program in a domain (enforcing mode) for a process outside.
    _proc("stack", "stack", "OK nonempty", nocaps="OK read=EACCES", in_domain="OK read=EPERM"),
)  # fmt: skip

FCRED = Family("fcred", ATTACKS, build)

#: The default mode, with rules under which the supervisor performs these opens
#: (a read of a read-only path is opened by the supervisor and injected).
#: ``/proc/self/...`` in a rule would be the supervisor's: the whole of /proc it is.
_READ_ONLY = ("--readonly", "/proc/**", "--readonly", "/dev/kmsg")
VIRTUALIZE_RO = Mode("virtualize-ro", lambda ws: _READ_ONLY)
OPENS_RO = Mode("opens-ro", lambda ws: ("--view", "opens", *_READ_ONLY))


def test_the_kernel_hides_kernel_addresses_from_the_unprivileged() -> None:
    """The premise of the kallsyms attack: with ``kptr_restrict`` 0 and
    ``perf_event_paranoid`` <= 1 everyone sees addresses and the attack
    proves nothing; the native controls of the test below would fail."""
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    restrict = int(Path("/proc/sys/kernel/kptr_restrict").read_text())
    assert paranoid > 1 or restrict > 0, (paranoid, restrict)
    assert Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1"


@pytest.mark.parametrize("who", list(IDENTITIES))
@pytest.mark.parametrize("mode", [ENFORCE, VIRTUALIZE_RO, OPENS_RO], ids=lambda m: m.name)
def test_opened_files_carry_the_programs_credentials(lab: Lab, mode: Mode, who: str) -> None:
    """Every read answers as natively: no kernel address, physical frame,
    kernel log record or root process's memory map that the program could
    not read itself."""
    lab.probe(FCRED, IDENTITIES[who], mode)
