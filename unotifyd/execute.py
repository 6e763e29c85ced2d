"""The last step of every launch: becoming the program, as env(1) would.

The standalone launch (its forked child) and the daemon's Python client
both end here, once the filter is in place and its listener handed over;
the C client (``daemon/launch.c``, ``exec_program``) does the same in C.
What the program gets is what it would get run by a shell or env(1): the
same ``PATH`` search, the same exit statuses when it cannot be run, and
default dispositions for the signals Python ignores for itself.

Imported before the filter is installed (this module imports nothing
lazily): once the filter is in, an import's opens would be trapped, and
under an enforcing profile judged by the program's own rules.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Sequence

__all__ = ["EXIT_CANNOT_EXEC", "EXIT_NOT_FOUND", "exec_program"]

#: The exit statuses when the program cannot be run (POSIX, "Command Search
#: and Execution"; env(1) and chroot(1) give the same).
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


def exec_program(argv: Sequence[str], environ: dict[bytes, bytes]) -> int:
    """Replace this process with ``argv``, searched in ``PATH`` as execvp(3) does.

    Returns only if that failed, having said why on stderr: 127 where no
    such file is (ENOENT), 126 for any other reason.
    """
    # Python ignores SIGPIPE and SIGXFSZ for itself, and an exec keeps
    # ignored signals ignored (execve(2): dispositions of caught signals are
    # reset, ignored ones stay): give the program the defaults it would
    # have had, as subprocess's restore_signals does.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    if not argv[0]:
        # No file has an empty name: execvp(3) and env(1) fail it with
        # ENOENT (os.execvpe would raise ValueError instead).
        err = errno.ENOENT
    else:
        try:
            os.execvpe(argv[0], list(argv), environ)
        except OSError as e:
            err = e.errno or errno.ENOEXEC
    # os.write, not print: print's buffer would be lost to the os._exit that
    # follows in a forked child. The name as it was given, byte for byte.
    os.write(2, b"unotifyd: %s: %s\n" % (os.fsencode(argv[0]), os.strerror(err).encode()))
    return EXIT_NOT_FOUND if err == errno.ENOENT else EXIT_CANNOT_EXEC
