"""``unotifyd serve``: the long-running daemon.

One trio task accepts connections on the control socket; each connection
gets a task of its own, bounded by a timeout, that checks the peer's
credentials and carries out one conversation (see :mod:`.protocol`). A
``launch`` ends with the client's listener handed to the
:class:`~.programs.ProgramTable`, which serves it in its own task until the
program and all its descendants are gone. A bad client costs a log line
and an error reply, never another client's service.

Signals: SIGTERM and SIGINT stop the daemon (stop accepting, let running
programs finish for ``--stop-timeout`` seconds, answer whatever is pending,
exit 0; a second signal cuts the wait short); SIGHUP reloads the config;
SIGUSR2 hands everything to a successor (:mod:`.handover`). When the
listeners outlive the daemon (systemd's fd store, or a successor), stopping
does not wait for programs: it stops receiving, answers what it received,
and leaves the rest queued in the kernel for the next daemon.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import trio

from .. import __version__
from ..calls.registry import FilterSpec, filter_spec, short_digest
from ..kernel import abi
from ..kernel.fdpass import bind_listening
from ..kernel.listener import Listener, is_listener
from ..kernel.peercred import Peer, peer_of
from ..launch import landlock_warnings
from ..policy import PolicyError, surface
from ..policy.backstop import Backstop, backstop
from ..record import record
from ..serve.backing import target_warnings
from ..serve.trace import Tracer
from .config import DaemonConfig, load_config
from .handover import Continuity
from .programs import (
    ProfileCounters,
    ProgramTable,
    accept,
    close_fds,
    recv_message,
    recv_record,
)
from .protocol import (
    MAX_REQUEST,
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
    Reloaded,
    ReloadRequest,
    StatusReply,
    StatusRequest,
    encode,
)

__all__ = ["Daemon", "LoadedConfig", "Peer", "bind_control_socket", "load"]

#: Seconds a client has for its whole conversation (a launch: request,
#: install, hand-over). A slow or stuck client is cut off after this.
HANDSHAKE_TIMEOUT = 10.0
#: Conversations in progress at once; more connections are told "busy".
MAX_CONVERSATIONS = 512
#: Conversations one uid may have in progress at once, so that one user
#: (even one not allowed to launch: anyone may connect) cannot take all the
#: others' (each lasts at most HANDSHAKE_TIMEOUT). A launch needs one.
MAX_CONVERSATIONS_PER_UID = 32
#: Programs one client uid may have served at once. Each holds at least its
#: listener open here and costs the daemon memory; without a bound, one
#: user handing over copies of one listener took every fd the daemon had,
#: and other users' programs failed their calls (helper-37's audit).
MAX_PROGRAMS_PER_UID = 1024
#: fds of a uid's conversations (see Daemon.discard) that may wait to be
#: closed before that uid is told busy: such a close can block for as long
#: as the client likes, and fds waiting to be closed stay open here. A
#: burst of launches leaves one each (its connection); a hand-over message
#: brings at most SCM_MAX_FD (253).
MAX_CLOSING_FDS_PER_UID = 1024
#: Threads that close what one uid's conversations left, at most.
CLOSERS_PER_UID = 2
#: SO_PASSRIGHTS (kernel/abi.py): an accepted socket inherits it from the
#: listening one.
_SO_PASSRIGHTS = abi.SO_PASSRIGHTS


def _log(message: str) -> None:
    # The daemon must outlive a closed stderr.
    with contextlib.suppress(OSError, ValueError):
        print(f"unotifyd: {message}", file=sys.stderr, flush=True)


@record(frozen=True)
class LoadedConfig:
    """A config with every profile's filter compiled, ready to hand out."""

    config: DaemonConfig
    filters: Mapping[str, bytes]  # profile name -> BPF
    loaded_at: float
    #: Profile name -> what the sandbox its programs get does (sandbox_id),
    #: stored with the listener of each one (see Continuity.adopt).
    filter_ids: Mapping[str, str]


def sandbox_id(spec: FilterSpec, wanted: Backstop) -> str:
    """What a program launched under a profile runs in, as 16 hex digits: its
    filter (FilterSpec.digest) and the Landlock ruleset its client adds
    (FilterReply: the exec allow-list, signals scoped), which cannot change
    under it either. (Its no_core_dumps goes with enforcing mode, which both
    of these tell already: left out, so that ids stored before it stay.)"""
    return short_digest([spec.digest(), wanted.exec_allowed, wanted.scope_signals])


def load(path: str) -> LoadedConfig:
    """Read the config and compile every profile's filter. Raises PolicyError."""
    config = load_config(path)
    # Profiles that trap and refuse the same calls share one filter.
    by_spec: dict[FilterSpec, bytes] = {}
    filters: dict[str, bytes] = {}
    filter_ids: dict[str, str] = {}
    for name, profile in config.profiles.items():
        policy = profile.policy
        for warning in [
            *target_warnings(policy), *surface.warnings(policy), *landlock_warnings(policy)
        ]:
            _log(f"{path}: profile {name!r}: {warning}")
        # A profile may change under its programs (a restart reloads it).
        spec = filter_spec(profile.policy, policy_may_change=True)
        if spec not in by_spec:
            by_spec[spec] = spec.compile()
        filters[name] = by_spec[spec]
        filter_ids[name] = sandbox_id(spec, backstop(policy))
    return LoadedConfig(config, filters, time.time(), filter_ids)


class _Refusal(Exception):
    """Refuse the client: ``code`` and ``message`` go into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class _Gone(Exception):
    """The client closed the connection: nobody to answer."""


def _refused_at_once(conn: trio.socket.SocketType, msg: ErrorReply) -> bool:
    """Refuse a client that has sent nothing yet without a task: send ``msg`` and close.

    A flood of connections from one uid over its limit must cost the daemon
    little (it shares two CPUs with everyone's programs): most such clients
    are idle, and with nothing of theirs left unread, closing at once keeps
    our reply readable (unix_release_sock() resets the peer only when our
    receive queue holds data, net/unix/af_unix.c). A client that did send
    (or whose reply does not fit) gets the draining refusal instead: False.
    """
    fd = conn.fileno()
    if _readable(fd):
        return False
    try:
        # One record (SOCK_SEQPACKET): all of it or an error. A fresh
        # socket has room for it; the socket is non-blocking regardless.
        os.write(fd, encode(msg))
    except BlockingIOError:
        return False
    except OSError:
        pass  # The client is gone: nothing to tell it.
    conn.close()
    return True


def _refuse_rights(sock: socket.socket) -> bool:
    """Make ``sock`` (and the connections it accepts) refuse fds; False where
    the kernel cannot (before 6.16: ENOPROTOOPT)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_PASSRIGHTS, 0)
    except OSError:
        return False
    return True


class _Talk:
    """One conversation's fds to close off the event loop (see Daemon.discard)."""

    __slots__ = ("rights", "trash")

    def __init__(self) -> None:
        #: fds the client sent that we do not keep.
        self.trash: list[int] = []
        #: Whether the connection was made to accept fds (the hand-over).
        self.rights = False


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or a hang-up) to read right now."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def bind_control_socket(path: str, mode: int = 0o666) -> socket.socket:
    """Create the listening control socket at ``path``.

    The socket is bound and listening under a temporary name first and then
    renamed into place, so a client that finds ``path`` can connect at once.
    A stale socket (nothing accepts on it) is replaced; a live one, or any
    other kind of file, is an error (``OSError``).

    Anyone may connect by default (``mode``): who may *do* anything is
    decided per connection from ``SO_PEERCRED``, and a refusal tells the
    client why, where file permissions would only say "permission denied".
    """
    return bind_listening(path, socket.SOCK_SEQPACKET, mode, "a daemon")


class Service(Protocol):
    """A second front door served next to the control socket (the OCI agent, ``unotifyd.oci``).

    The daemon does not import it (``oci/`` builds on ``daemon/``): the
    command line hands it in.
    """

    async def serve(self, programs: trio.Nursery) -> None:
        """Accept until cancelled; what it accepts is served in ``programs``."""


class Daemon:
    """The state of one ``unotifyd serve``: config, programs, counters."""

    #: The OCI seccomp agent (``serve --oci-socket``), set before :meth:`run`:
    #: it accepts next to the control socket and stops with it.
    oci: Service | None = None
    #: Restarts without loss (:mod:`.handover`): the fd store, systemd's
    #: notifications and the SIGUSR2 hand-over. Set before :meth:`run`.
    continuity: Continuity | None = None

    def __init__(
        self,
        sock: socket.socket,
        socket_path: str,
        config_path: str,
        loaded: LoadedConfig,
        *,
        tracer: Tracer | None = None,
        stop_timeout: float = 5.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        inherited_socket: bool = False,
    ) -> None:
        self._stdlib_sock = sock
        self.socket_path = socket_path
        # A socket that systemd or a predecessor passed us is theirs: never
        # unlinked by us (None).
        self._socket_id: tuple[int, int] | None = None
        if not inherited_socket:
            st = os.stat(socket_path)
            self._socket_id = (st.st_dev, st.st_ino)
        self.config_path = config_path
        self.loaded = loaded
        self.table = ProgramTable(tracer, lanes=True)
        #: Programs served at once, all uids: a quarter of the fds we may
        #: open (`serve` raises the soft limit to the hard one), past some
        #: for ourselves; each program holds one to a few.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_programs = max(16, (soft - 256) // 4) if soft != resource.RLIM_INFINITY else 2**20
        self.stop_timeout = stop_timeout
        self.handshake_timeout = handshake_timeout
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.reloads = 0
        self.connections = 0
        self.refusals: Counter[str] = Counter()
        self.conversations = 0
        self._conversations_of: Counter[int] = Counter()
        #: Closes waiting or under way per uid, and the threads making them.
        self._closing: Counter[int] = Counter()
        self._closers: dict[int, trio.CapacityLimiter] = {}
        #: Whether connections refuse fds until the hand-over (see _launch):
        #: then no client can make us drop an fd of its own choosing.
        self._rights_refused = _refuse_rights(sock)
        self._reload_lock = trio.Lock()
        self._stop = trio.Event()
        self._handing_over = False
        self._programs: trio.Nursery | None = None

    # --- Lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT; return once everything is released."""
        listen = trio.socket.from_stdlib_socket(self._stdlib_sock)
        self._front = trio.CancelScope()
        self._grace = trio.CancelScope()
        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
        with trio.open_signal_receiver(*signums) as signals:
            async with trio.open_nursery() as outer:
                self._outer = outer
                outer.start_soon(self._signals, signals)
                async with trio.open_nursery() as programs:
                    self._programs = programs
                    if self.continuity is not None:
                        # Inherited programs first: their calls have waited.
                        self.continuity.adopt(programs)
                        outer.start_soon(self.continuity.run)
                    with self._front:
                        async with trio.open_nursery() as front:
                            self._listen, self._front_nursery = listen, front
                            self.resume_front()
                            # Open until _front is cancelled, even while
                            # accepting is paused for a hand-over.
                            front.start_soon(trio.sleep_forever)
                            if self.oci is not None:
                                front.start_soon(self.oci.serve, programs)
                    # Stop accepting before anything else: new clients get
                    # ECONNREFUSED (or ENOENT) at once instead of waiting.
                    listen.close()
                    self._unlink_socket()
                    if self.continuity is not None and self.continuity.keeps_listeners:
                        await self._leave_listeners()
                    n = len(self.table.running)
                    if n:
                        _log(f"stopping: {n} program(s) running, waiting up to "
                             f"{self.stop_timeout:g}s for them")
                    with self._grace, trio.move_on_after(self.stop_timeout):
                        await self.table.wait_idle()
                    await self.table.stop()
                    await self.table.close()
                outer.cancel_scope.cancel()
        _log("stopped")

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                try:
                    await self.reload()
                except PolicyError as e:
                    _log(f"SIGHUP: reload refused, the old config stays: {e}")
                continue
            if signum == signal.SIGUSR2:
                self._outer.start_soon(self._hand_over)
                continue
            name = signal.Signals(signum).name
            if not self._stop.is_set():
                _log(f"{name}: stopping")
                self._stop.set()
                if self.continuity is not None:
                    self.continuity.stopping()
                    if self.continuity.keeps_listeners:
                        # The listeners outlive us: let conversations in
                        # progress end, so that no launch fails either.
                        await self.pause_front()
                self._front.cancel()
            else:
                _log(f"{name} again: not waiting for programs")
                self._grace.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _hand_over(self) -> None:
        """SIGUSR2: pass everything to a successor and stop, or go on serving."""
        if self.continuity is None or self._stop.is_set() or self._handing_over:
            return
        self._handing_over = True
        try:
            if await self.continuity.hand_over():
                self._stop.set()
                self._front.cancel()
        finally:
            self._handing_over = False

    def resume_front(self) -> None:
        """(Re)start accepting clients on the control socket."""
        self._accepting = trio.CancelScope()
        self._front_nursery.start_soon(self._accept_until_paused, self._accepting)

    async def _accept_until_paused(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._accept_loop(self._listen, self._front_nursery)

    async def pause_front(self) -> None:
        """Stop accepting (clients wait in the backlog) and let conversations end."""
        self._accepting.cancel()
        with trio.move_on_after(self.handshake_timeout + 1):
            while self.conversations:
                await trio.sleep(0.005)

    def control_fileno(self) -> int:
        return self._listen.fileno()

    async def _leave_listeners(self) -> None:
        """Stop serving, leaving every listener to the fd store or a successor.

        Nothing received stays unanswered (see :meth:`Continuity.quiesce`);
        what arrives later waits in the kernel for the next daemon.
        """
        assert self.continuity is not None
        left = await self.continuity.quiesce(self.stop_timeout)
        if left:
            _log(f"stopping: {left} call(s) still unanswered after {self.stop_timeout:g}s")
        for prog in list(self.table.running.values()):
            prog.scope.cancel()
        await self.table.wait_idle()

    def _unlink_socket(self) -> None:
        if self._socket_id is None or (
            self.continuity is not None and self.continuity.keeps_listeners
        ):
            return  # Not ours, or kept for the next daemon (fd store, successor).
        # Only our own socket: a successor may already have bound the path.
        with contextlib.suppress(OSError):
            st = os.stat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._socket_id:
                os.unlink(self.socket_path)

    async def _accept_loop(self, listen: trio.socket.SocketType, front: trio.Nursery) -> None:
        while True:
            conn = await accept(listen, _log)
            self.connections += 1
            try:
                peer = peer_of(conn)
            except OSError as e:
                _log(f"cannot read the credentials of a client: {e.strerror}")
                conn.close()
                continue
            busy = self._busy(peer)
            if busy is not None:
                self.refusals["busy"] += 1
                if not (self._rights_refused and _refused_at_once(conn, ErrorReply("busy", busy))):
                    front.start_soon(self._refuse_busy, conn, peer, busy)
                continue
            # Counted here, not when the task starts: a burst of accepts
            # runs before any of the tasks it starts.
            self.conversations += 1
            self._conversations_of[peer.uid] += 1
            front.start_soon(self._connection, conn, peer)

    def _busy(self, peer: Peer) -> str | None:
        """Why a new conversation with ``peer`` must wait, or None."""
        mine = self._conversations_of[peer.uid]
        if mine >= MAX_CONVERSATIONS_PER_UID:
            return (f"uid {peer.uid} has {mine} conversations with the daemon in progress, "
                    f"the most one uid may have ({MAX_CONVERSATIONS_PER_UID}); "
                    "try again once some end")  # fmt: skip
        if self.conversations >= MAX_CONVERSATIONS:
            return (f"the daemon has {self.conversations} conversations in progress, "
                    f"the most it holds ({MAX_CONVERSATIONS}); try again")  # fmt: skip
        closing = self._closing[peer.uid]
        if closing >= MAX_CLOSING_FDS_PER_UID:
            return (f"uid {peer.uid} left {closing} fds that are still being closed "
                    "(a socket lingering on close? a FUSE file?); try again later")  # fmt: skip
        return None

    async def _refuse_busy(self, conn: trio.socket.SocketType, peer: Peer, why: str) -> None:
        talk = _Talk()
        try:
            await self._refuse(conn, ErrorReply("busy", why), talk)
        finally:
            self._end(conn, peer, talk)

    async def _refuse(self, conn: trio.socket.SocketType, msg: ErrorReply, talk: _Talk) -> None:
        """Send a refusal and let the client read it before the connection closes.

        Closing a unix socket whose receive queue still holds data makes the
        peer's next read fail with ECONNRESET (net/unix/af_unix.c,
        unix_release_sock) — and the refusal we sent is then never read.
        So stop sending and drain what the client sent, briefly (its fds,
        if it could send any, to ``talk``: see discard).
        """
        if not await self._reply(conn, msg):
            return
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        if talk.rights:
            # What it queued may carry fds, up to its in-flight limit
            # (RLIMIT_NOFILE, unix_inflight()): read, every one would be ours
            # to hold until closed. Left unread, they go with the connection,
            # closed off the event loop (discard); a client that kept sending
            # may then see a reset instead of the refusal.
            return
        with trio.move_on_after(0.5):
            with contextlib.suppress(OSError):
                # Before Linux 6.16 any record may carry fds: stop at the first
                # that does (the rest go as above).
                while not talk.trash and (await recv_record(conn, MAX_REQUEST, talk.trash))[0]:
                    pass

    def _end(self, conn: trio.socket.SocketType, peer: Peer, talk: _Talk) -> None:
        """Close a connection, on the event loop only where that cannot wait."""
        if talk.trash or talk.rights or not self._rights_refused:
            # It may hold fds of the client's: queued ones are dropped when
            # it closes (unix_release_sock()), as if we had received them.
            self.discard(peer.uid, talk.trash, conn)
        else:
            conn.close()

    def discard(
        self, uid: int, fds: list[int], conn: trio.socket.SocketType | None = None
    ) -> None:
        """Close ``fds`` (and ``conn``, with whatever it still queues) that a
        client of ``uid`` gave us, in a thread: never on the event loop.

        Dropping the last reference to a file runs its release in the thread
        that drops it (fput() defers it to task_work, run on the way back
        from that close(2), fs/file_table.c), and a client chooses what that
        release does: a TCP socket with SO_LINGER waits up to its linger time
        for the peer (tcp_close()), a FUSE file's flush waits for its server.
        Closed on the event loop, one such fd froze the daemon for everyone.
        Here it holds one of the uid's CLOSERS_PER_UID threads, and the uid
        is told busy once MAX_CLOSING_FDS_PER_UID fds wait (see _busy).
        """
        if conn is not None:
            trio.lowlevel.notify_closing(conn)
            fds = [*fds, conn.detach()]
        if not fds:
            return
        self._closing[uid] += len(fds)
        self._front_nursery.start_soon(self._close_in_a_thread, uid, list(fds))
        fds.clear()

    async def _close_in_a_thread(self, uid: int, fds: list[int]) -> None:
        count = len(fds)  # close_fds empties the list
        limiter = self._closers.get(uid)
        if limiter is None:
            limiter = self._closers[uid] = trio.CapacityLimiter(CLOSERS_PER_UID)
        try:
            # Abandoned if the daemon stops meanwhile: the thread goes on
            # closing, holding its token (trio.to_thread.run_sync).
            await trio.to_thread.run_sync(close_fds, fds, limiter=limiter,
                                          abandon_on_cancel=True)  # fmt: skip
        finally:
            self._closing[uid] -= count
            if not self._closing[uid]:
                del self._closing[uid]
                if not limiter.borrowed_tokens:
                    del self._closers[uid]

    # --- One connection --------------------------------------------------------

    async def _connection(self, conn: trio.socket.SocketType, peer: Peer) -> None:
        """One conversation; the accept loop counted it in ``conversations``."""
        talk = _Talk()
        try:
            try:
                with trio.move_on_after(self.handshake_timeout) as scope:
                    try:
                        await self._converse(conn, peer, talk)
                    except _Refusal as r:
                        self.refusals[r.code] += 1
                        _log(f"{peer}: refused ({r.code}): {r.message}")
                        await self._refuse(conn, ErrorReply(r.code, r.message), talk)
                    except _Gone:
                        _log(f"{peer}: closed the connection mid-conversation")
                    except Exception:
                        # A bug of ours that one client's message reached:
                        # that client is refused, and nobody else loses the
                        # daemon (its programs are served by other tasks).
                        self.refusals["internal"] += 1
                        _log(f"{peer}: internal error, conversation ended:\n"
                             f"{traceback.format_exc().rstrip()}")  # fmt: skip
                        await self._reply(
                            conn, ErrorReply("internal", "internal error of the daemon (logged)")
                        )
                if scope.cancelled_caught:
                    self.refusals["timeout"] += 1
                    _log(f"{peer}: timed out after {self.handshake_timeout:g}s")
                    await self._reply(
                        conn, ErrorReply("timeout", "no complete conversation in time")
                    )
            finally:
                self._end(conn, peer, talk)
        finally:
            self.conversations -= 1
            self._conversations_of[peer.uid] -= 1
            if not self._conversations_of[peer.uid]:
                del self._conversations_of[peer.uid]

    async def _reply(self, conn: trio.socket.SocketType, msg: Message) -> bool:
        """Send ``msg``; False if the client is gone or does not read."""
        with trio.move_on_after(1.0):
            try:
                await conn.send(encode(msg), socket.MSG_NOSIGNAL)
            except OSError:
                return False
            return True
        return False

    async def _receive(
        self, conn: trio.socket.SocketType, talk: _Talk
    ) -> tuple[Message, list[int]]:
        """One client message and the fds that came with it (the caller puts
        them in ``talk.trash`` or keeps them)."""
        try:
            return await recv_message(conn, Direction.REQUEST, MAX_REQUEST, talk.trash)
        except ProtocolError as e:
            raise _Refusal(e.code, str(e)) from None
        except EOFError:
            raise _Gone from None

    async def _receive_no_fds(self, conn: trio.socket.SocketType, talk: _Talk) -> Message:
        msg, fds = await self._receive(conn, talk)
        if fds:
            talk.trash += fds
            raise _Refusal("bad-fds", f"a {msg.TYPE} message carries no fds")
        return msg

    def _is_admin(self, config: DaemonConfig, peer: Peer) -> bool:
        return peer.uid == os.getuid() or config.is_admin(peer.uid, peer.groups)

    async def _converse(self, conn: trio.socket.SocketType, peer: Peer, talk: _Talk) -> None:
        loaded = self.loaded  # one config for the whole conversation
        config = loaded.config
        if not (self._is_admin(config, peer) or config.may_connect(peer.uid, peer.groups)):
            # Before reading a byte from it: an unauthorized client gets
            # this refusal and nothing else.
            raise _Refusal("unauthorized", f"uid {peer.uid} is not allowed to use this daemon")
        msg = await self._receive_no_fds(conn, talk)
        if isinstance(msg, LaunchRequest):
            await self._launch(conn, peer, loaded, msg, talk)
        elif isinstance(msg, StatusRequest | ReloadRequest):
            if not self._is_admin(config, peer):
                raise _Refusal("forbidden", f"uid {peer.uid} may not ask for {msg.TYPE}")
            if isinstance(msg, StatusRequest):
                await self._reply(conn, self.status_reply())
            else:
                try:
                    new = await self.reload()
                except PolicyError as e:
                    raise _Refusal("bad-config", f"{e} (the old config stays in force)") from None
                await self._reply(conn, Reloaded(tuple(new.config.profiles)))
        else:
            raise _Refusal(
                "bad-message",
                f"a conversation starts with launch, status or reload, not {msg.TYPE}",
            )

    async def _launch(
        self,
        conn: trio.socket.SocketType,
        peer: Peer,
        loaded: LoadedConfig,
        req: LaunchRequest,
        talk: _Talk,
    ) -> None:
        config = loaded.config
        profile = config.profiles.get(req.profile)
        admin = self._is_admin(config, peer)
        if profile is None:
            usable = list(config.profiles) if admin else config.usable_profiles(
                peer.uid, peer.groups
            )
            raise _Refusal(
                "unknown-profile",
                f"unknown profile {req.profile!r} (you may use: {', '.join(usable) or 'none'})",
            )
        if not (admin or profile.allows(peer.uid, peer.groups)):
            raise _Refusal("forbidden", f"uid {peer.uid} may not use profile {profile.name!r}")
        self._room_for_a_program(peer)
        name = f"{profile.name}:{peer.pid}"
        wanted = backstop(profile.policy)
        reply = FilterReply(
            name, loaded.filters[profile.name], wanted.exec_allowed, wanted.scope_signals,
            wanted.no_core_dumps,
        )
        if self._rights_refused:
            # Now, and only now, the client has an fd to give us: its
            # listener (set before the reply, which it answers with it).
            conn.setsockopt(socket.SOL_SOCKET, _SO_PASSRIGHTS, 1)
        talk.rights = True
        try:
            if not await self._reply(conn, reply):
                raise _Gone
            msg, fds = await self._receive(conn, talk)
        finally:
            if self._rights_refused:
                # No more fds, whatever came (a bad message too): then the
                # connection holds none of the client's unless it sent them
                # meanwhile, and it may be closed here.
                conn.setsockopt(socket.SOL_SOCKET, _SO_PASSRIGHTS, 0)
                talk.rights = _readable(conn.fileno())
        try:
            if isinstance(msg, Abort):
                _log(f"{peer}: could not install the filter: {os.strerror(msg.errno)}")
                return
            if not isinstance(msg, HandOver):
                raise _Refusal("bad-message", f"expected the listener, got {msg.TYPE}")
            if len(fds) != 1:
                raise _Refusal("bad-fds", f"the listener message carries {len(fds)} fds, not 1")
            if not is_listener(fds[0]):
                raise _Refusal("not-a-listener", "the fd sent is not a seccomp listener")
            # Again: other conversations of this uid may have handed theirs
            # over since the first look.
            self._room_for_a_program(peer)
            listener = Listener(fds.pop())
        finally:
            talk.trash += fds
        assert self._programs is not None
        self.table.start(
            self._programs,
            listener,
            profile.policy,
            name=name,
            profile=profile.name,
            pid=peer.pid,
            uid=peer.uid,
            # Its clients send at most PROGRAM_NAME_MAX characters; another
            # client's longer name is cut too (it is shown, never run).
            command=req.program[:PROGRAM_NAME_MAX],
            filter_id=loaded.filter_ids[profile.name],
            # Not pinned: the client installs the filter, and nothing says it
            # installed ours, which traps or refuses every call that changes
            # a root (see Served.root_pinned).
            root_pinned=False,
        )
        # Started before the ack: the program may trap its first call right
        # after exec, and it is served from now on whatever becomes of the
        # ack. If the client died meanwhile, its listener hangs up and the
        # program is released like any other.
        if not await self._reply(conn, Ack(name)):
            _log(f"{name}: client gone before the acknowledgement")

    def _room_for_a_program(self, peer: Peer) -> None:
        """Refuse ``peer`` a new program if it has as many as it may, or the
        daemon as many as its fd limit allows."""
        mine, everyone = self.table.running_of[peer.uid], len(self.table.running)
        if mine >= MAX_PROGRAMS_PER_UID:
            raise _Refusal("busy", f"uid {peer.uid} has {mine} programs running, the most "
                                   f"one uid may have ({MAX_PROGRAMS_PER_UID})")  # fmt: skip
        if everyone >= self.max_programs:
            raise _Refusal("busy", f"the daemon serves {everyone} programs, the most its "
                                   f"fd limit allows ({self.max_programs})")  # fmt: skip

    # --- Config and status -------------------------------------------------------

    async def reload(self) -> LoadedConfig:
        """Re-read the config for new programs; running ones keep their policy.

        Raises :class:`PolicyError` (and keeps the old config) if the new one
        is bad.
        """
        async with self._reload_lock:
            # Reading policies and resolving their paths (realpath) may
            # block on a slow file system: not in the event loop.
            if self.continuity is not None:
                self.continuity.reloading()
            try:
                new = await trio.to_thread.run_sync(load, self.config_path)
            finally:
                # READY=1 ends the reload for systemd, refused or not
                # (sd_notify(3)); a refused config leaves the old in force.
                if self.continuity is not None:
                    self.continuity.reloaded()
            self.loaded = new
            self.reloads += 1
        _log(f"reloaded {self.config_path}: profiles {', '.join(new.config.profiles) or 'none'}")
        return new

    def status_reply(self) -> StatusReply:
        """:meth:`status_report` as a reply (see :func:`fitting_status`)."""
        return fitting_status(self.status_report())

    def status_report(self) -> dict[str, object]:
        """The report ``unotifyd status`` shows (the JSON of ``--json``)."""
        now = time.monotonic()
        counters = self.table.profile_counters()
        profiles: dict[str, object] = {}
        for name in [*self.loaded.config.profiles, *sorted(counters)]:
            if name in profiles:
                continue
            c = counters.get(name)
            entry = (c or ProfileCounters()).to_json()
            entry["configured"] = name in self.loaded.config.profiles
            profiles[name] = entry
        running = sorted(self.table.running.values(), key=lambda p: p.serial)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "socket": self.socket_path,
            "config": self.config_path,
            "started": round(self.started_wall, 3),
            "uptime": round(now - self.started, 3),
            "config_loaded": round(self.loaded.loaded_at, 3),
            "reloads": self.reloads,
            "connections": self.connections,
            "refusals": dict(sorted(self.refusals.items())),
            "programs_running": len(running),
            "programs_finished": self.table.finished,
            "profiles": profiles,
            # Capped so that the reply fits in one record; the counts above
            # are always complete.
            "programs": [p.to_json(now) for p in running[:_STATUS_PROGRAMS]],
        }


_STATUS_PROGRAMS = 500


def fitting_status(report: dict[str, object]) -> StatusReply:
    """``report`` as a reply that fits in one frame: its list of programs
    shortened as needed (the counts stay whole; ``status`` says how many
    it does not show). Commands of up to PROGRAM_NAME_MAX characters,
    escaped as JSON (up to 12 bytes a character), can make even
    _STATUS_PROGRAMS of them too large."""
    while True:
        reply = StatusReply(report)
        try:
            encode(reply)
        except ValueError:
            shown = report["programs"]
            assert isinstance(shown, list)
            if not shown:
                raise
            report = {**report, "programs": shown[: len(shown) // 2]}
            continue
        return reply
