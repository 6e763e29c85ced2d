"""Directory listings: ``getdents64`` answered by us where the directory holds hidden names."""

from __future__ import annotations

import errno
import os

from ..calls.decode import Args, int_arg
from ..kernel.dirents import read_listing, take_fd
from ..kernel.errors import ProgramGone
from ..kernel.listener import Listener, Notification
from ..kernel.program import write_memory
from ..policy import Continue, Fail, Listing, Policy
from ..policy.paths import hidden_names


def decide_listing(policy: Policy, name: str, where: str | None) -> Continue | Fail | Listing:
    """A listing of the directory ``where`` (None: no path): ours only if it hides names."""
    hidden = hidden_names(policy, where) if where is not None else frozenset()
    if not hidden:
        return Continue("nothing hidden here")
    if name != "getdents64":
        # The legacy getdents has another record layout; glibc never uses it.
        return Fail(errno.ENOSYS, "getdents: use getdents64 (hidden names here)")
    return Listing(hidden, "hidden names left out")


def answer_listing(listener: Listener, n: Notification, a: Args, d: Listing) -> int:
    """Answer ``getdents64(fd, buf, count)``: our copy of the fd, read, filtered, written back."""
    fd = take_fd(n.pid, int_arg(a[0]))
    try:
        # The fd came from the thread the notification is about only if
        # the call is still pending: a pid is not reused while it is.
        if not listener.id_valid(n.id):
            raise ProgramGone("notification no longer valid")
        try:
            data = read_listing(fd, a[2] & 0xFFFFFFFF, d.hidden.__contains__)
        except OSError as e:
            err = e.errno or errno.EIO
            listener.send_error(n.id, err)
            return -err
        write_memory(n.pid, [(a[1], data)], lambda: listener.id_valid(n.id))
    finally:
        os.close(fd)
    listener.send_value(n.id, len(data))
    return len(data)
