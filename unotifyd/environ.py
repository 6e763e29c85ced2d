"""The environment a program gets: the one unotifyd was started with.

Python started under the C or POSIX locale sets ``LC_CTYPE`` in its own
environment to a UTF-8 locale (PEP 538, locale coercion), so that every
child inherits it. A program run through unotifyd would then see
``LC_CTYPE=C.UTF-8`` where natively it has no ``LC_CTYPE`` at all, and
``sort``, ``ls`` or ``grep`` would behave differently. Nothing else of the
environment is changed by Python's start.

The environment the process was started with is still in its memory, where
execve(2) put it: ``/proc/self/environ`` reads it (proc(5)); ``setenv``
writes new strings elsewhere. This module's only import is :mod:`os`: it is
on the ``launch --daemon`` path.
"""

from __future__ import annotations

import os

__all__ = ["program_environ"]

# The locales Python coerces to (_C_LOCALE_COERCION_TARGETS, PEP 538).
_COERCED = frozenset({b"C.UTF-8", b"C.utf8", b"UTF-8"})
_KEY = b"LC_CTYPE"


def program_environ() -> dict[bytes, bytes]:
    """``os.environb`` with Python's locale coercion undone: ``LC_CTYPE`` as this
    process was given it, or absent if it was not."""
    env = dict(os.environb)
    value = env.get(_KEY)
    if value not in _COERCED:
        return env  # not a value Python sets: the program's own
    try:
        with open("/proc/self/environ", "rb") as f:
            initial = f.read()
    except OSError:
        return env  # no procfs: leave it
    for entry in initial.split(b"\0"):
        name, eq, given = entry.partition(b"=")
        if eq and name == _KEY:
            env[_KEY] = given
            return env
    del env[_KEY]
    return env
