"""Section 1: the cost of one system call under each tool (openloop, latloop).

Each cell is one run of ``openloop`` under a tool; its own clock times the
loop, so launching the tool costs nothing here. A warm-up round (discarded)
measures each cell once with a few iterations and sizes the real runs to
take about the same time whatever the tool. Then every round runs every
cell once, in a rotating order, and the table shows the median over rounds
(and the spread); a ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import (
    REDIRECT_FROM,
    REDIRECT_TO,
    BenchError,
    Ctx,
    Grid,
    Report,
    Rounds,
    Tool,
    file_head,
    log,
    num,
    parse_kv,
    ratio,
    rotated,
    scaled,
    table,
    tools,
    with_spread,
)
from launchcost import Daemon

OPS = {
    "redirect": f"redirected open ({REDIRECT_FROM} -> {REDIRECT_TO})",
    "passthrough": f"pass-through open ({REDIRECT_TO}, no rule matches)",
    "getppid": "getppid (never trapped)",
}
FLOOR = "filter floor"
COLUMNS = [
    "native",
    FLOOR,
    "unotifyd",
    "unotifyd no lane",
    "unotifyd no-sync",
    "C ref",
    "C ref -w",
    "proot",
    "bwrap",
]
# The same redirect served by `unotifyd serve` (launch --daemon), when it runs.
DAEMON = "unotifyd daemon"
REFS = ("C ref", "C ref -w")
ISOLATED = "isolated"
# A call of the stat family by a relative name, as git status makes them: the
# full view and enforcing mode against a C supervisor that traps the same
# calls and lets them through (the floor of a notification per call), and
# the same one looking each name up first (-l: the floor of a supervisor
# that decides on what a name resolves to; -r: one fstatat by the name, the
# least resolution there is).
STAT = "lstat"
STAT_DIR = Path(REDIRECT_TO).parent
STAT_COLUMNS = [
    "native", "C ref -w -s", "C ref -w -s -r", "C ref -w -s -l", "unotifyd", "unotifyd --enforce",
]  # fmt: skip
SPIN_NS = 200_000  # computing between two isolated opens


@dataclass(frozen=True)
class Cell:
    op: str
    col: str
    tool: Tool

    def argv(self, ctx: Ctx, n: int) -> list[str]:
        if self.op == ISOLATED:
            cmd = [ctx.bin("latloop"), "-s", str(SPIN_NS), REDIRECT_TO, str(n)]
        elif self.op == STAT:
            cmd = [ctx.bin("openloop"), "-S", "lstat", Path(REDIRECT_TO).name, str(n)]
        elif self.op == "getppid":
            floor = ["-F"] if self.col == FLOOR else []
            cmd = [ctx.bin("openloop"), *floor, "-g", str(n)]
        else:
            path = REDIRECT_FROM if self.op == "redirect" else REDIRECT_TO
            cmd = [ctx.bin("openloop"), path, str(n)]
        return self.tool.wrap(cmd)


def _cells(ctx: Ctx, columns: list[str], by_key: dict[str, Tool]) -> list[Cell]:
    cells = []
    for op in OPS:
        for col in columns:
            if col == FLOOR:
                if op == "getppid":
                    cells.append(Cell(op, col, by_key["native"]))
            else:
                cells.append(Cell(op, col, by_key[col]))
    cells += [Cell(ISOLATED, col, by_key[col]) for col in columns if col != FLOOR]
    cells += [Cell(STAT, col, by_key[col]) for col in STAT_COLUMNS]
    return cells


def _measure(ctx: Ctx, cell: Cell, n: int, heads: dict[str, str]) -> dict[str, float]:
    """Run a cell; check what it opened; return its numbers (ns)."""
    proc = ctx.run(cell.argv(ctx, n), cwd=STAT_DIR if cell.op == STAT else None)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("openloop", "latloop"))]
    if not lines:
        raise BenchError(f"{cell.col}: no result line in {proc.stdout!r}")
    kv = parse_kv(lines[-1])
    if cell.op != "getppid":
        redirected = cell.op == "redirect" and cell.tool.redirects
        want = heads[REDIRECT_TO] if cell.op != "redirect" or redirected else heads[REDIRECT_FROM]
        if kv.get("content") != want:
            raise BenchError(
                f"{cell.col}, {cell.op}: opened the wrong file: content={kv.get('content')!r}, "
                f"expected {want!r} ({'redirected' if redirected else 'not redirected'})"
            )
    if cell.op == ISOLATED:
        return {"p50": float(kv["p50_ns"]), "p99": float(kv["p99_ns"])}
    return {"per_iter": float(kv["ns_per_iter"])}


def run(ctx: Ctx, report: Report, rounds: Rounds) -> dict[str, float]:
    heads = {p: file_head(p) for p in (REDIRECT_FROM, REDIRECT_TO)}
    if heads[REDIRECT_FROM] == heads[REDIRECT_TO]:
        raise BenchError(f"{REDIRECT_FROM} and {REDIRECT_TO} start alike: cannot tell a redirect")
    by_key = tools(ctx)
    columns = list(COLUMNS)
    rule = f"{REDIRECT_FROM}={REDIRECT_TO}"
    enforce = (*ctx.unotifyd, "launch", "--enforce", "--redirect", rule, "--")
    by_key["unotifyd --enforce"] = Tool("unotifyd --enforce", enforce, True)
    ref_w = by_key["C ref -w"].prefix
    by_key["C ref -w -s"] = Tool("C ref -w -s", (ref_w[0], "-s", *ref_w[1:]), True)
    by_key["C ref -w -s -l"] = Tool("C ref -w -s -l", (ref_w[0], "-s", "-l", *ref_w[1:]), True)
    by_key["C ref -w -s -r"] = Tool("C ref -w -s -r", (ref_w[0], "-s", "-r", *ref_w[1:]), True)
    daemon = Daemon(ctx, "daemon-percall")
    prefix = daemon.start(shutil.which("cat") or "/bin/cat")
    if prefix is not None:
        by_key[DAEMON] = Tool(DAEMON, prefix, True)
        columns.insert(columns.index("unotifyd no-sync") + 1, DAEMON)
    else:
        log(f"1. per-call cost: no {DAEMON} column: {daemon.status}")
    try:
        return _run(ctx, report, rounds, heads=heads, columns=columns, by_key=by_key)
    finally:
        daemon.stop()


def _run(
    ctx: Ctx,
    report: Report,
    rounds: Rounds,
    *,
    heads: dict[str, str],
    columns: list[str],
    by_key: dict[str, Tool],
) -> dict[str, float]:
    cells = _cells(ctx, columns, by_key)
    target = 0.1 if ctx.quick else 0.3
    n_isolated = 300 if ctx.quick else 1000

    log("1. per-call cost: warm-up round (sizes each run)")
    sizes: dict[Cell, int] = {}
    for cell in cells:
        if cell.op == ISOLATED:
            sizes[cell] = n_isolated
            continue
        warm = 3000 if cell.op == "getppid" else 300
        ns = _measure(ctx, cell, warm, heads)["per_iter"]
        sizes[cell] = scaled(target, ns, 200, 20_000_000)

    grid = Grid()
    for rnd in rounds:
        log(f"1. per-call cost: round {rnd + 1}/{rounds.count}")
        for cell in rotated(cells, rnd * 5):
            res = _measure(ctx, cell, sizes[cell], heads)
            for k, v in res.items():
                row = f"{cell.op}:{k}" if cell.op == ISOLATED else cell.op
                grid.add(row, cell.col, rnd, v / 1000)  # ns -> us

    report.out(f"## 1. Per-call cost ({rounds.label()})")
    report.out()
    report.out(
        "openloop under each tool; us per open+close (per getppid call), "
        "median [min-max] over rounds. "
        "`filter floor` = openloop -F: a one-instruction allow-all seccomp filter."
    )
    report.out()
    rows = []
    for op, label in OPS.items():
        cells_text = [label]
        for col in columns:
            if grid.has(op, col):
                lo, hi = grid.spread(op, col)
                cells_text.append(with_spread(grid.med(op, col), lo, hi))
            else:
                cells_text.append("-")
        rows.append(cells_text)
    report.out(table(["us per call", *columns], rows))
    report.out()

    ratio_cols = [c for c in columns if c not in ("native", FLOOR)]
    report.out("Ratio to the faster C reference of the same round (median of per-round ratios):")
    report.out()
    rows = [
        [OPS[op], *(ratio(grid.ratio(op, c, REFS)) for c in ratio_cols)] for op in OPS
    ]
    report.out(table(["/ faster C ref", *ratio_cols], rows))
    report.out()
    report.out("Ratio to native (getppid also to the filter floor):")
    report.out()
    native_cols = [c for c in columns if c != "native"]
    rows = [
        [OPS[op], *(ratio(grid.ratio(op, c, "native")) if grid.has(op, c) else "-"
                    for c in native_cols)]
        for op in OPS
    ]
    rows.append(
        ["getppid / filter floor", "-",
         *(ratio(grid.ratio("getppid", c, FLOOR)) for c in native_cols[1:])]
    )
    report.out(table(["/ native", *native_cols], rows))
    report.out()

    iso_cols = [c for c in columns if c != FLOOR]
    report.out(
        f"Isolated pass-through open (latloop -s: {SPIN_NS // 1000} us of computing before "
        f"each open, {n_isolated} opens per run): latency of one open, us, median over rounds."
    )
    report.out()
    rows = [
        [f"{q} latency", *(num(grid.med(f"{ISOLATED}:{q}", c)) for c in iso_cols)]
        for q in ("p50", "p99")
    ]
    rows.append(
        ["p50 / C ref -w", *(ratio(grid.ratio(f"{ISOLATED}:p50", c, "C ref -w")) for c in iso_cols)]
    )
    report.out(table(["isolated open", *iso_cols], rows))
    report.out()

    report.out(
        f"A stat by a relative name (openloop -S lstat {Path(REDIRECT_TO).name}, cwd "
        f"{STAT_DIR}; no rule concerns it): us per call, median [min-max] over rounds. "
        "`C ref -w -s` traps the stat family too and lets it through: the floor of a "
        "notification per call; `-l` looks each name up first (reads it, `openat2` from the "
        "thread's cwd, reads back the name found, closes it): the floor of a supervisor that "
        "decides on what a name resolves to; `-r` resolves it by one `fstatat` instead, the "
        "least lookup there is; `unotifyd --enforce` makes the call itself."
    )
    report.out()
    rows = [
        ["us per lstat", *(with_spread(grid.med(STAT, c), *grid.spread(STAT, c))
                           for c in STAT_COLUMNS)],
        ["/ native", *(ratio(grid.ratio(STAT, c, "native")) for c in STAT_COLUMNS)],
        ["/ C ref -w -s", *(ratio(grid.ratio(STAT, c, "C ref -w -s")) for c in STAT_COLUMNS)],
    ]
    report.out(table([STAT, *STAT_COLUMNS], rows))
    report.out()

    daemon = (
        {"daemon_passthrough_vs_refw": grid.ratio("passthrough", DAEMON, "C ref -w")}
        if DAEMON in columns
        else {}
    )
    return {
        **daemon,
        "passthrough_vs_refw": grid.ratio("passthrough", "unotifyd", "C ref -w"),
        "redirect_vs_fastref": grid.ratio("redirect", "unotifyd", REFS),
        "redirect_nosync_vs_fastref": grid.ratio("redirect", "unotifyd no-sync", REFS),
        "getppid_vs_ref": grid.ratio("getppid", "unotifyd", REFS),
        "getppid_vs_floor": grid.ratio("getppid", "unotifyd", FLOOR),
        "redirect_us": min(
            grid.med("redirect", "unotifyd"), grid.med("redirect", "unotifyd no-sync")
        ),
        "isolated_p50_us": grid.med(f"{ISOLATED}:p50", "unotifyd"),
        "lstat_vs_ref_s": grid.ratio(STAT, "unotifyd", "C ref -w -s"),
        "lstat_enforce_vs_ref_s": grid.ratio(STAT, "unotifyd --enforce", "C ref -w -s"),
        "lstat_vs_ref_sl": grid.ratio(STAT, "unotifyd", "C ref -w -s -l"),
    }
