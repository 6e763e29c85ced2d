"""The control protocol between ``unotifyd serve`` and its clients: a pure codec.

No I/O here: bytes in, messages out, and back (the way h11 separates HTTP
from sockets), so every malformed input is tested without a socket.

Transport
---------
A ``SOCK_SEQPACKET`` unix socket. It is connection-oriented, so the daemon
gets the peer's credentials (``SO_PEERCRED``, unix(7)) and sees a client go
away; and it keeps record boundaries, so each ``sendmsg`` arrives as one
record with its ``SCM_RIGHTS`` fds attached to it. On a ``SOCK_STREAM``
socket the fds ride on some byte of the stream and a reader must line them
up with the frame that mentions them, and a client can dribble a frame byte
by byte. Records also mean that a message is either all there or not at
all: a slow client is one that sends nothing, which a timeout handles.

Frames
------
Every message is one frame::

    +----------------------+------------------------------------------+
    | length: u32, big end | payload: `length` bytes of UTF-8 JSON     |
    +----------------------+------------------------------------------+

and the payload is a JSON object with the protocol version, the message
type and the type's fields, no more and no fewer::

    {"v": 3, "type": "launch", "profile": "build", "program": "make"}

The length prefix lets a receiver refuse an oversized frame before reading
it, and tell a truncated record from a complete one; :class:`FrameDecoder`
also works on a byte stream, should a transport ever need one.

Conversations (one per connection)
----------------------------------
============================================  =====================================
client                                        daemon
============================================  =====================================
``launch`` {profile, program}                 ``filter`` {program, bpf, exec_allowed,
                                              scope_signals, no_core_dumps} or
                                              ``error``
``listener`` {} + 1 fd (or ``abort`` {errno}) ``ack`` {program} or ``error``
``status`` {}                                 ``status`` {report} or ``error``
``reload`` {}                                 ``reloaded`` {profiles} or ``error``
============================================  =====================================

``bpf`` is the classic-BPF program, base64-encoded. A newer version of the
protocol bumps ``v``; a peer refuses a version it does not speak, and
refuses unknown fields rather than guessing what they mean.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import struct

# Not `import typing`: it cost the ``launch --daemon`` path ~2.4 ms (on top
# of re, which json needs anyway) for names only the type checker reads;
# mypy takes any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar

__all__ = [
    "MAX_FRAME",
    "MAX_REQUEST",
    "PROTOCOL_VERSION",
    "Abort",
    "Ack",
    "Direction",
    "ErrorReply",
    "FilterReply",
    "FrameDecoder",
    "HandOver",
    "LaunchRequest",
    "Message",
    "ProtocolError",
    "ReloadRequest",
    "Reloaded",
    "StatusReply",
    "StatusRequest",
    "decode_record",
    "encode",
]

# 2: ``filter`` carries the Landlock backstop (exec_allowed, scope_signals).
# 3: and no_core_dumps.
PROTOCOL_VERSION = 3

#: The largest frame anyone may send (header included). A status report of a
#: few thousand programs fits; the kernel's socket buffer bounds a
#: ``SOCK_SEQPACKET`` record anyway (``EMSGSIZE`` above ``SO_SNDBUF``).
MAX_FRAME = 192 * 1024
#: The largest frame the daemon reads from a client: requests are tiny.
MAX_REQUEST = 4096
#: How much of its program's name a client sends in ``launch`` (the daemon
#: shows it in status and names the program's listener with it).
PROGRAM_NAME_MAX = 256
#: The largest errno a system call returns (MAX_ERRNO, include/linux/err.h).
MAX_ERRNO = 4095
#: The kind of an errno field (checked against MAX_ERRNO when decoded).
Errno = int

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size


class Direction(enum.Enum):
    """Who sends a message: a decoder accepts only one direction's messages."""

    REQUEST = "request"  # client -> daemon
    REPLY = "reply"  # daemon -> client


class ProtocolError(Exception):
    """Bytes that are not a valid message. ``code`` is for the error reply."""

    def __init__(self, message: str, code: str = "bad-message") -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


# --- Messages --------------------------------------------------------------------
#
# Plain classes with __slots__, not frozen dataclasses: this module is on
# the ``launch --daemon`` path, where `import dataclasses` (it pulls in
# inspect, ast, dis, tokenize) cost ~6.8 ms and generating the ten classes
# made the module body take 4.4 ms (0.45 ms now), against a goal of 15 ms
# for the whole launch.
#
# A message's fields are its JSON fields, declared as annotations in the
# order they travel (__slots__ holds the same names, sorted), and the
# annotation of each (a string, PEP 563) picks its JSON form from _KINDS
# below. Message gives every class what a frozen dataclass would:
# equality within one class, a hash, a repr, and no assignment after
# __init__.

_set_field = object.__setattr__


class Message:
    """Base class of every message; ``TYPE`` is its ``"type"`` in JSON."""

    __slots__: tuple[str, ...] = ()
    TYPE: ClassVar[str]
    DIRECTION: ClassVar[Direction]
    #: The names of the fields, in order.
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        # The class's own annotations only (Python 3.10+ does not inherit
        # them): Message's are the ClassVars.
        cls.FIELDS = tuple(cls.__annotations__)
        if sorted(cls.FIELDS) != sorted(cls.__slots__):
            raise TypeError(f"{cls.__name__}: __slots__ must name the annotated fields")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: messages are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: messages are immutable")

    def __reduce__(self) -> tuple[type[Message], tuple[object, ...]]:
        # copy and pickle rebuild through __init__, not by setting slots.
        return type(self), self._values()


class LaunchRequest(Message):
    """Client: sandbox me with ``profile``. ``program`` is the argv[0] to be
    shown in ``status`` (informational: the client may say anything)."""

    __slots__ = ("profile", "program")
    TYPE = "launch"
    DIRECTION = Direction.REQUEST
    profile: str
    program: str

    def __init__(self, profile: str, program: str) -> None:
        _set_field(self, "profile", profile)
        _set_field(self, "program", program)


class HandOver(Message):
    """Client: here is my listener (exactly one fd travels with this message)."""

    __slots__ = ()
    TYPE = "listener"
    DIRECTION = Direction.REQUEST


class Abort(Message):
    """Client: I could not install the filter (``errno`` from seccomp(2))."""

    __slots__ = ("errno",)
    TYPE = "abort"
    DIRECTION = Direction.REQUEST
    errno: Errno

    def __init__(self, errno: int) -> None:
        _set_field(self, "errno", errno)


class StatusRequest(Message):
    __slots__ = ()
    TYPE = "status"
    DIRECTION = Direction.REQUEST


class ReloadRequest(Message):
    __slots__ = ()
    TYPE = "reload"
    DIRECTION = Direction.REQUEST


class FilterReply(Message):
    """Daemon: install this BPF program; you will be known as ``program``.

    Before it, restrict yourself with Landlock (:mod:`unotifyd.policy.backstop`):
    exec only beneath ``exec_allowed`` (null: exec is not restricted) and, if
    ``scope_signals``, no signals to processes outside the sandbox; if
    ``no_core_dumps``, set your RLIMIT_CORE to 0 (:mod:`unotifyd.kernel.coredump`).
    """

    __slots__ = ("bpf", "exec_allowed", "no_core_dumps", "program", "scope_signals")
    TYPE = "filter"
    DIRECTION = Direction.REPLY
    program: str
    bpf: bytes
    exec_allowed: tuple[str, ...] | None
    scope_signals: bool
    no_core_dumps: bool

    def __init__(
        self,
        program: str,
        bpf: bytes,
        exec_allowed: tuple[str, ...] | None,
        scope_signals: bool,
        no_core_dumps: bool,
    ) -> None:
        _set_field(self, "program", program)
        _set_field(self, "bpf", bpf)
        _set_field(self, "exec_allowed", exec_allowed)
        _set_field(self, "scope_signals", scope_signals)
        _set_field(self, "no_core_dumps", no_core_dumps)


class Ack(Message):
    """Daemon: your listener is being served; go ahead and exec."""

    __slots__ = ("program",)
    TYPE = "ack"
    DIRECTION = Direction.REPLY
    program: str

    def __init__(self, program: str) -> None:
        _set_field(self, "program", program)


class ErrorReply(Message):
    """Daemon: refused. ``code`` is stable (for programs), ``message`` for people."""

    __slots__ = ("code", "message")
    TYPE = "error"
    DIRECTION = Direction.REPLY
    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        _set_field(self, "code", code)
        _set_field(self, "message", message)


class StatusReply(Message):
    """Daemon: the status report, a JSON object described in ``server.py``."""

    __slots__ = ("report",)
    TYPE = "status"
    DIRECTION = Direction.REPLY
    report: dict[str, Any]

    def __init__(self, report: dict[str, Any]) -> None:
        _set_field(self, "report", report)


class Reloaded(Message):
    """Daemon: the new config is in force for new programs."""

    __slots__ = ("profiles",)
    TYPE = "reloaded"
    DIRECTION = Direction.REPLY
    profiles: tuple[str, ...]

    def __init__(self, profiles: tuple[str, ...]) -> None:
        _set_field(self, "profiles", profiles)


_MESSAGES: tuple[type[Message], ...] = (
    LaunchRequest,
    HandOver,
    Abort,
    StatusRequest,
    ReloadRequest,
    FilterReply,
    Ack,
    ErrorReply,
    StatusReply,
    Reloaded,
)
_BY_TYPE: dict[Direction, dict[str, type[Message]]] = {d: {} for d in Direction}
for _cls in _MESSAGES:
    _BY_TYPE[_cls.DIRECTION][_cls.TYPE] = _cls


# --- Field kinds: (to JSON, from JSON or raise ValueError, description) ------------


def _str_from(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError("a string")
    return v


def _int_from(v: object) -> int:
    # bool is an int to Python, not to JSON.
    if type(v) is not int:
        raise ValueError("an integer")
    return v


def _errno_from(v: object) -> int:
    # What a system call can fail with (1 to MAX_ERRNO, include/linux/err.h):
    # the daemon passes it to strerror(3), which takes a C int.
    if type(v) is not int or not 0 < v <= MAX_ERRNO:
        raise ValueError(f"an errno number, 1 to {MAX_ERRNO}")
    return v


def _bytes_to(v: object) -> str:
    assert isinstance(v, bytes)
    return base64.b64encode(v).decode("ascii")


def _bytes_from(v: object) -> bytes:
    if not isinstance(v, str):
        raise ValueError("a base64 string")
    try:
        return base64.b64decode(v.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("a base64 string") from None


def _object_from(v: object) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError("an object")
    return v


def _strings_to(v: object) -> list[str]:
    assert isinstance(v, tuple)
    return list(v)


def _strings_from(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError("an array of strings")
    return tuple(v)


def _optional_strings_to(v: object) -> list[str] | None:
    return None if v is None else _strings_to(v)


def _optional_strings_from(v: object) -> tuple[str, ...] | None:
    if v is None:
        return None
    try:
        return _strings_from(v)
    except ValueError:
        raise ValueError("null or an array of strings") from None


def _bool_from(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _same(v: object) -> object:
    return v


_KINDS: dict[str, tuple[Any, Any]] = {
    "str": (_same, _str_from),
    "int": (_same, _int_from),
    "Errno": (_same, _errno_from),
    "bytes": (_bytes_to, _bytes_from),
    "dict[str, Any]": (_same, _object_from),
    "tuple[str, ...]": (_strings_to, _strings_from),
    "tuple[str, ...] | None": (_optional_strings_to, _optional_strings_from),
    "bool": (_same, _bool_from),
}


def _fields(cls: type[Message]) -> list[tuple[str, Any, Any]]:
    return [(name, *_KINDS[cls.__annotations__[name]]) for name in cls.FIELDS]


_FIELDS: dict[type[Message], list[tuple[str, Any, Any]]] = {c: _fields(c) for c in _MESSAGES}


# --- Encoding --------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """One frame holding ``msg``. Raises ValueError if it exceeds :data:`MAX_FRAME`."""
    obj: dict[str, object] = {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    for name, to_json, _ in _FIELDS[type(msg)]:
        obj[name] = to_json(getattr(msg, name))
    payload = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if HEADER_SIZE + len(payload) > MAX_FRAME:
        raise ValueError(f"{msg.TYPE} message of {len(payload)} bytes exceeds the frame limit")
    return _HEADER.pack(len(payload)) + payload


# --- Decoding --------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ProtocolError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> object:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise ProtocolError(f"invalid JSON: {name} is not JSON")


def _decode_payload(payload: bytes, accept: Direction) -> Message:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"payload is not UTF-8 (byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"invalid JSON: {e.msg} at offset {e.pos}") from None
    except ValueError as e:
        # An integer of more than sys.get_int_max_str_digits() digits.
        raise ProtocolError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("invalid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    return _from_object(obj, accept)


def _from_object(obj: Mapping[str, Any], accept: Direction) -> Message:
    # The version first: under another version every other field may differ.
    version = obj.get("v")
    if type(version) is not int:
        raise ProtocolError("missing protocol version 'v'", "unsupported-version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version} (this unotifyd speaks {PROTOCOL_VERSION})",
            "unsupported-version",
        )
    kind = obj.get("type")
    table = _BY_TYPE[accept]
    if not isinstance(kind, str) or kind not in table:
        allowed = ", ".join(sorted(table))
        raise ProtocolError(f"unknown {accept.value} type {kind!r} (expected one of: {allowed})")
    cls = table[kind]
    specs = _FIELDS[cls]
    names = {name for name, _, _ in specs}
    for key in obj:
        if key not in names and key not in ("v", "type"):
            raise ProtocolError(f"{kind}: unknown field {key!r}")
    values: dict[str, object] = {}
    for name, _, from_json in specs:
        if name not in obj:
            raise ProtocolError(f"{kind}: missing field {name!r}")
        try:
            values[name] = from_json(obj[name])
        except ValueError as e:
            raise ProtocolError(f"{kind}: field {name!r} must be {e}") from None
    return cls(**values)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, take messages with :meth:`next_message`.

    After a :class:`ProtocolError` the decoder stays broken (every later
    call raises the same error): once framing is lost, nothing that follows
    can be trusted.
    """

    def __init__(self, accept: Direction, max_frame: int = MAX_FRAME) -> None:
        if max_frame < HEADER_SIZE:
            raise ValueError("max_frame too small to hold a header")
        self.accept = accept
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned message."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed.

        Raises :class:`ProtocolError` as soon as the header announces an
        oversized frame, without waiting for its payload.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as e:
            self._error = e
            self._buf.clear()
            raise

    def _next(self) -> Message | None:
        if len(self._buf) < HEADER_SIZE:
            return None
        (length,) = _HEADER.unpack_from(self._buf)
        if HEADER_SIZE + length > self.max_frame:
            raise ProtocolError(
                f"frame of {HEADER_SIZE + length} bytes exceeds the limit of "
                f"{self.max_frame}",
                "too-large",
            )
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        return _decode_payload(payload, self.accept)


def decode_record(record: bytes, accept: Direction, max_frame: int = MAX_FRAME) -> Message:
    """Decode one ``SOCK_SEQPACKET`` record, which must hold exactly one frame.

    Raises :class:`ProtocolError` for an empty, truncated or oversized record,
    bytes after the frame, or an invalid message.
    """
    if not record:
        raise ProtocolError("empty message")
    if len(record) < HEADER_SIZE:
        raise ProtocolError(f"truncated frame: {len(record)} bytes, no complete header")
    (length,) = _HEADER.unpack_from(record)
    if HEADER_SIZE + length > max_frame:
        raise ProtocolError(
            f"frame of {HEADER_SIZE + length} bytes exceeds the limit of {max_frame}",
            "too-large",
        )
    held = len(record) - HEADER_SIZE
    # Framing before content: a record that is cut short or carries extra
    # bytes is refused whatever its JSON says.
    if held < length:
        raise ProtocolError(
            f"truncated frame: header announces {length} bytes of payload, "
            f"the message holds {held}"
        )
    if held > length:
        raise ProtocolError(f"{held - length} bytes after the frame")
    return _decode_payload(record[HEADER_SIZE:], accept)
