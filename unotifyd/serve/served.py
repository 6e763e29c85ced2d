"""What is being served: a listener with its policy and counters, and one call in flight."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from ..calls.decode import OpenCall, PathCall
from ..calls.ops import Outcome
from ..calls.registry import Syscall, namespaces_seen
from ..kernel.creds import Credentials
from ..kernel.listener import Listener, Notification
from ..kernel.passthrough import UNSETTLED_MAX, Config
from ..policy import Decision, Listing, Policy, Rewrite
from ..policy.paths import PerformPath
from ..record import field, record

if TYPE_CHECKING:
    import trio

    from .handoff import WorkerResult


@record
class Stats:
    """Counters of one served program (or of the whole supervisor)."""

    notifications: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    syscalls: Counter[str] = field(default_factory=Counter)
    gone: int = 0
    internal_errors: int = 0
    #: Of the notifications, those the compiled lane answered (serve/passthrough.py):
    #: let through, or in enforcing mode made by it.
    passed_through: int = 0
    #: The same by system call.
    lane_syscalls: Counter[str] = field(default_factory=Counter)
    #: Of those, the ones its second thread answered (while the first held another).
    lane_second: int = 0


class Gate:
    """Lets the owner of a listener stop its serving from receiving, for a hand-over.

    Before a listener goes to another reader (a successor daemon, systemd's
    fd store), every notification *received* must be answered: a received
    notification is invisible to any other reader, and while a copy of the
    listener lives on it is never failed either, so the trapped thread
    would wait forever. Notifications not yet received stay queued in the
    kernel for the next reader. So :meth:`pause` stops receiving, and
    :attr:`in_flight` counts what was received and is not answered yet
    (an open in a worker thread, say). Used from other threads than the
    serving one (the daemon's control loop, lanes): under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owed: set[int] = set()
        self.paused = False
        self._on_pause: Callable[[], None] | None = None

    def pause(self) -> None:
        with self._lock:
            self.paused = True
            on_pause = self._on_pause
        if on_pause is not None:
            on_pause()

    def on_pause(self, callback: Callable[[], None] | None) -> None:
        """Have :meth:`pause` call ``callback`` (from its thread): a pass-through
        lane is stopped by it, for it receives calls of its own."""
        with self._lock:
            self._on_pause = callback

    def resume(self) -> None:
        self.paused = False

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._owed)

    def received(self, nid: int) -> None:
        with self._lock:
            self._owed.add(nid)

    def settled(self, nid: int) -> None:
        """Notification ``nid`` was answered, or is no longer pending."""
        with self._lock:
            self._owed.discard(nid)


@record(eq=False, slots=True)
class Waiting:
    """A call waiting in a worker thread, and how its wait may end early.

    ``scope`` is cancelled once the call is abandoned (its thread ``tid``
    was killed). An ``interruptible`` one (an open that may block) is
    ``interrupted`` once a signal would have ended the program's own wait:
    its worker, the last of ``handoffs``, is then kicked out of the open.
    """

    scope: trio.CancelScope
    tid: int
    interruptible: bool
    handoffs: list[WorkerResult]
    interrupted: bool = False


@record(eq=False)
class Served:
    """One listener being served: its policy, its name in traces, its counters."""

    listener: Listener
    policy: Policy
    name: str = ""
    stats: Stats | None = None  # besides the supervisor's own totals
    # The policy with its rule paths resolved, per root directory of the
    # programs (None: the supervisor's own).
    policies: dict[tuple[int, int] | None, Policy] = field(default_factory=dict)
    # Its share of the threads for opens that may block (made in trio).
    blocking: trio.CapacityLimiter | None = None
    # Calls waiting in worker threads, by notification id (see
    # trioserve._watch_waiting).
    waiting: dict[int, Waiting] = field(default_factory=dict)
    watching: bool = False  # whether the task that watches them runs
    gate: Gate = field(default_factory=Gate)
    # Whether the user was told that the program's memory is closed to us
    # (it made itself non-dumpable): once, not once per call.
    told_undumpable: bool = False
    # Whether every process of the listener has the root directory its
    # first trapped call finds: true of a filter of ours, which refuses or
    # traps every call that changes a root (chroot, pivot_root, setns: the
    # "root" family of policy/syscalls.py), until such a call is seen. Its
    # processes all descend from the one that installed the filter, and
    # inherit its root (clone(2) without CLONE_FS copies it). Not of a
    # filter made by others (a container runtime's): False. What it does
    # not see: a pivot_root made outside the sandbox, by a process with
    # CAP_SYS_ADMIN over its mount namespace (README, threat model). A
    # filter a program stacks on ours can only make such a call fail, not
    # let it through unseen: the kernel hands a call to the newest filter
    # that notifies, but refuses a filter with a listener while one of the
    # thread's filters has one (EBUSY, has_duplicate_listener() in
    # kernel/seccomp.c: a launch nested in ours cannot install its own).
    root_pinned: bool = False
    # Why every call the filter traps is refused (EACCES), or None: a
    # program the daemon took back from its predecessor whose profile is
    # gone from the config (daemon/handover.py). Its filter is the old
    # profile's; its calls on names are refused by the deny of every path it
    # is given too, but a call on an fd it holds is about that file, not a
    # name (decide_on_fd), and would go through: a fchmod on a file it opened
    # under a read-only profile, refused before, would then be made. With no
    # profile to say what it may do, it may do nothing we are asked about.
    refuse_all: str | None = None
    # The threads that made a call by which a cwd may move (chdir, execve...:
    # registry.MOVES_A_CWD), until Python decides another call of theirs:
    # such a call has taken effect only once the thread runs again after our
    # answer. A lane keeps each thread's cwd open only while none is
    # unsettled, and is given these (passthrough.config); tids whose thread
    # is gone are dropped then. A thread whose later calls the lane answered
    # stays here, and is settled again by its first call in the next lane.
    unsettled: set[int] = field(default_factory=set)
    # Whether the listener's filter has WAIT_KILLABLE_RECV, which only a
    # fatal signal interrupts once a call is received: known only of one
    # launch installed (5.19+); not of a daemon's client's, nor of a
    # container runtime's (runc and crun set no such flag). An injected fd
    # is given in two steps (ADDFD, then SEND) only then: elsewhere a signal
    # in between would leave the fd installed and the call interrupted, so
    # the thread is not moved onto our CPU for it (handoff._inject, the
    # lane's inject) and the fd goes with ADDFD|SEND, in one step.
    killable_wait: bool = False
    # Whether no thread of the listener can move to another user or mount
    # namespace unseen: our filter (root_pinned, as given), which refuses or
    # traps every call that could (registry.namespaces_seen); the lane then
    # compares a thread's namespaces with ours once, at its first call, not
    # at each (a procfs lookup, ~2 us: a sixth of what the lane adds to a
    # call). A trapped one unpins them, as a root call unpins roots, before
    # it is let through (Decider.decide); in enforcing mode they are
    # refused, and this holds for as long as the listener is served.
    namespaces_pinned: bool = field(init=False, default=False)
    root: tuple[int, int] | Literal["unknown"] | None = "unknown"
    # The compiled pass-through lane (serve/passthrough.py): whether it may
    # never serve this listener, and how many calls Python answered since
    # it last ran (it starts again after a few: an idle program holds no
    # thread of ours), and how many runs in a row let almost nothing
    # through (the next waits the longer: see passthrough.lane_due).
    lane_refused: bool = False
    lane_fruitless: int = 0
    # The configuration of the last lane made for it (see serve/passthrough.py):
    # a call that may change a root unpins it there too (Decider.decide).
    lane_config: Config | None = None
    python_served: int = 0

    def __post_init__(self) -> None:
        self.namespaces_pinned = self.root_pinned and namespaces_seen(self.policy)
        if self.refuse_all is not None:
            self.lane_refused = True  # the lane lets calls through: none may go

    def moved_cwd(self, tid: int) -> None:
        """Thread ``tid`` made a call that may move a cwd (see ``unsettled``).

        The set keeps no thread that is gone: those whose later calls a lane
        answered would otherwise pile up, one per exec of a busy shell.
        """
        self.unsettled.add(tid)
        if len(self.unsettled) > UNSETTLED_MAX:  # more than a lane is told
            self.still_unsettled()

    def still_unsettled(self) -> set[int]:
        """``unsettled`` without the threads that are gone (their call took
        effect, or never will); a thread of its number made since is kept,
        which at worst keeps no cwd until it makes a call."""
        self.unsettled = {t for t in self.unsettled if t <= 0 or os.path.exists(f"/proc/{t}")}
        return self.unsettled


#: Every decision the serving layer answers.
AnyDecision = Decision | Rewrite | Listing | PerformPath


@record
class InFlight:
    """One call from its receipt to its answer: what was read, decided and done.

    Filled in as the call is served; read by the trace once it is answered.
    """

    notif: Notification
    syscall: Syscall | None = None
    call: OpenCall | PathCall | None = None
    resolved: str | None = None
    decision: AnyDecision | None = None
    own_root: bool = False  # the program has a root directory of its own (a container)
    policy: Policy | None = None  # the policy it was decided by (rule paths in its root)
    # The calling thread's credentials, read once: every lookup and act made
    # for it uses them (kernel/creds.py).
    creds: Credentials | None = None
    outcome: Outcome | None = None  # a path call's, once performed
    # A path of it went through a tree that exists only in the program's
    # view ("tree/../x", with tree missing on disk): ours to perform, since
    # the kernel's own lookup would find nothing there (see decide.py,
    # _in_a_virtual_tree).
    through_view: bool = False

    @property
    def path_call(self) -> PathCall:
        assert isinstance(self.call, PathCall)
        return self.call
