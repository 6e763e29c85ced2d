"""Names that move: renaming a directory above a rule's path would leave the rule naming
nothing while its files live on under the new name (issue 14). Natively the rename works
and the file is read under the new name (the control); under unotifyd it is EXDEV, in both
modes, and the file stays where the rule is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import describe, py, run_launch, run_native

pytestmark = pytest.mark.kernel

MODES = {"virtualize": (), "enforce": ("--enforce",)}

MOVE = """
import os, sys
top = sys.argv[1]
try:
    os.rename(f"{top}/a", f"{top}/moved")
    print("rename OK")
    with open(f"{top}/moved/b/secret") as f:
        print("read", f.read().strip())
except OSError as e:
    print("refused", e.strerror)
"""


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("rule", ["--deny", "--readonly"])
def test_a_directory_above_a_rule_cannot_be_renamed(tmp_path: Path, mode: str, rule: str) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "secret").write_text("s3cret\n")
    native_top = tmp_path / "native"
    (native_top / "a" / "b").mkdir(parents=True)
    (native_top / "a" / "b" / "secret").write_text("s3cret\n")
    native = run_native(py(MOVE, str(native_top)))
    assert native.stdout == "rename OK\nread s3cret\n", describe(native)
    target = f"{tmp_path}/a/b/secret" if rule == "--deny" else f"{tmp_path}/a/b/**"
    proc = run_launch(*MODES[mode], rule, target, argv=py(MOVE, str(tmp_path)))
    assert (proc.returncode, proc.stdout) == (0, "refused Invalid cross-device link\n"), describe(
        proc
    )
    assert (tmp_path / "a" / "b" / "secret").exists()
    # A rename that carries no rule along is made as usual.
    (tmp_path / "c").mkdir()
    plain = py("import os, sys; os.rename(sys.argv[1] + '/c', sys.argv[1] + '/d')", str(tmp_path))
    other = run_launch(*MODES[mode], rule, target, argv=plain)
    assert other.returncode == 0 and (tmp_path / "d").is_dir(), describe(other)
