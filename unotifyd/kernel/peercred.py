"""Peer credentials of a unix socket connection (``SO_PEERCRED``, unix(7))."""

from __future__ import annotations

import array
import errno
import socket
import struct
from typing import Protocol

from ..record import record

# SO_PEERGROUPS (Linux 4.13, asm-generic/socket.h): the peer's supplementary
# groups at connect() time. Python's socket module does not name it.
SO_PEERGROUPS = 59


class _HasSockopt(Protocol):
    """A socket, from :mod:`socket` or from :mod:`trio.socket`."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


@record(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]  # the primary group included

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid}"


def peer_of(sock: _HasSockopt) -> Peer:
    """The peer's credentials (``SO_PEERCRED``, ``SO_PEERGROUPS``; socket(7), unix(7)).

    The kernel records them at ``connect()``: a client cannot change them
    afterwards, nor borrow another's by passing its socket on.
    """
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    size = 4 * 64
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
            break
        except OSError as e:
            # ERANGE: the buffer is too small for the peer's groups.
            if e.errno != errno.ERANGE or size >= 4 * 65536:
                raise
            size *= 16
    groups = array.array("I")
    groups.frombytes(raw[: len(raw) - len(raw) % 4])
    return Peer(pid, uid, gid, frozenset(groups) | {gid})
