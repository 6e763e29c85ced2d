"""Section 4: real workloads, native vs unotifyd vs the C reference vs proot.

The policy is a pass-through one: a single redirect rule on a path nothing
opens, so the open family is trapped and every open is answered CONTINUE.
Each round runs every workload once under every tool, plus ``true`` under
every tool: ``net`` subtracts that launch cost of the same tool and round,
which leaves what trapping the workload's own calls costs. The C
reference counts the trapped opens (``ref_unotify -v``).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import (
    REDIRECT_TO,
    UNRELATED_FROM,
    BenchError,
    Ctx,
    Grid,
    Report,
    Rounds,
    Tool,
    log,
    median,
    num,
    ratio,
    rotated,
    table,
    tools,
)

# Standard-library packages compiled by the build workload (those that exist).
STDLIB_PACKAGES = (
    "json", "email", "http", "urllib", "xml", "logging", "concurrent", "asyncio", "unittest",
    "importlib", "multiprocessing", "sqlite3", "tomllib", "wsgiref", "xmlrpc", "html", "dbm",
    "ctypes", "curses", "collections", "re", "encodings",
)
GIT_DIRS, GIT_FILES_PER_DIR = 100, 50
COLUMNS = [
    "native", "unotifyd", "unotifyd no lane", "unotifyd --enforce", "unotifyd --view opens",
    "C ref -w", "C ref -w -s", "C ref -w -s -r", "C ref -w -s -l", "proot",
]  # fmt: skip
#: The columns of a supervisor that traps calls (a cost per trapped open).
_SUPERVISED = (
    "unotifyd", "unotifyd no lane", "unotifyd --enforce", "unotifyd --view opens", "C ref -w",
    "C ref -w -s", "C ref -w -s -r", "C ref -w -s -l",
)  # fmt: skip
TRUE = "true"
GIT_LOOP = 'i=0; while [ "$i" -lt "$1" ]; do git status >/dev/null || exit 1; i=$((i+1)); done'
# A shell running small commands, as a configure script or a Makefile does:
# each found by a search of PATH (dash tries an execve in each directory, env
# an execvp), each loading its libraries and its locale (glibc probes the
# locale's directories in turn). Debian's PATH for root and C.UTF-8, so that
# every machine makes the same misses.
SHELL_LOOP = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; LANG=C.UTF-8; "
    'export PATH LANG; i=0; while [ "$i" -lt "$1" ]; do env true || exit 1; i=$((i+1)); done'
)


@dataclass(frozen=True)
class Workload:
    key: str
    name: str
    argv: tuple[str, ...]
    cwd: Path | None = None


def _stdlib_copy(ctx: Ctx) -> tuple[Path, int]:
    """A copy of some standard-library packages, without bytecode; (dir, .py files)."""
    stdlib = ctx.run(
        [ctx.python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"]
    ).stdout.strip()
    dest = ctx.work / "stdlib-subset"
    for name in STDLIB_PACKAGES:
        src = Path(stdlib) / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    count = sum(1 for _ in dest.rglob("*.py"))
    if count == 0:
        raise BenchError(f"no standard-library package found in {stdlib}")
    return dest, count


def _git_repo(ctx: Ctx) -> tuple[Path, int]:
    """A committed repository of GIT_DIRS x GIT_FILES_PER_DIR small files."""
    repo = ctx.work / "git-repo"
    for d in range(GIT_DIRS):
        sub = repo / f"dir{d:03d}"
        sub.mkdir(parents=True)
        for f in range(GIT_FILES_PER_DIR):
            (sub / f"file{f:03d}.txt").write_text(f"dir {d} file {f}\n")
    (repo / ".gitignore").write_text("*.o\n")
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "files"]):
        ctx.run(["git", *cmd], cwd=repo)
    return repo, GIT_DIRS * GIT_FILES_PER_DIR + 1


def _tools(ctx: Ctx) -> dict[str, Tool]:
    by_key = tools(ctx, unrelated=True)
    ref = (ctx.bin("ref_unotify"), "-v", "-w", "-f", UNRELATED_FROM, "-t", REDIRECT_TO, "--")
    rule = f"{UNRELATED_FROM}={REDIRECT_TO}"
    opens = (*ctx.unotifyd, "launch", "--view", "opens", "--redirect", rule, "--")
    enforce = (*ctx.unotifyd, "launch", "--enforce", "--redirect", rule, "--")
    usage = ctx.run([*ctx.unotifyd, "launch", "--help"], timeout=30).stdout
    if "--view" not in usage:
        # An older unotifyd (--rev): the full view was all it had, and opens only.
        opens = by_key["unotifyd"].prefix
    if "--enforce" not in usage:
        enforce = by_key["unotifyd"].prefix
    return {
        "native": by_key["native"],
        "unotifyd": by_key["unotifyd"],
        "unotifyd no lane": by_key["unotifyd no lane"],
        "unotifyd --enforce": Tool("unotifyd --enforce", enforce, True),
        "unotifyd --view opens": Tool("unotifyd --view opens", opens, True),
        "C ref -w": Tool("C ref -w", ref, True),
        # Trapping the metadata calls too, as the full view does: what a
        # notification per call costs, answered in C with nothing looked up.
        "C ref -w -s": Tool("C ref -w -s", (ref[0], "-s", *ref[1:]), True),
        # And looking each name up first, as a supervisor must that decides
        # on what a name resolves to (-l): the floor of the full view.
        "C ref -w -s -l": Tool("C ref -w -s -l", (ref[0], "-s", "-l", *ref[1:]), True),
        # The least resolution there is (-r: one fstatat by the name): the
        # floor of any supervisor that decides on what a name resolves to,
        # whether by its name or by its device and inode.
        "C ref -w -s -r": Tool("C ref -w -s -r", (ref[0], "-s", "-r", *ref[1:]), True),
        "proot": by_key["proot"],
    }


_NOTIFS = re.compile(r"ref_unotify: notifications=(\d+)")
_LOOKUPS = re.compile(r"ref_unotify: notifications=(\d+) redirects=\d+ lookups=(\d+)")


def _looked_up(col: str, w: Workload, stderr: str) -> None:
    """Make sure `C ref -w -s -l` (or `-r`) looked up what git status stats:
    most of its calls are by names relative to the cwd, each one a lookup."""
    found = _LOOKUPS.search(stderr)
    if found is None or int(found.group(2)) * 2 < int(found.group(1)):
        raise BenchError(f"{col} looked up too few names of {w.name}: "
                         f"{found.group(0) if found else stderr.strip()[-300:]}")


def run(ctx: Ctx, report: Report, rounds: Rounds) -> dict[str, float]:
    log("4. workloads: copying the standard library subset, generating the git repository")
    src, n_py = _stdlib_copy(ctx)
    repo, n_files = _git_repo(ctx)
    repeats = 5 if ctx.quick else 10
    commands = 100 if ctx.quick else 200
    workloads = [
        Workload(
            "compileall",
            f"compileall -f ({n_py} files)",
            (ctx.python, "-m", "compileall", "-q", "-f", str(src)),
        ),
        Workload(
            "git",
            f"git status x{repeats} ({n_files} files)",
            ("sh", "-c", GIT_LOOP, "sh", str(repeats)),
            repo,
        ),
        Workload(
            "shell",
            f"sh: env true x{commands}",
            ("sh", "-c", SHELL_LOOP, "sh", str(commands)),
        ),
        Workload(TRUE, TRUE, (str(shutil.which("true") or "/bin/true"),)),
    ]
    by_key = _tools(ctx)
    for w in workloads:  # warm the page cache, refresh git's index
        ctx.run(w.argv, cwd=w.cwd)

    grid = Grid()
    opens: dict[str, list[int]] = {w.name: [] for w in workloads}
    cells = [(col, w) for col in COLUMNS for w in workloads]
    for rnd in rounds:
        log(f"4. workloads: round {rnd + 1}/{rounds.count}")
        for col, w in rotated(cells, rnd * 3):
            secs, proc = ctx.timed(by_key[col].wrap(w.argv), cwd=w.cwd)
            grid.add(w.name, col, rnd, secs)
            if col in ("C ref -w -s -l", "C ref -w -s -r") and w.key == "git":
                _looked_up(col, w, proc.stderr)
            if col == "C ref -w":
                found = _NOTIFS.search(proc.stderr)
                if found:
                    opens[w.name].append(int(found.group(1)))
    # net: minus the launch cost (`true`) of the same tool in the same round
    real = [w for w in workloads if w.name != TRUE]
    for w in real:
        for col in COLUMNS:
            for rnd, secs in grid.values[(w.name, col)].items():
                grid.add(f"{w.name}:net", col, rnd, secs - grid.values[(TRUE, col)][rnd])
    # extra cost per trapped open over native, net of launch
    for w in real:
        n_open = median(opens[w.name])
        for col in _SUPERVISED:
            for rnd, net in grid.values[(f"{w.name}:net", col)].items():
                base = grid.values[(f"{w.name}:net", "native")][rnd]
                grid.add(f"{w.name}:per-open", col, rnd, (net - base) / n_open * 1e6)

    report.out(f"## 4. Real workloads ({rounds.label()})")
    report.out()
    report.out(
        f"Pass-through policy (one rule, `--redirect {UNRELATED_FROM}={REDIRECT_TO}`, matches "
        "nothing the workloads open). `unotifyd` gives the full view: the rule governs every "
        "path call, so metadata calls (`stat`...) are trapped too, and the compiled pass-through "
        "lane lets through those no rule concerns (`no lane`: Python answers every one); "
        "`C ref -w -s` traps the calls the full view traps of these (the `stat` family, "
        "`access`, `readlink`) and lets them through, the floor of a notification per call; "
        "`-l` looks each name up first (reads it, `openat2` from the thread's cwd, reads back "
        "the name found, closes it), the floor of a supervisor that decides on what a name "
        "resolves to, as the full view does (no credentials looked at, the cwd never looked "
        "at again); `-r` resolves each by one `fstatat` instead, the least lookup there is, "
        "as a supervisor deciding on a file's device and inode would make; "
        "`unotifyd --enforce` the "
        "same in enforcing mode, which makes every trapped call itself; `--view opens` and the C "
        "reference trap the open family only. Wall seconds, median over rounds; `trapped "
        "opens` is counted by the C reference; `net` subtracts `true` under the same tool in "
        "the same round (the launch)."
    )
    report.out()
    rows = [
        [w.name, f"{median(opens[w.name]):,.0f}", *(num(grid.med(w.name, c)) for c in COLUMNS)]
        for w in workloads
    ]
    report.out(table(["workload (s)", "trapped opens", *COLUMNS], rows))
    report.out()
    others = COLUMNS[1:]
    rows = []
    for w in real:
        rows.append([w.name, *(ratio(grid.ratio(w.name, c, "native")) for c in others)])
        rows.append([f"{w.name}, net", *(ratio(grid.ratio(f"{w.name}:net", c, "native"))
                                          for c in others)])
        rows.append([f"{w.name}, us per trapped open over native",
                     *(num(grid.med(f"{w.name}:per-open", c)) if c != "proot" else "-"
                       for c in others)])
    report.out(table(["/ native", *others], rows))
    report.out()
    out: dict[str, float] = {}
    for w in real:
        out[f"{w.key}_unotifyd"] = grid.ratio(w.name, "unotifyd", "native")
        out[f"{w.key}_proot"] = grid.ratio(w.name, "proot", "native")
        out[f"{w.key}_net_unotifyd"] = grid.ratio(f"{w.name}:net", "unotifyd", "native")
        out[f"{w.key}_net_enforce"] = grid.ratio(f"{w.name}:net", "unotifyd --enforce", "native")
        out[f"{w.key}_net_ref_s"] = grid.ratio(f"{w.name}:net", "C ref -w -s", "native")
        out[f"{w.key}_net_ref_sl"] = grid.ratio(f"{w.name}:net", "C ref -w -s -l", "native")
        out[f"{w.key}_net_ref_sr"] = grid.ratio(f"{w.name}:net", "C ref -w -s -r", "native")
        out[f"{w.key}_net_nolane"] = grid.ratio(f"{w.name}:net", "unotifyd no lane", "native")
    return out
