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
