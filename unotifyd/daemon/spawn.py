"""The helper that :class:`unotifyd.Supervisor` runs to start a sandboxed program.

A trio program must not fork and run Python in the child (trio's state
would be copied half-way), so the library starts this small process
instead: it speaks the ``launch --daemon`` client protocol over an
inherited socket, with the library in the daemon's role, and then execs
the program. The program therefore keeps the helper's pid, which is the
pid of the :class:`trio.Process` the library holds.

Usage (internal): ``python -S -c ... FD PROG [ARGS...]``.
"""

from __future__ import annotations

import _socket
import os
import sys

# EXIT_FAILURE from the client, not from unotifyd.launch: that would import
# the policy layer, ~26 ms of this helper's start for one constant.
from .client import EXIT_FAILURE, exec_sandboxed

#: The ``-c`` program that runs :func:`main` with this package importable
#: whatever the caller's ``sys.path`` and environment (``%r``: our parent dir).
BOOTSTRAP = (
    "import sys; sys.path.insert(0, {root!r}); "
    "from unotifyd.daemon.spawn import main; sys.exit(main(sys.argv[1:]))"
)


def main(args: list[str]) -> int:
    if len(args) < 2 or not args[0].isdigit():
        print("usage: spawn FD PROG [ARGS...]", file=sys.stderr)
        return EXIT_FAILURE
    # _socket, as the client uses: socket.py would only add import time.
    sock = _socket.socket(fileno=int(args[0]))
    # Inherited on purpose, but the program must not inherit it in turn.
    os.set_inheritable(sock.fileno(), False)
    return exec_sandboxed(sock, "", args[1:])
