#!/usr/bin/env python3
"""The trio library API: run two programs under two policies from one trio program.

Run it as root from the repository (``python3 examples/supervisor_api.py``).
It prints what each program read through its own view of the file system,
and each program's counters.
"""

from __future__ import annotations

import os
import sys
import tempfile

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import unotifyd
from unotifyd.policy import Policy, parse_deny, parse_redirect


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fake = os.path.join(tmp, "passwd")
        with open(fake, "w") as f:
            f.write("nobody-but-us:x:0:0::/:/bin/false\n")
        redirect = Policy([parse_redirect(f"/etc/passwd={fake}", "example")])
        deny = Policy([parse_deny("/etc/passwd:ENOENT", "example")])
        # The policies name real paths; one naming a symlink would need
        # policy.canonicalized(os.path.realpath), as `unotifyd launch` does.
        async with unotifyd.Supervisor() as sup:
            a = await sup.launch(
                ["head", "-n1", "/etc/passwd"], redirect, name="redirected",
                stdout=sys.stdout.fileno(),
            )
            b = await sup.launch(
                ["sh", "-c", "cat /etc/passwd 2>/dev/null || echo denied: $?"], deny,
                name="denied", stdout=sys.stdout.fileno(),
            )
            codes = [await a.wait(), await b.wait()]
            for proc in (a, b):
                await proc.wait_released()
                print(
                    f"{proc.name}: pid {proc.pid}, exit {proc.returncode}, "
                    f"{proc.stats.notifications} notifications {dict(proc.stats.decisions)}"
                )
    return max(codes)


if __name__ == "__main__":
    sys.exit(trio.run(main))
