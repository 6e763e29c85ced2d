"""The supervisor driven in-process, for what the command line cannot provoke."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import unotifyd.serve.decide as decide_module
from unotifyd.kernel.listener import Listener
from unotifyd.launch import _spawn
from unotifyd.policy import Decision, Deny, OpenRequest, Policy, decide_open, parse_pattern
from unotifyd.serve.trioserve import TrioServer

pytestmark = pytest.mark.kernel


def _serve(policy: Policy, argv: list[str]) -> tuple[int, TrioServer]:
    """Fork ``argv`` under ``policy`` (before trio runs), serve it to the end."""
    pid, fd, _ = _spawn(policy, argv, set())
    sup = TrioServer()
    with Listener(fd) as listener:
        trio.run(sup.serve, listener, policy)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), sup


def test_a_crashing_handler_fails_the_call_and_serving_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def crash_on_hostname(policy: Policy, req: OpenRequest) -> Decision:
        if req.path == "/etc/hostname":
            raise RuntimeError("injected fault")
        return decide_open(policy, req)

    monkeypatch.setattr(decide_module, "decide_open", crash_on_hostname)
    policy = Policy([Deny(parse_pattern("/nonexistent"))])
    err, out = tmp_path / "err", tmp_path / "out"
    script = f"cat /etc/hostname 2>{err}; echo $? > {out}; cat /etc/os-release >> {out}"
    status, sup = _serve(policy, ["/bin/sh", "-c", script])
    assert status == 0
    # Failed closed: EPERM, not a CONTINUE that would have printed the file.
    assert "Operation not permitted" in err.read_text()
    lines = out.read_text().splitlines()
    assert lines[0] == "1"
    # ...and the next call was served as usual.
    assert any(line.startswith("ID=") for line in lines[1:])
    assert sup.stats.internal_errors == 1
