"""Unix sockets: passing fds (SCM_RIGHTS, unix(7)) and binding listening sockets.

Peer credentials are in :mod:`unotifyd.kernel.peercred`; the fd sender of
the window between loading a filter and handing its listener over is
:class:`unotifyd.kernel.filter.FdSender`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat


def send_fd(sock: socket.socket, fd: int, data: bytes = b"F") -> None:
    """Send ``fd`` with ``data`` (at least one byte: a message must carry data)."""
    socket.send_fds(sock, [data], [fd])


def bind_listening(path: str, kind: socket.SocketKind, mode: int, who: str) -> socket.socket:
    """A listening unix socket of ``kind`` at ``path`` with ``mode``.

    Bound and listening under a temporary name first and then renamed into
    place, so a client that finds ``path`` can connect at once. A stale
    socket (nothing accepts on it: ECONNREFUSED) is replaced; a live one, or
    any other kind of file, is an error (``OSError``) naming ``who`` serves it.
    The socket's own directory (``/run/unotifyd``) is made if missing, but no
    more: a missing parent is most likely a typo, better reported than made.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            f"cannot make the directory {directory} for the socket {path}: "
            f"{os.path.dirname(directory)} does not exist (a typo? create it, or choose "
            "another path)",
        ) from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # Stale: left by a process that died.
        except OSError:
            pass  # Another socket type: bind below fails with EADDRINUSE.
        else:
            raise OSError(errno.EADDRINUSE, f"{who} already serves {path}")
        finally:
            probe.close()
    tmp = f"{path}.{os.getpid()}.new"
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock.bind(tmp)
        try:
            os.chmod(tmp, mode)
            sock.listen(socket.SOMAXCONN)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


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
