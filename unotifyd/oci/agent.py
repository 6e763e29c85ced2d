"""The OCI seccomp agent: take containers' listeners from runc and crun.

A runtime whose container has ``linux.seccomp.listenerPath`` connects to
that ``SOCK_STREAM`` socket once per container process it starts (``run``,
and every ``exec``), writes the state message (:mod:`.state`) with the
listener attached, and carries on starting the container without waiting
for an answer: there is none in the protocol. So every decision is made
with what that one message says, and a refusal can only be expressed by
closing the listener. The kernel then fails every trapped call of the
container with ``ENOSYS`` (seccomp_unotify(2)): fail closed. runc's own
init traps calls after installing the filter and so fails to start; with
crun the process starts but cannot open anything the filter traps.

An accepted listener goes to the daemon's :class:`~unotifyd.daemon.programs.ProgramTable`,
like one handed over by ``launch --daemon``: same serving, same traces and
counters, named ``PROFILE:CONTAINER-ID``.

Who may connect: the peer's credentials are checked like a control client's,
against the profile the container asks for (root may use every profile).
A rootless runtime therefore needs its user listed in the profile's ``uids``.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import sys
from collections import Counter
from typing import Protocol

import trio

from ..daemon.config import DaemonConfig
from ..daemon.programs import ProgramTable, accept, close_fds
from ..kernel.fdpass import bind_listening
from ..kernel.listener import Listener, is_listener
from ..kernel.peercred import Peer, peer_of
from ..policy.backstop import backstop
from .state import ContainerState, StateError, StateReader, choose_profile

__all__ = ["OciAgent", "bind_oci_socket"]

#: fds one message may carry. The spec names one today; room for more lets
#: us see and close extras rather than have the kernel drop them unseen.
MAX_FDS = 16
#: Connections being read at once; more are closed at once (fail closed).
MAX_CONNECTIONS = 256
#: Bytes asked of each recvmsg: a whole message usually comes in one.
_CHUNK = 64 * 1024


def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"unotifyd: oci: {message}", file=sys.stderr, flush=True)


def bind_oci_socket(path: str, mode: int = 0o666) -> socket.socket:
    """Create the listening ``SOCK_STREAM`` socket the runtimes connect to.

    Bound under a temporary name and renamed into place, so a runtime that
    finds ``path`` can connect. A stale socket is replaced; a live one, or
    another kind of file, is an error (``OSError``). Mode 0666 as for the
    control socket: access is decided per connection from ``SO_PEERCRED``.
    """
    return bind_listening(path, socket.SOCK_STREAM, mode, "an agent")


class _Loaded(Protocol):
    @property
    def config(self) -> DaemonConfig: ...


class Host(Protocol):
    """What the agent needs of the daemon (:class:`~unotifyd.daemon.server.Daemon`).

    ``loaded`` is read per connection, so a reload applies to the next
    container (and ``oci_default_profile`` with it).
    """

    table: ProgramTable
    refusals: Counter[str]
    handshake_timeout: float

    @property
    def loaded(self) -> _Loaded: ...


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class OciAgent:
    """Accepts runtime connections on one socket and serves their listeners."""

    def __init__(self, sock: socket.socket, path: str, host: Host) -> None:
        self._sock = sock
        self.path = path
        st = os.stat(path)
        self._socket_id = (st.st_dev, st.st_ino)
        self._host = host
        self.connections = 0
        self.containers = 0
        self._active = 0

    async def serve(self, programs: trio.Nursery) -> None:
        """Accept until cancelled; accepted listeners are served in ``programs``.

        On the way out the socket is closed and removed (if it is still
        ours), so that runtimes fail at once instead of queueing.
        """
        listen = trio.socket.from_stdlib_socket(self._sock)
        try:
            async with trio.open_nursery() as conns:
                while True:
                    conn = await accept(listen, _log)
                    self.connections += 1
                    if self._active >= MAX_CONNECTIONS:
                        # Closing the connection closes the fds still queued
                        # on it: the container's trapped calls fail (ENOSYS).
                        self._host.refusals["oci-busy"] += 1
                        _log("too many runtime connections at once; refusing one")
                        conn.close()
                        continue
                    # Counted here, not when the task starts: a burst of
                    # connections accepted before any task runs must see it.
                    self._active += 1
                    conns.start_soon(self._connection, conn, programs)
        finally:
            listen.close()
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._socket_id:
                    os.unlink(self.path)

    async def _connection(self, conn: trio.socket.SocketType, programs: trio.Nursery) -> None:
        fds: list[int] = []
        try:
            with conn:
                try:
                    peer = peer_of(conn)
                except OSError as e:
                    _log(f"cannot read the credentials of a runtime: {e.strerror}")
                    return
                try:
                    with trio.fail_after(self._host.handshake_timeout):
                        state = await self._read_state(conn, fds)
                    self._accept(state, peer, fds, programs)
                except trio.TooSlowError:
                    self._host.refusals["oci-timeout"] += 1
                    _log(f"{peer}: no complete state message within "
                         f"{self._host.handshake_timeout:g}s")
                except _Refused as r:
                    self._host.refusals[r.code] += 1
                    _log(f"{peer}: refused ({r.code}): {r.message}")
        finally:
            close_fds(fds)
            self._active -= 1

    async def _read_state(self, conn: trio.socket.SocketType, fds: list[int]) -> ContainerState:
        """Read until the state message is complete; its fds are appended to ``fds``.

        Never waits for EOF: the runtime keeps the connection open.
        """
        reader = StateReader()
        received = 0
        while True:
            try:
                data, ancdata, flags, _ = await conn.recvmsg(
                    _CHUNK, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
                )
            except OSError as e:
                raise _Refused("oci-gone", f"reading the state: {e.strerror}") from None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(got)
            if flags & socket.MSG_CTRUNC:
                raise _Refused("oci-bad-fds", f"more than {MAX_FDS} fds")
            received += len(data)
            if not received:
                # crun, for one, connects before it sets up the container
                # and closes without a word when that fails.
                raise _Refused("oci-gone", "the runtime closed the connection without a message")
            try:
                if not data:
                    reader.eof()
                state = reader.feed(data)
            except StateError as e:
                raise _Refused("oci-bad-state", str(e)) from None
            if state is not None:
                return state

    def _accept(
        self, state: ContainerState, peer: Peer, fds: list[int], programs: trio.Nursery
    ) -> None:
        """Check what the runtime sent and start serving its listener (taken from ``fds``)."""
        who = f"container {state.id!r} (pid {state.pid}, runtime {peer})"
        if len(fds) != len(state.fds):
            raise _Refused(
                "oci-bad-fds", f"{who}: {len(fds)} fds passed but 'fds' names {len(state.fds)}"
            )
        config = self._host.loaded.config
        try:
            choice = choose_profile(state, config.oci_default_profile)
        except StateError as e:
            raise _Refused("oci-no-profile", f"{who}: {e}") from None
        profile = config.profiles.get(choice.name)
        if profile is None:
            raise _Refused(
                "oci-unknown-profile",
                f"{who}: unknown profile {choice.name!r} (from {choice.source}); "
                f"configured: {', '.join(config.profiles) or 'none'}",
            )
        admin = peer.uid == os.getuid() or config.is_admin(peer.uid, peer.groups)
        if not (admin or profile.allows(peer.uid, peer.groups)):
            raise _Refused(
                "oci-forbidden", f"{who}: uid {peer.uid} may not use profile {profile.name!r}"
            )
        fd = fds[state.seccomp_fd_index]
        if not is_listener(fd):
            raise _Refused("oci-not-a-listener", f"{who}: {state.fds[state.seccomp_fd_index]} "
                           "is not a seccomp listener")
        fds.remove(fd)  # The table owns it from here; the rest are closed.
        name = f"{profile.name}:{state.id}"
        self._host.table.start(
            programs,
            Listener(fd),
            profile.policy,
            name=name,
            profile=profile.name,
            pid=state.pid,
            uid=peer.uid,
            command=f"oci container {state.id} {state.bundle}".rstrip(),
            # One runtime (one uid) starts every tenant's container: each
            # gets a lane of its own, so that none can stall another.
            lane=f"container {state.id}",
        )
        self.containers += 1
        _log(f"serving {who} as {name} (profile from {choice.source})")
        wanted = backstop(profile.policy)
        # The runtime made the container's process and its filter; a Landlock
        # ruleset is the runtime's to add (OCI has no field for one).
        if wanted.exec_allowed is not None or wanted.exec_unkept:
            _log(f"{name}: no Landlock backstop in a container: the exec rules of profile "
                 f"{profile.name!r} are checked by the supervisor alone (a racing exec can "
                 "get past them)")
        if wanted.scope_signals:
            _log(f"{name}: no Landlock backstop in a container: signals of profile "
                 f"{profile.name!r}'s programs may leave the container")
        if wanted.no_core_dumps:
            # The runtime's process, and a pid only the runtime vouches for:
            # not ours to limit (unotifyd.kernel.coredump).
            _log(f"{name}: core dump files are the runtime's to forbid in a container "
                 "(process.rlimits: RLIMIT_CORE 0 in the bundle's config.json); with a file "
                 "core_pattern, a crash writes one in its cwd past profile "
                 f"{profile.name!r}'s rules")
