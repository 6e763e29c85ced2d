"""``unotifyd.Supervisor``, the trio library API, on the real kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import unotifyd
from unotifyd.policy import Policy, parse_deny, parse_redirect

from .conftest import Files
from .helpers import REDIRECTED, REPO, TIMEOUT, env

pytestmark = pytest.mark.kernel


async def test_launch_two_programs_with_their_own_policies(files: Files) -> None:
    redirect = Policy([parse_redirect(files.redirect, "test")])
    deny = Policy([parse_deny(f"{files.src}:ENOENT", "test")])
    with trio.fail_after(TIMEOUT):
        async with unotifyd.Supervisor() as sup:
            a = await sup.launch(["cat", str(files.src)], redirect, stdout=subprocess.PIPE)
            b = await sup.launch(
                ["sh", "-c", f"cat {files.src} 2>/dev/null; exit $?"], deny, name="denied"
            )
            assert a.process.stdout is not None
            out = await a.process.stdout.receive_some()
            assert (await a.wait(), await b.wait()) == (0, 1)
            await a.wait_released()
            await b.wait_released()
            assert sup.running == 0
    assert out == REDIRECTED.encode()
    assert a.stats.decisions["redirect"] == 1
    assert b.stats.decisions["fail"] == 1
    assert b.name == "denied"
    assert a.name == f"cat:{a.pid}"


async def test_umask_is_restored_and_missing_programs_exit_127(files: Files) -> None:
    old = os.umask(0o027)
    try:
        async with unotifyd.Supervisor() as sup:
            assert os.umask(0) == 0
            p = await sup.launch(["/nonexistent"], Policy(), stderr=subprocess.DEVNULL)
            assert await p.wait() == 127
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


async def test_an_enforcing_policy_dumps_no_core(files: Files) -> None:
    """Its program starts with a hard RLIMIT_CORE of 0
    (unotifyd.kernel.coredump), which natively it does not have."""
    argv = ["sh", "-c", "ulimit -H -c"]
    native = subprocess.run(argv, capture_output=True, text=True, env=env(), check=True)
    assert native.stdout != "0\n", "natively no core may be dumped: no control"
    enforce = Policy([parse_deny(f"{files.src}:ENOENT", "test")], mode="enforce")
    outputs = []
    with trio.fail_after(TIMEOUT):
        async with unotifyd.Supervisor() as sup:
            for policy in (enforce, Policy([parse_redirect(files.redirect, "test")])):
                p = await sup.launch(argv, policy, stdout=subprocess.PIPE)
                assert p.process.stdout is not None
                outputs.append(await p.process.stdout.receive_some())
                assert await p.wait() == 0
    assert outputs == [b"0\n", native.stdout.encode()]


def test_import_unotifyd_does_not_import_trio() -> None:
    code = "import sys, unotifyd; assert 'trio' not in sys.modules; unotifyd.Supervisor"
    subprocess.run([sys.executable, "-c", code], env=env(), check=True, timeout=TIMEOUT)


def test_the_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "supervisor_api.py")],
        capture_output=True, text=True, env=env(), timeout=TIMEOUT, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nobody-but-us" in proc.stdout
    assert "denied: 1" in proc.stdout
