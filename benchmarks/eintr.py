"""EINTR from trapped calls under a stream of signals, natively and under unotifyd.

    python3 benchmarks/eintr.py [N]

Runs ``eintrloop N FILE`` (see eintrloop.c: a signal every ~20 us, handler
without SA_RESTART) natively, then under ``unotifyd launch`` in each mode,
and prints how many of N calls of each kind failed with EINTR. Natively: 0.
What remains under unotifyd is the window between a trapped call and the
supervisor's receive of its notification: a signal then ends the
program's wait before anyone has seen the call (kernel/seccomp.c,
seccomp_do_user_notification, which waits interruptibly until the receive
and only killably after it, under WAIT_KILLABLE_RECV). README ("Signals and
EINTR") explains it. Not part of the test suite; root, from a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {
    "native": None,
    "unotifyd (virtualize)": (),
    "unotifyd --enforce": ("--enforce",),
    "unotifyd --view opens": ("--view", "opens"),
}


def _unotifyd() -> list[str]:
    found = shutil.which("unotifyd")
    if found:
        return [found]
    venv = HERE.parent / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable, "-m", "unotifyd"]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory(prefix="unotifyd-eintr-") as tmp:
        exe, target = Path(tmp) / "eintrloop", Path(tmp) / "file"
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-o", str(exe),
                        str(HERE / "eintrloop.c")], check=True)  # fmt: skip
        target.write_text("x")
        print(f"| {n} calls of each, a signal every ~20 us | stat | open | access | unlink "
              "| signals caught |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, opts in MODES.items():
            argv = [str(exe), str(n), str(target)]
            if opts is not None:
                argv = [*_unotifyd(), "launch", *opts, "--deny", f"{tmp}/elsewhere", "--", *argv]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
            got = dict(kv.split("=") for kv in out.stdout.split())
            print(f"| {name} | {got['stat']} | {got['open']} | {got['access']} | "
                  f"{got['unlink']} | {got['signals']} |")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    sys.exit(main())
