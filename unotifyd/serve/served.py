"""What is being served: a listener with its policy and counters, and one call in flight."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..calls.decode import OpenCall, PathCall
from ..calls.ops import Outcome
from ..calls.registry import Syscall
from ..kernel.creds import Credentials
from ..kernel.listener import Listener, Notification
from ..policy import Decision, Listing, Policy, Rewrite
from ..policy.paths import PerformPath

if TYPE_CHECKING:
    import trio


@dataclass
class Stats:
    """Counters of one served program (or of the whole supervisor)."""

    notifications: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    syscalls: Counter[str] = field(default_factory=Counter)
    gone: int = 0
    internal_errors: int = 0


@dataclass(eq=False)
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
    # Calls waiting in worker threads, by notification id: the scope to
    # cancel once the call is abandoned (see supervisor._watch_abandoned).
    waiting: dict[int, trio.CancelScope] = field(default_factory=dict)
    watching: bool = False  # whether the task that watches them runs


#: Every decision the serving layer answers.
AnyDecision = Decision | Rewrite | Listing | PerformPath


@dataclass
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

    @property
    def path_call(self) -> PathCall:
        assert isinstance(self.call, PathCall)
        return self.call
