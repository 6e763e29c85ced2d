"""Datagrams sent to an address: ``sendto``, ``sendmsg`` and ``sendmmsg`` with an AF_UNIX path.

A datagram socket may name its destination in each send (unix(7)): a path
there is a socket file, looked up like ``connect``'s (unix_find_bsd() in
net/unix/af_unix.c), so the rules govern it as they govern ``connect``.
Only ``SOCK_DGRAM`` sockets look that address up: a stream socket refuses
one and a seqpacket socket ignores it (unix_stream_sendmsg(),
unix_seqpacket_sendmsg()).

In enforcing mode a send is never let through with CONTINUE, whatever its
address: the kernel would read the ``msghdr``, the address and the fd number
again, and another thread could change any of them in between. It is made
on our copy of the program's socket (pidfd_getfd(2): the same open file,
so its flags and its peer are the program's), from the copy of everything
read once. What the receiver learns of the sender must still be the
program: the send is made acting as the program (its credentials and
capabilities: every check the kernel makes on the way, ``SO_MARK``,
netlink groups, the fds in flight, sees the program). But the credentials a
receiver with ``SO_PASSCRED`` gets (``SCM_CREDENTIALS``; netlink's too) would
be ours in part: the kernel takes the *real* uid (maybe_add_creds(),
scm_send()), and the thread acting for a program keeps ours, 0
(kernel/creds.py). So the send carries the program's uid and gid
explicitly, as the program would have sent them — its real ids, or what it
attached itself once checked as the kernel checks it for it
(scm_check_creds() in net/core/scm.c). The process id in them must be the
sender's unless the sender holds ``CAP_SYS_ADMIN``: a program that holds it
is named, any other gets the supervisor's pid there (README, threat model).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import struct
from collections.abc import Sequence
from functools import partial

from ..kernel import abi
from ..kernel.creds import Credentials
from ..kernel.errors import BadArgument
from ..kernel.program import read_ids
from ..kernel.rawsys import syscall
from ..record import record
from .decode import AF_UNIX, Args, Memory, PathCall, int_arg, unix_path
from .ops import Acting, Outcome, Place, socket_file, until_interrupted

# struct msghdr (include/linux/socket.h, x86_64): name, namelen, iov, iovlen,
# control, controllen, flags; struct mmsghdr adds msg_len (and padding).
_MSGHDR = struct.Struct("<QI4xQQQQi4x")
MMSGHDR_SIZE = 64
_MSG_LEN_AT = 56
_IOVEC = struct.Struct("<QQ")
_CMSGHDR = struct.Struct("<QII")  # cmsg_len, cmsg_level, cmsg_type
_UCRED = struct.Struct("<Iii")  # pid, uid, gid
_SOCKADDR_STORAGE = 128
_UIO_MAXIOV = 1024
# More than any datagram (net.core.wmem_max is far below); a stream send of
# more is made in part, as the kernel may make it too (send(2)).
_PAYLOAD_MAX = 8 << 20
_CONTROL_MAX = 1 << 16  # above net.core.optmem_max: ENOBUFS (sock_kmalloc)

AF_NETLINK = 16
SOL_SOCKET = 1
SCM_RIGHTS = 1
SCM_CREDENTIALS = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2
SO_TYPE = 3
SO_DOMAIN = 39
MSG_NOSIGNAL = 0x4000
MSG_DONTWAIT = 0x40
# The kernel would send from our buffer's pages after the call returns and
# they are freed: never ours to promise. Without it the data is copied, as
# it is natively on a socket without SO_ZEROCOPY (msg_zerocopy docs).
MSG_ZEROCOPY = 0x4000000
SCM_MAX_FD = 253  # include/net/scm.h: more fds in one message is EINVAL
_SUN_PATH_END = 110  # sizeof(struct sockaddr_un): a longer AF_UNIX address is EINVAL
# At most this many messages, and this many bytes of data, are read for one
# sendmmsg (what is left is sent by the caller's next call, sendmmsg(2)).
_MMSG_BATCH = 64
CAP_SETUID = 7
CAP_SETGID = 6
CAP_SYS_ADMIN = 21


@record(frozen=True, slots=True)
class Message:
    """One message, read once: its address, data, control and the length asked for."""

    address: bytes
    payload: bytes
    control: bytes
    length: int  # what the iovecs add up to (payload may be the first _PAYLOAD_MAX of it)


def _flatten(messages: Sequence[Message]) -> tuple[bytes | None, ...]:
    out: list[bytes | None] = []
    for m in messages:
        out += [m.address, m.payload, m.control, m.length.to_bytes(8, "little")]
    return tuple(out)


def messages_of(call: PathCall) -> list[Message]:
    """The messages the inputs below read, back from the call's ``data``."""
    d = call.data
    return [
        Message(
            d[i] or b"", d[i + 1] or b"", d[i + 2] or b"", int.from_bytes(d[i + 3] or b"", "little")
        )
        for i in range(0, len(d), 4)
    ]


def _gather(mem: Memory, pid: int, iov: int, iovlen: int) -> tuple[bytes, int]:
    """The bytes ``iovlen`` iovecs at ``iov`` point to (at most _PAYLOAD_MAX), and their sum."""
    if iovlen > _UIO_MAXIOV:
        raise BadArgument(errno.EMSGSIZE, "too many iovecs")  # import_iovec()
    table = mem.read(pid, iov, iovlen * _IOVEC.size) if iovlen else b""
    chunks, total, kept = [], 0, 0
    for base, length in _IOVEC.iter_unpack(table):
        if length >> 63:
            raise BadArgument(errno.EINVAL, "negative iovec length")
        total += length
        want = min(length, _PAYLOAD_MAX - kept)
        if want:
            chunks.append(mem.read(pid, base, want))
            kept += want
    return b"".join(chunks), total


def _read_msghdr(mem: Memory, pid: int, addr: int) -> Message:
    """A ``struct msghdr`` and what it points to, read as ___sys_sendmsg() reads them."""
    name, namelen, iov, iovlen, control, controllen, _ = _MSGHDR.unpack(
        mem.read(pid, addr, _MSGHDR.size)
    )
    if namelen >= 1 << 31 and name:
        raise BadArgument(errno.EINVAL, "negative address length")  # __copy_msghdr()
    # __copy_msghdr(): a NULL name has no length; a longer one is cut.
    namelen = 0 if name == 0 else min(namelen, _SOCKADDR_STORAGE)
    address = mem.read(pid, name, namelen) if namelen else b""
    if controllen > _CONTROL_MAX:
        raise BadArgument(errno.ENOBUFS, "control data too long")
    payload, total = _gather(mem, pid, iov, iovlen)
    cmsgs = mem.read(pid, control, controllen) if controllen else b""
    return Message(address, payload, cmsgs, total)


def sendto_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``sendto(fd, buf, len, flags, addr, addrlen)``: the address first, then the data."""
    size = a[5] & 0xFFFFFFFF
    if size > _SOCKADDR_STORAGE:
        raise BadArgument(errno.EINVAL, "address too long")  # move_addr_to_kernel()
    address = mem.read(pid, a[4], size) if size and a[4] else b""
    length = a[2]
    payload = mem.read(pid, a[1], min(length, _PAYLOAD_MAX)) if length else b""
    return _flatten([Message(address, payload, b"", length)])


def sendmsg_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``sendmsg(fd, msg, flags)``: one message."""
    return _flatten([_read_msghdr(mem, pid, a[1])])


def sendmmsg_inputs(mem: Memory, pid: int, a: Args) -> tuple[bytes | None, ...]:
    """``sendmmsg(fd, msgvec, vlen, flags)``: the messages up to the next that names
    another file.

    Only the first message's address is decided on (the call's one path),
    and holds for the later ones with the very same address. One that names
    another socket file ends the batch there, and the call answers the number
    sent so far, which sendmmsg(2) allows: its caller sends the rest with
    another call, whose first message it is then.
    """
    vlen = min(a[2] & 0xFFFFFFFF, _UIO_MAXIOV)  # __sys_sendmmsg() caps it
    out: list[Message] = []
    size = 0
    for i in range(min(vlen, _MMSG_BATCH)):
        try:
            m = _read_msghdr(mem, pid, a[1] + i * MMSGHDR_SIZE)
        except BadArgument:
            if not out:
                raise
            break  # The ones before are sent; this one fails the next call.
        if out and unix_path(m.address) is not None and m.address != out[0].address:
            break
        out.append(m)
        size += len(m.payload)
        if size >= _PAYLOAD_MAX:
            break
    return _flatten(out)


# --- performing --------------------------------------------------------------------


def _send(sock: int, address: bytes, payload: bytes, control: bytes, flags: int) -> int:
    """sendmsg(2) of one message on our ``sock``, all of it given as raw bytes.

    The kernel reads the data from the bytes object itself (``c_char_p``
    points into it, and holds it while the call waits): no second copy of
    up to _PAYLOAD_MAX bytes per send that blocks (helper-56 had 48 blocked
    sends hold 16 MiB each)."""
    data = ctypes.c_char_p(payload)
    name = ctypes.create_string_buffer(address, max(len(address), 1))
    ctl = ctypes.create_string_buffer(control, max(len(control), 1))
    iov = (ctypes.c_uint64 * 2)(ctypes.cast(data, ctypes.c_void_p).value or 0, len(payload))
    header = _MSGHDR.pack(
        ctypes.addressof(name) if address else 0, len(address),
        ctypes.addressof(iov), 1,
        ctypes.addressof(ctl) if control else 0, len(control), 0,
    )  # fmt: skip
    msg = ctypes.create_string_buffer(header, len(header))
    return syscall(abi.SYSCALL_NUMBERS["sendmsg"], sock, msg, flags)


def _cmsg(level: int, kind: int, data: bytes) -> bytes:
    body = _CMSGHDR.pack(_CMSGHDR.size + len(data), level, kind) + data
    return body + b"\0" * (-len(body) % 8)


def _controls(control: bytes) -> list[tuple[int, int, bytes]]:
    """The control messages of ``control``, as __scm_send() walks them; EINVAL if malformed."""
    out, at = [], 0
    while at + _CMSGHDR.size <= len(control):
        length, level, kind = _CMSGHDR.unpack_from(control, at)
        if length < _CMSGHDR.size or at + length > len(control):
            raise OSError(errno.EINVAL, "bad control message")
        out.append((level, kind, control[at + _CMSGHDR.size : at + length]))
        at += length + (-length % 8)
    return out


def _claimed_pid(c: Credentials, tgids: tuple[int, int], pid: int, uid: int, gid: int) -> int:
    """The pid (ours to name) of credentials the program claims; EPERM if it may not.

    scm_check_creds() for the program: its own process id (as its pid
    namespace numbers it, ``tgids[1]``; ``tgids[0]`` in ours) unless it holds
    ``CAP_SYS_ADMIN``; one of its uids and gids unless it holds ``CAP_SETUID``
    and ``CAP_SETGID``. Another process is named only from our pid namespace,
    where the number means the same process to the kernel as to the program.
    """
    caps = c.cap_eff
    ours, its = tgids
    if pid in tgids:
        pid = ours
    elif not (caps >> CAP_SYS_ADMIN & 1 and ours == its):
        raise OSError(errno.EPERM, "a process id the program may not claim")
    if not (uid in (c.ruid, c.euid, c.suid) or caps >> CAP_SETUID & 1) or not (
        gid in (c.rgid, c.egid, c.sgid) or caps >> CAP_SETGID & 1
    ):
        raise OSError(errno.EPERM, "ids the program may not claim")
    return pid


def _translate(
    control: bytes, passes_creds: bool, acting: Acting, tgids: tuple[int, int]
) -> tuple[bytes, tuple[int, int, int] | None]:
    """The program's control data with its fds made ours, and the credentials it claims.

    ``SCM_RIGHTS`` names fds of the program: each becomes our copy of it
    (the same open file); one it has not open fails the send with EBADF,
    as scm_fp_copy() does. ``SCM_CREDENTIALS`` is checked here as the
    kernel checks it for the program, and re-attached by the caller. Both
    only for the families that take them (``passes_creds``: AF_UNIX; netlink,
    which takes credentials only); others keep their control data as it is.
    """
    out, creds = [], None
    for level, kind, data in _controls(control):
        if passes_creds and level == SOL_SOCKET and kind == SCM_RIGHTS:
            count = len(data) // 4
            if count > SCM_MAX_FD:
                raise OSError(errno.EINVAL, "too many fds in one message")  # scm_fp_copy()
            ours = [acting.take(fd) for fd in struct.unpack(f"<{count}i", data[: count * 4])]
            out.append(_cmsg(level, kind, struct.pack(f"<{count}i", *ours)))
        elif passes_creds and level == SOL_SOCKET and kind == SCM_CREDENTIALS:
            if len(data) != _UCRED.size:
                raise OSError(errno.EINVAL, "bad SCM_CREDENTIALS")
            pid, uid, gid = _UCRED.unpack(data)
            creds = (_claimed_pid(acting.creds, tgids, pid, uid, gid), uid, gid)
        else:
            out.append(_cmsg(level, kind, data))
    return b"".join(out), creds


def _send_messages(call: PathCall, p: Place, acting: Acting, flags: int) -> tuple[int, list[int]]:
    """Send the call's messages on our copy of its socket; (first errno or 0, lengths sent).

    Runs acting as the program (see the module doc): every check on the way
    is the kernel's for the program.
    """
    tgids = (read_ids(acting.tid, innermost=False)[0], read_ids(acting.tid, innermost=True)[0])
    tgid = tgids[0]
    sock = acting.take(int_arg(call.args[0]))
    domain, kind = _sockopt(sock, SO_DOMAIN), _sockopt(sock, SO_TYPE)
    passes_creds = domain in (AF_UNIX, AF_NETLINK)
    stream = kind == SOCK_STREAM
    looks_up = domain == AF_UNIX and kind == SOCK_DGRAM
    waits = not fcntl.fcntl(sock, fcntl.F_GETFL) & os.O_NONBLOCK
    c = acting.creds
    names_itself = bool(c.cap_eff >> CAP_SYS_ADMIN & 1)  # may name its own pid (see doc)
    sender = tgid if names_itself else os.getpid()
    sent: list[int] = []
    messages = messages_of(call)
    for m in messages:
        address, pinned = m.address, -1
        try:
            if p.itself and looks_up and unix_path(m.address) is not None:
                # Decided on as the address of a socket that never looks one
                # up (see looks_up_addresses); a dup2 onto the fd since put
                # one that does in its place: no rule was asked.
                raise OSError(errno.EACCES, "the socket changed since the decision")
            if looks_up and not p.itself and m.address == messages[0].address:
                if len(m.address) > _SUN_PATH_END:
                    raise OSError(errno.EINVAL, "address too long")  # unix_validate_addr()
                # The socket file the decision is about (see sendmmsg_inputs).
                pinned = socket_file(p)
                address = AF_UNIX.to_bytes(2, "little") + f"/proc/self/fd/{pinned}\0".encode()
            if m.length > len(m.payload) and not stream:
                raise OSError(errno.EMSGSIZE, "message too long")  # a datagram is whole
            control, claimed = _translate(m.control, passes_creds, acting, tgids)
            if passes_creds:
                pid, uid, gid = claimed or (tgid, c.ruid, c.rgid)
                pid = pid if names_itself else sender
                control += _cmsg(SOL_SOCKET, SCM_CREDENTIALS, _UCRED.pack(pid, uid, gid))
            how = flags & ~MSG_ZEROCOPY
            # A send that never waits needs no second try without waiting
            # (see until_interrupted): its EAGAIN is the kernel's answer.
            at_once = None if not waits or how & MSG_DONTWAIT else partial(
                _send, sock, address, m.payload, control, how | MSG_DONTWAIT
            )  # fmt: skip
            sent.append(until_interrupted(
                acting, sock, partial(_send, sock, address, m.payload, control, how), at_once
            ))  # fmt: skip
        except OSError as e:
            if e.errno == errno.EPIPE and not flags & MSG_NOSIGNAL:
                # To the thread, as the kernel sends it (sk_stream_error()).
                syscall(abi.SYSCALL_NUMBERS["tgkill"], tgid, acting.tid, signal.SIGPIPE)
            return e.errno or errno.EIO, sent
        except BadArgument as e:
            # An fd it passes that it does not have (EBADF), in a later
            # message: the ones before are sent, and the count says so.
            return e.errno, sent
        finally:
            if pinned >= 0:
                os.close(pinned)
    return 0, sent


def looks_up_addresses(sock: int) -> bool:
    """Whether our ``sock`` looks up the AF_UNIX path a send names: only a
    datagram socket does (unix(7)). A stream socket refuses any address
    (EISCONN, EOPNOTSUPP: unix_stream_sendmsg()), a seqpacket one ignores it
    (unix_seqpacket_sendmsg()), another family fails it, and an fd that is
    no socket fails the call (ENOTSOCK), all without a lookup."""
    try:
        return _sockopt(sock, SO_DOMAIN) == AF_UNIX and _sockopt(sock, SO_TYPE) == SOCK_DGRAM
    except OSError:
        return False


def _sockopt(sock: int, option: int) -> int:
    """An ``int`` socket option of our ``sock`` (getsockopt(2) at SOL_SOCKET)."""
    value = ctypes.create_string_buffer(4)
    size = ctypes.create_string_buffer((4).to_bytes(4, "little"), 4)
    syscall(abi.SYSCALL_NUMBERS["getsockopt"], sock, SOL_SOCKET, option, value, size)
    return int.from_bytes(value.raw, "little", signed=True)


def sendto(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """sendto(2) with an address: the bytes sent, or the error."""
    err, sent = _send_messages(call, pl[0], acting, call.args[3] & 0xFFFFFFFF)
    return Outcome(-err if err else sent[0])


def sendmsg(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """sendmsg(2): the bytes sent, or the error."""
    err, sent = _send_messages(call, pl[0], acting, call.args[2] & 0xFFFFFFFF)
    return Outcome(-err if err else sent[0])


def sendmmsg(call: PathCall, pl: list[Place], acting: Acting) -> Outcome:
    """sendmmsg(2): how many messages were sent, each one's ``msg_len`` written back;
    the error only if none was (__sys_sendmmsg())."""
    err, sent = _send_messages(call, pl[0], acting, call.args[3] & 0xFFFFFFFF)
    if not sent:
        return Outcome(-err if err else 0)
    vec = call.args[1]
    writes = [
        (vec + i * MMSGHDR_SIZE + _MSG_LEN_AT, n.to_bytes(4, "little")) for i, n in enumerate(sent)
    ]
    return Outcome(len(sent), writes)
