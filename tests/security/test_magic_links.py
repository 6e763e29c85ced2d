"""Acts through a ``/proc/self/fd/N`` magic link raced by a ``dup2`` onto N.

A path through a magic link to a file without a name (a pipe) is decided on
as the link itself: no rule can name it. ``progs/fdswap.c`` keeps flipping
fd N between a pipe and a file of a read-only tree, and meanwhile opens the
link for writing (or with ``O_TRUNC``), changes its mode or links it out of
the tree; or flips N between a removed directory and the tree's, making
directories below the link. Natively (the control) many of those reach the
file (or the tree). Under
``--enforce --readonly TREE`` none may: what the supervisor reaches through
the link is judged by its name then, as a whole call (serve/opens._judge_opened,
serve/pathwork._judge). Before, 2 485 of 10 000 opens gave a writable fd of
the read-only file and 5 113 of 10 000 chmods changed it; an audit then
found ``O_TRUNC`` emptying it before the judgement and ``linkat`` giving it
a name outside the tree. Prints a ``RESULT`` line per case.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ..integration.helpers import describe, run_launch, run_native
from .support import IDENTITIES, Report, build_c, directory

pytestmark = pytest.mark.kernel

TRIES = 10_000


@pytest.fixture(scope="session")
def fdswap_bin(public: Path) -> Path:
    return build_c(directory(public / "fdswap", owner=0), "fdswap")


def _race(argv: list[str], options: tuple[str, ...]) -> dict[str, int]:
    if options:
        proc = run_launch(*options, argv=argv, timeout=600)
    else:
        proc = run_native(argv, timeout=600)
    match = re.fullmatch(r"(reached=\d+ refused=\d+ other=\d+ tries=\d+)\n", proc.stdout)
    assert proc.returncode == 0 and match, describe(proc)
    return {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("act", ["open", "chmod", "link", "mkdir-below"])
def test_a_raced_magic_link_never_changes_a_read_only_file(
    public: Path, fdswap_bin: Path, report: Report, act: str, who: str
) -> None:
    identity = IDENTITIES[who]
    ws = directory(public / f"fdswap-{act}-{who}", owner=identity.uid)
    tree = directory(ws / "ro", owner=identity.uid)
    target = tree / "file"
    target.write_text("original\n")
    os.chown(target, identity.uid, identity.uid)
    target.chmod(0o666)
    argv = [*identity.prefix, str(fdswap_bin), act, str(target), str(TRIES)]

    native = _race(argv, ())
    assert native["reached"] > 0, f"the flip never let the {act} reach the file: {native}"
    enforced = _race(argv, ("--enforce", "--readonly", f"{tree}/**"))
    report(
        f"magic-link-race[{act}-{who}]",
        native=f"{native['reached']}/{TRIES}",
        enforce=f"{enforced['reached']}/{TRIES}",
        refused=enforced["refused"],
        escapes=enforced["reached"],
    )
    assert enforced["reached"] == 0
    assert enforced["other"] == 0, enforced
    assert enforced["refused"] > 0, enforced  # the flip did reach the file under us too
    assert target.read_text() == "original\n" and target.stat().st_mode & 0o7777 == 0o666
    assert target.stat().st_nlink == 1
    assert sorted(os.listdir(tree)) == ["file"]
