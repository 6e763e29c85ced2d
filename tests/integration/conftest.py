"""Fixtures of the integration tests: small file trees in ``tmp_path``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import ORIGINAL, REDIRECTED, write


@dataclass(frozen=True)
class Files:
    """A redirect source that exists (``src``, holding ORIGINAL) and its
    target (``target``, holding REDIRECTED), in different directories."""

    root: Path
    src: Path
    target: Path

    @property
    def redirect(self) -> str:
        """The ``--redirect`` value sending ``src`` to ``target``."""
        return f"{self.src}={self.target}"


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(
        root=tmp_path,
        src=write(tmp_path / "src" / "data.txt", ORIGINAL),
        target=write(tmp_path / "dst" / "target.txt", REDIRECTED),
    )


# Known gaps of issue 3 (open): these tests describe the behaviour wanted and
# run on every CI pass, but a failure is expected until the gap is closed.
# Not strict: some pass on some runs (the failed-exec rewrite is a race).
_ISSUE_3_GAPS = {
    "test_tree_redirect_changes_land_in_the_target": "chdir into a redirected directory "
    "that exists only in the target, by a name shorter than any name of the target",
    "test_exec_runs_the_redirect_target": "exec/chdir rewrite the path in place: a longer "
    "target does not fit (ENAMETOOLONG)",
    "test_a_failed_exec_through_a_redirect_leaves_the_program_as_it_was": "a failed exec "
    "leaves the rewritten path in the program's memory (restored only for vfork)",
    "test_chdir_into_a_redirected_directory": "a longer target does not fit in place",
    "test_private_tree_that_does_not_exist_on_disk": "chdir into a private tree missing on "
    "disk needs the scratch directory's (longer) name",
    "test_private_tree_symlinks_lead_where_they_point": "symlinks in a private tree are "
    "confined to its scratch directory (EXDEV), by choice for now",
    "test_nobody_cannot_read_shadow_through_any_rule": "some /proc answers about the "
    "supervisor differ from native ones",
    "test_nobody_cannot_exec_through_a_redirect_what_it_cannot_exec": "see the failed-exec "
    "rewrite gap",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = _ISSUE_3_GAPS.get(item.name.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"issue 3 gap: {reason}", strict=False))
