"""Restarting the daemon without failing a trapped call.

A seccomp listener is the only way to answer a sandboxed program's trapped
calls, and when its last copy closes every pending and future trapped call
fails with ``ENOSYS`` (seccomp_unotify(2)). A daemon that exits takes its
copies with it, so a restart must make sure another copy lives on and
that the next daemon finds it, knowing which profile it serves:

* **under systemd**, each listener goes to the service manager's fd store
  when its program starts (``FDSTORE=1``, ``FDNAME=listener/PROFILE/PID/...``,
  sd_pid_notify_with_fds(3)); a restarted daemon gets them all back in
  ``$LISTEN_FDS`` (sd_listen_fds(3)) and serves each with its profile.
  Calls trapped while no daemon runs wait in the kernel until it comes back.
* **without systemd**, SIGUSR2 starts a successor (the same command line:
  a new binary or config is picked up) and hands it the control socket and
  every listener over a unix socket, with the same names; the old daemon
  exits only once the successor says it serves them.

Either way the old daemon first stops receiving (:class:`~unotifyd.serve.served.Gate`)
and answers whatever it has already received: a received notification is
invisible to the next reader, and with a copy of the listener alive it
would never be failed either.

Hand-over protocol (SIGUSR2), on a ``SOCK_SEQPACKET`` socket pair whose
successor end is inherited as ``$UNOTIFYD_HANDOVER_FD``; each record is
a JSON object::

    successor                     old daemon
    hello {pid}  ─────────────>   (config loaded: the successor can serve)
                                  stop accepting, finish conversations,
                                  pause listeners, answer what was received
                 <─────────────   fds {names} + SCM_RIGHTS   (repeated)
                 <─────────────   end {count}
    (serving them all)
    ready {}     ─────────────>   MAINPID=successor (under systemd), exit

If anything fails before ``ready`` the old daemon kills the successor and
carries on serving; nothing was lost, since it kept its copies.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..kernel.listener import Listener, is_listener
from ..policy import Policy, parse_deny
from ..record import field, record
from .systemd import (
    CONTROL_FD_NAME,
    ListenFd,
    Notifier,
    StoredProgram,
    close_quietly,
    fdstore_enabled,
    is_listening_seqpacket,
    parse_program_fd_name,
    program_fd_name,
    take_listen_fds,
    watchdog_interval,
)

if TYPE_CHECKING:
    import trio

    from .programs import Program
    from .server import Daemon

__all__ = [
    "ENV_HANDOVER",
    "Continuity",
    "HandoverError",
    "Inherited",
    "decode_record",
    "encode_record",
    "inherit",
    "receive_from_predecessor",
    "sort_fds",
]

#: The environment variable naming the successor's end of the hand-over socket.
ENV_HANDOVER = "UNOTIFYD_HANDOVER_FD"
#: fds per ``fds`` record: below SCM_MAX_FD (253), the kernel's limit (unix(7)).
FDS_PER_RECORD = 200
#: How long the successor waits for all the fds (the old daemon may first
#: finish conversations and in-flight calls, each bounded by its timeouts).
RECEIVE_TIMEOUT = 60.0
#: How long the old daemon waits for the successor's hello (it loads the
#: config and compiles filters first) and then for its ready.
HELLO_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
_MAX_RECORD = 64 * 1024


class HandoverError(Exception):
    """The hand-over could not be done; the message says why."""


# --- Records (pure) -----------------------------------------------------------------

_FIELDS: Mapping[str, Mapping[str, type]] = {
    "hello": {"pid": int},
    "fds": {"names": list},
    "end": {"count": int},
    "ready": {},
}


def encode_record(kind: str, **fields: Any) -> bytes:
    """One hand-over record. Raises ValueError for an unknown kind or wrong fields."""
    expected = _FIELDS.get(kind)
    if expected is None or set(fields) != set(expected):
        raise ValueError(f"bad hand-over record {kind!r} {sorted(fields)}")
    return json.dumps({"v": 1, "type": kind, **fields}, separators=(",", ":")).encode()


def decode_record(data: bytes) -> tuple[str, dict[str, Any]]:
    """``(kind, fields)`` of one record. Raises HandoverError if it is not one."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise HandoverError("a hand-over record is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise HandoverError("a hand-over record of another version")
    kind = obj.pop("type", None)
    obj.pop("v")
    expected = _FIELDS.get(kind) if isinstance(kind, str) else None
    if expected is None or set(obj) != set(expected):
        raise HandoverError(f"unexpected hand-over record {kind!r}")
    for name, typ in expected.items():
        if type(obj[name]) is not typ:
            raise HandoverError(f"hand-over record {kind!r}: bad {name!r}")
    if kind == "fds" and not all(isinstance(n, str) for n in obj["names"]):
        raise HandoverError("hand-over record 'fds': names must be strings")
    assert isinstance(kind, str)
    return kind, obj


# --- What a new daemon inherits -----------------------------------------------------


@record
class Inherited:
    """The fds a starting daemon got from systemd or from its predecessor."""

    control: socket.socket | None = None
    programs: list[tuple[Listener, StoredProgram, str]] = field(default_factory=list)
    #: The predecessor's end of the hand-over, to say "ready" on (SIGUSR2 only).
    predecessor: socket.socket | None = None
    #: Messages for the log: fds that were refused, and why.
    notes: list[str] = field(default_factory=list)


def sort_fds(fds: Sequence[ListenFd]) -> Inherited:
    """Sort inherited fds into the control socket and the programs' listeners.

    The control socket is the one named ``control`` (``FileDescriptorName=``
    of unotifyd.socket); failing that, the first listening ``SOCK_SEQPACKET``
    socket (socket activation without names, e.g. ``systemd-socket-activate``
    without ``--fdname``). A listener's name says its program. Anything else
    is closed, with a note.
    """
    out = Inherited()
    rest: list[ListenFd] = []
    for item in fds:
        prog = parse_program_fd_name(item.name)
        if prog is not None:
            if is_listener(item.fd):
                out.programs.append((Listener(item.fd), prog, item.name))
            else:
                out.notes.append(f"fd {item.fd} ({item.name}) is not a seccomp listener: closed")
                close_quietly(item.fd)
        elif item.name == CONTROL_FD_NAME and out.control is None and is_listening_seqpacket(
            item.fd
        ):
            out.control = socket.socket(fileno=item.fd)
        else:
            rest.append(item)
    for item in rest:
        if out.control is None and is_listening_seqpacket(item.fd):
            out.control = socket.socket(fileno=item.fd)
        else:
            out.notes.append(f"fd {item.fd} ({item.name or 'no name'}) is not ours: closed")
            close_quietly(item.fd)
    return out


def _recv_record(sock: socket.socket) -> tuple[str, dict[str, Any], list[int]]:
    data, ancdata, flags, _ = sock.recvmsg(
        _MAX_RECORD, socket.CMSG_SPACE(FDS_PER_RECORD * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, ctype, payload in ancdata:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % 4])
            fds.extend(got)
    try:
        if not data:
            raise HandoverError("the old daemon closed the hand-over")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise HandoverError("a truncated hand-over record")
        kind, fields = decode_record(data)
    except BaseException:
        for fd in fds:
            close_quietly(fd)
        raise
    return kind, fields, fds


def receive_from_predecessor(
    sock: socket.socket, timeout: float = RECEIVE_TIMEOUT
) -> list[ListenFd]:
    """The successor's side, before trio starts: say hello, take every fd.

    Raises HandoverError (or OSError); the fds received so far are closed
    then, which is harmless: the old daemon still holds its copies.
    """
    got: list[ListenFd] = []
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.sendall(encode_record("hello", pid=os.getpid()))
        while True:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            kind, fields, fds = _recv_record(sock)
            if kind == "end":
                if fds or fields["count"] != len(got):
                    raise HandoverError(
                        f"the old daemon announced {fields['count']} fds, {len(got)} came"
                    )
                return got
            if kind != "fds" or len(fds) != len(fields["names"]):
                for fd in fds:
                    close_quietly(fd)
                raise HandoverError(f"unexpected {kind!r} record with {len(fds)} fds")
            got.extend(ListenFd(fd, name) for fd, name in zip(fds, fields["names"], strict=True))
    except BaseException:
        for item in got:
            close_quietly(item.fd)
        raise
    finally:
        sock.settimeout(None)


def inherit(environ: dict[str, str] | None = None) -> Inherited:
    """Everything a starting daemon inherits: from a predecessor or from systemd.

    Raises HandoverError or ValueError (bad ``LISTEN_*``) or OSError.
    """
    env = os.environ if environ is None else environ
    handover_fd = env.pop(ENV_HANDOVER, None)
    if handover_fd is not None:
        # Inherited on purpose; nothing we start may inherit it in turn.
        sock = socket.socket(fileno=int(handover_fd))
        sock.set_inheritable(False)
        try:
            fds = receive_from_predecessor(sock)
        except BaseException:
            sock.close()
            raise
        # Variables from systemd were for the predecessor, not for us.
        take_listen_fds(env)
        out = sort_fds(fds)
        out.predecessor = sock
        return out
    return sort_fds(take_listen_fds(env))


# --- The running daemon's side -------------------------------------------------------

#: The policy of a restored program whose profile the config no longer has:
#: everything it opens is refused. Serving it with no rules would let it
#: open what its profile hid; not serving it would leave its calls hanging.
#: Every other call its filter traps is refused as well, those on an fd it
#: holds too (``_GONE``, Served.refuse_all), which a deny, about names, lets
#: through.
_PROFILE_GONE = Policy([parse_deny("/**:EACCES", "profile gone from the config")])
_GONE = "its profile is gone from the config: every call it is trapped for is refused"


def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"unotifyd: {message}", file=sys.stderr, flush=True)


class Continuity:
    """Keeps the daemon's listeners alive across restarts: fd store and hand-over.

    Set as ``Daemon.continuity``; it is the program table's observer (each
    program gets an fd name, and its listener goes to the fd store), adopts
    the programs the daemon inherited, talks to systemd (READY, STATUS,
    RELOADING, STOPPING, WATCHDOG) and performs the SIGUSR2 hand-over.
    """

    def __init__(
        self,
        daemon: Daemon,
        inherited: Inherited,
        notifier: Notifier | None,
        *,
        fdstore: bool | None = None,
    ) -> None:
        from .programs import ProgramObserver  # noqa: PLC0415  (trio, not at import)

        self.daemon = daemon
        self.inherited = inherited
        self.notifier = notifier
        self.fdstore = (notifier is not None and fdstore_enabled(os.environ)
                        if fdstore is None else fdstore)
        #: fd name of every program being served, by serial.
        self.names: dict[int, str] = {}
        #: True once the listeners outlive this daemon (stored, or handed
        #: over): stopping then must neither remove them from the store nor
        #: wait for the programs.
        self.handed_over = False
        self._adopting: str | None = None
        self._status = ""

        outer = self

        class _Observer(ProgramObserver):
            def started(self, prog: Program) -> None:
                outer._started(prog)

            def released(self, prog: Program) -> None:
                outer._released(prog)

        daemon.table.observer = _Observer()

    @property
    def keeps_listeners(self) -> bool:
        """True if a copy of every listener survives this daemon's exit."""
        return self.handed_over or self.fdstore

    # --- Programs and the fd store ---------------------------------------------------

    def _started(self, prog: Program) -> None:
        name = self._adopting
        self._adopting = None
        if name is not None:
            # Restored: systemd keeps the fd it gave back (the store is not
            # emptied by a restart), nothing to store again.
            self.names[prog.serial] = name
            return
        stored = StoredProgram(prog.profile, prog.pid, prog.uid, os.urandom(6).hex(), prog.command,
                               prog.filter_id)
        try:
            name = program_fd_name(stored)
        except ValueError as e:
            # Served all the same; only a successor could not take it over
            # (hand_over leaves it out, and it ends with us).
            _log(f"{prog.name}: its listener cannot be named for a successor ({e})")
            return
        self.names[prog.serial] = name
        if self.fdstore and self.notifier is not None:
            try:
                self.notifier.store(prog.listener.fileno(), name)
            except (OSError, ValueError) as e:
                _log(f"{prog.name}: cannot keep its listener in systemd's fd store "
                     f"({e}); a restart would fail its trapped calls")

    def _released(self, prog: Program) -> None:
        name = self.names.pop(prog.serial, None)
        if name is None or (self.keeps_listeners and self.daemon.stopping):
            # The daemon is going away, not the program: leave it stored.
            return
        if self.fdstore and self.notifier is not None:
            self.notifier.remove(name)

    def adopt(self, nursery: trio.Nursery) -> None:
        """Serve every inherited listener, each with its profile's current policy."""
        loaded = self.daemon.loaded
        for listener, stored, name in self.inherited.programs:
            profile = loaded.config.profiles.get(stored.profile)
            policy = profile.policy if profile is not None else _PROFILE_GONE
            # What the profile's programs get now; None for a profile gone.
            now = loaded.filter_ids.get(stored.profile)
            behind = bool(now and stored.filter_id and stored.filter_id != now)
            if profile is None:
                _log(f"{stored.profile}:{stored.pid}: profile {stored.profile!r} is gone from "
                     "the config; every call its filter traps (every open) is refused")
            elif behind:
                # The filter cannot change under a running program
                # (seccomp(2): a filter, once installed, stays), and what it
                # lets through never reaches us: a rule the profile gained is
                # kept for the calls it traps only. Said, not refused: the
                # calls it lets through would go on all the same.
                _log(f"{stored.profile}:{stored.pid}: profile {stored.profile!r} in "
                     f"{self.daemon.config_path} now needs other calls trapped or refused "
                     f"than the filter this program started with ({stored.filter_id}, now "
                     f"{now}): its rules are kept for the "
                     "calls that filter traps, and a call it lets through goes unseen; "
                     "start the program again to give it the profile's filter")
            self._adopting = name
            self.daemon.table.start(
                nursery, listener, policy, name=f"{stored.profile}:{stored.pid}",
                profile=stored.profile, pid=stored.pid, uid=stored.uid, command=stored.command,
                refuse_all=None if profile is not None else _GONE,
                # Kept, so that the next restart compares with the filter
                # the program runs under, not with this profile's.
                filter_id=stored.filter_id, filter_behind=behind,
            )
        n = len(self.inherited.programs)
        self.inherited.programs.clear()
        for note in self.inherited.notes:
            _log(note)
        if n:
            _log(f"took back {n} running program(s)")

    def store_control_socket(self, sock: socket.socket) -> None:
        """Keep a control socket we bound ourselves in the fd store, for the next start."""
        if self.fdstore and self.notifier is not None:
            try:
                self.notifier.store(sock.fileno(), CONTROL_FD_NAME)
            except OSError as e:
                _log(f"cannot keep the control socket in systemd's fd store: {e}")

    # --- Talking to systemd ----------------------------------------------------------

    def status_text(self) -> str:
        table = self.daemon.table
        return (f"serving {len(table.running)} program(s), {table.finished} finished; "
                f"profiles: {', '.join(self.daemon.loaded.config.profiles) or 'none'}")

    async def run(self) -> None:
        """READY=1, then STATUS= when it changes and WATCHDOG=1 pings, until cancelled."""
        import trio  # noqa: PLC0415

        if self.inherited.predecessor is not None:
            await self._tell_predecessor()
        notifier = self.notifier
        if notifier is None:
            return
        self._status = self.status_text()
        notifier.ready(self._status)
        interval = watchdog_interval(os.environ, os.getpid())
        period = 1.0 if interval is None else min(1.0, interval)
        next_ping = 0.0
        while True:
            now = trio.current_time()
            if interval is not None and now >= next_ping:
                notifier.watchdog()
                next_ping = now + interval
            status = self.status_text()
            if status != self._status:
                self._status = status
                notifier.status(status)
            await trio.sleep(period)

    async def _tell_predecessor(self) -> None:
        import trio  # noqa: PLC0415

        sock = self.inherited.predecessor
        assert sock is not None
        self.inherited.predecessor = None
        with sock:
            try:
                sock.sendall(encode_record("ready"))
            except OSError as e:
                _log(f"cannot tell the old daemon we serve: {e}")
                return
            # Under systemd, the old daemon now makes us the main process
            # (MAINPID=); wait until it is gone before reporting, or systemd
            # would drop our messages as coming from a stranger.
            with trio.move_on_after(READY_TIMEOUT):
                await trio.lowlevel.wait_readable(sock)

    def reloading(self) -> None:
        if self.notifier is not None:
            self.notifier.reloading()

    def reloaded(self) -> None:
        if self.notifier is not None:
            self._status = self.status_text()
            self.notifier.ready(self._status)

    def stopping(self) -> None:
        if self.notifier is not None and not self.handed_over:
            self.notifier.stopping()

    # --- Stopping without losing a call --------------------------------------------

    async def quiesce(self, timeout: float) -> int:
        """Stop receiving on every listener and wait for what was received to be answered.

        Returns how many calls are still unanswered after ``timeout`` (a
        blocking open in a worker thread: a FIFO nobody opens).
        """
        import trio  # noqa: PLC0415

        running = self.daemon.table.running
        for prog in running.values():
            prog.gate.pause()
        with trio.move_on_after(timeout):
            while any(p.gate.in_flight for p in running.values()):
                await trio.sleep(0.002)
        return sum(p.gate.in_flight for p in running.values())

    def resume(self) -> None:
        for prog in self.daemon.table.running.values():
            prog.gate.resume()

    # --- SIGUSR2: hand over to a successor --------------------------------------------

    async def hand_over(self) -> bool:
        """Start a successor and give it everything; True if it took over.

        On failure the successor is killed and this daemon goes on serving.
        """
        import trio  # noqa: PLC0415

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env[ENV_HANDOVER] = str(theirs.fileno())
        # sd_watchdog_enabled(3) checks $WATCHDOG_PID when set: ours would
        # disable the successor's pings.
        env.pop("WATCHDOG_PID", None)
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            proc = await trio.lowlevel.open_process(
                argv, env=env, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL
            )
        except OSError as e:
            ours.close()
            theirs.close()
            _log(f"SIGUSR2: cannot start a successor: {e}")
            return False
        theirs.close()
        _log(f"SIGUSR2: handing over to a new daemon, pid {proc.pid}")
        tsock = trio.socket.from_stdlib_socket(ours)
        paused = False
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                kind, _ = decode_record(await tsock.recv(_MAX_RECORD) or b"{}")
            if kind != "hello":
                raise HandoverError(f"expected hello, got {kind!r}")
            paused = True
            await self.daemon.pause_front()
            left = await self.quiesce(self.daemon.stop_timeout)
            if left:
                raise HandoverError(f"{left} call(s) still being answered (a blocked open?)")
            items: list[tuple[int, str]] = [(self.daemon.control_fileno(), CONTROL_FD_NAME)]
            items += [(p.listener.fileno(), self.names[s])
                      for s, p in self.daemon.table.running.items() if s in self.names]
            for i in range(0, len(items), FDS_PER_RECORD):
                chunk = items[i : i + FDS_PER_RECORD]
                record = encode_record("fds", names=[name for _, name in chunk])
                fds = array.array("i", [fd for fd, _ in chunk]).tobytes()
                await tsock.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            await tsock.send(encode_record("end", count=len(items)))
            with trio.fail_after(READY_TIMEOUT):
                data = await tsock.recv(_MAX_RECORD)
            if not data:
                raise HandoverError("the new daemon exited before it served")
            kind, _ = decode_record(data)
            if kind != "ready":
                raise HandoverError(f"expected ready, got {kind!r}")
        except (HandoverError, OSError, trio.TooSlowError) as e:
            why = "timed out" if isinstance(e, trio.TooSlowError) else str(e)
            if proc.poll() is not None and proc.returncode != 0:
                why += f" (it exited with status {proc.returncode})"
            _log(f"SIGUSR2: hand-over failed: {why}; this daemon goes on serving")
            # Killed before anything here reads a listener again: two
            # readers on one listener could both wait for one notification.
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGKILL)
            with trio.move_on_after(5):
                await proc.wait()
            tsock.close()
            if paused:
                self.resume()
                self.daemon.resume_front()
            return False
        self.handed_over = True
        if self.notifier is not None:
            self.notifier.main_pid(proc.pid)
        _log(f"SIGUSR2: pid {proc.pid} serves {len(items) - 1} program(s) now; exiting")
        tsock.close()
        return True

