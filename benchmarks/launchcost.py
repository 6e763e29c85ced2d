"""Section 2: the cost of launching a program under each tool (spawnloop).

``spawnloop K CMD`` launches CMD K times one after the other and times each
launch (posix_spawn to waitpid). The N launches of a tool are spread over
the rounds; each round runs every tool in turn, and a tool's figure is the
median over rounds of its mean time per launch. The same rounds time the
steps of a standalone ``unotifyd launch`` (interpreter start, imports), and
``-X importtime`` says which imports cost most.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

from harness import (
    REDIRECT_FROM,
    REDIRECT_TO,
    BenchError,
    Ctx,
    Grid,
    Report,
    Rounds,
    c_escape,
    file_head,
    log,
    median,
    num,
    parse_kv,
    ratio,
    rotated,
    table,
    tools,
    with_spread,
)

PEERS = ["native", "bwrap", "proot", "C ref", "C ref -w", "unotifyd"]
REFS = ("C ref", "C ref -w")
TRUE_ROW = "unotifyd launch -- true"
# `unotifyd launch --daemon`, the command as installed: the C front, which
# makes the launch itself, where it was built.
DAEMON_ROW = "unotifyd via daemon"
# The same launch from Python (`python3 -m unotifyd launch --daemon`: Python's
# start, then an exec of the C client), and by each of the daemon's clients
# alone: the C one (where it was built), and the Python one.
DAEMON_FROM_PY_ROW = "python -m unotifyd via daemon"
DAEMON_C_ROW = "unotifyd-launch (C client) via daemon"
DAEMON_PY_ROW = "unotifyd via daemon, Python client"
_PYTHON_CLIENT = (
    "import sys; from unotifyd.daemon.client import launch_via_daemon; "
    "sys.exit(launch_via_daemon(sys.argv[1], sys.argv[2], sys.argv[3:]))"
)
# Cumulative steps of a standalone launch: each includes the ones before.
STEPS = {
    "python -c pass": "pass",
    "python -c 'import unotifyd.cli'": "import unotifyd.cli",
    "python -c 'import unotifyd.launch'": "import unotifyd.cli, unotifyd.launch",
    "python -c 'import unotifyd.serve.run' (trio)": (
        "import unotifyd.cli, unotifyd.launch, unotifyd.serve.run"
    ),
}
IMPORTTIME_RUNS = 5


@dataclass(frozen=True)
class Entry:
    row: str
    argv: tuple[str, ...]
    per_round: int


class Daemon:
    """Launch through the daemon: ``unotifyd serve`` and ``launch --daemon``, if they exist.

    ``start`` returns the argv prefix that launches a program through a
    daemon serving the canonical redirect as profile ``bench``, or None;
    ``status`` then says why ("daemon: not available" while ``unotifyd
    serve`` does not exist). Nothing here stops the benchmark: a daemon
    that cannot be driven only empties its row.
    """

    def __init__(self, ctx: Ctx, name: str = "daemon") -> None:
        self.ctx = ctx
        self.name = name  # its directory in the work directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.status = ""
        #: Each client's argv prefix, by row (DAEMON_C_ROW, DAEMON_PY_ROW).
        self.clients: dict[str, tuple[str, ...]] = {}

    def start(self, cat: str) -> tuple[str, ...] | None:
        ctx = self.ctx
        if ctx.run([*ctx.unotifyd, "serve", "--help"], check=False, timeout=30).returncode:
            self.status = "daemon: not available (`unotifyd serve` does not exist)"
            return None
        if "--daemon" not in ctx.run([*ctx.unotifyd, "launch", "--help"], timeout=30).stdout:
            self.status = "daemon: not available (`unotifyd launch` has no --daemon)"
            return None
        where = ctx.work / self.name
        where.mkdir()
        (where / "policy.toml").write_text(
            f'version = 1\n\n[[redirect]]\nfrom = "{REDIRECT_FROM}"\nto = "{REDIRECT_TO}"\n'
        )
        (where / "config.toml").write_text(
            'version = 1\n\n[[profile]]\nname = "bench"\npolicy = "policy.toml"\n'
            f"uids = [{os.getuid()}]\n"
        )
        sock = where / "unotifyd.sock"
        errors = where / "serve.log"
        argv = [*ctx.unotifyd, "serve", "--socket", str(sock), "--config",
                str(where / "config.toml")]
        with open(errors, "wb") as err:
            self.proc = subprocess.Popen(
                argv, env=ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = errors.read_text(errors="replace").strip()[-300:]
                self.status = f"daemon: did not start ({tail or 'no socket after 10 s'})"
                self.stop()
                return None
            time.sleep(0.02)
        prefix = (*ctx.command, "launch", "--daemon", str(sock), "--profile", "bench", "--")
        try:
            printed = ctx.run([*prefix, cat, REDIRECT_FROM], timeout=30).stdout.encode()
        except BenchError as e:
            self.status = f"daemon: launch through it failed: {str(e)[-300:]}"
            self.stop()
            return None
        if c_escape(printed[:64]) != file_head(REDIRECT_TO):
            self.status = f"daemon: did not redirect ({printed[:64]!r})"
            self.stop()
            return None
        self._clients(str(sock), cat)
        return prefix

    def _clients(self, sock: str, cat: str) -> None:
        """The clients that redirect, alone (a client that does not is left out)."""
        ctx = self.ctx
        python = ctx.unotifyd[:2] if ctx.unotifyd[1:2] == ("-P",) else ctx.unotifyd[:1]
        where = "from unotifyd.daemon import quick; print(quick.COMPILED_CLIENT)"
        compiled = ctx.run([*python, "-c", where], check=False, timeout=30).stdout.strip()
        candidates = {DAEMON_PY_ROW: (*python, "-c", _PYTHON_CLIENT, sock, "bench")}
        if ctx.command != ctx.unotifyd:
            candidates[DAEMON_FROM_PY_ROW] = (
                *ctx.unotifyd, "launch", "--daemon", sock, "--profile", "bench", "--"
            )  # fmt: skip
        if compiled and os.access(compiled, os.X_OK):
            candidates[DAEMON_C_ROW] = (compiled, "--daemon", sock, "--profile", "bench", "--")
        for row, prefix in candidates.items():
            printed = ctx.run([*prefix, cat, REDIRECT_FROM], check=False, timeout=30).stdout
            if c_escape(printed.encode()[:64]) == file_head(REDIRECT_TO):
                self.clients[row] = prefix

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class ImportTimes:
    total_ms: float
    trio_ms: float
    top_level: dict[str, float]  # cumulative ms of each top-level import
    own: dict[str, float]  # self ms of every module


def _import_times(ctx: Ctx, true: str) -> ImportTimes:
    """Medians over IMPORTTIME_RUNS runs of ``-X importtime ... launch -- true``."""
    totals: list[float] = []
    tops: dict[str, list[float]] = defaultdict(list)
    own: dict[str, list[float]] = defaultdict(list)
    trio: list[float] = []
    argv = [ctx.unotifyd[0], "-X", "importtime", *ctx.unotifyd[1:], "launch", "--", true]
    for _ in range(IMPORTTIME_RUNS):
        err = ctx.run(argv).stderr
        total = 0.0
        for line in err.splitlines():
            if not line.startswith("import time:") or "[us]" in line:
                continue
            parts = line[len("import time:") :].split("|")
            if len(parts) != 3:  # self | cumulative | name
                continue
            self_us, cum_us, name = int(parts[0]), int(parts[1]), parts[2]
            total += self_us
            own[name.strip()].append(self_us / 1000)
            if not name.startswith("  "):  # one space: a top-level import
                tops[name.strip()].append(cum_us / 1000)
            if name.strip() == "trio":
                trio.append(cum_us / 1000)
        totals.append(total / 1000)
    return ImportTimes(
        total_ms=median(totals),
        trio_ms=median(trio),
        top_level={k: median(v) for k, v in tops.items()},
        own={k: median(v) for k, v in own.items()},
    )


def run(ctx: Ctx, report: Report, rounds: Rounds, launches: int) -> dict[str, float]:
    cat, true = shutil.which("cat"), shutil.which("true")
    if cat is None or true is None:
        raise BenchError("cat or true not found on PATH")
    by_key = tools(ctx)
    heads = {p: file_head(p) for p in (REDIRECT_FROM, REDIRECT_TO)}
    log("2. launch cost: checking that every tool redirects")
    for key in PEERS:
        tool = by_key[key]
        printed = ctx.run(tool.wrap([cat, REDIRECT_FROM])).stdout.encode()
        want = heads[REDIRECT_TO] if tool.redirects else heads[REDIRECT_FROM]
        if c_escape(printed[:64]) != want:
            raise BenchError(f"{key}: `cat {REDIRECT_FROM}` printed {printed[:64]!r}, not {want!r}")

    per_round = max(1, launches // rounds.count)
    per_round_true = max(1, launches // 10 // rounds.count)
    per_round_step = 3 if ctx.quick else 5
    # The interpreter, and -P if unotifyd runs with it (see prepare.unotifyd_command).
    python = ctx.unotifyd[:2] if ctx.unotifyd[1:2] == ("-P",) else ctx.unotifyd[:1]
    entries = [Entry(k, tuple(by_key[k].wrap([cat, REDIRECT_FROM])), per_round) for k in PEERS]
    daemon = Daemon(ctx)
    through_daemon = daemon.start(cat)
    if through_daemon is not None:
        entries.append(Entry(DAEMON_ROW, (*through_daemon, cat, REDIRECT_FROM), per_round))
        for row, prefix in daemon.clients.items():
            entries.append(Entry(row, (*prefix, cat, REDIRECT_FROM), per_round))
    entries.append(Entry(TRUE_ROW, (*ctx.command, "launch", "--", true), per_round_true))
    entries += [Entry(row, (*python, "-c", code), per_round_step) for row, code in STEPS.items()]

    grid = Grid()
    try:
        for rnd in rounds:
            log(f"2. launch cost: round {rnd + 1}/{rounds.count}")
            for e in rotated(entries, rnd):
                out = ctx.run([ctx.bin("spawnloop"), str(e.per_round), *e.argv]).stdout
                kv = parse_kv(out.strip().splitlines()[-1])
                grid.add("launch", e.row, rnd, float(kv["mean_ns"]) / 1e6)
    finally:
        daemon.stop()
    log("2. launch cost: import times")
    imports = _import_times(ctx, true)

    report.out(f"## 2. Launch cost ({rounds.label()})")
    report.out()
    report.out(
        f"`cat {REDIRECT_FROM}` (redirected to {REDIRECT_TO} by every tool but native), "
        f"launched {per_round * rounds.done} times per tool in rounds of {per_round}; "
        "ms per launch (mean of a round), median [min-max] over rounds."
    )
    report.out()
    rows = []
    for key in [*PEERS, DAEMON_ROW, DAEMON_FROM_PY_ROW, DAEMON_C_ROW, DAEMON_PY_ROW, TRUE_ROW]:
        if not grid.has("launch", key):
            if key == DAEMON_ROW:
                rows.append([DAEMON_ROW, daemon.status, "-", "-"])
            continue
        lo, hi = grid.spread("launch", key)
        rows.append(
            [
                key if key == TRUE_ROW else f"{key}: cat",
                with_spread(grid.med("launch", key), lo, hi),
                ratio(grid.ratio("launch", key, "native")),
                ratio(grid.ratio("launch", key, REFS)),
            ]
        )
    report.out(table(["launch", "ms per launch", "/ native", "/ faster C ref"], rows))
    report.out()
    report.out(
        f"Where a standalone launch goes ({ctx.unotifyd[0]}; each step includes the ones "
        f"above it; {per_round_step} runs per round):"
    )
    report.out()
    rows = [[row, num(grid.med("launch", row))] for row in STEPS]
    rows.append([f"{TRUE_ROW} ({per_round_true} per round)", num(grid.med("launch", TRUE_ROW))])
    report.out(table(["step", "ms"], rows))
    report.out()
    report.out(
        f"`python -X importtime` of `unotifyd launch -- true`, median of {IMPORTTIME_RUNS} runs: "
        f"{num(imports.total_ms)} ms of imports in all, of which trio {num(imports.trio_ms)} ms. "
        "Top-level imports of 1 ms or more (cumulative), and the modules whose own code "
        "costs most (self):"
    )
    report.out()
    big = sorted(((ms, name) for name, ms in imports.top_level.items() if ms >= 1), reverse=True)
    heavy = sorted(((ms, name) for name, ms in imports.own.items()), reverse=True)[: len(big)]
    rows = [
        [name, num(ms), heavy[i][1], num(heavy[i][0])] for i, (ms, name) in enumerate(big)
    ]
    report.out(table(["top-level import", "cumulative ms", "module", "self ms"], rows))
    report.out()
    return {
        "launch_true_ms": grid.med("launch", TRUE_ROW),
        "launch_daemon_ms": grid.med("launch", DAEMON_ROW),
        "launch_daemon_c_ms": grid.med("launch", DAEMON_C_ROW),
    }
