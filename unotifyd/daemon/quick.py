"""``launch --daemon``'s fast path: recognized without argparse, run by the C client.

``unotifyd launch --daemon S --profile P -- PROG`` is the command a user
types. The installed ``unotifyd`` (a front built from ``launch.c`` by
``setup.py``) takes the same command lines as :func:`parse_daemon_launch`
and makes them itself, without Python; this module is for a Python that
got one anyway (``python3 -m unotifyd``, ``unotifyd-python``, or a front
that was not built). There the work is done by ``unotifyd-launch``
(``launch.c``, built next to this module by ``setup.py``), which this
process becomes with one ``execv``. That program speaks the protocol and installs the filter as
:mod:`unotifyd.daemon.client` does, without the Python client's imports
(~13 ms of a ~28 ms launch). Where it was not built (no C compiler at
install time), or cannot be run, the Python client does the work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..environ import program_environ

__all__ = ["COMPILED_CLIENT", "exec_compiled_client", "launch", "parse_daemon_launch"]

#: The C client, where ``setup.py`` puts it.
COMPILED_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unotifyd-launch")


def parse_daemon_launch(argv: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """``(socket, profile, program)`` for a plain ``launch --daemon S --profile P -- PROG``.

    The fast path of :func:`unotifyd.cli.main`: the command is recognized
    without argparse and without importing the rest of unotifyd. Only the
    unambiguous spellings are taken (``--daemon S``, ``--daemon=S``, the same
    for ``--profile``, each once, then ``--`` or the program); anything else
    (another option, an abbreviation, ``--help``, a missing part) returns
    None, and the full command line parser handles it, errors included.
    """
    if not argv or argv[0] != "launch":
        return None
    values: dict[str, str] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-"):
            break  # The program: everything from here on is its (argparse.REMAINDER).
        name, eq, value = arg.partition("=")
        if name not in ("--daemon", "--profile") or name in values:
            return None
        if not eq:
            i += 1
            if i == len(argv):
                return None
            value = argv[i]
            if value.startswith("-"):
                return None  # argparse would not take it as the value.
        values[name] = value
        i += 1
    prog = list(argv[i:])
    if not prog or len(values) != 2:
        return None
    return values["--daemon"], values["--profile"], prog


def exec_compiled_client(path: str, profile: str, argv: Sequence[str]) -> None:
    """Become the C client for ``launch --daemon PATH --profile PROFILE -- ARGV``.

    Returns only if it cannot be run (not built, or the exec failed), with
    this process as it was.
    """
    if not os.access(COMPILED_CLIENT, os.X_OK):
        return
    # The spelling the C client cannot misread, whatever the values hold.
    # --reset-signals: Python ignores SIGPIPE and SIGXFSZ for itself (the
    # signal module's documentation), an exec keeps an ignored signal
    # ignored (execve(2)), and the C client passes dispositions on to PROG
    # as it gets them; so it gives those two their defaults before PROG, as
    # the Python client does (client._exec). Not done here with the signal
    # module: importing it (enum) costs this path ~3 ms.
    args = [COMPILED_CLIENT, f"--daemon={path}", f"--profile={profile}", "--reset-signals", "--",
            *argv]  # fmt: skip
    # An exec that fails leaves this process as it was: the caller goes on
    # with the Python client. (Not contextlib.suppress: ~2 ms to import.)
    try:  # noqa: SIM105
        os.execve(COMPILED_CLIENT, args, program_environ())
    except OSError:
        pass


def launch(path: str, profile: str, argv: Sequence[str]) -> int:
    """``unotifyd launch --daemon PATH --profile PROFILE -- ARGV``: the C client if it
    was built, else the Python one. Returns an exit status only if PROG was not started.
    """
    exec_compiled_client(path, profile, argv)
    from .client import launch_via_daemon  # noqa: PLC0415 - ~13 ms the C client saves

    return launch_via_daemon(path, profile, argv)
