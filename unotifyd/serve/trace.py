"""The trace/audit stream: one event per intercepted call.

Two sinks share one event type: a strace-like text line for people
(``--trace``) and a JSON object per line for tools (``--trace-json``).
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import time
from dataclasses import dataclass
from typing import IO

_OPEN_FLAG_NAMES = (
    (os.O_APPEND, "O_APPEND"),
    (os.O_CREAT, "O_CREAT"),
    (os.O_EXCL, "O_EXCL"),
    (os.O_TRUNC, "O_TRUNC"),
    (os.O_NOCTTY, "O_NOCTTY"),
    (os.O_NONBLOCK, "O_NONBLOCK"),
    (os.O_DSYNC, "O_DSYNC"),
    (os.O_DIRECT, "O_DIRECT"),
    (os.O_DIRECTORY, "O_DIRECTORY"),
    (os.O_NOFOLLOW, "O_NOFOLLOW"),
    (os.O_NOATIME, "O_NOATIME"),
    (os.O_CLOEXEC, "O_CLOEXEC"),
    (os.O_PATH, "O_PATH"),
    (os.O_SYNC & ~os.O_DSYNC, "__O_SYNC"),
    (os.O_TMPFILE & ~os.O_DIRECTORY, "__O_TMPFILE"),
    (os.O_LARGEFILE, "O_LARGEFILE"),
)
_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}


def format_open_flags(flags: int) -> str:
    """``O_RDONLY|O_CLOEXEC`` style, as strace prints them."""
    names = [_ACCMODE.get(flags & os.O_ACCMODE, str(flags & os.O_ACCMODE))]
    rest = flags & ~os.O_ACCMODE
    for bit, name in _OPEN_FLAG_NAMES:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:#o}")
    return "|".join(names)


def errno_name(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err))


@dataclass(slots=True)
class TraceEvent:
    """What happened to one trapped call.

    ``result`` is the call's return value as the program sees it (an fd
    number, or ``-errno``), or ``None`` when the kernel ran the call itself
    (CONTINUE) and we never see its result.
    """

    program: str
    pid: int
    syscall: str
    path: str
    dirfd: int | None
    flags: int
    resolved: str | None
    decision: str
    reason: str
    target: str | None = None
    result: int | None = None
    # The call's arguments as text, for calls other than opens (no flags).
    detail: str | None = None

    def to_json(self) -> dict[str, object]:
        failed = self.result is not None and self.result < 0
        return {
            "time": round(time.time(), 6),
            "program": self.program,
            "pid": self.pid,
            "syscall": self.syscall,
            "path": self.path,
            "dirfd": self.dirfd,
            "flags": format_open_flags(self.flags) if self.detail is None else None,
            "resolved": self.resolved,
            "decision": self.decision,
            "reason": self.reason,
            "target": self.target,
            "result": self.result,
            "errno": errno_name(-self.result) if failed and self.result else None,
        }

    def to_text(self) -> str:
        if self.detail is not None:
            args = [self.detail]
        else:
            args = [json.dumps(self.path)]
            if self.dirfd is not None:
                args.insert(0, "AT_FDCWD" if self.dirfd == -100 else str(self.dirfd))
            args.append(format_open_flags(self.flags))
        call = f"{self.syscall}({', '.join(args)})"
        where = self.resolved if self.resolved is not None else "?"
        what = self.decision
        if self.target is not None:
            what += f" to {self.target}"
        if self.result is None:
            outcome = ""
        elif self.result < 0:
            outcome = f" = -1 {errno_name(-self.result)} ({os.strerror(-self.result)})"
        else:
            outcome = f" = {self.result}"
        why = f"  [{self.reason}]" if self.reason else ""
        who = f"{self.program} {self.pid}" if self.program else str(self.pid)
        return f"unotifyd[{who}] {call} -> {where}: {what}{outcome}{why}"


class Tracer:
    """Writes trace events to zero or more sinks. Owns neither stream."""

    def __init__(self, text: IO[str] | None = None, jsonl: IO[str] | None = None) -> None:
        self.text = text
        self.jsonl = jsonl

    @property
    def enabled(self) -> bool:
        return self.text is not None or self.jsonl is not None

    def emit(self, event: TraceEvent) -> None:
        if self.text is not None:
            self.text.write(event.to_text() + "\n")
            self.text.flush()
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(event.to_json()) + "\n")
            self.jsonl.flush()

    def note(self, message: str) -> None:
        """A line about the supervisor itself (mode, rules), text sink only."""
        if self.text is not None:
            self.text.write(f"unotifyd: {message}\n")
            self.text.flush()
