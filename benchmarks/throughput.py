"""Section 3: many programs opening in a loop under ONE supervisor (latloop).

One supervisor runs ``sh -c 'K x latloop & ...; wait'``: the K programs are
its program's children and inherit its filter. Every latloop waits for the
same start time (a CLOCK_MONOTONIC barrier set far enough ahead for the
supervisor and all K programs to be up), opens a pass-through path M times,
timing each open, and dumps its samples. Notifications per second = all
opens / (last end - first start); latency percentiles are over every open of
every program of the run. Figures are medians over rounds.
"""

from __future__ import annotations

import re
import shutil
import time
from array import array
from dataclasses import dataclass

from harness import (
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
    percentile,
    ratio,
    rotated,
    scaled,
    table,
    tools,
)

COLUMNS = ["unotifyd", "unotifyd no lane", "unotifyd no-sync", "C ref -w", "C ref"]
PROGRAMS = (1, 4, 16, 64)
# sh -c SCRIPT sh K LATLOOP START DIR PATH M
SCRIPT = 'i=0; while [ "$i" -lt "$1" ]; do "$2" -t "$3" -d "$4" "$5" "$6" & i=$((i+1)); done; wait'


@dataclass(frozen=True)
class Result:
    rate: float  # notifications per second
    p50_us: float
    p99_us: float
    late: int  # programs that reached the barrier after it had passed


def _one(ctx: Ctx, tool: Tool, k: int, m: int, tag: str) -> Result:
    out_dir = ctx.work / f"lat-{re.sub(r'[^a-z0-9]+', '-', tool.key.lower())}-{k}-{tag}"
    out_dir.mkdir(parents=True)
    # Time for the supervisor to start and for sh to fork K programs.
    python_start = 0.5 if tool.key.startswith("unotifyd") else 0.1
    start = time.monotonic_ns() + int((python_start + 0.008 * k) * 1e9)
    argv = tool.wrap(
        ["sh", "-c", SCRIPT, "sh", str(k), ctx.bin("latloop"), str(start), str(out_dir),
         REDIRECT_TO, str(m)]
    )
    out = ctx.run(argv).stdout
    lines = [parse_kv(ln) for ln in out.splitlines() if ln.startswith("latloop")]
    if len(lines) != k:
        raise BenchError(f"{tool.key}, {k} programs: {len(lines)} result lines:\n{out}")
    want = file_head(REDIRECT_TO)
    for kv in lines:
        if kv.get("failures") != "0" or kv.get("content") != want:
            raise BenchError(f"{tool.key}, {k} programs: bad result {kv}")
    first = min(int(kv["start_ns"]) for kv in lines)
    last = max(int(kv["end_ns"]) for kv in lines)
    samples: array[int] = array("I")
    for f in out_dir.glob("lat-*.bin"):
        samples.frombytes(f.read_bytes())
    shutil.rmtree(out_dir)
    if len(samples) != k * m:
        raise BenchError(f"{tool.key}, {k} programs: {len(samples)} samples, not {k * m}")
    ordered = sorted(samples)
    return Result(
        rate=k * m / ((last - first) / 1e9),
        p50_us=percentile(ordered, 50) / 1000,
        p99_us=percentile(ordered, 99) / 1000,
        late=sum(kv.get("late") == "1" for kv in lines),
    )


def run(ctx: Ctx, report: Report, rounds: Rounds) -> dict[str, float]:
    by_key = tools(ctx)
    target = 0.2 if ctx.quick else 0.5
    log("3. throughput: warm-up (sizes each run)")
    total: dict[str, int] = {}
    for col in COLUMNS:
        warm = _one(ctx, by_key[col], 4, 500, "warm")
        total[col] = scaled(target, 1e9 / warm.rate, 2000, 2_000_000)

    cells = [(col, k) for k in PROGRAMS for col in COLUMNS]
    grid = Grid()
    late = 0
    for rnd in rounds:
        log(f"3. throughput: round {rnd + 1}/{rounds.count}")
        for col, k in rotated(cells, rnd * 3):
            m = max(total[col] // k, 50)
            res = _one(ctx, by_key[col], k, m, str(rnd))
            grid.add(f"{k}:rate", col, rnd, res.rate)
            grid.add(f"{k}:p50", col, rnd, res.p50_us)
            grid.add(f"{k}:p99", col, rnd, res.p99_us)
            late += res.late

    report.out(f"## 3. Throughput: K programs under one supervisor ({rounds.label()})")
    report.out()
    report.out(
        f"Each program opens {REDIRECT_TO} (pass-through) in a loop; about "
        f"{target} s of opens per run. Notifications per second over all programs, "
        "median over rounds; the ratios are per round."
    )
    report.out()
    rows = [
        [
            str(k),
            *(num(grid.med(f"{k}:rate", c)) for c in COLUMNS),
            ratio(grid.ratio(f"{k}:rate", "unotifyd", "C ref -w")),
            ratio(grid.ratio(f"{k}:rate", "unotifyd no-sync", "C ref")),
        ]
        for k in PROGRAMS
    ]
    report.out(
        table(["programs", *COLUMNS, "unotifyd / C ref -w", "no-sync / C ref"], rows)
    )
    report.out()
    report.out(
        "Latency of one open, us, p50 / p99 over every open of the run (median over rounds):"
    )
    report.out()
    rows = [
        [str(k), *(f"{num(grid.med(f'{k}:p50', c))} / {num(grid.med(f'{k}:p99', c))}"
                   for c in COLUMNS)]
        for k in PROGRAMS
    ]
    report.out(table(["programs", *COLUMNS], rows))
    report.out()
    if late:
        report.out(f"({late} programs reached the start barrier late: staggered starts.)")
        report.out()
    top = PROGRAMS[-1]
    return {
        "rate64_sync": grid.med(f"{top}:rate", "unotifyd"),
        "rate64_nosync": grid.med(f"{top}:rate", "unotifyd no-sync"),
        "p99_64_sync": grid.med(f"{top}:p99", "unotifyd"),
        "p99_64_nosync": grid.med(f"{top}:p99", "unotifyd no-sync"),
        "rate1_sync": grid.med(f"{PROGRAMS[0]}:rate", "unotifyd"),
        "rate1_nosync": grid.med(f"{PROGRAMS[0]}:rate", "unotifyd no-sync"),
    }
