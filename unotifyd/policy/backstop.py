"""What the kernel itself (Landlock) keeps of a policy, under the supervisor's rules.

A pure function of the policy; :mod:`unotifyd.kernel.landlock` builds the
ruleset from it where the program starts (see there for why exec needs it).

- **The exec allow-list**: once a policy has exec rules, the kernel allows
  an exec only of a file beneath one of their paths (and of the dynamic
  loaders those binaries name). Both patterns map exactly: ``/p`` is the
  file at ``/p``, ``/t/**`` everything beneath ``/t``. Landlock matches
  files, not names, so it holds whatever name, fd or race the program uses.
- **Signals, in enforcing mode**: the program may not signal processes
  outside the sandbox (``LANDLOCK_SCOPE_SIGNAL``), the supervisor included.
  A Landlock domain also keeps it from ``ptrace``-ing (so from reading or
  writing the memory of) any process outside, whatever its uid
  (Documentation/userspace-api/landlock.rst, "Ptrace restrictions").

Deny, read-only, private and redirect rules have no backstop: a Landlock
ruleset can only grant accesses beneath files, never take them away from
a subtree, so "everything but this tree" cannot be written down.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import Exec, Policy


@dataclass(frozen=True, slots=True)
class Backstop:
    """The parts of a policy the kernel enforces (see the module doc)."""

    #: Exec is allowed beneath these paths only; None: exec is not restricted.
    exec_allowed: tuple[str, ...] | None
    #: No signals to processes outside the sandbox.
    scope_signals: bool

    def __bool__(self) -> bool:
        return self.exec_allowed is not None or self.scope_signals


def backstop(policy: Policy) -> Backstop:
    paths = tuple(sorted({r.pattern.path for r in policy.rules if isinstance(r, Exec)}))
    return Backstop(paths if policy.has_exec_rules else None, policy.mode == "enforce")
