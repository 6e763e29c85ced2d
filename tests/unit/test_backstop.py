"""What the kernel keeps of a policy (policy/backstop.py) and the Landlock layer's pure parts."""

from __future__ import annotations

import os
import sys

from unotifyd.kernel import landlock
from unotifyd.policy import Deny, Exec, Policy, parse_pattern
from unotifyd.policy.backstop import Backstop, backstop


def test_a_policy_without_exec_rules_in_virtualize_mode_needs_no_backstop() -> None:
    assert not backstop(Policy([Deny(parse_pattern("/etc/shadow"))]))
    assert backstop(Policy()) == Backstop(None, scope_signals=False)


def test_exec_rules_become_the_paths_exec_is_allowed_beneath() -> None:
    policy = Policy([
        Exec(parse_pattern("/usr/**")), Exec(parse_pattern("/opt/tool")),
        Deny(parse_pattern("/usr/bin/su")),
    ])  # fmt: skip
    assert backstop(policy) == Backstop(("/opt/tool", "/usr"), scope_signals=False)


def test_enforcing_mode_keeps_signals_inside() -> None:
    assert backstop(Policy(mode="enforce")) == Backstop(None, scope_signals=True)


def test_what_an_older_kernel_cannot_keep_is_said_in_one_line_each() -> None:
    none = landlock.unavailable(True, True, 0)
    assert len(none) == 2
    assert "exec allow-list is kept by the supervisor alone" in none[0]
    assert "signal processes outside" in none[1]
    (older,) = landlock.unavailable(True, True, 5)
    assert older.startswith("Landlock ABI 5 < 6 (Linux 6.12): the program can signal")
    assert landlock.unavailable(True, True, 7) == []
    assert landlock.unavailable(False, False, 0) == []


def test_the_loader_of_an_allowed_binary_is_allowed_too() -> None:
    interpreter = landlock._elf_interpreter(os.path.realpath(sys.executable))
    assert interpreter is not None
    assert os.path.basename(interpreter).startswith("ld-")
    found = landlock.loaders([os.path.realpath(sys.executable)])
    assert interpreter in found
    assert all(os.path.exists(path) for path in found)


def test_a_file_that_is_no_elf_names_no_loader() -> None:
    assert landlock._elf_interpreter("/etc/hostname") is None
    assert landlock._elf_interpreter("/nonexistent") is None
