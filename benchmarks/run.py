"""Run the unotifyd benchmarks: ``python3 benchmarks/run.py [--quick]``.

Sets itself up (Debian packages, C programs built into a temporary
directory), then runs the four sections of issue 7 and the start-up cost
of containers with unotifyd as their seccomp agent, and prints Markdown
tables on stdout (progress on stderr). Every table compares tools measured
side by side in the same run, interleaved round by round; see the module of
each section for how it measures.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import containers
import launchcost
import percall
import prepare
import throughput
import workloads
from harness import BenchError, Ctx, Report, Rounds, log, num, table

SECTIONS = ("1", "2", "3", "4", "5")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="unotifyd benchmarks against native runs, the C reference, proot and bwrap.",
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds and launches (about 2 min)")
    p.add_argument(
        "--sections", default=",".join(SECTIONS), metavar="LIST",
        help="which sections to run, e.g. 1,3 (default: all)",
    )
    p.add_argument("--rounds", type=int, metavar="N", help="rounds per section (overrides)")
    p.add_argument(
        "--launches", type=int, metavar="N",
        help="launches per tool in section 2 (default 1000, --quick 60)",
    )
    p.add_argument(
        "--rev", metavar="COMMIT",
        help="benchmark this commit (a git archive snapshot) instead of the work tree",
    )
    p.add_argument("--save", metavar="FILE", help="also write the report to FILE (Markdown)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    wanted = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not wanted or wanted - set(SECTIONS):
        p.error(f"--sections: pick from {','.join(SECTIONS)}")
    args.wanted = wanted
    return args


def _verdict(value: float, limit: float, *, at_most: bool = True) -> str:
    if math.isnan(value):
        return "not measured"
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "MISSED"


def _goals(report: Report, m: dict[str, float]) -> None:
    """The goals of issue 18 (and those of issue 7 it keeps) against this run's figures."""
    rows: list[list[str]] = []

    def goal(name: str, key: str, limit: float, shown: Callable[[float], str],
             *, at_most: bool = True) -> None:
        if key in m:
            v = m[key]
            rows.append([name, shown(v), _verdict(v, limit, at_most=at_most)])

    def x(v: float) -> str:
        return f"{v:.2f}x"

    goal("git status, full view: <= 4x native, net of the launch", "git_net_unotifyd", 4, x)
    if "shell_net_unotifyd" in m:
        rows.append(["sh running commands (env true), info: full view / enforcing mode, net",
                     f"{m['shell_net_unotifyd']:.2f}x / {m['shell_net_enforce']:.2f}x", "-"])
    for key, name in (("git", "git status"), ("compileall", "compileall")):
        if f"{key}_net_ref_s" in m:
            rows.append([f"{name}, full view, info: Python alone / the floor (C ref -w -s)",
                         f"{m[f'{key}_net_nolane']:.2f}x / {m[f'{key}_net_ref_s']:.2f}x", "-"])
        if f"{key}_net_ref_sl" in m:
            rows.append([f"{name}, info: the floor of a lookup per call (C ref -w -s -l), net",
                         f"{m[f'{key}_net_ref_sl']:.2f}x", "-"])
        if f"{key}_net_ref_sr" in m:
            rows.append([f"{name}, info: one fstatat per call, the least lookup (C ref -w -s -r)",
                         f"{m[f'{key}_net_ref_sr']:.2f}x", "-"])
    goal("git status, enforcing mode: <= 6x native, net", "git_net_enforce", 6, x)
    goal("compileall, full view: <= 1.3x native, net", "compileall_net_unotifyd", 1.3, x)
    goal("compileall, enforcing mode: <= 1.3x native, net", "compileall_net_enforce", 1.3, x)
    goal("pass-through open <= 3x C ref -w (on the way to 1.3x)", "passthrough_vs_refw", 3, x)
    goal("redirect <= 1.3x the faster C ref", "redirect_vs_fastref", 1.3, x)
    goal("redirect (--no-sync-wakeup) <= 1.3x the faster C ref",
         "redirect_nosync_vs_fastref", 1.3, x)
    # Issue 7 asked 1.3x of every pass-through; issue 18 asks 3x "on the way
    # to 1.3x", and keeps only the redirect's 1.3x.
    goal("pass-through open through the daemon <= 3x C ref -w (on the way to 1.3x)",
         "daemon_passthrough_vs_refw", 3, x)
    if "lstat_vs_ref_s" in m:
        rows.append(["lstat of a relative name, info: full view / enforcing mode, / C ref -w -s",
                     f"{m['lstat_vs_ref_s']:.2f}x / {m['lstat_enforce_vs_ref_s']:.2f}x", "-"])
    if "lstat_vs_ref_sl" in m:
        rows.append(["lstat of a relative name, info: full view / C ref -w -s -l",
                     f"{m['lstat_vs_ref_sl']:.2f}x", "-"])
    goal("getppid <= 1.1x C ref (faster)", "getppid_vs_ref", 1.1, x)
    goal("getppid / filter floor (info: ~1.0 expected)", "getppid_vs_floor", 1.1, x)
    goal("stretch: redirect <= 15 us (best unotifyd mode)", "redirect_us", 15,
         lambda v: f"{num(v)} us")
    goal(">= 100,000 notifications/s, 64 programs (SYNC_WAKE_UP)", "rate64_sync", 1e5,
         lambda v: f"{num(v)}/s", at_most=False)
    goal(">= 100,000 notifications/s, 64 programs (no-sync)", "rate64_nosync", 1e5,
         lambda v: f"{num(v)}/s", at_most=False)
    goal("standalone `launch -- true` <= 80 ms", "launch_true_ms", 80,
         lambda v: f"{num(v)} ms")
    # The daemon's client: the C one alone, and `unotifyd launch --daemon`,
    # the command as installed (the C front where it was built, which is the
    # C client; else Python, which then becomes the C client if it was built).
    goal("launch through the daemon <= 15 ms: unotifyd-launch (the C client)",
         "launch_daemon_c_ms", 15,
         lambda v: "not built" if math.isnan(v) else f"{num(v)} ms")
    goal("launch through the daemon <= 15 ms: `unotifyd launch --daemon`", "launch_daemon_ms", 15,
         lambda v: "daemon not available" if math.isnan(v) else f"{num(v)} ms")
    for key, name in (("compileall", "compileall"), ("git", "git status")):
        if f"{key}_unotifyd" in m:
            u, p = m[f"{key}_unotifyd"], m[f"{key}_proot"]
            rows.append([f"{name}: unotifyd below proot (ratio to native)",
                         f"{u:.2f}x vs proot {p:.2f}x", _verdict(u, p)])
    if "p99_64_sync" in m:
        rows.append(["p99 latency, 64 programs (reported)",
                     f"{num(m['p99_64_sync'])} us sync, {num(m['p99_64_nosync'])} us no-sync",
                     "-"])
    if "rate1_sync" in m:
        better = "SYNC_WAKE_UP" if m["rate1_sync"] > m["rate1_nosync"] else "no-sync"
        better64 = "SYNC_WAKE_UP" if m.get("rate64_sync", 0) > m.get("rate64_nosync", 0) \
            else "no-sync"
        rows.append(["faster mode: 1 program / 64 programs", f"{better} / {better64}", "-"])
    if rows:
        report.out("## Goals (issue 18, and those of issue 7 it keeps), this run")
        report.out()
        report.out(table(["goal", "measured", "verdict"], rows))
        report.out()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    repo = Path(__file__).resolve().parent.parent
    quick: bool = args.quick
    # (rounds, time budget in seconds) per section; --rounds means exactly that many
    plan = (
        {"1": (3, 20.0), "2": (3, 35.0), "3": (2, 30.0), "4": (2, 20.0), "5": (3, 15.0)}
        if quick
        else {
            "1": (5, 80.0), "2": (10, 300.0), "3": (4, 100.0), "4": (5, 125.0),
            "5": (10, 60.0),
        }
    )
    if args.rounds:
        plan = {k: (max(1, args.rounds), math.inf) for k in plan}

    def rounds(section: str) -> Rounds:
        count, budget = plan[section]
        return Rounds(count, budget)

    launches = args.launches or (60 if quick else 1000)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="unotifyd-bench-"))
    report = Report()
    try:
        prepare.install_packages(containers="5" in args.wanted)
        build = tmp / "bin"
        prepare.build(build)
        snapshot_of = None
        source = None
        if args.rev:
            source = tmp / "src"
            snapshot_of = prepare.snapshot(repo, args.rev, source)
        uno, command, env, how = prepare.unotifyd_command(repo, source, tmp)
        work = tmp / "work"
        work.mkdir()
        ctx = Ctx(repo=repo, build=build, work=work, python=sys.executable, unotifyd=uno,
                  command=command, env=env, quick=quick)
        mode = "quick" if quick else "full"
        for line in prepare.header(repo, how, mode, snapshot_of):
            # The work tree's own path says nothing to a reader of the report.
            report.out(line.replace(str(repo), ".").replace(str(tmp), "<scratch>"))
        report.out(f"- command: `{shlex.join(['python3', 'benchmarks/run.py', *sys.argv[1:]])}`")
        report.out()
        metrics: dict[str, float] = {}
        if "1" in args.wanted:
            metrics |= percall.run(ctx, report, rounds("1"))
        if "2" in args.wanted:
            metrics |= launchcost.run(ctx, report, rounds("2"), launches)
        if "3" in args.wanted:
            metrics |= throughput.run(ctx, report, rounds("3"))
        if "4" in args.wanted:
            metrics |= workloads.run(ctx, report, rounds("4"))
        if "5" in args.wanted:
            metrics |= containers.run(ctx, report, rounds("5"))
        _goals(report, metrics)
        report.out(
            f"Total benchmark time: {time.monotonic() - t0:.0f} s; "
            f"load average at the end (1/5/15 min): {prepare.load_average()}."
        )
    except BenchError as e:
        print(f"benchmarks: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.save:
        # The scratch directory is gone by now, and says nothing to a reader.
        saved = report.text().replace(str(tmp), "<scratch>")
        Path(args.save).write_text(saved, encoding="utf-8")
        log(f"report written to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
