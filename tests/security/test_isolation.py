"""One client of the daemon cannot stall another (issue 13).

The daemon serves every client uid from one process. Whatever an attacker
uid makes the supervisor do on its behalf -- wait for a lease break, wait
for a FIFO's writer, read a page nobody will ever fault in, hold control
connections open -- must cost that uid alone. Each test runs a daemon with
one profile for root, a *victim* uid and an *attacker* uid, and measures
the victim twice in the same run, without and then with the attack:

* the whole run of ``unotifyd launch --daemon ... -- cat /etc/hostname``
  (:data:`LAUNCHES` runs; ``/etc/hostname`` is read-only in the profile,
  so the supervisor performs its open), and
* a long-running program's redirected opens (``progs/isolation.c opens``),
  whose redirect the supervisor performs too.

The victim is measured alone again once the attack is over, and the worse
of the two baselines that bracket the attack is the reference (the
machine's own noise drifts). The victim passes if no run failed or timed
out and each p50 and p99 under attack is within twice that figure plus an
absolute floor:
:data:`LAUNCH_FLOOR_MS` (20 ms) for a launch (:data:`LAUNCH_TAIL_FLOOR_MS`,
100 ms, for its p99: the p99 of 15 launches is their slowest),
:data:`OPEN_FLOOR_US` (10 ms) for an open -- two CPUs are shared with the
attacker, and scheduling noise is no stall
(the stalls these attacks cause are seconds, or forever). Each test also proves that its attack
is real (the attacker's own calls do block), so that an attack that broke
cannot pass for isolation.

Every test prints ``RESULT isolation[ATTACK]: victim_alone=p50/p99/max
victim_attacked=p50/p99/max fails=N timeouts=N escapes=0|1 ...``, launch
figures in ms, then the opens (``opens_*``, in µs), the daemon's CPU use
alone/attacked, the proof of the attack, and whether the daemon was well
afterwards (``daemon=ok``). ``escapes=1`` means the attacker stalled the
victim.

A stalled victim never hangs the suite: every run has a timeout and counts
as a timeout when it is killed, and a series of launches stops after
:data:`GIVE_UP_TIMEOUTS` timeouts or :data:`SERIES_BUDGET` seconds.

Run as root: the uids need no passwd entry; their clients run
``/usr/bin/python3`` from a world-readable copy of unotifyd (see ``site``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unotifyd.kernel.program import status_field

from ..integration.helpers import SYSTEM_PYTHON, env_for_copy
from ..reliability.support import Daemon, Procs, kv, public_dir, read_line, start_daemon
from .support import Report, build_c

pytestmark = pytest.mark.kernel

VICTIM = 1001
ATTACKER = 1002
PROFILE = "iso"

#: Launches of the victim per measurement, and what each may take.
LAUNCHES = 15
LAUNCH_TIMEOUT = 4.0
#: A series of launches stops after this many timeouts, or after this many
#: seconds: the victim is stalled by then, and more runs only make the
#: test longer.
GIVE_UP_TIMEOUTS = 2
SERIES_BUDGET = 10.0
#: The in-program opens: at most this many, for at most this long.
OPENS = 400
#: How long ``unotifyd status`` may take to answer once an attack is stopped.
STATUS_PATIENCE = 30.0
OPENS_SECONDS = 1.5
#: Lease break time for the test (the default is 45 s): still a stall 30
#: times the length of a launch, and it keeps the native control short.
BREAK_TIME = 3
#: An open queued behind the attacker's truncates may wait out two breaks.
OPENS_TIMEOUT = OPENS_SECONDS + 2 * BREAK_TIME + 2
#: Absolute slack above twice the figure alone. The p99 of 400 opens is their
#: fourth slowest: on this 2-CPU machine it reached 6.5 ms under the idle-
#: connections attack once in five clean runs (1.3-1.5 ms in the others, 1-2 ms
#: alone): scheduling noise, some 460 times shorter than the 3 s a lease break stalls.
LAUNCH_FLOOR_MS = 20.0
#: The p99 of 15 launches is their slowest, a single sample: one launch of
#: 193 ms among launches of 71 ms (p50), under the idle-connections attack,
#: failed a CI run whose other nine runs put it at 60-87 ms. The stalls these
#: attacks cause are seconds (a lease break, a handshake timeout) or forever,
#: so the slowest launch gets a floor ten times shorter than the shortest.
LAUNCH_TAIL_FLOOR_MS = 100.0
OPEN_FLOOR_US = 10000.0

VICTIM_TEXT = "VICTIM\n"


def as_uid(uid: int) -> list[str]:
    return [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


# --- Fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iso_bin(public: Path) -> Path:
    return build_c(public, "isolation")


@dataclass(frozen=True)
class Kit:
    """What every test needs to build its world."""

    procs: Procs
    bin: Path
    site: Path


@pytest.fixture
def kit(procs: Procs, iso_bin: Path, site: Path) -> Kit:
    return Kit(procs, iso_bin, site)


@pytest.fixture
def lease_break() -> Iterator[int]:
    """``fs.lease-break-time`` lowered to :data:`BREAK_TIME` for the test, then restored."""
    knob = Path("/proc/sys/fs/lease-break-time")
    old = knob.read_text()
    knob.write_text(f"{BREAK_TIME}\n")
    try:
        yield BREAK_TIME
    finally:
        knob.write_text(old)


# --- Figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """p50/p99/max of one kind of victim call, and how many runs went wrong."""

    p50: float
    p99: float
    max: float
    fails: int = 0
    timeouts: int = 0
    runs: str = ""  # "done/planned" when a series stopped early
    note: str = ""  # what stands for the figures when there are none

    def __str__(self) -> str:
        if self.note:
            return self.note
        return f"{self.p50:.0f}/{self.p99:.0f}/{self.max:.0f}"

    @classmethod
    def of(cls, samples: Sequence[float], **kw: Any) -> Figures:
        s = sorted(samples)
        return cls(s[len(s) // 2], s[int(len(s) * 0.99)], s[-1], **kw)


def worse(a: Figures, b: Figures) -> Figures:
    """Each figure of ``a`` and ``b``, the larger (for two baselines of the same calls)."""
    if a.note or b.note:
        return a if a.note else b
    return Figures(max(a.p50, b.p50), max(a.p99, b.p99), max(a.max, b.max))


#: An opens program that timed out, or that failed before its figures.
HUNG = Figures(math.inf, math.inf, math.inf, timeouts=1, note="hung")
FAILED = Figures(math.inf, math.inf, math.inf, fails=1, note="failed")


def within(what: str, alone: Figures, attacked: Figures, floor: float, unit: str, *,
           tail_floor: float | None = None) -> list[str]:
    """Why ``attacked`` is not within 2x ``alone`` plus ``floor`` (the p99
    plus ``tail_floor``, if given); [] if it is."""
    problems = []
    if attacked.fails:
        problems.append(f"{what}: {attacked.fails} run(s) failed")
    if attacked.timeouts:
        problems.append(f"{what}: {attacked.timeouts} run(s) timed out")
    if attacked.runs:
        problems.append(f"{what}: only {attacked.runs} runs within {SERIES_BUDGET:g}s")
    for name in ("p50", "p99"):
        a, b = getattr(alone, name), getattr(attacked, name)
        bound = 2 * a + (tail_floor if name == "p99" and tail_floor is not None else floor)
        if b > bound:
            problems.append(f"{what} {name}: {b:.0f}{unit} attacked > {bound:.0f}{unit} "
                            f"allowed ({a:.0f}{unit} alone)")
    return problems


@dataclass(frozen=True)
class Victim:
    """The victim's figures in one measurement, and how busy the daemon was meanwhile
    (percent of one CPU: an attack may stall the victim by eating the daemon's time)."""

    launch: Figures
    opens: Figures
    dev: Figures | None
    daemon_cpu: float


# --- The world of one test: files, a daemon, clients --------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished (or killed) process: exit status (None: timed out), stdout, seconds."""

    status: int | None
    out: str
    secs: float

    @property
    def timed_out(self) -> bool:
        return self.status is None

    def gave(self, out: str) -> bool:
        return self.status == 0 and self.out == out



@dataclass
class World:
    """A daemon with the profile :data:`PROFILE`, and the victim's files.

    ``alias`` is the victim's redirected name for ``victim.txt``; ``dev``
    its redirected name for ``/dev/null`` (an open that may block, so the
    supervisor performs it in its pool of blocking opens).
    """

    daemon: Daemon
    dir: Path
    bin: Path
    site: Path
    procs: Procs
    attackers: list[subprocess.Popen[str]] = field(default_factory=list)
    #: How long the last ``status`` took to answer, retries included (seconds).
    status_s: float = math.nan

    @property
    def alias(self) -> Path:
        return self.dir / "victim-alias"

    @property
    def dev(self) -> Path:
        return self.dir / "victim-dev"

    def env(self) -> dict[str, str]:
        return env_for_copy(self.site)

    def client(self, uid: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run by ``uid`` under the daemon (the system Python's client)."""
        return [*as_uid(uid), SYSTEM_PYTHON, "-m", "unotifyd", "launch", "--daemon",
                self.daemon.socket, "--profile", PROFILE, "--", *argv]

    def start(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """An attacker process (a session of its own, killed by :meth:`stop_attack`)."""
        p = self.procs.popen(argv, env=self.env(), cwd="/")
        self.attackers.append(p)
        return p

    def stop_attack(self) -> None:
        for p in self.attackers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.attackers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        self.attackers.clear()

    def run(self, argv: Sequence[str], timeout: float) -> Run:
        """Run ``argv`` to its end, or kill it (its whole session) after ``timeout`` seconds."""
        t0 = time.monotonic()
        p = self.procs.popen(argv, env=self.env(), cwd="/")
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return Run(None, "", timeout)
        return Run(p.returncode, out, time.monotonic() - t0)

    def launches(self) -> Figures:
        """The victim's ``launch --daemon ... cat /etc/hostname`` runs, in ms."""
        want = Path("/etc/hostname").read_text()
        argv = self.client(VICTIM, ["cat", "/etc/hostname"])
        samples: list[float] = []
        fails = timeouts = 0
        t0 = time.monotonic()
        for _ in range(LAUNCHES):
            r = self.run(argv, LAUNCH_TIMEOUT)
            timeouts += r.timed_out
            fails += not r.timed_out and not r.gave(want)
            samples.append(r.secs * 1000)
            if timeouts >= GIVE_UP_TIMEOUTS or time.monotonic() - t0 > SERIES_BUDGET:
                break
        cut = f"{len(samples)}/{LAUNCHES}" if len(samples) < LAUNCHES else ""
        return Figures.of(samples, fails=fails, timeouts=timeouts, runs=cut)

    def opens(self, path: Path, text: str) -> Figures:
        """A victim program's timed opens of ``path`` (which must read ``text``), in µs."""
        argv = [str(self.bin), "opens", str(OPENS_SECONDS), str(OPENS), str(path), text]
        r = self.run(self.client(VICTIM, argv), OPENS_TIMEOUT)
        if r.timed_out:
            return HUNG
        got = kv(r.out)
        if r.status != 0 or "p50_us" not in got:
            return FAILED
        return Figures(float(got["p50_us"]), float(got["p99_us"]), float(got["max_us"]),
                       fails=int(got["fails"]))

    def victim(self, *, dev: bool = False) -> Victim:
        """Measure the victim: launches, then redirected opens (and device opens)."""
        cpu, t0 = self.daemon_cpu(), time.monotonic()
        launch = self.launches()
        opens = self.opens(self.alias, VICTIM_TEXT)
        dev_opens = self.opens(self.dev, "") if dev else None
        busy = (self.daemon_cpu() - cpu) / (time.monotonic() - t0) * 100
        return Victim(launch, opens, dev_opens, busy)

    def daemon_cpu(self) -> float:
        """CPU seconds the daemon used so far (user + system, all threads)."""
        with open(f"/proc/{self.daemon.proc.pid}/stat") as f:
            # Fields after the command (which may hold spaces): utime, stime are 14, 15.
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self) -> dict[str, Any]:
        """``unotifyd status`` as root, retried for up to :data:`STATUS_PATIENCE`
        seconds; how long the answer took is kept in :attr:`status_s`.

        Right after an attack the daemon may be winding it down: when a
        thousand FIFO opens are released at once, their worker threads all
        wake and take the GIL in turn, and a CI run once saw the first
        ``status`` take over 10 s there. That the daemon answers at all is
        what health needs; how long it took is printed with the figures.
        """
        t0 = time.monotonic()
        deadline = t0 + STATUS_PATIENCE
        while True:
            why = "timed out"
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "unotifyd", "status", "--json", "--daemon",
                     self.daemon.socket],
                    capture_output=True, text=True, check=False, env=self.env(),
                    timeout=max(deadline - time.monotonic(), 1.0),
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                pass
            else:
                if proc.returncode == 0:
                    self.status_s = time.monotonic() - t0
                    report: dict[str, Any] = json.loads(proc.stdout)
                    return report
                why = proc.stderr
            assert time.monotonic() < deadline, f"status fails: {why}\n{self.daemon.log()}"
            time.sleep(0.2)

    def health(self) -> str:
        """"ok" if the daemon still serves (alive, status answers, no internal
        error, a victim launch works), else what is wrong. Call it once the
        attack is stopped."""
        if not self.daemon.alive():
            return "dead"
        try:
            report = self.status()
        except AssertionError:
            return "no-status"
        errors = sum(p["internal_errors"] for p in report["profiles"].values())
        if errors:
            return f"internal-errors:{errors}"
        if "Traceback" in self.daemon.log():
            return "traceback"
        r = self.run(self.client(VICTIM, ["cat", str(self.alias)]), 20)
        return "ok" if r.gave(VICTIM_TEXT) else "launch-fails"


@contextlib.contextmanager
def world(kit: Kit, rules: Sequence[tuple[str, str]] = ()) -> Iterator[World]:
    """A daemon whose profile has the victim's rules and ``rules`` (redirect from -> to)."""
    with public_dir("unotifyd-iso-") as d:
        target = d / "victim.txt"
        target.write_text(VICTIM_TEXT)
        target.chmod(0o644)
        policy = 'version = 1\n\n[[readonly]]\npath = "/etc/hostname"\n'
        for src, dst in [(str(d / "victim-alias"), str(target)),
                         (str(d / "victim-dev"), "/dev/null"), *rules]:
            policy += f'\n[[redirect]]\nfrom = "{src}"\nto = "{dst}"\n'
        uids = f"[0, {VICTIM}, {ATTACKER}]"
        with start_daemon(kit.procs, {PROFILE: policy}, uids=uids) as daemon:
            w = World(daemon, d, kit.bin, kit.site, kit.procs)
            try:
                yield w
            finally:
                w.stop_attack()


def conclude(report: Report, attack: str, w: World, alone: Victim, attacked: Victim,
             **proof: object) -> None:
    """Stop the attack, check the daemon, print the RESULT line; fail if the
    victim was stalled or the daemon is no longer well."""
    w.stop_attack()
    health = w.health()
    # The victim alone once more, after the attack: the machine's own noise
    # drifts over a test (two CPUs, other jobs), and a p99 is its worst few
    # calls. The attack is judged against the worse of the two baselines
    # that bracket it.
    after = w.victim() if health == "ok" else alone
    base = Victim(
        worse(alone.launch, after.launch), worse(alone.opens, after.opens),
        None if alone.dev is None or after.dev is None else worse(alone.dev, after.dev),
        max(alone.daemon_cpu, after.daemon_cpu),
    )  # fmt: skip
    problems = within("launch", base.launch, attacked.launch, LAUNCH_FLOOR_MS, "ms",
                      tail_floor=LAUNCH_TAIL_FLOOR_MS)
    problems += within("open", base.opens, attacked.opens, OPEN_FLOOR_US, "us")
    extra: dict[str, object] = {}
    if base.dev is not None and attacked.dev is not None:
        problems += within("device open", base.dev, attacked.dev, OPEN_FLOOR_US, "us")
        extra = {"dev_alone": alone.dev, "dev_after": after.dev, "dev_attacked": attacked.dev}
    fails = attacked.launch.fails + attacked.opens.fails
    timeouts = attacked.launch.timeouts + attacked.opens.timeouts
    if attacked.dev is not None:
        fails += attacked.dev.fails
        timeouts += attacked.dev.timeouts
    report(
        f"isolation[{attack}]",
        victim_alone=alone.launch,
        victim_attacked=attacked.launch,
        victim_after=after.launch,
        fails=fails,
        timeouts=timeouts,
        escapes=int(bool(problems)),
        runs=attacked.launch.runs or LAUNCHES,
        opens_alone=alone.opens,
        opens_attacked=attacked.opens,
        opens_after=after.opens,
        **extra,
        daemon_cpu_pct=f"{alone.daemon_cpu:.0f}/{attacked.daemon_cpu:.0f}",
        **proof,
        status_after_s=f"{w.status_s:.2f}",
        daemon=health,
    )
    if health != "ok":
        log = "\n".join(w.daemon.log().splitlines()[-60:])
        problems.append(f"the daemon is not well after the attack: {health}; its log ends:\n{log}")
    if problems:
        pytest.fail(f"isolation against {attack} does not hold:\n  " + "\n  ".join(problems),
                    pytrace=False)


def threads_of(pid: int) -> int:
    return int(status_field(pid, b"Threads"))


def ready(p: subprocess.Popen[str], timeout: float = 10) -> list[str]:
    """The lines ``p`` printed up to its "ready" line (which must come in ``timeout``)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        line = read_line(p, max(0.1, deadline - time.monotonic()))
        assert line, f"pid {p.pid} ended before it was ready: {lines}"
        if line.startswith("ready"):
            return lines
        lines.append(line.strip())


# --- lease + truncate --------------------------------------------------------------------


@pytest.mark.parametrize("attacker", ["root", "user"])
def test_lease_break_waits_stall_only_the_attacker(
    attacker: str, kit: Kit, report: Report, lease_break: int
) -> None:
    """The attacker holds a write lease on a file of its own (from a process
    outside unotifyd that ignores SIGIO) and truncates it through a redirect,
    so the supervisor performs each truncate and waits out the lease break
    (:data:`BREAK_TIME` s). Root's are performed in the serving thread;
    another uid's in worker threads, 80 at once, more than the pool of 64.

    Proof: natively, the same truncate waits for about the break time.
    """
    uid = 0 if attacker == "root" else ATTACKER
    threads = 4 if attacker == "root" else 80
    with public_dir("unotifyd-iso-lease-") as d:
        leased = d / "leased"
        leased.write_text("mine\n")
        os.chown(leased, uid, uid)
        alias = d / "lease-alias"
        with world(kit, [(str(alias), str(leased))]) as w:
            lessor = w.start([*as_uid(uid), str(kit.bin), "lessor", str(leased)])
            ready(lessor)
            native = w.run([*as_uid(uid), str(kit.bin), "truncate", "1", "1", str(leased)],
                           lease_break + 5)
            assert native.status == 0, f"the native truncate did not end: {native}"
            secs = native.secs
            # About the break time: less, and there was no lease to wait for.
            assert 0.8 * lease_break <= secs <= lease_break + 2, f"native truncate: {secs:.2f}s"
            time.sleep(0.1)  # the lessor takes the lease again

            alone = w.victim()
            truncator = w.start(w.client(uid, [str(kit.bin), "truncate", str(threads), "0",
                                               str(alias)]))
            ready(truncator)
            time.sleep(0.5)  # the first truncates are waiting for the break
            attacked = w.victim()
            conclude(report, f"lease-{attacker}", w, alone, attacked,
                     native_truncate_s=f"{secs:.2f}", break_time_s=lease_break,
                     attacker_threads=threads)


# --- FIFO opens filling the blocking pool ----------------------------------------------------

FIFO_PROGRAMS = 5
FIFO_THREADS = 260


def test_fifo_opens_stall_only_the_attacker(
    kit: Kit, report: Report
) -> None:
    """:data:`FIFO_PROGRAMS` attacker programs of :data:`FIFO_THREADS` threads
    each open, through a redirect, a FIFO that never gets a writer: each open
    waits in a supervisor thread (today: a pool of 1024 blocking opens, at
    most 256 per program). The victim's regular and device opens must go on.

    Proof: the attacker's threads are all still blocked in their opens once
    the victim is measured (none returned); and how many threads the daemon
    added for them.
    """
    with public_dir("unotifyd-iso-fifo-") as d:
        fifo = d / "fifo"
        os.mkfifo(fifo, 0o666)
        os.chown(fifo, ATTACKER, ATTACKER)
        fifo.chmod(0o666)
        alias = d / "fifo-alias"
        with world(kit, [(str(alias), str(fifo))]) as w:
            alone = w.victim(dev=True)
            before = threads_of(w.daemon.proc.pid)
            hogs = [w.start(w.client(ATTACKER, [str(kit.bin), "fifos", str(FIFO_THREADS),
                                                str(alias)]))
                    for _ in range(FIFO_PROGRAMS)]
            for hog in hogs:
                ready(hog)
            # Until the daemon has stopped adding threads for the opens it parks.
            deadline, last, since = time.monotonic() + 15, -1, time.monotonic()
            while time.monotonic() - since < 1.0 and time.monotonic() < deadline:
                now = threads_of(w.daemon.proc.pid)
                if now != last:
                    last, since = now, time.monotonic()
                time.sleep(0.1)
            attacked = w.victim(dev=True)
            total = FIFO_PROGRAMS * FIFO_THREADS
            still_blocked = sum(threads_of(h.pid) - 1 for h in hogs)
            assert still_blocked == total, f"only {still_blocked} of {total} FIFO opens wait"
            conclude(report, "fifo-pool", w, alone, attacked, attacker_opens=total,
                     still_blocked=still_blocked, daemon_threads_added=last - before)


# --- userfaultfd --------------------------------------------------------------------------


def test_userfaultfd_path_stalls_only_the_attacker(
    kit: Kit, report: Report
) -> None:
    """A root attacker opens a path that lies in a page registered with
    userfaultfd (missing faults, never served): the supervisor's read of the
    path from the program's memory waits for the page, for as long as the
    attacker lives.

    Proof: natively, ``process_vm_readv`` of such a page from another
    process is still waiting after a second; and under the daemon the
    attacker's open has not returned once the victim is measured.
    """
    with world(kit) as w:
        probe = w.run([str(kit.bin), "uffd-probe"], 10)
        assert kv(probe.out).get("blocked") == "yes", probe
        alone = w.victim()
        attacker = w.start(w.client(0, [str(kit.bin), "uffd"]))
        ready(attacker)
        time.sleep(0.3)  # the open is trapped and its path being read
        attacked = w.victim()
        assert attacker.poll() is None, "the attacker's open returned: its page was served?"
        conclude(report, "userfaultfd", w, alone, attacked, native_read="blocked",
                 attacker_open="blocked")


# --- idle control connections --------------------------------------------------------------

IDLE_CONNECTIONS = 600


def test_idle_connections_do_not_lock_out_other_clients(
    kit: Kit, report: Report
) -> None:
    """The attacker uid opens :data:`IDLE_CONNECTIONS` connections to the
    control socket and says nothing on them. The victim's launches must
    still be served. What the attacker is told once over its limit is
    printed (today: a global limit of 512, "busy"; a per-uid limit should
    name itself), not asserted: only the victim is.

    Proof: every connection was accepted by the kernel (the program fails
    otherwise) and counted by the daemon.
    """
    with world(kit) as w:
        alone = w.victim()
        before = w.status()["connections"]
        attacker = w.start([*as_uid(ATTACKER), str(kit.bin), "idle", w.daemon.socket,
                            str(IDLE_CONNECTIONS)])
        lines = ready(attacker, timeout=15)
        attacked = w.victim()
        w.stop_attack()
        seen = w.status()["connections"] - before
        assert seen >= IDLE_CONNECTIONS, f"the daemon saw {seen} connections"
        said = kv(next((x for x in lines if x.startswith("held=")), ""))
        refusal = next((x.removeprefix("refusal ") for x in lines if x.startswith("refusal ")), "")
        message = json.loads(refusal).get("message", "") if refusal else "none"
        conclude(report, "idle-connections", w, alone, attacked, attacker_held=said.get("held"),
                 attacker_refused=said.get("refused"), attacker_message=json.dumps(message))
