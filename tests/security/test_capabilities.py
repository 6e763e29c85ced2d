"""The supervisor's capabilities are not the program's.

The supervisor runs as root and performs calls for the program with the
program's file-system uid, gid and groups. Capabilities that no fsuid
switch drops (``CAP_SETFCAP``, ``CAP_SYS_ADMIN``), and all of them when the
program's fsuid is 0 like the supervisor's, must not be lent to it: an
unprivileged program must not set ``security.capability`` on its own file
(a setuid-root binary of its making), touch ``trusted.*`` attributes, take
or change another user's file, make a device node, or read another user's
file. Each call is compared with its native answer for root, root without
capabilities and nobody.
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

TRUSTED_SECRET = b"TRUSTED-SECRET"


def build(ws: Workspace, who: Identity, native: bool) -> None:
    """``mine/`` (the program's, with its files) and ``theirs/`` (another
    user's: a 0600 secret and files to take over)."""
    mine = directory(ws.real / "mine", owner=who.uid)
    for name in ("setcap", "trusted", "marked", "chattr"):
        put(mine / name, f"{name}\n", owner=who.uid)
    os.setxattr(mine / "marked", "trusted.secret", TRUSTED_SECRET)
    theirs = directory(ws.real / "theirs", owner=who.other)
    put(theirs / "secret", "THEIR SECRET\n", owner=who.other, mode=0o600)
    for name in ("chown", "chmod", "utimes", "write", "victim"):
        put(theirs / name, f"{name}\n", owner=who.other)


ATTACKS = (
    Attack("setcap", ("setxattr", "{w}/mine/setcap", "security.capability", "@cap"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-set", ("setxattr", "{w}/mine/trusted", "trusted.unotifyd", "x"),
           natively("OK", "EPERM"), writes=True),
    Attack("trusted-get", ("getxattr", "{w}/mine/marked", "trusted.secret"),
           natively("OK TRUSTED-SECRET", "ENODATA"), reveals=("OK",)),
    Attack("trusted-list", ("listxattr", "{w}/mine/marked"),
           natively("OK", "OK"), reveals=("trusted.",)),
    Attack("chown-theirs", ("chown", "{w}/theirs/chown", "{me}", "{me}"),
           natively("OK", "EPERM"), writes=True),
    Attack("chmod-theirs", ("chmod", "{w}/theirs/chmod", "6777"),
           natively("OK", "EPERM"), writes=True),
    Attack("utimes-theirs", ("utimes", "{w}/theirs/utimes"),
           natively("OK", "EPERM"), writes=True),
    Attack("mknod", ("mknod", "{w}/mine/null"),
           natively("OK", "EPERM"), writes=True),
    Attack("read-theirs", ("read", "{w}/theirs/secret"),
           natively("OK", "EACCES"), opens=True),
    Attack("write-theirs", ("write", "{w}/theirs/write"),
           natively("OK", "EACCES"), opens=True, writes=True),
    Attack("create-theirs", ("create", "{w}/theirs/new"),
           natively("OK", "EACCES"), opens=True, writes=True),
    Attack("hardlink-theirs", ("link", "{w}/theirs/secret", "{w}/mine/hard"),
           natively("OK", "EPERM"), writes=True),
    Attack("unlink-theirs", ("unlink", "{w}/theirs/victim"),
           natively("OK", "EACCES"), writes=True),
    # Append-only (FS_IOC_SETFLAGS) needs CAP_LINUX_IMMUTABLE, even on one's own file.
    Attack("chattr-mine", ("chattr", "{w}/mine/chattr"), natively("OK", "EPERM"), writes=True),
)  # fmt: skip

CAPABILITIES = Family("capabilities", ATTACKS, build)


@pytest.mark.parametrize("who", list(IDENTITIES))
@pytest.mark.parametrize("mode", [ENFORCE, VIRTUALIZE, VIRTUALIZE_RO, OPENS], ids=lambda m: m.name)
def test_capabilities_are_not_lent(lab: Lab, mode: Mode, who: str) -> None:
    """Every attack answers as natively: a capability the program lacks is
    lacking under unotifyd too, whatever its fsuid."""
    lab.probe(CAPABILITIES, IDENTITIES[who], mode)
