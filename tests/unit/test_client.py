"""The ``launch --daemon`` fast path of the command line: recognized without argparse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import unotifyd
from unotifyd import launch
from unotifyd.daemon import client
from unotifyd.daemon.quick import parse_daemon_launch


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["launch", "--daemon", "/s", "--profile", "p", "--", "cat", "-n"],
            ("/s", "p", ["cat", "-n"]),
        ),
        (["launch", "--profile=p", "--daemon=/s", "cat", "--x"], ("/s", "p", ["cat", "--x"])),
        (["launch", "--daemon", "/s", "--profile", "p", "--", "--", "x"], ("/s", "p", ["--", "x"])),
        (["launch", "--daemon=", "--profile", "p", "--", "true"], ("", "p", ["true"])),
    ],
)
def test_plain_daemon_launch_is_recognized(
    argv: list[str], expected: tuple[str, str, list[str]]
) -> None:
    assert parse_daemon_launch(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["launch", "--", "true"],
        ["status", "--daemon", "/s"],
        ["launch", "--daemon", "/s", "--", "true"],  # no profile: argparse says so
        ["launch", "--daemon", "/s", "--profile", "p"],  # no program
        ["launch", "--daemon", "/s", "--profile", "p", "--"],
        ["launch", "--daemon", "/s", "--profile"],
        ["launch", "--daemon", "/s", "--profile", "-p", "--", "true"],
        ["launch", "--daemon", "/s", "--daemon", "/t", "--profile", "p", "--", "true"],
        ["launch", "--dae", "/s", "--profile", "p", "--", "true"],  # an abbreviation
        ["launch", "--daemon", "/s", "--profile", "p", "--trace", "--", "true"],
        ["launch", "--help"],
        ["launch", "-h", "--daemon", "/s", "--profile", "p", "--", "true"],
    ],
)
def test_anything_else_goes_to_the_full_parser(argv: list[str]) -> None:
    assert parse_daemon_launch(argv) is None


def test_exit_statuses_agree_with_launch() -> None:
    assert client.EXIT_FAILURE == launch.EXIT_FAILURE


def test_daemon_launch_imports_neither_policy_nor_argparse() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "unotifyd", "launch", "--daemon",
         "/nonexistent/unotifyd.sock", "--profile", "p", "--", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == client.EXIT_FAILURE
    assert "no daemon socket at /nonexistent/unotifyd.sock" in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    heavy = {"argparse", "unotifyd.launch", "unotifyd.policy", "trio", "pyseccomp"}
    assert not imported & heavy


# Each of these cost launch --daemon milliseconds it has no use for:
# dataclasses ~6.8 ms (with inspect, ast, dis, tokenize), typing ~2.4 ms of
# its own, socket ~2.4 ms over _socket, trio ~70 ms.
CLIENT_MUST_NOT_IMPORT = frozenset({"dataclasses", "inspect", "typing", "socket", "trio"})


def test_client_path_imports_no_dataclasses_typing_socket_or_trio() -> None:
    # -S: only unotifyd's own imports count, not those of the site hooks
    # of whatever environment runs the tests (an editable install's finder,
    # a .pth file); the package is found through sys.path instead.
    root = str(Path(unotifyd.__file__).parents[1])
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "import unotifyd.cli, unotifyd.daemon.client, unotifyd.kernel.filter; "
        "import unotifyd.daemon.spawn; "  # the helper of unotifyd.Supervisor, a client too
        "print(*sorted(sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )
    imported = set(proc.stdout.split())
    assert "unotifyd.kernel.filter" in imported
    unwanted = imported & CLIENT_MUST_NOT_IMPORT
    assert not unwanted, f"the client path imports {sorted(unwanted)}"


def test_version_is_printed() -> None:
    proc = subprocess.run([sys.executable, "-m", "unotifyd", "--version"],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, f"unotifyd {unotifyd.__version__}\n")
