"""The OCI runtime's message to a seccomp agent, and the profile it asks for.

Pure: no I/O, no trio. When a container's seccomp profile sets
``linux.seccomp.listenerPath`` (OCI runtime spec, config-linux.md), the
runtime connects to that unix socket (``SOCK_STREAM``) and writes one JSON
object, the *container process state*, with the listener fd(s) attached by
``SCM_RIGHTS``::

    {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 4242,
     "metadata": "profile=web",
     "state": {"ociVersion": "1.0.2-dev", "id": "web1", "status": "creating",
               "pid": 4242, "bundle": "/srv/web1", "annotations": {...}}}

runc writes it compact; crun pretty-prints it and ends it with a newline.
Neither closes the connection afterwards (it stays open until the container
exits), so the end of the message is where the top-level JSON object ends,
never EOF: :class:`StateReader` finds it by scanning the bytes as they come.

``fds`` names the passed fds in ``SCM_RIGHTS`` order; the listener is the
one called ``seccompFd``. ``metadata`` is the profile's opaque
``listenerMetadata`` string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..record import field, record

__all__ = [
    "MAX_STATE",
    "PROFILE_ANNOTATION",
    "SECCOMP_FD",
    "ContainerState",
    "ProfileChoice",
    "StateError",
    "StateReader",
    "choose_profile",
    "parse_state",
]

#: The largest state message accepted. Annotations make up most of it
#: (Kubernetes puts whole objects in some); 256 KiB leaves room for that
#: while bounding what one connection can make the daemon buffer.
MAX_STATE = 256 * 1024

#: The name of the listener in ``fds``.
SECCOMP_FD = "seccompFd"

#: The annotation that may name the profile when ``metadata`` does not
#: (``podman run --annotation unotifyd.profile=web``).
PROFILE_ANNOTATION = "unotifyd.profile"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # as profile names in the daemon config
_WHITESPACE = b" \t\r\n"


class StateError(ValueError):
    """The runtime's message is malformed, or names no usable profile."""


@record(frozen=True)
class ContainerState:
    """The fields of the state message that the agent uses."""

    oci_version: str
    fds: tuple[str, ...]
    pid: int
    metadata: str
    id: str
    status: str
    bundle: str
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def seccomp_fd_index(self) -> int:
        """Where the listener is among the passed fds (validated by :func:`parse_state`)."""
        return self.fds.index(SECCOMP_FD)


class StateReader:
    """Finds the end of the state message in the bytes of a stream.

    Feed it what ``recv`` returns; it answers the parsed state as soon as
    the top-level object is closed. The scan tracks only nesting, strings
    and escapes: ``"``, ``\\``, ``{`` and ``}`` are ASCII, and UTF-8 never
    uses ASCII bytes inside a multi-byte character, so scanning bytes is
    exact. The complete object is then handed to :mod:`json`, which judges
    everything else.
    """

    def __init__(self, limit: int = MAX_STATE) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._started = False
        self._state: ContainerState | None = None

    @property
    def done(self) -> bool:
        return self._state is not None

    def feed(self, data: bytes) -> ContainerState | None:
        """Add ``data``; the state once complete, else None. Raises :class:`StateError`.

        Whitespace after the object (crun's newline) is fine; anything else
        is not, since the runtime sends exactly one message.
        """
        if self._state is not None:
            if data.strip(_WHITESPACE):
                raise StateError("data after the state message")
            return self._state
        self._buf += data
        end = self._scan()
        if end is None:
            if len(self._buf) > self._limit:
                raise StateError(f"state message larger than {self._limit} bytes")
            return None
        if end > self._limit:
            raise StateError(f"state message larger than {self._limit} bytes")
        if self._buf[end:].strip(_WHITESPACE):
            raise StateError("data after the state message")
        self._state = parse_state(bytes(self._buf[:end]))
        self._buf.clear()
        return self._state

    def eof(self) -> None:
        """The peer closed the connection: raise unless the state was complete."""
        if self._state is None:
            raise StateError(
                f"the runtime closed the connection before a complete state "
                f"({len(self._buf)} bytes)"
            )

    def _scan(self) -> int | None:
        """The offset just past the top-level object, once it has been seen."""
        buf = self._buf
        for i in range(self._scanned, len(buf)):
            b = buf[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif b == 0x5C:  # backslash
                    self._escaped = True
                elif b == 0x22:  # quote
                    self._in_string = False
                continue
            if not self._started:
                if b in _WHITESPACE:
                    continue
                if b != 0x7B:  # {
                    raise StateError("the state message is not a JSON object")
                self._started = True
            if b == 0x22:
                self._in_string = True
            elif b in (0x7B, 0x5B):  # { [
                self._depth += 1
            elif b in (0x7D, 0x5D):  # } ]
                self._depth -= 1
                if self._depth == 0:
                    self._scanned = i + 1
                    return i + 1
        self._scanned = len(buf)
        return None


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str, *, required: bool = True) -> Any:
    if key not in obj:
        if required:
            raise StateError(f"{where}: missing {key!r}")
        return None
    value = obj[key]
    # bool is an int to Python, never a pid to the runtime.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StateError(f"{where}: {key!r} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def parse_state(data: bytes) -> ContainerState:
    """Parse one complete state message. Raises :class:`StateError`.

    Unknown fields are ignored: the spec may add some, and the runtime is
    the authority on its own message. Known fields must have their types.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"the state message is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise StateError("the state message is not a JSON object")
    oci_version = _get(doc, "ociVersion", str, "state message")
    fds = _get(doc, "fds", list, "state message")
    if not all(isinstance(name, str) for name in fds):
        raise StateError("state message: 'fds' must be a list of names")
    if fds.count(SECCOMP_FD) != 1:
        raise StateError(f"state message: 'fds' must name {SECCOMP_FD!r} once, not {fds!r}")
    pid = _get(doc, "pid", int, "state message")
    if pid <= 0:
        raise StateError(f"state message: bad pid {pid}")
    metadata = _get(doc, "metadata", str, "state message", required=False) or ""
    state = _get(doc, "state", dict, "state message")
    cid = _get(state, "id", str, "state")
    if not cid:
        raise StateError("state: empty container id")
    status = _get(state, "status", str, "state", required=False) or ""
    bundle = _get(state, "bundle", str, "state", required=False) or ""
    annotations = _get(state, "annotations", dict, "state", required=False) or {}
    if not all(isinstance(v, str) for v in annotations.values()):
        raise StateError("state: annotation values must be strings")
    return ContainerState(
        oci_version, tuple(fds), pid, metadata, cid, status, bundle, dict(annotations)
    )


@record(frozen=True)
class ProfileChoice:
    """The profile a container asked for, and where the name came from (for logs)."""

    name: str
    source: str  # "metadata", "annotation unotifyd.profile" or "default"


def _metadata_profile(metadata: str) -> str | None:
    """The profile ``listenerMetadata`` names: ``web`` or ``profile=web``; None if empty.

    Several ``key=value`` items may be separated by commas or spaces, but
    ``profile`` is the only key: an unknown key (``profle=web``) is an
    error rather than silently falling back to the default profile.
    """
    text = metadata.strip()
    if not text:
        return None
    if "=" not in text:
        if not _NAME.fullmatch(text):
            raise StateError(f"metadata: bad profile name {text!r}")
        return text
    found: str | None = None
    for item in re.split(r"[,\s]+", text):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise StateError(f"metadata: {item!r} is not key=value")
        if key != "profile":
            raise StateError(f"metadata: unknown key {key!r} (the only key is 'profile')")
        if found is not None:
            raise StateError("metadata: 'profile' given twice")
        if not _NAME.fullmatch(value):
            raise StateError(f"metadata: bad profile name {value!r}")
        found = value
    return found


def choose_profile(state: ContainerState, default: str | None) -> ProfileChoice:
    """Pick the profile: ``metadata`` first, then the annotation, then ``default``.

    ``metadata`` comes from the seccomp profile, which whoever set up the
    runtime wrote; annotations often come from whoever asked for the
    container. So metadata wins, and the annotation only chooses where
    metadata does not. Raises :class:`StateError` when nothing names a
    profile. Whether the name exists is the caller's question.
    """
    name = _metadata_profile(state.metadata)
    if name is not None:
        return ProfileChoice(name, "metadata")
    annotated = state.annotations.get(PROFILE_ANNOTATION)
    if annotated is not None:
        if not _NAME.fullmatch(annotated):
            raise StateError(f"annotation {PROFILE_ANNOTATION}: bad profile name {annotated!r}")
        return ProfileChoice(annotated, f"annotation {PROFILE_ANNOTATION}")
    if default is not None:
        return ProfileChoice(default, "default")
    raise StateError(
        "no profile: set listenerMetadata to profile=NAME, annotate the container with "
        f"{PROFILE_ANNOTATION}=NAME, or configure oci_default_profile"
    )
