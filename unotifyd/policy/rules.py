"""Rules about paths, and the matching that picks the rule for one path.

Patterns
--------
A pattern is an absolute path, normalized lexically when it is parsed: ``//``
collapses, ``.`` disappears and ``..`` removes the previous component (``..`` at
the root stays at the root). Normalization is purely textual: ``/link/..`` becomes
``/`` even if ``link`` is a symbolic link. Two forms exist:

* ``/etc/passwd`` -- an *exact* pattern: that path and nothing else;
* ``/srv/data/**`` -- a *tree*: the directory itself and everything below it.

Only ``**`` as the whole last component is special. Any other ``*`` or ``?`` is
rejected rather than taken literally, so that a later version can give globs a
meaning without silently changing what an existing policy does.

Matching
--------
:meth:`Policy.match` takes a path that is absolute and already normalized (the
kernel layer resolves it, so it has no ``.``, ``..``, ``//``, trailing ``/`` or
symbolic link left) and returns the *most specific* rule that covers it:

1. an exact rule on the path itself wins over everything;
2. otherwise the tree rooted deepest above (or at) the path wins: ``/a/b/**``
   beats ``/a/**`` for ``/a/b/c``, and ``/a/**`` covers ``/a`` itself.

A path no rule covers gets ``None``. Because the kernel resolves symbolic links
before we see a path, rules only ever see canonical paths: a rule on a symlink
never matches unless the policy is passed through :meth:`Policy.canonicalized`,
and a tree does not follow symlinks that lead out of it.

Matching runs once per trapped ``open``, so it is one dict lookup for the exact
rules plus one per directory level for the trees: O(depth), no regexes.

Within one policy a pattern may carry only one rule, whatever its kind: two
rules for the same pattern would make the outcome depend on their order.
"""

from __future__ import annotations

import errno as errno_module
from collections.abc import Callable, Iterable

from ..record import field, record, replace

__all__ = [
    "MODES",
    "OPEN_SYSCALLS",
    "VIEWS",
    "Content",
    "Deny",
    "DuplicateRuleError",
    "Exec",
    "Match",
    "Pattern",
    "Policy",
    "Private",
    "ReadOnly",
    "Redirect",
    "Rule",
    "errno_name",
    "find_duplicate",
    "normalize_path",
    "parse_deny",
    "parse_errno",
    "parse_pattern",
    "parse_readonly",
    "parse_redirect",
    "rule_pattern",
]

#: The system calls through which a program opens a path. The filter traps all
#: of them as soon as there is a rule, since a rule that covers only ``open``
#: is bypassed by any libc that calls ``openat``.
OPEN_SYSCALLS: frozenset[str] = frozenset({"open", "openat", "openat2", "creat"})

#: Valid values of :attr:`Policy.mode`. "virtualize" lets the kernel run the
#: calls no rule covers (CONTINUE), which re-reads the program's memory and so
#: is no security boundary; "enforce" performs every trapped call in the
#: supervisor on the path it read once.
MODES: frozenset[str] = frozenset({"virtualize", "enforce"})

#: Valid values of :attr:`Policy.view`. "full": every path call follows the
#: rules (stat, rename, exec... agree with open). "opens": only the open
#: family does, and the filter traps nothing else: the rest of the program's
#: calls see the real file system, at no cost. For programs that stat a lot
#: (``git status``: 7x faster) and need no consistent view.
VIEWS: frozenset[str] = frozenset({"full", "opens"})

_TREE_SUFFIX = "/**"


def normalize_path(text: str) -> str:
    """Return the absolute path ``text`` normalized lexically.

    Raises :class:`ValueError` (with a message for humans) if ``text`` is empty,
    relative or contains a NUL byte.
    """
    if not text:
        raise ValueError("path is empty")
    if "\0" in text:
        raise ValueError(f"path {text!r} contains a NUL byte")
    if not text.startswith("/"):
        raise ValueError(f"path {text!r} is not absolute (it must start with '/')")
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            # The kernel also resolves ".." at the root to the root itself.
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


@record(frozen=True, slots=True)
class Pattern:
    """An absolute, normalized ``path``; ``tree`` adds everything below it."""

    path: str
    tree: bool = False

    def __str__(self) -> str:
        if not self.tree:
            return self.path
        return _TREE_SUFFIX if self.path == "/" else self.path + _TREE_SUFFIX

    def join(self, suffix: str) -> str:
        """Return the path that ``suffix`` (from :class:`Match`) names below this pattern."""
        if not suffix:
            return self.path
        # Only the root ends in "/"; every other root plus "/x" is already right.
        return suffix if self.path == "/" else self.path + suffix


def parse_pattern(text: str) -> Pattern:
    """Parse ``/exact/path`` or ``/tree/**``.

    Raises :class:`ValueError` with a message for humans.
    """
    tree = text.endswith(_TREE_SUFFIX)
    base = (text[: -len(_TREE_SUFFIX)] or "/") if tree else text
    # A relative glob is reported as relative by normalize_path: that is the
    # more useful of the two complaints.
    if base.startswith("/") and ("*" in base or "?" in base):
        raise ValueError(
            f"pattern {text!r}: globs other than a trailing '/**' are not supported yet"
        )
    return Pattern(normalize_path(base), tree)


def parse_errno(name: str) -> int:
    """Return the number of the errno called ``name`` (such as ``"ENOENT"``).

    Raises :class:`ValueError` if Python does not know an errno of that name.
    """
    value = getattr(errno_module, name, None) if name.startswith("E") else None
    # isinstance first: errno also exports non-errno names (errorcode itself).
    if isinstance(value, int) and value in errno_module.errorcode:
        return value
    known = sorted(set(errno_module.errorcode.values()))
    if name.upper() in known:
        close = [name.upper()]  # only the case is wrong
    else:
        import difflib  # noqa: PLC0415 - for a mistake's hint only, not every launch

        close = difflib.get_close_matches(name.upper(), known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown errno name {name!r} ({hint}it must be a name of errno(3), such as "
        "EACCES, ENOENT, EPERM or EROFS)"
    )


def errno_name(number: int) -> str:
    """Return the symbolic name of errno ``number``, or the number if it has none."""
    return errno_module.errorcode.get(number, str(number))


def _describe(text: str, origin: str | None) -> str:
    return f"{text} ({origin})" if origin else text


@record(frozen=True, slots=True)
class Redirect:
    """Opening ``source`` opens ``target`` instead.

    An exact source needs an exact target. A tree source onto a tree target maps
    the tree like a bind mount (``/a/x`` -> ``/b/x``); a tree source onto an
    exact target sends the whole tree to that one file. ``origin`` says where the
    rule was written (``"file.toml:7"``, ``"--redirect"``) and takes no part in
    equality.
    """

    source: Pattern
    target: Pattern
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.target.tree and not self.source.tree:
            raise ValueError(
                f"cannot redirect the single path {self.source} onto the tree {self.target}; "
                f"write {self.source.path}/**={self.target} to map a tree onto a tree"
            )

    def __str__(self) -> str:
        return _describe(f"redirect {self.source} -> {self.target}", self.origin)


@record(frozen=True, slots=True)
class Deny:
    """Opening a path ``pattern`` covers fails with ``errno``."""

    pattern: Pattern
    errno: int = errno_module.EACCES
    origin: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return _describe(f"deny {self.pattern} with {errno_name(self.errno)}", self.origin)


def hides(rule: object) -> bool:
    """True for a rule that makes its path look absent: a deny with ``ENOENT``."""
    return isinstance(rule, Deny) and rule.errno == errno_module.ENOENT


@record(frozen=True, slots=True)
class ReadOnly:
    """Paths ``pattern`` covers may be read but not written (``EROFS``)."""

    pattern: Pattern
    origin: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return _describe(f"readonly {self.pattern}", self.origin)


@record(frozen=True, slots=True)
class Content:
    """The file at ``pattern`` has contents ``data``, given by the policy.

    The supervisor serves them from a sealed memfd (one per sandbox), read
    only: the path behaves as a read-only file of ``len(data)`` bytes
    whatever is (or is not) on the disk there. ``backing`` is the
    supervisor's name for that memfd, set when a sandbox starts
    (:meth:`Policy.bound`); it takes no part in equality.
    """

    pattern: Pattern
    data: bytes
    origin: str | None = field(default=None, compare=False)
    backing: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.pattern.tree:
            raise ValueError(f"content is given for one file, not a tree: {self.pattern}")

    def __str__(self) -> str:
        return _describe(f"content {self.pattern} ({len(self.data)} bytes)", self.origin)


@record(frozen=True, slots=True)
class Private:
    """The tree ``pattern`` is private to each sandbox, like a tmpfs mounted there.

    It starts empty, and whatever a program writes there goes to a scratch
    directory of its sandbox (``backing``, set when the sandbox starts, see
    :meth:`Policy.bound`), removed when the sandbox ends; the real tree is
    never read or written.
    """

    pattern: Pattern
    origin: str | None = field(default=None, compare=False)
    backing: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.tree:
            raise ValueError(f"a private rule names a tree: write {self.pattern.path}/**")

    def __str__(self) -> str:
        return _describe(f"private {self.pattern}", self.origin)


@record(frozen=True, slots=True)
class Exec:
    """Programs at ``pattern`` may be executed.

    Exec rules form an allow-list apart from the other rules (a path may be
    both read-only and executable): once a policy has one, ``execve`` and
    ``execveat`` are trapped, and executing anything no exec rule covers
    fails with ``EACCES``, as a ``noexec`` mount would.
    """

    pattern: Pattern
    origin: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return _describe(f"exec {self.pattern}", self.origin)


Rule = Redirect | Deny | ReadOnly | Content | Private | Exec


def rule_pattern(rule: Rule) -> Pattern:
    """Return the pattern ``rule`` is matched by (a redirect's source)."""
    if isinstance(rule, Redirect):
        return rule.source
    return rule.pattern


def _rule_key(rule: Rule) -> tuple[bool, Pattern]:
    # Exec rules are an allow-list of their own: a path may have one exec
    # rule and one other rule.
    return isinstance(rule, Exec), rule_pattern(rule)


def parse_redirect(text: str, origin: str | None = None) -> Redirect:
    """Parse the ``FROM=TO`` form of a redirect.

    The text is split at the first ``=``: a source path cannot contain ``=``, a
    target path can. Raises :class:`ValueError` with a message for humans.
    """
    source, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not of the form FROM=TO")
    return Redirect(parse_pattern(source), parse_pattern(target), origin)


def parse_deny(text: str, origin: str | None = None) -> Deny:
    """Parse the ``PATH[:ERRNO]`` form of a deny rule (default ``EACCES``).

    Whatever follows the last ``:`` is an errno name unless it contains a ``/``
    (then the ``:`` is part of a directory name). A file name with a ``:`` in it
    needs an explicit errno: ``/a/b:c:EACCES``. Raises :class:`ValueError`.
    """
    path, sep, name = text.rpartition(":")
    if not sep or "/" in name:
        return Deny(parse_pattern(text), errno_module.EACCES, origin)
    return Deny(parse_pattern(path), parse_errno(name), origin)


def parse_readonly(text: str, origin: str | None = None) -> ReadOnly:
    """Parse the ``PATH`` form of a read-only rule. Raises :class:`ValueError`."""
    return ReadOnly(parse_pattern(text), origin)


@record(frozen=True, slots=True)
class Match:
    """The rule that covers a path.

    ``suffix`` is the part of the path below the rule's tree root: ``""`` for an
    exact rule or the root itself, else ``"/x/y"``.
    """

    rule: Rule
    suffix: str = ""


class DuplicateRuleError(ValueError):
    """Two rules of one policy have the same pattern (``first`` came earlier)."""

    def __init__(self, first: Rule, second: Rule) -> None:
        super().__init__(first, second)
        self.first = first
        self.second = second

    def __str__(self) -> str:
        return (
            f"{rule_pattern(self.second)} has two rules: {self.first} and {self.second}; keep one"
        )


def find_duplicate(rules: Iterable[Rule]) -> tuple[Rule, Rule] | None:
    """Return the first two rules that have the same pattern, or ``None``."""
    seen: dict[tuple[bool, Pattern], Rule] = {}
    for rule in rules:
        key = _rule_key(rule)
        earlier = seen.get(key)
        if earlier is not None:
            return earlier, rule
        seen[key] = rule
    return None


def _tables(rules: Iterable[Rule]) -> tuple[dict[str, Match], dict[str, Rule]]:
    """The lookup tables of :func:`_match`: exact paths, and tree roots."""
    # Exact hits need no suffix, so their Match is built once here instead
    # of once per system call.
    exact: dict[str, Match] = {}
    trees: dict[str, Rule] = {}
    for rule in rules:
        pattern = rule_pattern(rule)
        if pattern.tree:
            trees[pattern.path] = rule
        else:
            exact[pattern.path] = Match(rule)
    return exact, trees


def _match(exact: dict[str, Match], trees: dict[str, Rule], path: str) -> Match | None:
    """The most specific rule of the tables for ``path`` (see the module doc)."""
    hit = exact.get(path)
    if hit is not None:
        return hit
    if not trees or not path.startswith("/"):
        return None
    # Walk from the path itself up to "/": the first tree root met is the
    # deepest, hence the most specific.
    root = path
    while True:
        rule = trees.get(root)
        if rule is not None:
            if root == "/":
                return Match(rule, "" if path == "/" else path)
            return Match(rule, path[len(root) :])
        if root == "/":
            return None
        root = root[: root.rfind("/")] or "/"


class Policy:
    """An immutable set of rules plus the mode they run in.

    Raises :class:`DuplicateRuleError` if two rules share a pattern and
    :class:`ValueError` for an unknown ``mode``.
    """

    __slots__ = (
        "_enforcing", "_exact", "_exec", "_trees", "allow_syscalls", "has_hidden", "has_private",
        "mode", "rules", "view",
    )  # fmt: skip

    rules: tuple[Rule, ...]
    mode: str
    view: str
    #: Calls of the refused surface this policy lets through after all
    #: (``allow_syscalls``; see :mod:`unotifyd.policy.surface`).
    allow_syscalls: frozenset[str]

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        mode: str = "virtualize",
        view: str = "full",
        allow_syscalls: Iterable[str] = (),
    ) -> None:
        from .surface import check_allowed  # noqa: PLC0415  - surface imports us

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (allowed: {', '.join(sorted(MODES))})")
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r} (allowed: {', '.join(sorted(VIEWS))})")
        self.rules = tuple(rules)
        self.mode = mode
        self.view = view
        self.allow_syscalls = check_allowed(allow_syscalls)
        duplicate = find_duplicate(self.rules)
        if duplicate is not None:
            raise DuplicateRuleError(*duplicate)
        self._exact, self._trees = _tables(r for r in self.rules if not isinstance(r, Exec))
        exec_rules = [r for r in self.rules if isinstance(r, Exec)]
        self._exec = _tables(exec_rules) if exec_rules else None
        self.has_private = any(isinstance(r, Private) for r in self.rules)
        self.has_hidden = any(hides(r) for r in self.rules)
        if view == "opens" and mode == "enforce":
            # A stat or rename let through untrapped is exactly what
            # enforcing mode promises never happens.
            raise ValueError("enforcing mode needs the full view (view = \"full\")")
        if view == "opens" and self.has_private:
            # mkdir, rename, unlink... would reach the real tree.
            raise ValueError("private rules need the full view (view = \"full\")")
        self._enforcing: Policy | None = self if mode == "enforce" else None

    def __repr__(self) -> str:
        allow = f", allow_syscalls={sorted(self.allow_syscalls)!r}" if self.allow_syscalls else ""
        return f"Policy({list(self.rules)!r}, mode={self.mode!r}, view={self.view!r}{allow})"

    def _key(self) -> tuple[str, str, tuple[Rule, ...], frozenset[str]]:
        return (self.mode, self.view, self.rules, self.allow_syscalls)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def enforcing(self) -> Policy:
        """These rules in enforcing mode (made once): for paths that must not be CONTINUEd."""
        if self._enforcing is None:
            self._enforcing = Policy(self.rules, "enforce", allow_syscalls=self.allow_syscalls)
        return self._enforcing

    @property
    def has_exec_rules(self) -> bool:
        return self._exec is not None

    def exec_match(self, path: str) -> Match | None:
        """Return the most specific exec rule covering ``path`` (see :class:`Exec`)."""
        return None if self._exec is None else _match(*self._exec, path)

    def match(self, path: str) -> Match | None:
        """Return the most specific rule covering the normalized absolute ``path``.

        Exec rules are not considered: see :meth:`exec_match`.
        """
        return _match(self._exact, self._trees, path)

    def canonicalized(self, realpath: Callable[[str], str]) -> Policy:
        """Return this policy with every matched pattern passed through ``realpath``.

        The kernel layer hands :meth:`match` paths with every symbolic link
        resolved, so a rule written on a link (``/etc/resolv.conf``) must be
        moved to what the link points to before it can ever match. The caller
        injects :func:`os.path.realpath`; this layer does no I/O. Redirect
        targets are left alone: the supervisor opens them like any path, and
        following their links is what the author of the rule expects.

        Raises :class:`DuplicateRuleError` if two patterns turn out to name the
        same canonical path, and :class:`ValueError` if ``realpath`` returns a
        path that is not absolute.
        """

        def canonical(pattern: Pattern) -> Pattern:
            return Pattern(normalize_path(realpath(pattern.path)), pattern.tree)

        rules: list[Rule] = []
        for rule in self.rules:
            if isinstance(rule, Redirect):
                rules.append(replace(rule, source=canonical(rule.source)))
            else:
                rules.append(replace(rule, pattern=canonical(rule.pattern)))
        return Policy(rules, self.mode, self.view, self.allow_syscalls)

    def bound(self, backing: Callable[[Content | Private], str]) -> Policy:
        """Return this policy with each content and private rule given its ``backing``.

        ``backing`` returns the supervisor's path for a rule's memfd or
        scratch directory, which exist once per sandbox.
        """
        rules = [
            replace(rule, backing=backing(rule)) if isinstance(rule, Content | Private) else rule
            for rule in self.rules
        ]
        return Policy(rules, self.mode, self.view, self.allow_syscalls)

    def describe(self) -> list[str]:
        """Return one human-readable line per rule, in policy order."""
        return [str(rule) for rule in self.rules]
