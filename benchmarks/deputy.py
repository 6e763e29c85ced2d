"""What acting as the program costs: emulated calls, two versions of unotifyd side by side.

    python3 benchmarks/deputy.py --base REV [--rounds N] [--calls CALL...]

Not a section of ``run.py``: it compares the work tree with commit ``REV``
(a ``git archive`` snapshot), both run by the same interpreter, on the calls
the supervisor performs itself — a redirected open, and ``stat``/``open``
under enforcing mode — and on a pass-through open (CONTINUE, whose path is
still resolved as the program), for a program running as root and as
``nobody`` (whose calls need the credential switch). Each round runs every cell once,
in a rotating order; a figure is the median over rounds of the µs per call
that the program's own clock measured, and the ratio is the median of the
per-round ratios (work tree / base). Run as root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import BenchError, log, rotated, table
from prepare import snapshot

REPO = Path(__file__).resolve().parent.parent

_LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
/* callloop open|stat PATH N: N calls, then the µs per call on stdout. */
int main(int argc, char **argv) {
    int is_open = strcmp(argv[1], "open") == 0;
    long n = atol(argv[3]);
    struct timespec a, b;
    struct stat st;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (is_open) {
            int fd = open(argv[2], O_RDONLY);
            if (fd < 0) { perror("open"); return 1; }
            close(fd);
        } else if (stat(argv[2], &st) != 0) { perror("stat"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
    return 0;
}
"""

CALLS = {
    # No rule: CONTINUE, but the path is still resolved as the program.
    "pass-through open": (("--redirect", "/etc/passwd=/etc/hostname"), "open", "/etc/hostname"),
    "redirected open": (("--redirect", "/etc/passwd=/etc/hostname"), "open", "/etc/passwd"),
    "enforce open": (("--enforce", "--deny", "/nonexistent"), "open", "/etc/hostname"),
    "enforce stat": (("--enforce", "--deny", "/nonexistent"), "stat", "/etc/hostname"),
}
AS = {"root": (), "nobody": ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")}


def _run(src: Path, loop: Path, call: str, who: str, n: int) -> float:
    opts, op, path = CALLS[call]
    argv = [sys.executable, "-m", "unotifyd", "launch", *opts, "--", *AS[who]]
    argv += [str(loop), op, path, str(n)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return float(proc.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare the work tree with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=20000, help="calls per run")
    ap.add_argument("--calls", nargs="+", choices=list(CALLS), default=list(CALLS),
                    help="only these calls")  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="unotifyd-deputy-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nobody runs the loop from here
        base_hash = snapshot(REPO, args.base, work / "base")
        (work / "loop.c").write_text(_LOOP_C)
        loop = work / "callloop"
        subprocess.run(["gcc", "-O2", "-o", str(loop), str(work / "loop.c")], check=True)
        trees = {f"base {base_hash}": work / "base", "work tree": REPO}
        cells = [(c, w, t) for c in args.calls for w in AS for t in trees]
        got: dict[tuple[str, str, str], list[float]] = {cell: [] for cell in cells}
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}")
            for call, who, tree in rotated(cells, r):
                got[call, who, tree].append(_run(trees[tree], loop, call, who, args.n))
    base, new = trees
    rows = []
    for call in args.calls:
        for who in AS:
            b, w = got[call, who, base], got[call, who, new]
            ratios = [y / x for x, y in zip(b, w, strict=True)]
            rows.append(
                [
                    call,
                    who,
                    f"{statistics.median(b):.1f}",
                    f"{statistics.median(w):.1f}",
                    f"{statistics.median(ratios):.2f}x",
                ]
            )
    print(f"µs per call, median of {args.rounds} rounds, {args.n} calls a run\n")
    print(table(["call", "program runs as", base, new, "work tree / base"], rows))


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"benchmarks: {e}")
