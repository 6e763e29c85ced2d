"""What a rule stands for gives the program no more than the real thing would.

Redirect targets, content files and private trees are performed by the
supervisor through the same code as any emulated call, so each is checked
against a native stand-in for what the rule means:

* ``--private DIR/**`` ("a tmpfs mounted there"): natively, an empty
  directory of the program's own. Creating a file there works; giving it
  ``security.capability`` or a ``trusted.*`` attribute, handing it to
  another user, or making a device node does not.
* ``--redirect ALIAS=TARGET`` with a target the program owns: natively,
  ``ALIAS`` a symbolic link to ``TARGET``: the same calls through the
  redirected name answer as on the target itself.
* ``--content PATH=FILE`` ("a read-only file holding what FILE holds"):
  natively, a read-only bind mount of ``FILE`` on ``PATH`` (made in a mount
  namespace of the control's own): reads work, every change is EROFS.
"""

from __future__ import annotations

import pytest

from .support import (
    ENFORCE_WITH_RULES,
    IDENTITIES,
    VIRTUALIZE_WITH_RULES,
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

# --- private trees ------------------------------------------------------------------------


def build_private(ws: Workspace, who: Identity, native: bool) -> None:
    directory(ws.real / "p", owner=who.uid)


PRIVATE_ATTACKS = (
    Attack("create", ("create", "{w}/p/f"), natively("OK", "OK"), opens=True, writes=True),
    Attack("setcap", ("setxattr", "{w}/p/f", "security.capability", "@cap"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-set", ("setxattr", "{w}/p/f", "trusted.unotifyd", "x"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-get", ("getxattr", "{w}/p/f", "trusted.unotifyd"),
           natively("OK x", "ENODATA"), reveals=("OK",)),
    Attack("give-away", ("chown", "{w}/p/f", "{other}", "{other}"),
           natively("OK", "EPERM"), writes=True),
    Attack("mknod", ("mknod", "{w}/p/null"), natively("OK", "EPERM"), writes=True),
)  # fmt: skip

PRIVATE = Family(
    "private",
    PRIVATE_ATTACKS,
    build_private,
    rules=lambda ws: ("--private", f"{ws.real}/p/**"),
)

# --- redirects ---------------------------------------------------------------------------


def build_redirect(ws: Workspace, who: Identity, native: bool) -> None:
    """``mine/target`` (the program's); natively ``alias`` links to it."""
    mine = directory(ws.real / "mine", owner=who.uid)
    put(mine / "target", "TARGET\n", owner=who.uid)
    if native:
        (ws.real / "alias").symlink_to(mine / "target")


REDIRECT_ATTACKS = (
    Attack("read", ("read", "{w}/alias"), natively("OK n=7", "OK n=7"), opens=True),
    Attack("setcap", ("setxattr", "{w}/alias", "security.capability", "@cap"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-set", ("setxattr", "{w}/alias", "trusted.unotifyd", "x"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-get", ("getxattr", "{w}/alias", "trusted.unotifyd"),
           natively("OK x", "ENODATA"), reveals=("OK",)),
    Attack("give-away", ("chown", "{w}/alias", "{other}", "{other}"),
           natively("OK", "EPERM"), writes=True),
)  # fmt: skip

REDIRECT = Family(
    "redirect",
    REDIRECT_ATTACKS,
    build_redirect,
    rules=lambda ws: ("--redirect", f"{ws.real}/alias={ws.real}/mine/target"),
)

# --- content files -----------------------------------------------------------------------


def build_content(ws: Workspace, who: Identity, native: bool) -> None:
    """``mine/src`` (the program's) and ``c``, a file on the disk that the
    content rule (natively, the bind mount) covers."""
    mine = directory(ws.real / "mine", owner=who.uid)
    put(mine / "src", "CONTENT\n", owner=who.uid)
    put(ws.real / "c", "ON THE DISK\n", owner=who.uid)


#: Bind-mounts $1 read-only on $2 in a new mount namespace, then runs the rest.
_RO_BIND = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'

CONTENT_ATTACKS = (
    Attack("read", ("read", "{w}/c"), natively("OK n=8", "OK n=8"), opens=True),
    Attack("write", ("write", "{w}/c"), natively("EROFS", "EROFS"), opens=True),
    Attack("setcap", ("setxattr", "{w}/c", "security.capability", "@cap"),
           natively("EROFS", "EROFS")),
    Attack("trusted-set", ("setxattr", "{w}/c", "trusted.unotifyd", "x"),
           natively("EROFS", "EROFS")),
    Attack("give-away", ("chown", "{w}/c", "{other}", "{other}"),
           natively("EROFS", "EROFS")),
    Attack("chmod", ("chmod", "{w}/c", "6777"), natively("EROFS", "EROFS")),
)  # fmt: skip


def ro_bind(ws: Workspace) -> tuple[str, ...]:
    """argv prefix: the native stand-in of the content rule, in a mount namespace."""
    unshare = ("unshare", "--mount", "--propagation", "private")
    return (*unshare, "sh", "-c", _RO_BIND, "sh", f"{ws.real}/mine/src", f"{ws.real}/c")


CONTENT = Family(
    "content",
    CONTENT_ATTACKS,
    build_content,
    rules=lambda ws: ("--content", f"{ws.real}/c={ws.real}/mine/src"),
    native_prefix=ro_bind,
)


@pytest.mark.parametrize("who", list(IDENTITIES))
@pytest.mark.parametrize(
    "mode", [ENFORCE_WITH_RULES, VIRTUALIZE_WITH_RULES], ids=lambda m: m.name
)
@pytest.mark.parametrize("family", [PRIVATE, REDIRECT, CONTENT], ids=lambda f: f.name)
def test_rules_give_no_more_than_what_they_stand_for(
    lab: Lab, family: Family, mode: Mode, who: str
) -> None:
    """Every call on a private tree, through a redirect or on a content file
    answers as on its native stand-in."""
    lab.probe(family, IDENTITIES[who], mode)
