"""What the kernel keeps of a policy (policy/backstop.py) and the Landlock layer's pure parts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from unotifyd.kernel import landlock
from unotifyd.policy import Deny, Exec, Policy, Private, Redirect, parse_pattern
from unotifyd.policy.backstop import Backstop, backstop


def test_a_policy_without_exec_rules_in_virtualize_mode_needs_no_backstop() -> None:
    assert not backstop(Policy([Deny(parse_pattern("/etc/shadow"))]))
    assert backstop(Policy()) == Backstop(None, scope_signals=False)


def test_exec_rules_become_the_paths_exec_is_allowed_beneath() -> None:
    policy = Policy([
        Exec(parse_pattern("/usr/**")), Exec(parse_pattern("/opt/tool")),
        Deny(parse_pattern("/usr/bin/su")),
    ])  # fmt: skip
    assert backstop(policy) == Backstop(("/opt/tool", "/usr/**"), scope_signals=False)


def test_an_exec_through_a_redirect_runs_the_target_so_it_is_allowed_too() -> None:
    def allowed(*rules: Exec | Redirect) -> tuple[str, ...] | None:
        return backstop(Policy(list(rules))).exec_allowed

    usr = Exec(parse_pattern("/usr/**"))
    tool = Redirect(parse_pattern("/usr/bin/tool"), parse_pattern("/opt/tool"))
    tree = Redirect(parse_pattern("/usr/local/**"), parse_pattern("/srv/local/**"))
    assert allowed(usr, tool, tree) == ("/opt/tool", "/srv/local/**", "/usr/**")
    # An exec rule inside a redirected tree allows its image in the target.
    inside = Exec(parse_pattern("/data/bin/**"))
    data = Redirect(parse_pattern("/data/**"), parse_pattern("/srv/data/**"))
    assert allowed(inside, data) == ("/data/bin/**", "/srv/data/bin/**")
    # A redirect no exec rule allows grants nothing.
    elsewhere = Redirect(parse_pattern("/etc/x"), parse_pattern("/tmp/x"))
    assert allowed(usr, elsewhere) == ("/usr/**",)


def test_no_exec_backstop_over_a_private_tree_rather_than_a_wrong_one() -> None:
    policy = Policy([Exec(parse_pattern("/usr/**")), Exec(parse_pattern("/tmp/p/**")),
                     Private(parse_pattern("/tmp/p/**"))])  # fmt: skip
    kept = backstop(policy)
    assert kept.exec_allowed is None
    assert "private tree /tmp/p/**" in kept.exec_unkept


def test_enforcing_mode_keeps_signals_inside() -> None:
    wanted = Backstop(None, scope_signals=True, no_core_dumps=True)
    assert backstop(Policy(mode="enforce")) == wanted


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


def test_a_loader_name_ends_at_its_first_nul(tmp_path: Path) -> None:
    # The kernel opens PT_INTERP as a C string (load_elf_binary()): what
    # follows a NUL is not part of the name, and os.open would refuse it.
    real = Path(os.path.realpath(sys.executable)).read_bytes()
    interpreter = landlock._elf_interpreter(os.path.realpath(sys.executable))
    assert interpreter is not None
    name = interpreter.encode()
    doctored = tmp_path / "prog"
    doctored.write_bytes(real.replace(name + b"\0", name[:-1] + b"\0" + b"x", 1))
    assert landlock._elf_interpreter(str(doctored)) == interpreter[:-1]
