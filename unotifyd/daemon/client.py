"""The daemon's clients, without trio: ``launch --daemon``, ``status``, ``reload``.

``launch --daemon`` runs here where its C client (``launch.c``, which
follows this module step for step) was not built, see :mod:`.quick`. The
client process itself becomes the sandboxed program::

    client                                 daemon
    ------                                 ------
    connect ───────────────────────────>   accept, SO_PEERCRED
    launch {profile} ──────────────────>   authorize
             <──────────────────────────   filter {bpf}
    NO_NEW_PRIVS, seccomp(NEW_LISTENER)
    listener {} + fd (SCM_RIGHTS) ─────>   serve the listener
             <──────────────────────────   ack
    execve(PROG)  (same pid, terminal, parent, exit status)

Between loading the filter and handing the listener over, this process
must make no trapped call (an ``open`` from a lazy import, say): it would
wait for a supervisor that has no listener yet, forever. So every name used
in that window is bound beforehand, the frame to send is encoded
beforehand, and the fd travels with a hand-built ``SCM_RIGHTS`` message
(:class:`~unotifyd.kernel.filter.FdSender`).
"""

from __future__ import annotations

# _socket, the C module under socket: its sockets have every method the
# client calls, and ``import socket`` would add ~2.4 ms to launch --daemon
# (selectors, four IntEnum conversions) for conveniences it does not use.
import _socket
import errno
import gc
import os
from collections.abc import Sequence

from ..environ import program_environ
from ..execute import exec_program
from . import DEFAULT_SOCKET
from .protocol import (
    MAX_FRAME,
    PROGRAM_NAME_MAX,
    Abort,
    Ack,
    Direction,
    ErrorReply,
    FilterReply,
    HandOver,
    LaunchRequest,
    Message,
    ProtocolError,
    decode_record,
    encode,
)

__all__ = [
    "DEFAULT_SOCKET",
    "ClientError",
    "call",
    "connect",
    "exec_sandboxed",
    "launch_via_daemon",
]

# unotifyd.launch's status for its own failure (env(1)/chroot(1) style),
# repeated here: importing unotifyd.launch would pull in the policy layer
# (~15 ms), which the client never uses (tests/unit/test_client.py checks
# they agree). The program's own (126, 127) are in ..execute.
EXIT_FAILURE = 125

#: Seconds to wait for each reply of the daemon before giving up.
REPLY_TIMEOUT = 30.0


class ClientError(Exception):
    """The daemon could not be reached or refused; the message is for the user."""


def connect(path: str, timeout: float | None = REPLY_TIMEOUT) -> _socket.socket:
    """A ``SOCK_SEQPACKET`` connection to the daemon at ``path`` (close-on-exec)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise ClientError(f"no daemon socket at {path} (is `unotifyd serve` running?)") from None
    except ConnectionRefusedError:
        sock.close()
        raise ClientError(f"no daemon listening on {path}") from None
    except OSError as e:
        sock.close()
        raise ClientError(f"cannot connect to {path}: {e.strerror or e}") from None
    return sock


def _recv(sock: _socket.socket) -> Message:
    """One reply. Raises ClientError for a closed connection, a timeout or garbage."""
    try:
        record = sock.recv(MAX_FRAME)
    except TimeoutError:
        raise ClientError("the daemon did not answer in time") from None
    except OSError as e:
        raise ClientError(f"lost the connection to the daemon: {e.strerror or e}") from None
    if not record:
        raise ClientError("the daemon closed the connection without an answer")
    try:
        return decode_record(record, Direction.REPLY)
    except ProtocolError as e:
        raise ClientError(f"bad answer from the daemon: {e}") from None


def _send(sock: _socket.socket, msg: Message) -> None:
    try:
        frame = encode(msg)
    except ValueError as e:  # larger than a frame may be
        raise ClientError(str(e)) from None
    try:
        sock.sendmsg([frame], [], _socket.MSG_NOSIGNAL)
    except OSError as e:
        raise ClientError(f"lost the connection to the daemon: {e.strerror or e}") from None


def _request(sock: _socket.socket, msg: Message) -> Message:
    """Send ``msg`` and return the reply.

    The daemon may refuse a client before reading anything from it (an
    unauthorized uid) and close the connection; our send then fails with
    ``EPIPE``, but the refusal is already waiting in our receive queue.
    """
    try:
        _send(sock, msg)
    except ClientError as e:
        try:
            reply = _recv(sock)
        except ClientError:
            raise e from None
        if isinstance(reply, ErrorReply):
            return reply
        raise
    return _recv(sock)


def call(path: str, request: Message, timeout: float = REPLY_TIMEOUT) -> Message:
    """Send one request to the daemon at ``path`` and return its reply.

    Raises :class:`ClientError`; an :class:`ErrorReply` is returned as such.
    """
    sock = connect(path, timeout)
    try:
        return _request(sock, request)
    finally:
        sock.close()


def _say(message: str) -> None:
    # os.write, not print: it may run with the filter installed and the fd
    # handed over, where the less Python runs the better.
    os.write(2, f"unotifyd: {message}\n".encode(errors="replace"))


def exec_sandboxed(sock: _socket.socket, profile: str, argv: Sequence[str]) -> int:
    """Do the hand-over on connected ``sock``, then exec ``argv`` in this process.

    Returns (an exit status for unotifyd) only if it fails; on success the
    program replaces this process. ``sock`` is closed either way.
    """
    try:
        return _exec_sandboxed(sock, profile, argv)
    finally:
        sock.close()


def _exec_sandboxed(sock: _socket.socket, profile: str, argv: Sequence[str]) -> int:
    # Imported here, not at the top: ctypes is needed only on this path.
    from ..kernel.landlock import ruleset_for  # noqa: PLC0415

    try:
        reply = _request(sock, LaunchRequest(profile, argv[0][:PROGRAM_NAME_MAX]))
    except ClientError as e:
        _say(str(e))
        return EXIT_FAILURE
    if isinstance(reply, ErrorReply):
        _say(reply.message)
        return EXIT_FAILURE
    if not isinstance(reply, FilterReply):
        _say(f"unexpected {reply.TYPE!r} answer from the daemon")
        return EXIT_FAILURE
    try:
        ruleset = ruleset_for(reply.exec_allowed, reply.scope_signals)
    except OSError as e:
        _say(f"cannot build the Landlock ruleset: {e.strerror}")
        return EXIT_FAILURE
    except ValueError as e:  # a path no file has (a NUL, a lone surrogate)
        _say(f"cannot build the Landlock ruleset: {e}")
        return EXIT_FAILURE
    try:
        # Read before the filter: an open of /proc/self/environ made after it
        # would be judged by the profile's rules.
        return _install_and_exec(sock, reply, ruleset, argv, program_environ())
    finally:
        if ruleset >= 0:
            os.close(ruleset)


def _install_and_exec(
    sock: _socket.socket, reply: FilterReply, ruleset: int, argv: Sequence[str],
    environ: dict[bytes, bytes],
) -> int:
    from ..kernel.filter import (  # noqa: PLC0415
        FdSender,
        PreparedFilter,
        UnfilteredSender,
        install_failure,
    )

    try:
        prepared = PreparedFilter(reply.bpf, ruleset)
    except ValueError as e:
        _say(f"the daemon sent an invalid filter: {e}")
        return EXIT_FAILURE
    if reply.no_core_dumps:
        from ..kernel.coredump import forbid_core_dumps  # noqa: PLC0415

        try:
            forbid_core_dumps()
        except OSError as e:  # a process may always lower its own (setrlimit(2))
            _say(f"cannot forbid core dumps (RLIMIT_CORE 0): {e.strerror}")
            return EXIT_FAILURE

    # Everything the critical section touches is bound now.
    # A thread the filter does not cover sends the listener: see UnfilteredSender.
    try:
        send_listener = UnfilteredSender(FdSender(sock, encode(HandOver())))
    except RuntimeError:  # "can't start new thread": pthread_create's EAGAIN
        _say(f"cannot start the hand-over thread: {os.strerror(errno.EAGAIN)}")
        return EXIT_FAILURE
    recv = sock.recv
    close = os.close
    nosignal = _socket.MSG_NOSIGNAL
    decode = decode_record
    reply_direction = Direction.REPLY
    # A collection could run a __del__ that does who knows what.
    gc.disable()
    try:
        fd = prepared.install()
        if fd < 0:
            # No filter is in place, so nothing can deadlock from here on.
            send_listener.cancel()
            err = -fd
            # Not contextlib.suppress: nothing else on this path imports contextlib.
            try:  # noqa: SIM105
                sock.sendmsg([encode(Abort(err))], [], nosignal)
            except OSError:
                pass  # The daemon sees the connection close instead.
            _say(f"cannot install the seccomp filter: {install_failure(err)}")
            return EXIT_FAILURE
        try:
            send_listener(fd)
        except OSError as e:
            failure = f"cannot hand the listener to the daemon: {e.strerror}"
        else:
            failure = ""
        finally:
            # Our copy must not reach the program; the daemon has its own.
            close(fd)
        # From here the daemon holds the listener (trapped calls wait for
        # it to serve them), or nobody does (they fail with ENOSYS): no
        # call can hang forever any more.
        if failure:
            _say(failure)
            return EXIT_FAILURE
        try:
            record = recv(MAX_FRAME)
        except OSError as e:
            record = b""
            failure = f"no acknowledgement from the daemon: {e.strerror or 'timed out'}"
    finally:
        gc.enable()
    if failure:
        _say(failure)
        return EXIT_FAILURE
    if not record:
        _say("the daemon closed the connection before acknowledging the hand-over")
        return EXIT_FAILURE
    try:
        ack = decode(record, reply_direction)
    except ProtocolError as e:
        _say(f"bad answer from the daemon: {e}")
        return EXIT_FAILURE
    if isinstance(ack, ErrorReply):
        _say(ack.message)
        return EXIT_FAILURE
    if not isinstance(ack, Ack):
        _say(f"unexpected {ack.TYPE!r} answer from the daemon")
        return EXIT_FAILURE
    sock.close()
    return exec_program(argv, environ)


def launch_via_daemon(path: str, profile: str, argv: Sequence[str]) -> int:
    """``unotifyd launch --daemon PATH --profile PROFILE -- ARGV``.

    Returns an exit status only if the program could not be started.
    """
    try:
        sock = connect(path)
    except ClientError as e:
        _say(str(e))
        return EXIT_FAILURE
    return exec_sandboxed(sock, profile, argv)
