"""What the kernel itself (Landlock) keeps of a policy, under the supervisor's rules.

A pure function of the policy; :mod:`unotifyd.kernel.landlock` builds the
ruleset from it where the program starts (see there for why exec needs it).

- **The exec allow-list**: once a policy has exec rules, the kernel allows
  an exec only of a file beneath a tree rule's path, or the file an exact
  rule names (and the dynamic loaders). Landlock matches files, not names,
  so it holds whatever name, fd or race the program uses. An exec through a
  redirect runs the target, so the targets of redirects whose sources exec
  rules allow are granted too.
- **Signals, in enforcing mode**: the program may not signal processes
  outside the sandbox (``LANDLOCK_SCOPE_SIGNAL``), the supervisor included.
  A Landlock domain also keeps it from ``ptrace``-ing (so from reading or
  writing the memory of) any process outside, whatever its uid
  (Documentation/userspace-api/landlock.rst, "Ptrace restrictions").
- **No core dump files, in enforcing mode**: not Landlock, but kept by the
  kernel all the same, a hard ``RLIMIT_CORE`` of 0 set where the program
  starts (:mod:`unotifyd.kernel.coredump`).

The ruleset can only *grant* accesses beneath files: deny, read-only,
private and redirect rules take away from a tree, which it cannot write
down, so they have no backstop. And where the rules would have it grant
what it cannot name, there is no exec backstop at all (with a line at
start) rather than a wrong one: an exec rule over a private tree, whose
files live in a scratch directory made when the sandbox starts.
"""

from __future__ import annotations

from ..record import record
from .rules import Exec, Pattern, Policy, Private, Redirect


@record(frozen=True, slots=True)
class Backstop:
    """The parts of a policy the kernel enforces (see the module doc)."""

    #: Exec is allowed only for these patterns (``/t/**`` or ``/exact``);
    #: None: exec is not restricted by the kernel.
    exec_allowed: tuple[str, ...] | None
    #: No signals to processes outside the sandbox.
    scope_signals: bool
    #: Why an exec allow-list the policy has is not backstopped ("": it is, or there is none).
    exec_unkept: str = ""
    #: RLIMIT_CORE 0, soft and hard, before the program runs.
    no_core_dumps: bool = False

    def __bool__(self) -> bool:
        """Whether a Landlock ruleset is wanted (the core limit needs none)."""
        return self.exec_allowed is not None or self.scope_signals


def _within(pattern: Pattern, path: str) -> bool:
    """Whether ``path`` is ``pattern``'s path, or below it for a tree."""
    if path == pattern.path:
        return True
    return pattern.tree and (pattern.path == "/" or path.startswith(pattern.path + "/"))


def _redirected(exec_rule: Pattern, redirect: Redirect) -> Pattern | None:
    """What an exec through ``redirect`` runs, of what ``exec_rule`` allows; None: nothing."""
    source, target = redirect.source, redirect.target
    if _within(exec_rule, source.path):
        return target  # every source path is allowed: so is every target
    if source.tree and _within(source, exec_rule.path):
        if not target.tree:
            return target  # the whole source tree goes to one file
        return Pattern(target.join(exec_rule.path[len(source.path):] if source.path != "/"
                                   else exec_rule.path), exec_rule.tree)
    return None


def backstop(policy: Policy) -> Backstop:
    enforce = policy.mode == "enforce"
    execs = [r.pattern for r in policy.rules if isinstance(r, Exec)]
    if not execs:
        return Backstop(None, enforce, no_core_dumps=enforce)
    for rule in policy.rules:
        if isinstance(rule, Private) and any(
            _within(rule.pattern, e.path) or _within(e, rule.pattern.path) for e in execs
        ):
            return Backstop(None, enforce, f"the private tree {rule.pattern} holds exec rules' "
                            "files in a scratch directory made when the sandbox starts",
                            no_core_dumps=enforce)  # fmt: skip
    allowed = set(execs)
    for rule in policy.rules:
        if isinstance(rule, Redirect):
            allowed.update(t for e in execs if (t := _redirected(e, rule)) is not None)
    return Backstop(tuple(sorted(str(p) for p in allowed)), enforce, no_core_dumps=enforce)
