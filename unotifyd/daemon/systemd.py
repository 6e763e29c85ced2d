"""systemd's side protocols, without libsystemd: ``sd_notify`` and ``LISTEN_FDS``.

Both are small and stable, so the daemon speaks them itself instead of
loading a C binding. The module has two halves:

* pure functions that build and parse the wire format (notify messages,
  ``LISTEN_*``/``WATCHDOG_*`` variables, the names our fds carry in the
  store), tested without a socket;
* :class:`Notifier` and :func:`take_listen_fds`, the only code here that
  touches sockets, fds and the environment.

The notify protocol (sd_notify(3), sd_pid_notify_with_fds(3)): the service
manager puts the path of an ``AF_UNIX`` datagram socket in ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace); each datagram holds
newline-separated ``KEY=VALUE`` assignments, and ``FDSTORE=1`` messages carry
the fds to keep as ``SCM_RIGHTS``. systemd keeps stored fds across a
restart of the service and passes them back, like socket-activated ones,
through ``$LISTEN_FDS`` (sd_listen_fds(3)): fds 3, 4, ... with their names
colon-separated in ``$LISTEN_FDNAMES``, valid only if ``$LISTEN_PID`` is our
pid. That is what lets a restarted daemon take the seccomp listeners of
running programs back: while systemd holds a copy, the last copy of a
listener never closes, so no trapped call fails with ``ENOSYS``; calls made
meanwhile wait in the kernel for the next reader.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Iterable, Mapping, MutableMapping, Sequence

from ..record import record

__all__ = [
    "CONTROL_FD_NAME",
    "FDNAME_MAX",
    "SD_LISTEN_FDS_START",
    "ListenFd",
    "Notifier",
    "StoredProgram",
    "check_fd_name",
    "fdstore_enabled",
    "listen_fds",
    "notify_address",
    "notify_message",
    "parse_program_fd_name",
    "program_fd_name",
    "take_listen_fds",
    "watchdog_interval",
]

#: The first fd passed by socket activation (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
#: The longest fd name systemd accepts (FDNAME_MAX in its sources; the man
#: page of sd_pid_notify_with_fds(3) says "up to 255 characters").
FDNAME_MAX = 255
#: The name of the control socket: ``FileDescriptorName=`` in unotifyd.socket,
#: and the name the daemon stores a socket it bound itself under.
CONTROL_FD_NAME = "control"
#: Most fds one datagram may carry: the kernel refuses more than SCM_MAX_FD
#: (253) in one SCM_RIGHTS message (unix(7)).
MAX_FDS_PER_MESSAGE = 253

_ENV_LISTEN = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_KEY = re.compile(r"[A-Z0-9_]+")


# --- Notify messages (pure) ---------------------------------------------------------


def check_fd_name(name: str) -> str:
    """Return ``name`` if systemd accepts it as an fd name, else raise ValueError.

    sd_pid_notify_with_fds(3): at most 255 characters, ASCII without control
    characters and without ``:``, which separates names in ``LISTEN_FDNAMES``.
    """
    if len(name) > FDNAME_MAX:
        raise ValueError(f"fd name longer than {FDNAME_MAX} characters")
    for ch in name:
        if not " " <= ch <= "~" or ch == ":":
            raise ValueError(f"fd name {name!r} holds {ch!r} (printable ASCII but ':' only)")
    return name


def notify_message(assignments: Iterable[tuple[str, str]]) -> bytes:
    """The datagram for ``assignments``: ``KEY=VALUE`` lines (sd_notify(3)).

    A newline inside a value would start a new assignment, so it is refused
    (ValueError), as are keys that are not upper-case words.
    """
    lines = []
    for key, value in assignments:
        if not _KEY.fullmatch(key):
            raise ValueError(f"bad notify key {key!r}")
        if "\n" in value or "\0" in value:
            raise ValueError(f"{key}= value holds a newline or NUL: {value!r}")
        lines.append(f"{key}={value}\n")
    if not lines:
        raise ValueError("an empty notify message")
    return "".join(lines).encode("utf-8")


def one_line(text: str) -> str:
    """``text`` fit for a ``STATUS=`` value: newlines and NULs become spaces."""
    return text.replace("\n", " ").replace("\0", " ")


def notify_address(value: str) -> str | bytes:
    """The address to send to for a ``$NOTIFY_SOCKET`` value.

    Raises ValueError for anything but a path or an abstract name: systemd
    also supports ``vsock:`` addresses (for VMs), which a daemon that
    serves local processes never gets.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # The abstract namespace: a leading NUL byte instead of the '@'.
        return b"\0" + value[1:].encode()
    raise ValueError(f"unsupported NOTIFY_SOCKET {value!r}")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings, or None if no watchdog is asked for.

    sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` is the timeout; if
    ``$WATCHDOG_PID`` is set it must be our pid (a child must not ping for
    its parent). It recommends pinging at half the timeout.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and owner != str(pid):
        return None
    return int(usec) / 2e6


def fdstore_enabled(environ: Mapping[str, str]) -> bool:
    """True if fds sent with ``FDSTORE=1`` will be kept for us.

    systemd 254+ says so in ``$FDSTORE`` (``FileDescriptorStoreMax=``);
    older versions say nothing, and then the presence of ``$NOTIFY_SOCKET``
    is all we know: the shipped unit sets ``FileDescriptorStoreMax=``.
    """
    if not environ.get("NOTIFY_SOCKET"):
        return False
    value = environ.get("FDSTORE")
    if value is None:
        return True
    return value.isdigit() and int(value) > 0


# --- LISTEN_FDS (pure) --------------------------------------------------------------


@record(frozen=True)
class ListenFd:
    """One fd passed by the service manager, and its name (``unknown`` if none)."""

    fd: int
    name: str


def listen_fds(environ: Mapping[str, str], pid: int) -> list[ListenFd]:
    """The fds ``environ`` says were passed to process ``pid`` (sd_listen_fds(3)).

    No ``$LISTEN_PID``, or another process's pid, means none: the variables
    were meant for a parent and merely inherited. Raises ValueError for
    malformed values, or names that do not match the number of fds (libsystemd
    refuses those too rather than guess which name goes with which fd).
    """
    owner = environ.get("LISTEN_PID")
    if owner is None or owner.strip() != str(pid):
        return []
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit():
        raise ValueError(f"LISTEN_FDS is not a number: {count!r}")
    n = int(count)
    if n == 0:
        return []
    names_value = environ.get("LISTEN_FDNAMES")
    names = names_value.split(":") if names_value is not None else ["unknown"] * n
    if len(names) != n:
        raise ValueError(f"LISTEN_FDNAMES has {len(names)} names for {n} fds")
    return [ListenFd(SD_LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


# --- The names of stored listeners (pure) -----------------------------------------

_PREFIX = "listener"
_PROFILE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOKEN = re.compile(r"[0-9a-f]{1,32}")
#: What the program's filter and Landlock ruleset do (server.sandbox_id), or "-": not known.
_FILTER = re.compile(r"[0-9a-f]{16}|-")


@record(frozen=True)
class StoredProgram:
    """What a stored listener's fd name says about its program.

    ``token`` tells apart programs that share a pid (a program's children
    keep its listener after it exits, and its pid may be reused by another
    launch); ``FDSTOREREMOVE=1`` removes every fd of a name, so names must be
    unique. ``filter_id``: what the filter and Landlock ruleset the program
    runs under do (``server.sandbox_id``), "" if not known (a container's; a name an
    older daemon gave, without it).
    """

    profile: str
    pid: int
    uid: int
    token: str
    command: str = ""
    filter_id: str = ""


def _escape(text: str, room: int) -> str:
    """``text`` percent-escaped (printable ASCII without ':' or '/'), cut to ``room``.

    Escaped a character at a time, so that a cut never splits an escape or
    the bytes of one character.
    """
    out: list[str] = []
    used = 0
    for ch in text:
        # A name that is not UTF-8 reaches us as os.fsdecode made it, with
        # lone surrogates for its bytes (PEP 383): escape those bytes as
        # they were, which strict UTF-8 cannot encode.
        piece = urllib.parse.quote(ch, safe="+,=@", errors="surrogateescape")
        used += len(piece)
        if used > room:
            break
        out.append(piece)
    return "".join(out)


def program_fd_name(prog: StoredProgram) -> str:
    """``listener/PROFILE/PID/UID/TOKEN/FILTER/COMMAND``, fit for ``FDNAME=``.

    ``FILTER`` is ``prog.filter_id``, or ``-``. The command is percent-escaped
    (no ``/`` is left in it) and cut so that the name stays within
    :data:`FDNAME_MAX`; the rest is never cut (ValueError if it does not fit).
    """
    filter_id = prog.filter_id or "-"
    if not (_PROFILE.fullmatch(prog.profile) and _TOKEN.fullmatch(prog.token)
            and _FILTER.fullmatch(filter_id)):
        raise ValueError(f"cannot name {prog!r}")
    head = f"{_PREFIX}/{prog.profile}/{prog.pid}/{prog.uid}/{prog.token}/{filter_id}/"
    return check_fd_name(head + _escape(prog.command, FDNAME_MAX - len(head)))


def parse_program_fd_name(name: str) -> StoredProgram | None:
    """The program a stored fd name describes, or None if it names no listener of ours.

    A name without ``FILTER`` (``listener/PROFILE/PID/UID/TOKEN/COMMAND``,
    as daemons before it gave) is read with ``filter_id`` "".
    """
    parts = name.split("/", 6)
    if len(parts) == 6:
        parts.insert(5, "-")
    if len(parts) != 7 or parts[0] != _PREFIX:
        return None
    _, profile, pid, uid, token, filter_id, command = parts
    if not (_PROFILE.fullmatch(profile) and pid.isdigit() and uid.isdigit()
            and _TOKEN.fullmatch(token) and _FILTER.fullmatch(filter_id)):
        return None
    command = urllib.parse.unquote(command, errors="surrogateescape")
    return StoredProgram(profile, int(pid), int(uid), token, command,
                         "" if filter_id == "-" else filter_id)


# --- I/O ------------------------------------------------------------------------------


def take_listen_fds(environ: MutableMapping[str, str] | None = None) -> list[ListenFd]:
    """Take the fds passed to this process and forget the variables that passed them.

    Like ``sd_listen_fds(1)``: the fds get ``FD_CLOEXEC`` (nothing we run
    may inherit a listener by accident: a stray copy would keep a finished
    program's filter alive), and ``LISTEN_*`` is removed from the
    environment so that no child takes the variables for its own.
    """
    env = os.environ if environ is None else environ
    try:
        fds = listen_fds(env, os.getpid())
    finally:
        for key in _ENV_LISTEN:
            env.pop(key, None)
    for item in fds:
        flags = fcntl.fcntl(item.fd, fcntl.F_GETFD)
        fcntl.fcntl(item.fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    return fds


def is_listening_seqpacket(fd: int) -> bool:
    """True if ``fd`` is a listening ``AF_UNIX`` ``SOCK_SEQPACKET`` socket."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return (
            s.family == socket.AF_UNIX
            and s.type == socket.SOCK_SEQPACKET
            and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        )
    except OSError:
        return False
    finally:
        s.detach()


class Notifier:
    """Sends sd_notify messages to the service manager.

    A datagram to a unix socket waits when the receiver's queue is full
    (``net.unix.max_dgram_qlen`` messages, 10 by default), and the daemon
    calls this from its event loop, where waiting stalls every program. So
    progress reports (READY, STATUS, WATCHDOG...) are sent without waiting
    and dropped if the queue is full, as the next one supersedes them; only
    ``FDSTORE`` retries, for up to :data:`STORE_WAIT` seconds, since a
    listener missing from the store is a program whose calls would fail
    after a restart.
    """

    STORE_WAIT = 1.0

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when not run by a service manager.

        The variable stays set: a successor started by SIGUSR2 reports to the
        same manager.
        """
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET")
        if not value:
            return None
        return cls(notify_address(value))

    def close(self) -> None:
        self._sock.close()

    def send(
        self, assignments: Iterable[tuple[str, str]], fds: Sequence[int] = (), wait: float = 0.0
    ) -> None:
        """Send one message, with ``fds`` as ``SCM_RIGHTS`` (at most 253).

        Raises ``OSError``; ``BlockingIOError`` if the manager's queue stays
        full for ``wait`` seconds.
        """
        data = notify_message(assignments)
        ancillary = []
        if fds:
            if len(fds) > MAX_FDS_PER_MESSAGE:
                raise ValueError(f"{len(fds)} fds in one message (at most {MAX_FDS_PER_MESSAGE})")
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        deadline = time.monotonic() + wait
        while True:
            try:
                # sendto, not a connected socket: if systemd re-executes
                # itself it binds a new socket at the same address.
                self._sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL, self.address)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def notify(self, wait: float = 0.0, **assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments, ignoring errors; True if sent."""
        try:
            self.send(assignments.items(), wait=wait)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        # Worth a short wait: without it systemd considers the start (or
        # the reload) unfinished until its timeout.
        return self.notify(self.STORE_WAIT, READY="1", STATUS=one_line(status))

    def status(self, status: str) -> bool:
        return self.notify(STATUS=one_line(status))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match this
        # message to the reload it asked for; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> bool:
        return self.notify(STOPPING="1")

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def main_pid(self, pid: int) -> bool:
        """Tell the manager that ``pid`` is now the service's main process."""
        return self.notify(self.STORE_WAIT, MAINPID=str(pid))

    def store(self, fd: int, name: str) -> None:
        """Keep a copy of ``fd`` in the fd store under ``name``. Raises OSError.

        ``FDPOLL`` is left on: systemd drops a stored fd on ``POLLHUP``, which a
        listener reports once every process using its filter is gone
        (sd_pid_notify_with_fds(3)), so finished programs leave the store by
        themselves even if we die before removing them.
        """
        self.send((("FDSTORE", "1"), ("FDNAME", check_fd_name(name))), [fd], self.STORE_WAIT)

    def remove(self, name: str) -> bool:
        """Drop every stored fd called ``name``; True if the message went out.

        Not waited for: a finished program's listener reports ``POLLHUP``,
        and systemd drops it from the store by itself then.
        """
        try:
            self.send((("FDSTOREREMOVE", "1"), ("FDNAME", check_fd_name(name))))
        except OSError:
            return False
        return True


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
