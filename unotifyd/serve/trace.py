"""The trace/audit stream: one event per intercepted call.

Two sinks share one event type: a strace-like text line for people
(``--trace``) and a JSON object per line for tools (``--trace-json``).
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import queue
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

from .. import record as records
from ..calls.decode import OpenCall, PathCall
from ..calls.registry import BY_NAME
from ..kernel.abi import ERESTARTSYS
from ..policy import Continue, EmulateOpen, Fail, Listing, RefuseWrite, Return, Rewrite
from ..policy.paths import MapPath, PerformPath

if TYPE_CHECKING:
    from .served import InFlight, Stats

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
    # The kernel's O_LARGEFILE on x86_64 (asm-generic/fcntl.h): Python's
    # os.O_LARGEFILE is 0 on 64-bit builds, which would never print it.
    (0o100000, "O_LARGEFILE"),
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
    if err == ERESTARTSYS:
        return "ERESTARTSYS"  # interrupted: EINTR, or restarted (serve/trioserve.py)
    return errno_mod.errorcode.get(err, str(err))


@records.record(slots=True)
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

    def to_json(self, when: float | None = None) -> dict[str, object]:
        """The JSON object; ``when`` is the time it happened (default: now)."""
        failed = self.result is not None and self.result < 0
        return {
            "time": round(time.time() if when is None else when, 6),
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
            why = "interrupted" if -self.result == ERESTARTSYS else os.strerror(-self.result)
            outcome = f" = -1 {errno_name(-self.result)} ({why})"
        else:
            outcome = f" = {self.result}"
        why = f"  [{self.reason}]" if self.reason else ""
        who = f"{self.program} {self.pid}" if self.program else str(self.pid)
        return f"unotifyd[{who}] {call} -> {where}: {what}{outcome}{why}"


class Tracer:
    """Writes trace events to zero or more sinks. Owns neither stream.

    Writing never holds up serving: events go to a bounded queue that a
    writer thread of ours drains into the sinks. A sink that stops taking
    data (a full pipe nobody reads, a stopped terminal) then stalls only
    that thread; once :data:`MAX_QUEUED` events wait, further ones are
    dropped and counted, and the count is written once the sink moves
    again. Events from every serving thread (the daemon's lanes) reach the
    sinks whole and in the order they were emitted.
    """

    MAX_QUEUED = 10_000

    def __init__(self, text: IO[str] | None = None, jsonl: IO[str] | None = None) -> None:
        self.text = text
        self.jsonl = jsonl
        self.dropped = 0
        self._queue: queue.Queue[tuple[TraceEvent | str, float] | None] = queue.Queue(
            self.MAX_QUEUED
        )
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.text is not None or self.jsonl is not None

    def emit(self, event: TraceEvent) -> None:
        self._put(event)

    def note(self, message: str) -> None:
        """A line about the supervisor itself (mode, rules), text sink only."""
        if self.text is not None:
            self._put(message)

    def warn(self, message: str) -> None:
        """A line the user must see, traced or not: to the text trace, else our stderr."""
        if self.text is not None:
            self._put(message)
        else:
            print(f"unotifyd: {message}", file=sys.stderr, flush=True)

    def _put(self, item: TraceEvent | str) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            with self._start:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="unotifyd trace", daemon=True
                    )
                    self._writer.start()
        try:
            self._queue.put_nowait((item, time.time()))
        except queue.Full:
            self.dropped += 1  # a race between threads may miscount by one: a report

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event emitted so far is written; False if the sink is stuck."""
        if self._writer is None:
            return True
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` for a stuck sink), then stop."""
        if self._writer is None:
            return
        if self.flush(timeout):
            self._queue.put(None)
            self._writer.join(timeout)
            self._writer = None  # the next event starts a writer again
        else:
            print("unotifyd: the trace sink is stuck; the rest of the trace is lost",
                  file=sys.stderr)

    def _write(self) -> None:
        reported = 0
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.dropped != reported:
                    lost, reported = self.dropped - reported, self.dropped
                    why = f"unotifyd: {lost} trace events dropped: the trace sink was stuck"
                    # Said where it is seen: the text trace, else our stderr.
                    if self.text is not None:
                        self._line(why)
                    else:
                        print(why, file=sys.stderr)
                entry, when = item
                if isinstance(entry, str):
                    self._line(f"unotifyd: {entry}")
                    continue
                if self.text is not None:
                    self.text.write(entry.to_text() + "\n")
                    self.text.flush()
                if self.jsonl is not None:
                    self.jsonl.write(json.dumps(entry.to_json(when)) + "\n")
                    self.jsonl.flush()
            except (OSError, ValueError):
                pass  # A sink closed or broken: the trace is lost, serving goes on.
            finally:
                self._queue.task_done()

    def _line(self, text: str) -> None:
        if self.text is not None:
            self.text.write(text + "\n")
            self.text.flush()


# --- recording a served call -----------------------------------------------------------


def record(
    tracer: Tracer,
    counters: tuple[Stats, Stats | None],
    program: str,
    p: InFlight,
    *,
    outcome: str | None,
    result: int | None,
) -> None:
    """Count the decision ``p`` came to in each of ``counters``, and trace it.

    ``outcome`` is "gone" or "internal-error" for a call that had no
    decision carried out; ``result`` what the program got.
    """
    d = p.decision
    kind = outcome or _decision_kind(d)
    if kind == "emulate" and isinstance(d, EmulateOpen) and d.path != p.resolved:
        kind = "redirect"
    for stats in counters:
        if stats is not None:
            stats.decisions[kind] += 1
    if tracer.enabled:
        tracer.emit(_event(program, p, kind, result))


def _event(program: str, p: InFlight, kind: str, result: int | None) -> TraceEvent:
    call, d = p.call, p.decision
    if isinstance(call, PathCall):
        names = ", ".join(json.dumps(os.fsdecode(a.path)) for a in call.paths)
        return TraceEvent(
            program=program,
            pid=p.notif.pid,
            syscall=call.syscall,
            path=os.fsdecode(call.paths[0].path) if call.paths else "",
            dirfd=None,
            flags=0,
            resolved=p.resolved,
            decision=kind,
            reason=_reason(d),
            target=_target(d),
            result=result,
            detail=names,
        )
    return TraceEvent(
        program=program,
        pid=p.notif.pid,
        syscall=call.syscall if call else (p.syscall.name if p.syscall else str(p.notif.nr)),
        path=os.fsdecode(call.path) if call else "",
        dirfd=call.dirfd if call and _has_dirfd(call) else None,
        flags=call.flags if call else 0,
        resolved=p.resolved,
        decision=kind,
        reason=getattr(d, "reason", "") if d is not None else "",
        target=d.path if isinstance(d, EmulateOpen) else None,
        result=result,
        # Answered before its arguments were read (a send on no socket):
        # strace's "..." rather than an empty path and made-up flags.
        detail=None if call else "...",
    )


def _has_dirfd(call: OpenCall) -> bool:
    """Whether the program gave a dirfd (``openat``): ``open`` gets one in its ``*at`` form only."""
    return BY_NAME[call.syscall].at_form is None


def _target(d: object) -> str | None:
    if isinstance(d, PerformPath):
        maps = [t for t in d.targets if isinstance(t, MapPath) and not t.in_program_root]
        return maps[0].path if maps else None
    if isinstance(d, Rewrite):
        return d.path
    return None


def _reason(d: object) -> str:
    if isinstance(d, PerformPath):
        if d.refuse is not None:
            return d.refuse.reason
        return next((t.reason for t in d.targets if isinstance(t, MapPath) and t.reason), "")
    reason = getattr(d, "reason", "")
    return reason if isinstance(reason, str) else ""


_KINDS: dict[type, str] = {
    Listing: "filter",
    Continue: "continue",
    Fail: "fail",
    Return: "return",
    EmulateOpen: "emulate",
    RefuseWrite: "refuse-write",
}


def _decision_kind(d: object) -> str:
    if isinstance(d, PerformPath):
        if d.refuse is not None:
            return "refuse-write"
        mapped = any(isinstance(t, MapPath) and not t.in_program_root for t in d.targets)
        return "redirect" if mapped else "emulate"
    if isinstance(d, Rewrite):
        return "continue" if d.path is None else "redirect"
    return _KINDS.get(type(d), "none")
