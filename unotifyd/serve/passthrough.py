"""When a listener gets the compiled pass-through lane, and what it is told.

The lane (``kernel/passthrough.c``) answers CONTINUE, without Python, for
the calls on paths no rule can concern (opens, reads, and the making,
removing and renaming of names), and forwards everything else to
the serving loop, which answers it as if it had received it. It runs only
where Python's own answer to those calls would be CONTINUE decided on a
lookup of ours (``Decider._quick_open``, ``_quick_path_call``):

- virtualizing mode; or enforcing mode, where the lane never lets the
  kernel re-read a path: it makes the stat family, readlink, access and
  the opens that only read itself, on the file it resolved, and mkdir,
  rmdir, unlink, rename and the opens with ``O_CREAT`` on the directory of
  the name, resolved so, with the program's umask (as ``perform_path``
  and ``perform_open`` make every call there),
  and hands every other call to Python; and only when we hold every
  capability that overrides file permissions (below), for a thread of our
  mount namespace;
- in virtualizing mode, the opens that only read of an exact redirect's
  source too (:func:`_redirects`), which it makes as Python does, only
  where our groups never count (acting as ourselves is then acting as the
  program);
- no private tree: a link inside one leads where only Python follows;
- no trace: every traced call must be seen, so tracing turns the lane off;
- credentials that let a lookup of ours stand for the program's: we hold
  no capability (our programs cannot be stronger than us), or we hold
  every capability that overrides file permissions in the initial user
  namespace, so that our supplementary groups never count and the lane
  need only compare ids, capabilities and user namespace, call by call
  (see ``CredentialReader.read``, whose quick path is the same).

"Watched" are the paths the rules name, as written and as resolved in our
root (the policy Python matches against, made at the first call and kept:
``Served.policies``): a call whose path resolves to one of them or below
goes to Python.

A lane starts after Python answered a few calls (:data:`START_AFTER`) and
ends after a second without one (:data:`IDLE_S`), so that idle programs
hold no thread; at most :data:`~unotifyd.kernel.passthrough.MAX_LANES` run
at once, and one that cannot start leaves Python to serve.
"""

from __future__ import annotations

from ..calls.registry import BY_NAME, BY_NR, MOVES_A_CWD, cwds_seen
from ..kernel import passthrough
from ..kernel.creds import supervisor_credentials
from ..policy import Policy
from ..policy.decision import SYSTEM_SETTINGS
from ..policy.rules import Exec, Private, Redirect, rule_pattern
from .decide import may_refuse_what_runs
from .served import Served, Stats

#: How many calls Python answers before a lane is started (again): a
#: program that makes few calls, or has gone quiet, holds no thread of ours.
START_AFTER = 16
#: After a run that let almost nothing through ("fruitless": the lane ends
#: itself after 1 024 calls of which under an eighth passed, PT_WINDOW in
#: passthrough.c), how many Python answers before the next try; doubled
#: after each such run in a row (at most 2**FRUITLESS_MAX times). A
#: program whose calls no lane can answer (a container's, whose root is
#: not ours) then pays the lane's extra hop on ever fewer of them, and one
#: that only went through such a phase (making directories, under
#: --enforce) gets the lane back.
AFTER_FRUITLESS = 1024
FRUITLESS_MAX = 10
#: How long a lane waits for a call before it ends (its thread and fds go).
IDLE_S = 1.0
#: The numbers of the calls the lane may answer (the others it only forwards).
_SHAPED_NRS = tuple(BY_NAME[name].nr for name in passthrough.SHAPES)
_MOVES_A_CWD_NRS = tuple(BY_NAME[name].nr for name in MOVES_A_CWD)


def lane_due(s: Served) -> bool:
    """Whether a lane should be tried for ``s`` now (see :data:`AFTER_FRUITLESS`)."""
    if s.lane_refused:
        return False
    if s.lane_fruitless == 0:
        # At least one call since the last try, whatever START_AFTER says: a
        # lane that cannot start yet (no policy known in our root before the
        # first call is decided) resets the count to 0, and a try due at 0
        # would be made again at once by the serving loop, forever.
        return s.python_served >= max(START_AFTER, 1)
    return s.python_served >= AFTER_FRUITLESS << min(s.lane_fruitless - 1, FRUITLESS_MAX)


def _watched(policies: tuple[Policy, ...]) -> list[str] | None:
    """The paths of every rule that can concern a read, or None if one is the root;
    in enforcing mode, the system's settings too (policy.decision's
    SYSTEM_SETTINGS) but for those under /proc, whose names the lane sends
    to Python anyway: each one watched is a compare per call in the lane."""
    out: set[str] = set()
    for policy in policies:
        if policy.mode == "enforce":
            out.update(tree for tree in SYSTEM_SETTINGS if not _in_proc(tree))
        for rule in policy.rules:
            if isinstance(rule, Exec):
                continue  # About execs that run, which the lane never lets run (open_lane).
            path = rule_pattern(rule).path
            if path == "/":
                return None
            out.add(path)
    return sorted(out)


def _in_proc(path: str) -> bool:
    return path == "/proc" or path.startswith("/proc/")


def _redirects(policy: Policy) -> list[tuple[str, str]]:
    """The (source, target) of each exact redirect of ``policy`` that decides
    its own source (no other rule takes that name first), neither in
    ``/proc``, whose names Python looks at (``supervisors_own``): the opens
    the lane may make itself (``redirect`` in kernel/passthrough.c)."""
    out = []
    for rule in policy.rules:
        if not isinstance(rule, Redirect) or rule.source.tree:
            continue
        source, target = rule.source.path, rule.target.path
        match = policy.match(source)
        if match is not None and match.rule is rule and not (_in_proc(source) or _in_proc(target)):
            out.append((source, target))
    return out


def open_lane(s: Served, tracing: bool, *, colocate: bool = True) -> passthrough.Lane | None:
    """A lane for ``s`` (not started), or None: not now, or never (then
    ``s.lane_refused`` says so).

    Not before Python has resolved the rule paths in our root, at a call of
    the program's (:meth:`Decider._policy_in` keeps them from then on), so
    that the lane leaves to Python what that policy matches, as it was
    made: the same paths lane or not, however the files change later.
    """
    in_our_root = s.policies.get(None)
    if in_our_root is None:
        s.lane_refused = not _may_run(s, tracing)
        return None
    lib = passthrough.library() if _may_run(s, tracing) else None
    watched = _watched((s.policy, in_our_root)) if lib is not None else None
    if lib is None or watched is None:
        s.lane_refused = True
        return None
    ours = supervisor_credentials()
    assert ours.userns is not None  # see _may_run
    emulate = s.policy.mode == "enforce"
    # With exec rules (an allow-list), every execve is Python's: the lane
    # answers only the execs of no file, which such a policy may refuse first.
    exec_rules = any(isinstance(rule, Exec) for rule in s.policy.rules)
    shapes = [
        (nr, shape)
        for nr, (name, shape) in zip(_SHAPED_NRS, passthrough.SHAPES.items(), strict=True)
        if (not emulate or name in passthrough.EMULATED)
        and not (name == "execve" and exec_rules)
    ]
    cfg = passthrough.config(
        shapes,
        watched,
        idle_s=IDLE_S,
        check_creds=ours.cap_eff != 0,
        ids=ours.ids,
        cap_eff=ours.cap_eff,
        cap_prm=ours.cap_prm,
        userns=ours.userns,
        emulate=emulate,
        root_pinned=s.root_pinned,
        namespaces_pinned=s.namespaces_pinned,
        # Opened by the lane as ourselves, which is as the program only where
        # our groups never count (see _may_run); Python's decisions are made
        # on the rules as resolved in our root, and so are the lane's.
        redirects=_redirects(in_our_root) if not emulate and ours.groups_never_count else (),
        colocate=colocate,
        # Each thread's cwd kept open between its calls where our filter
        # traps every call that moves one (see struct cwds in passthrough.c).
        moves_cwd=_MOVES_A_CWD_NRS if s.root_pinned and cwds_seen(s.policy) else (),
        unsettled=s.still_unsettled(),
        # Python lets such an exec through as it is (Decider: decide_path,
        # then decide_rewrite), looking at nothing else: no rule could
        # refuse its interpreter or loader (may_refuse_what_runs).
        exec_runs=not may_refuse_what_runs(s.policy),
    )
    s.lane_config = cfg
    return passthrough.Lane(lib, s.listener.fileno(), cfg)


def _may_run(s: Served, tracing: bool) -> bool:
    """Whether a lane may ever serve ``s`` (see the module doc)."""
    policy = s.policy
    if passthrough.library() is None or tracing:
        return False
    if any(isinstance(r, Private) for r in policy.rules):
        return False
    ours = supervisor_credentials()
    if policy.mode == "enforce":
        # Made as ourselves, a call must be one the program could make: a
        # thread of ours with fewer groups could not (our lookup would
        # succeed where its own fails), so we must be one whose groups
        # never count, and the lane serves only threads whose ids,
        # capabilities and namespaces are ours (CredentialReader.read: the
        # credentials Python would act with are then ours, groups aside).
        if not ours.groups_never_count:
            return False
    elif policy.mode != "virtualize" or (ours.cap_eff != 0 and not ours.groups_never_count):
        return False
    return ours.userns is not None


def count(lane: passthrough.Lane, counters: tuple[Stats, Stats | None]) -> None:
    """Add what ``lane`` answered by itself since the last count to ``counters``.

    Read while it runs too (a daemon's status): each counter is an aligned
    64-bit word that only the lane's threads write (atomically), so a read
    sees it whole, if a little late.
    """
    cfg, seen = lane.config, lane.counted
    decision = "emulate" if cfg.emulate else "continue"

    def since(key: int, now: int) -> int:
        """How much a counter (read once: the lane may add to it meanwhile) grew."""
        n = now - seen.get(key, 0)
        seen[key] = now
        return n

    live = [stats for stats in counters if stats is not None]
    # The redirects are among the calls of their shape (below): counted after
    # them in C (answer), read before them here, so that none is taken out
    # of its shape's count before it is in it.
    redirected = since(-3, cfg.redirected)
    # The execs of no file, answered ENOENT, not let through: a "fail".
    missing = since(-4, cfg.missing)
    for nr in _SHAPED_NRS:
        n = since(nr, cfg.continued[nr])
        if n:
            name = BY_NR[nr].name
            for stats in live:
                stats.notifications += n
                stats.passed_through += n
                stats.syscalls[name] += n
                stats.lane_syscalls[name] += n
                stats.decisions[decision] += n
    second, gone = since(-2, cfg.second), since(-1, cfg.gone)
    for stats in live:
        stats.lane_second += second
        stats.gone += gone
        if redirected:
            stats.decisions[decision] -= redirected
            stats.decisions["redirect"] += redirected
        if missing:
            stats.decisions[decision] -= missing
            stats.decisions["fail"] += missing
