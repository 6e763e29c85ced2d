"""The README's console examples run as written and print what it shows.

Each ```` ```console ```` block of README.md is a session: a line ``# CMD``
is a command run by root's shell from the repository root (``unotifyd`` is
the installed command: the test venv's bin is first on ``PATH``), and the
lines up to the next command are what it prints, stdout and stderr
together, as a terminal shows them. In the shown output:

- ``...`` alone on a line stands for any number of lines;
- a line ending in ``...`` matches any line that starts with the rest;
- ``<the host name>`` is what ``/etc/hostname`` holds;
- a number in ``unotifyd[N]`` (a thread id) matches any number.

A README example that stops working, or prints something else, fails here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import REPO, TIMEOUT, env

pytestmark = pytest.mark.kernel


@dataclass(frozen=True)
class Example:
    line: int  # of the command in README.md
    command: str
    shown: tuple[str, ...]


def examples(text: str) -> list[Example]:
    out: list[Example] = []
    in_block = False
    current: tuple[int, str] | None = None
    shown: list[str] = []

    def flush() -> None:
        nonlocal current
        if current is not None:
            out.append(Example(current[0], current[1], tuple(shown)))
        current = None
        shown.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if in_block:
                flush()
            in_block = line == "```console"
            continue
        if not in_block:
            continue
        if line.startswith("# "):
            flush()
            current = (number, line[2:])
        else:
            shown.append(line)
    return out


def _pattern(line: str, host: str) -> str:
    if line.endswith("..."):
        return re.escape(line[:-3].replace("<the host name>", host)) + ".*"
    escaped = re.escape(line.replace("<the host name>", host))
    return re.sub(r"unotifyd\\\[\d+\\\]", r"unotifyd\\[\\d+\\]", escaped)


def matches(shown: tuple[str, ...], got: list[str], host: str) -> bool:
    """Whether ``got`` is what ``shown`` shows (see the module doc)."""
    if not shown:
        return not got
    first, rest = shown[0], shown[1:]
    if first == "...":
        return any(matches(rest, got[i:], host) for i in range(len(got) + 1))
    return (
        bool(got)
        and re.fullmatch(_pattern(first, host), got[0]) is not None
        and matches(rest, got[1:], host)
    )


README = (REPO / "README.md").read_text()
EXAMPLES = examples(README)


def test_the_readme_has_console_examples() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


def test_the_matcher_fails_on_a_difference() -> None:
    """The control: a wrong output must not pass."""
    assert matches(("a", "...", "z"), ["a", "b", "c", "z"], "h")
    assert not matches(("a", "...", "z"), ["a", "b"], "h")
    assert matches(("<the host name>",), ["h"], "h")
    assert not matches(("<the host name>",), ["x"], "h")
    assert matches(("unotifyd[4327] x",), ["unotifyd[12] x"], "h")
    assert not matches(("unotifyd[4327] x",), ["unotifyd[12] y"], "h")


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{e.line}" for e in EXAMPLES])
def test_a_readme_example_runs_as_written(example: Example) -> None:
    proc = subprocess.run(
        ["sh", "-c", example.command], cwd=REPO, env=env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
        check=False,
    )  # fmt: skip
    host = Path("/etc/hostname").read_text().strip()
    got = proc.stdout.splitlines()
    assert matches(example.shown, got, host), (
        f"README.md:{example.line}: `{example.command}` printed (status {proc.returncode}):\n"
        + proc.stdout
        + "\nwhere the README shows:\n"
        + "\n".join(example.shown)
    )
