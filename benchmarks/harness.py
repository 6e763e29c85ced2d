"""Shared machinery of the benchmarks: running commands, statistics, tables, the tools compared."""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

_T0 = time.monotonic()
_T = TypeVar("_T")

# The canonical task: opening FROM opens TO instead.
REDIRECT_FROM = "/etc/passwd"
REDIRECT_TO = "/etc/hostname"
# A rule that matches nothing the workloads open: the open family is
# trapped, and every call is a pass-through.
UNRELATED_FROM = "/nonexistent/unotifyd-bench"


class BenchError(Exception):
    """A benchmark cannot go on (message is for the user)."""


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the report)."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(line: str) -> dict[str, str]:
    """``key=value key="quoted value"`` -> dict (quotes removed, escapes kept)."""
    return {k: v[1:-1] if v.startswith('"') else v for k, v in _KV.findall(line)}


def c_escape(data: bytes) -> str:
    """The escaping openloop and latloop apply to the bytes they read."""
    out = []
    for c in data:
        if c == 0x0A:
            out.append("\\n")
        elif c in (0x22, 0x5C):
            out.append("\\" + chr(c))
        elif c < 32 or c > 126:
            out.append(f"\\x{c:02x}")
        else:
            out.append(chr(c))
    return "".join(out)


def file_head(path: str) -> str:
    """What openloop prints as ``content=`` when it really opened ``path``."""
    with open(path, "rb") as f:
        return c_escape(f.read(64))


@dataclass
class Ctx:
    """Where things are and how to run them; one per benchmark run."""

    repo: Path
    build: Path  # compiled C programs
    work: Path  # scratch space, removed at the end
    python: str  # interpreter for the Python workloads
    unotifyd: tuple[str, ...]  # argv that runs the unotifyd command line in Python
    command: tuple[str, ...]  # the `unotifyd` command as installed: the C front, where built
    env: dict[str, str]
    quick: bool
    timeout: float = 300.0

    def bin(self, name: str) -> str:
        return str(self.build / name)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion, bounded in time; raise BenchError on failure.

        Runs in its own session so that a timeout kills the whole tree (a
        supervisor, its program and everything they started).
        """
        limit = timeout if timeout is not None else self.timeout
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BenchError(f"timed out after {limit:.0f} s: {shlex.join(argv)}") from None
        if check and proc.returncode != 0:
            tail = err.strip()[-2000:]
            raise BenchError(f"exit status {proc.returncode}: {shlex.join(argv)}\n{tail}")
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def timed(
        self, argv: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None
    ) -> tuple[float, subprocess.CompletedProcess[str]]:
        """Wall seconds of one run of ``argv`` (which must succeed)."""
        t0 = time.perf_counter()
        proc = self.run(argv, cwd=cwd, timeout=timeout)
        return time.perf_counter() - t0, proc


@dataclass(frozen=True)
class Tool:
    """One way of running a program: natively, under a supervisor, under a peer."""

    key: str
    prefix: tuple[str, ...]
    redirects: bool  # whether REDIRECT_FROM reads REDIRECT_TO under it

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [*self.prefix, *argv]


def tools(ctx: Ctx, *, unrelated: bool = False) -> dict[str, Tool]:
    """Every tool of the comparison, keyed by column name.

    With ``unrelated`` the rule matches nothing (a pure pass-through policy
    that still traps the open family); otherwise it is the canonical redirect.
    """
    src = UNRELATED_FROM if unrelated else REDIRECT_FROM
    rule = f"{src}={REDIRECT_TO}"
    uno = (*ctx.unotifyd, "launch", "--redirect", rule)
    ref = (ctx.bin("ref_unotify"), "-f", src, "-t", REDIRECT_TO)
    proot: tuple[str, ...] = ("proot",) if unrelated else ("proot", "-b", f"{REDIRECT_TO}:{src}")
    bwrap: tuple[str, ...] = ("bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc")
    if not unrelated:
        bwrap = (*bwrap, "--bind", REDIRECT_TO, src)
    all_tools = [
        Tool("native", (), False),
        Tool("unotifyd", (*uno, "--"), True),
        # Python alone: the compiled pass-through lane turned off.
        Tool("unotifyd no lane", ("env", "UNOTIFYD_PASSTHROUGH=0", *uno, "--"), True),
        Tool("unotifyd no-sync", (*uno, "--no-sync-wakeup", "--"), True),
        Tool("C ref", (*ref, "--"), True),
        Tool("C ref -w", (*ref, "-w", "--"), True),
        Tool("proot", proot, True),
        Tool("bwrap", bwrap, True),
    ]
    return {t.key: t for t in all_tools}


# ---------------------------------------------------------------- rounds


@dataclass
class Rounds:
    """Round numbers 0, 1... up to ``count``, within a time budget.

    The budget counts from when this object is made (a section's start, so
    its warm-up counts too). Once ``minimum`` rounds are done, no round
    starts that would, at the mean pace so far, end past the budget: a
    loaded machine gets fewer rounds rather than an unbounded run.
    """

    count: int
    budget_s: float = math.inf
    minimum: int = 2
    done: int = 0
    start: float = field(default_factory=time.monotonic)

    def __iter__(self) -> Iterator[int]:
        first = time.monotonic()
        for rnd in range(self.count):
            if rnd >= self.minimum:
                now = time.monotonic()
                pace = (now - first) / rnd
                if now + pace - self.start > self.budget_s:
                    log(f"time budget of {self.budget_s:.0f} s: stopping after {rnd} rounds")
                    return
            yield rnd
            self.done = rnd + 1

    def label(self) -> str:
        if self.done < self.count:
            return f"{self.done} of {self.count} rounds: time budget reached"
        return f"{self.done} rounds"


# ---------------------------------------------------------------- statistics


def median(xs: Iterable[float]) -> float:
    values = list(xs)
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    i = round((len(sorted_values) - 1) * q / 100)
    return float(sorted_values[i])


@dataclass
class Grid:
    """Measurements by (row, column), one list entry per round."""

    values: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)

    def add(self, row: str, col: str, rnd: int, value: float) -> None:
        self.values.setdefault((row, col), {})[rnd] = value

    def has(self, row: str, col: str) -> bool:
        return (row, col) in self.values

    def med(self, row: str, col: str) -> float:
        return median(self.values.get((row, col), {}).values())

    def spread(self, row: str, col: str) -> tuple[float, float]:
        vals = self.values.get((row, col), {}).values()
        return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))

    def ratio(self, row: str, col: str, base: str | Sequence[str]) -> float:
        """Median over rounds of value / base value of the same round.

        With several base columns, the smallest of them in each round (e.g.
        "the faster C reference").
        """
        bases = [base] if isinstance(base, str) else list(base)
        mine = self.values.get((row, col), {})
        out = []
        for rnd, v in mine.items():
            b = [self.values[(row, c)][rnd] for c in bases if rnd in self.values.get((row, c), {})]
            if b and min(b) > 0:
                out.append(v / min(b))
        return median(out)


# ---------------------------------------------------------------- formatting


def num(x: float) -> str:
    """A measurement with about three significant digits."""
    if math.isnan(x):
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def with_spread(mid: float, lo: float, hi: float) -> str:
    """``median [min-max]``, the spread over rounds."""
    return f"{num(mid)} [{num(lo)}-{num(hi)}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, padded so that it also reads well as plain text."""
    cols = len(headers)
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(cols)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


class Report:
    """The report: printed as it is made (stdout), kept for ``--save``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def out(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def rotated(items: Sequence[_T], k: int) -> list[_T]:
    """``items`` starting at index ``k`` (mod len): a different order each round."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def scaled(target_s: float, ns_per_unit: float, lo: int, hi: int) -> int:
    """How many units fit in ``target_s``, clamped and rounded to two significant digits."""
    n = int(target_s * 1e9 / max(ns_per_unit, 1.0))
    n = max(lo, min(hi, n))
    digits = len(str(n))
    step = int(10 ** max(digits - 2, 0))
    return max(lo, n // step * step)
