"""When a listener gets the compiled pass-through lane, and what it is told.

The lane (``kernel/passthrough.c``) answers CONTINUE, without Python, for
the reads of a path no rule can concern, and forwards everything else to
the serving loop, which answers it as if it had received it. It runs only
where Python's own answer to those calls would be CONTINUE decided on a
lookup of ours (``Decider._quick_open``, ``_quick_path_call``):

- virtualizing mode: enforcing mode never lets the kernel re-read a path;
- no private tree: a link inside one leads where only Python follows;
- no trace: every traced call must be seen, so tracing turns the lane off;
- credentials that let a lookup of ours stand for the program's: we hold
  no capability (our programs cannot be stronger than us), or we hold
  every capability that overrides file permissions in the initial user
  namespace, so that our supplementary groups never count and the lane
  need only compare ids, capabilities and user namespace, call by call
  (see ``CredentialReader.read``, whose quick path is the same).

"Watched" are the paths the rules name, as written and as resolved in our
root (the policy Python matches against, :meth:`Decider.policy_in_our_root`):
a call whose path resolves to one of them or below goes to Python.
"""

from __future__ import annotations

from ..calls.registry import BY_NAME, BY_NR
from ..kernel import passthrough
from ..kernel.creds import supervisor_credentials
from ..policy import Policy
from ..policy.rules import Exec, Private, rule_pattern
from .served import Served, Stats

#: The numbers of the calls the lane may answer (the others it only forwards).
_SHAPED_NRS = tuple(BY_NAME[name].nr for name in passthrough.SHAPES)


def _watched(policies: tuple[Policy, ...]) -> list[str] | None:
    """The paths of every rule that can concern a read, or None if one is the root."""
    out: set[str] = set()
    for policy in policies:
        for rule in policy.rules:
            if isinstance(rule, Exec):
                continue  # Exec rules are about execve alone, which the lane never passes.
            path = rule_pattern(rule).path
            if path == "/":
                return None
            out.add(path)
    return sorted(out)


def open_lane(s: Served, in_our_root: Policy, tracing: bool) -> passthrough.Lane | None:
    """A lane for ``s`` (not started), or None where Python must serve every call."""
    lib = passthrough.library()
    policy = s.policy
    if lib is None or tracing or policy.mode != "virtualize":
        return None
    if any(isinstance(r, Private) for r in policy.rules):
        return None
    ours = supervisor_credentials()
    if ours.cap_eff != 0 and not ours.groups_never_count:
        return None
    if ours.userns is None:
        return None
    watched = _watched((policy, in_our_root))
    if watched is None:
        return None
    shapes = list(zip(_SHAPED_NRS, passthrough.SHAPES.values(), strict=True))
    cfg = passthrough.config(
        shapes,
        watched,
        check_creds=ours.cap_eff != 0,
        ids=ours.ids,
        cap_eff=ours.cap_eff,
        userns=ours.userns,
    )
    return passthrough.Lane(lib, s.listener.fileno(), cfg)


def count(lane: passthrough.Lane, counters: tuple[Stats, Stats | None]) -> None:
    """Add what ``lane`` answered by itself since the last count to ``counters``.

    Read while it runs too (a daemon's status): each counter is an aligned
    64-bit word that only the lane's thread writes, so a read sees it
    whole, if a little late.
    """
    cfg, seen = lane.config, lane.counted
    for nr in _SHAPED_NRS:
        n = cfg.continued[nr] - seen.get(nr, 0)
        if not n:
            continue
        seen[nr] = cfg.continued[nr]
        name = BY_NR[nr].name
        for stats in counters:
            if stats is not None:
                stats.notifications += n
                stats.passed_through += n
                stats.syscalls[name] += n
                stats.decisions["continue"] += n
    gone = cfg.gone - seen.get(-1, 0)
    if gone:
        seen[-1] = cfg.gone
        for stats in counters:
            if stats is not None:
                stats.gone += gone
