"""``..`` after a tree that exists only in the program's view, taken as text
(serve/decide.py, _in_a_virtual_tree), with and without the scope of an
openat2 RESOLVE_BENEATH or RESOLVE_IN_ROOT."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from unotifyd.kernel.program import ThroughMissing
from unotifyd.policy import Policy
from unotifyd.policy.config import parse_policy
from unotifyd.serve.decide import _in_a_virtual_tree


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    """Tree redirects at /h/tree and /tree (missing on disk) onto directories."""
    text = "version = 1\n"
    for source, target in (("/h/tree", tmp_path / "a"), ("/tree", tmp_path / "b")):
        target.mkdir()
        text += f'[[redirect]]\nfrom = "{source}/**"\nto = "{target}/**"\n'
    return parse_policy(text, "test.toml")


@pytest.mark.parametrize(
    ("missing", "rest", "scope", "beneath", "want"),
    [
        ("/h/tree", ["..", "f"], None, False, "/h/f"),
        ("/h/tree", ["..", "..", "x"], None, False, "/x"),  # unscoped: anywhere
        ("/h/tree", ["..", "f"], "/h", True, "/h/f"),
        ("/h/tree", ["..", "..", "x"], "/h", True, errno.EXDEV),
        ("/h/tree", ["..", "..", "x"], "/h", False, "/h/x"),  # IN_ROOT: kept at /h
        ("/tree", ["..", "..", "x"], "/", True, errno.EXDEV),  # the dirfd is "/"
        ("/tree", ["..", "..", "x"], "/", False, "/x"),
    ],
)
def test_a_scoped_walk_keeps_to_its_dirfd(
    policy: Policy, missing: str, rest: list[str], scope: str | None, *, beneath: bool,
    want: str | int,
) -> None:  # fmt: skip
    e = ThroughMissing(missing, rest)
    if isinstance(want, int):
        with pytest.raises(OSError) as info:
            _in_a_virtual_tree(policy, e, None, scope, beneath)
        assert info.value.errno == want
    else:
        assert _in_a_virtual_tree(policy, e, None, scope, beneath) == want
