"""Paths are resolved with the program's rights, not the supervisor's.

In a directory the program may not search (``closed``, 0700, another
user's, holding ``inside`` and ``link -> ..``), the kernel refuses every
path through it with EACCES: ``closed/../x``, ``closed/link/x`` (both name
the readable ``x`` beside ``closed``), ``closed/inside/x`` (ENOTDIR only for
one allowed to look), ``closed/missing`` (ENOENT only for one allowed to
look). A supervisor that resolves the path as root first, then performs the
call on the name it found, opens ``x`` where the kernel refused, and its
errno tells what lies behind the refusal (an existence oracle).
"""

from __future__ import annotations

import os

import pytest

from .support import (
    ENFORCE,
    IDENTITIES,
    OPENS,
    VIRTUALIZE,
    VIRTUALIZE_RO,
    Attack,
    Family,
    Identity,
    Lab,
    Mode,
    Workspace,
    directory,
    natively,
    put,
)

pytestmark = pytest.mark.kernel


def build(ws: Workspace, who: Identity, native: bool) -> None:
    """``closed/`` (another user's, 0700) beside ``x`` (root's, 0644) and
    ``mine/`` (the program's, with ``victim``)."""
    closed = directory(ws.real / "closed", owner=who.other, mode=0o700)
    put(closed / "inside", "INSIDE\n", owner=who.other)
    (closed / "link").symlink_to("..")
    os.lchown(closed / "link", who.other, who.other)
    put(ws.real / "x", "X\n", owner=0)
    mine = directory(ws.real / "mine", owner=who.uid)
    put(mine / "victim", "VICTIM\n", owner=who.uid)


def _(label: str, *call: str, root: str, opens: bool = False, writes: bool = False) -> Attack:
    """An attack that the kernel refuses with EACCES to all but root."""
    return Attack(label, call, natively(root, "EACCES"), opens=opens, writes=writes)


ATTACKS = (
    _("dotdot-read", "read", "{w}/closed/../x", root="OK n=2", opens=True),
    _("link-read", "read", "{w}/closed/link/x", root="OK n=2", opens=True),
    _("notdir-read", "read", "{w}/closed/inside/x", root="ENOTDIR", opens=True),
    _("inside-read", "read", "{w}/closed/inside", root="OK n=7", opens=True),
    _("missing-read", "read", "{w}/closed/missing", root="ENOENT", opens=True),
    _("closed-opendir", "opendir", "{w}/closed", root="OK", opens=True),
    _("dotdot-create", "create", "{w}/closed/../mine/new", root="OK", opens=True, writes=True),
    _("dotdot-stat", "stat", "{w}/closed/../x", root="OK mode=100644"),
    _("link-stat", "stat", "{w}/closed/link/x", root="OK mode=100644"),
    _("inside-stat", "stat", "{w}/closed/inside", root="OK mode=100644"),
    _("notdir-stat", "stat", "{w}/closed/inside/x", root="ENOTDIR"),
    _("missing-stat", "stat", "{w}/closed/missing", root="ENOENT"),
    _("dotdot-access", "access", "{w}/closed/../x", root="OK"),
    _("link-readlink", "readlink", "{w}/closed/link", root="OK .."),
    _("dotdot-chdir", "chdir", "{w}/closed/..", root="OK"),
    _("dotdot-unlink", "unlink", "{w}/closed/../mine/victim", root="OK", writes=True),
)

RESOLUTION = Family("resolution", ATTACKS, build)


def _variants() -> list[object]:
    out: list[object] = []
    for mode in (ENFORCE, VIRTUALIZE, VIRTUALIZE_RO, OPENS):
        for who in IDENTITIES:
            out.append(pytest.param(mode, who, id=f"{mode.name}-{who}"))
    return out


@pytest.mark.parametrize(("mode", "who"), _variants())
def test_paths_resolve_with_the_programs_rights(lab: Lab, mode: Mode, who: str) -> None:
    """Every call through a directory the program may not search answers as
    natively: EACCES, never the file behind it nor a telling errno."""
    lab.probe(RESOLUTION, IDENTITIES[who], mode)
