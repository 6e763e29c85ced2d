"""Passing fds over unix sockets (SCM_RIGHTS, unix(7))."""

from __future__ import annotations

import socket


def send_fd(sock: socket.socket, fd: int, data: bytes = b"F") -> None:
    """Send ``fd`` with ``data`` (at least one byte: a message must carry data)."""
    socket.send_fds(sock, [data], [fd])


def recv_fd(sock: socket.socket, bufsize: int = 4096) -> tuple[bytes, int | None]:
    """Receive one message and at most one fd, close-on-exec.

    ``MSG_CMSG_CLOEXEC`` sets the flag atomically, so the fd can never leak
    into a program we fork meanwhile. Extra fds (a confused or hostile peer)
    are closed here: every fd has one owner.
    """
    data, fds, _flags, _addr = socket.recv_fds(sock, bufsize, 4, socket.MSG_CMSG_CLOEXEC)
    fd = None
    for extra in fds:
        if fd is None:
            fd = extra
        else:
            socket.close(extra)
    return data, fd
