"""Rules, matching and open decisions: pure values in, pure values out."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unotifyd.calls.registry import names, trapped
from unotifyd.policy import (
    OPEN_SYSCALLS,
    Content,
    Continue,
    Deny,
    DuplicateRuleError,
    EmulateOpen,
    Exec,
    Fail,
    Found,
    Match,
    OpenRequest,
    Pattern,
    Policy,
    Private,
    ReadOnly,
    Redirect,
    RefuseWrite,
    Rule,
    decide_open,
    normalize_path,
    parse_deny,
    parse_errno,
    parse_pattern,
    parse_readonly,
    parse_redirect,
    refuse_write_errno,
    rule_pattern,
)
from unotifyd.policy.rules import hides
from unotifyd.policy.syscalls import needed_families

EXEC = names("exec")
ROOT = names("root")


def exact(path: str) -> Pattern:
    return Pattern(path, tree=False)


def tree(path: str) -> Pattern:
    return Pattern(path, tree=True)


# --- Patterns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/etc/passwd", exact("/etc/passwd")),
        ("/", exact("/")),
        ("//etc///passwd", exact("/etc/passwd")),
        ("/etc/./passwd/", exact("/etc/passwd")),
        ("/etc/x/../passwd", exact("/etc/passwd")),
        ("/../../etc", exact("/etc")),
        ("/..", exact("/")),
        ("/a/b/../..", exact("/")),
        ("/srv/data/**", tree("/srv/data")),
        ("/srv//data/./**", tree("/srv/data")),
        ("/srv/data/../**", tree("/srv")),
        ("/**", tree("/")),
        ("//**", tree("/")),
        ("/a b/ü:x=y/**", tree("/a b/ü:x=y")),
    ],
)
def test_parse_pattern_normalizes(text: str, expected: Pattern) -> None:
    assert parse_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("etc/passwd", "not absolute"),
        ("./x", "not absolute"),
        ("**", "not absolute"),
        ("/etc/\0passwd", "NUL"),
        ("/etc/*.conf", "globs other than a trailing '/**' are not supported yet"),
        ("/etc/pass?d", "globs other than a trailing '/**' are not supported yet"),
        ("/etc/**/x", "globs other than a trailing '/**' are not supported yet"),
        ("/etc/*", "globs other than a trailing '/**' are not supported yet"),
        ("/etc**", "globs other than a trailing '/**' are not supported yet"),
        ("/etc/**/**", "globs other than a trailing '/**' are not supported yet"),
        ("/etc/**/", "globs other than a trailing '/**' are not supported yet"),
    ],
)
def test_parse_pattern_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("?", r"\?")):
        parse_pattern(text)


def test_pattern_str_round_trips() -> None:
    for text in ["/etc/passwd", "/", "/srv/data/**", "/**"]:
        assert str(parse_pattern(text)) == text


def test_normalize_path_matches_posixpath_for_absolute_paths() -> None:
    # posixpath keeps a leading "//" (POSIX allows it a meaning); Linux does not.
    for text in ["/a/./b/../c", "/a/b/", "/../x", "/a//b"]:
        assert normalize_path(text) == os.path.normpath(text)


def test_parse_errno() -> None:
    assert parse_errno("ENOENT") == errno.ENOENT
    assert parse_errno("EWOULDBLOCK") == errno.EAGAIN  # aliases are fine
    for bad in ["ENOTANERRNO", "errorcode", "E", "", "2", "EX_OK"]:
        with pytest.raises(ValueError, match="unknown errno name"):
            parse_errno(bad)
    with pytest.raises(ValueError, match="did you mean ENOENT"):
        parse_errno("enoent")


# --- Rules -------------------------------------------------------------------


def test_rule_origin_takes_no_part_in_equality() -> None:
    a = Deny(exact("/x"), errno.EPERM, origin="a.toml:3")
    b = Deny(exact("/x"), errno.EPERM, origin="--deny")
    assert a == b
    assert hash(a) == hash(b)
    assert Deny(exact("/x"), errno.EPERM) != Deny(exact("/x"), errno.ENOENT)


def test_parse_cli_forms() -> None:
    assert parse_redirect("/a=/b") == Redirect(exact("/a"), exact("/b"))
    assert parse_redirect("/a/**=/b/**") == Redirect(tree("/a"), tree("/b"))
    assert parse_redirect("/a/**=/f") == Redirect(tree("/a"), exact("/f"))
    assert parse_redirect("/a=/b=c") == Redirect(exact("/a"), exact("/b=c"))
    assert parse_deny("/s") == Deny(exact("/s"), errno.EACCES)
    assert parse_deny("/s:ENOENT") == Deny(exact("/s"), errno.ENOENT)
    assert parse_deny("/s/**:EPERM") == Deny(tree("/s"), errno.EPERM)
    assert parse_deny("/a:b/c") == Deny(exact("/a:b/c"), errno.EACCES)
    assert parse_deny("/a/b:c:EIO") == Deny(exact("/a/b:c"), errno.EIO)
    assert parse_readonly("/d/**") == ReadOnly(tree("/d"))
    assert parse_readonly("/d", origin="--readonly").origin == "--readonly"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/a", "not of the form FROM=TO"),
        ("/a=", "empty"),
        ("=/b", "empty"),
        ("/a=b", "not absolute"),
        ("/a=/b/**", r"cannot redirect the single path /a onto the tree /b/\*\*"),
    ],
)
def test_parse_redirect_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redirect(text)


def test_parse_deny_rejects_unknown_errno() -> None:
    with pytest.raises(ValueError, match="unknown errno name 'b'"):
        parse_deny("/a:b")


def test_describe_and_reasons() -> None:
    policy = Policy(
        [
            parse_redirect("/etc/passwd=/etc/hostname", "--redirect"),
            parse_deny("/etc/shadow:ENOENT", "f.toml:9"),
            parse_readonly("/srv/**"),
        ]
    )
    assert policy.describe() == [
        "redirect /etc/passwd -> /etc/hostname (--redirect)",
        "deny /etc/shadow with ENOENT (f.toml:9)",
        "readonly /srv/**",
    ]


# --- Policy ------------------------------------------------------------------


def test_policy_rejects_duplicate_patterns_naming_both() -> None:
    first = Deny(exact("/x"), origin="a.toml:3")
    second = ReadOnly(exact("/x"), origin="a.toml:7")
    with pytest.raises(DuplicateRuleError) as info:
        Policy([first, ReadOnly(tree("/x")), second])
    assert info.value.first is first
    assert info.value.second is second
    assert "(a.toml:3)" in str(info.value)
    assert "(a.toml:7)" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_policy_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode 'strict'"):
        Policy([], mode="strict")


def test_enforce_emulates_what_no_rule_covers_and_rechecks_redirects() -> None:
    policy = Policy([Redirect(tree("/a"), tree("/b"))], mode="enforce")
    plain = decide_open(policy, opening("/etc/hosts", O_RDONLY | O_CLOEXEC))
    assert plain == EmulateOpen(
        path="/etc/hosts", flags=O_RDONLY, mode=0, cloexec=True,
        reason="enforce: no rule", no_symlinks=True, in_program_root=True,
    )  # fmt: skip
    # /proc paths work through magic links, which must be followed.
    proc = decide_open(policy, opening("/proc/12/fd/0", O_RDONLY))
    assert isinstance(proc, EmulateOpen) and not proc.no_symlinks
    redirect = decide_open(policy, opening("/a/x", O_RDONLY))
    assert isinstance(redirect, EmulateOpen) and redirect.path == "/b/x" and redirect.recheck


def test_policy_equality_and_syscalls() -> None:
    assert Policy() == Policy([])
    assert Policy([ReadOnly(exact("/x"))]) == Policy([ReadOnly(exact("/x"), origin="o")])
    assert trapped(Policy()) == frozenset()
    readonly = names("open") | names("change") | names("change_fd") | names("probe")
    readonly |= names("socket") | names("root")
    assert trapped(Policy([ReadOnly(exact("/x"))])) == readonly


# --- Which system calls a policy traps -------------------------------------------


def families(policy: Policy) -> set[str]:
    """The families ``policy`` traps; each is trapped whole."""
    found = needed_families(policy)
    assert trapped(policy) == frozenset().union(*(names(f) for f in found))
    return set(found)


def test_the_open_family_is_the_open_calls() -> None:
    assert names("open") == OPEN_SYSCALLS


def test_no_rule_traps_nothing() -> None:
    assert trapped(Policy()) == frozenset()
    assert trapped(Policy(mode="enforce")) == frozenset()


@pytest.mark.parametrize(
    "rule",
    [
        Redirect(exact("/etc/passwd"), exact("/etc/hostname")),
        Redirect(tree("/a"), tree("/b")),
        Deny(exact("/etc/shadow")),  # EACCES: visible, so listings need no change
        Deny(tree("/root"), errno.EPERM),
        Content(exact("/etc/motd"), b"hi"),
        Private(tree("/tmp")),
    ],
    ids=str,
)
def test_rules_that_change_what_a_path_is_trap_metadata_and_changes(rule: Rule) -> None:
    # A change through an fd is about the file: refused for a content file
    # alone (decide_on_fd), never for a name a redirect, deny or private tree has.
    about_the_file = {"change_fd"} if isinstance(rule, Content) else set()
    assert families(Policy([rule])) == {
        "open", "metadata", "probe", "change", "chdir", "socket", "root", "sendto", "exec"
    } | about_the_file  # fmt: skip
    # Running the path is using it too: a denied binary must not run.
    assert trapped(Policy([rule])) >= EXEC
    assert "getdents64" not in trapped(Policy([rule]))
    if not isinstance(rule, Private):  # Private rules need the full view.
        # Only the open family follows the rules in the opens view: exec runs what is there.
        assert families(Policy([rule], view="opens")) == {"open", "root"}


def test_readonly_alone_traps_opens_changes_and_probes() -> None:
    # "socket": bind makes a socket file, EROFS in a read-only tree.
    assert families(Policy([ReadOnly(tree("/srv"))])) == {
        "open", "change", "change_fd", "probe", "socket", "root"
    }  # fmt: skip
    needed = trapped(Policy([ReadOnly(exact("/x"))]))
    assert {"openat", "unlinkat", "renameat2", "mkdirat", "fchmodat"} <= needed
    # access(W_OK) and statfs answer differently on a read-only mount ...
    assert {"access", "faccessat", "faccessat2", "statfs"} <= needed
    # ... stat and the rest do not.
    assert not needed & {"newfstatat", "statx", "chdir", "execve", "getdents64"}


def test_deny_with_enoent_hides_from_listings() -> None:
    hidden = Policy([Deny(tree("/home/alice"), errno.ENOENT)])
    assert families(hidden) == {
        "open", "metadata", "probe", "change", "chdir", "socket", "list", "root", "sendto",
        "exec",
    }  # fmt: skip
    assert "getdents64" in trapped(hidden)
    assert hides(Deny(exact("/x"), errno.ENOENT))
    assert not hides(Deny(exact("/x"), errno.EACCES))
    assert not hides(ReadOnly(exact("/x")))


def test_exec_rules_trap_exec() -> None:
    only_exec = Policy([Exec(tree("/usr"))])
    assert families(only_exec) == {"exec", "root"}
    assert trapped(only_exec) == {"execve", "execveat"} | ROOT
    assert families(Policy([ReadOnly(tree("/usr")), Exec(tree("/usr"))])) == {
        "open",
        "change",
        "change_fd",
        "probe",
        "socket",
        "exec",
        "root",
    }
    # Without an exec rule, read-only trees alone never trap exec.
    assert not trapped(Policy([ReadOnly(tree("/d"))])) & EXEC


def test_the_mode_changes_what_is_trapped_only_by_what_it_refuses() -> None:
    """Enforcing mode refuses the calls that change a root; virtualize mode traps them
    (the "root" family), so that the supervisor may keep a listener's root."""
    rules: list[Rule] = [ReadOnly(tree("/srv")), Exec(exact("/bin/sh"))]
    assert trapped(Policy(rules, mode="enforce")) == trapped(Policy(rules)) - ROOT
    assert trapped(Policy(rules)) >= ROOT
    # Re-allowed, a call is trapped again: seen, it stops the keeping.
    allowed = Policy(rules, mode="enforce", allow_syscalls=frozenset({"chroot"}))
    assert trapped(allowed) & ROOT == {"chroot"}


def test_most_specific_rule_wins() -> None:
    root = Deny(tree("/"))
    shallow = ReadOnly(tree("/a"))
    deep = Deny(tree("/a/b"), errno.ENOENT)
    exact_on_tree = Redirect(exact("/a/b"), exact("/elsewhere"))
    policy = Policy([root, shallow, deep, exact_on_tree])
    assert policy.match("/a/b") == Match(exact_on_tree, "")
    assert policy.match("/a/b/c/d") == Match(deep, "/c/d")
    assert policy.match("/a/bc") == Match(shallow, "/bc")  # not below /a/b
    assert policy.match("/a") == Match(shallow, "")
    assert policy.match("/x/y") == Match(root, "/x/y")
    assert policy.match("/") == Match(root, "")


def test_match_misses() -> None:
    policy = Policy([ReadOnly(exact("/a/b")), ReadOnly(tree("/c"))])
    assert policy.match("/a") is None
    assert policy.match("/a/b/c") is None  # an exact rule covers no children
    assert policy.match("/cc") is None
    assert policy.match("/") is None
    assert policy.match("c/d") is None  # not absolute: never a match
    assert Policy().match("/a") is None


def test_match_is_ordered_independently() -> None:
    rules: list[Rule] = [ReadOnly(tree("/a")), Deny(tree("/a/b")), Deny(exact("/a/b/c"))]
    for order in (rules, rules[::-1]):
        policy = Policy(order)
        assert policy.match("/a/b/c") == Match(rules[2])
        assert policy.match("/a/b/x") == Match(rules[1], "/x")


def test_canonicalized_moves_sources_not_targets() -> None:
    links = {
        "/etc/resolv.conf": "/run/resolve/stub.conf",
        "/var/run": "/run",
        "/data": "/mnt/data",
        "/target": "/should/not/be/used",
    }
    policy = Policy(
        [
            Redirect(exact("/etc/resolv.conf"), exact("/target"), origin="a:1"),
            Deny(tree("/var/run"), errno.ENOENT, origin="a:2"),
            ReadOnly(tree("/data"), origin="a:3"),
            ReadOnly(exact("/plain"), origin="a:4"),
        ]
    )
    canonical = policy.canonicalized(lambda path: links.get(path, path))
    assert canonical.rules == (
        Redirect(exact("/run/resolve/stub.conf"), exact("/target")),
        Deny(tree("/run"), errno.ENOENT),
        ReadOnly(tree("/mnt/data")),
        ReadOnly(exact("/plain")),
    )
    assert [rule.origin for rule in canonical.rules] == ["a:1", "a:2", "a:3", "a:4"]
    assert canonical.match("/run/x") is not None
    assert canonical.match("/var/run/x") is None
    assert policy.match("/var/run/x") is not None  # the original is unchanged


def test_canonicalized_reports_rules_that_collapse() -> None:
    policy = Policy([ReadOnly(exact("/link")), Deny(exact("/real"))])
    with pytest.raises(DuplicateRuleError):
        policy.canonicalized(lambda path: "/real" if path == "/link" else path)
    with pytest.raises(ValueError, match="not absolute"):
        policy.canonicalized(lambda path: "relative")


def test_values_pickle() -> None:
    rule = Redirect(tree("/a"), tree("/b"), origin="o")
    assert pickle.loads(pickle.dumps(rule)) == rule
    error = DuplicateRuleError(rule, rule)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# --- Matching against a slow reference -----------------------------------------

_NAMES = st.sampled_from(["a", "b", "c", "ab"])
_PATHS = st.lists(_NAMES, max_size=4).map(lambda parts: "/" + "/".join(parts))


def _reference_match(rules: list[Rule], path: str) -> Match | None:
    """Most specific by definition: exact first, then the longest covering root."""
    best: tuple[int, Match] | None = None
    for rule in rules:
        pattern = rule_pattern(rule)
        if not pattern.tree:
            if pattern.path == path:
                return Match(rule)
            continue
        root = pattern.path
        if root == "/":
            suffix: str | None = "" if path == "/" else path
        elif path == root:
            suffix = ""
        elif path.startswith(root + "/"):
            suffix = path[len(root) :]
        else:
            suffix = None
        if suffix is not None and (best is None or len(root) > best[0]):
            best = (len(root), Match(rule, suffix))
    return None if best is None else best[1]


@settings(max_examples=100, deadline=None)
@given(
    patterns=st.lists(st.tuples(_PATHS, st.booleans()), max_size=8, unique=True),
    path=_PATHS,
)
def test_match_agrees_with_reference(patterns: list[tuple[str, bool]], path: str) -> None:
    rules: list[Rule] = [ReadOnly(Pattern(p, t)) for p, t in patterns]
    assert Policy(rules).match(path) == _reference_match(rules, path)


# --- decide_open ---------------------------------------------------------------

O_CREAT, O_EXCL, O_TRUNC = os.O_CREAT, os.O_EXCL, os.O_TRUNC
O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
O_CLOEXEC, O_PATH, O_DIRECTORY = os.O_CLOEXEC, os.O_PATH, os.O_DIRECTORY


def opening(path: str, flags: int, mode: int = 0, syscall: str = "openat") -> OpenRequest:
    return OpenRequest(syscall=syscall, path=path, flags=flags, mode=mode)


def test_no_rule_continues() -> None:
    policy = Policy([Deny(exact("/secret"))])
    assert decide_open(policy, opening("/other", O_RDONLY)) == Continue()
    assert decide_open(Policy(), opening("/secret", O_RDONLY)) == Continue()


def test_deny_fails_with_its_errno_whatever_the_flags() -> None:
    policy = Policy([Deny(exact("/etc/shadow"), errno.ENOENT, origin="--deny"), Deny(tree("/k"))])
    for flags in (O_RDONLY, O_RDWR | O_CREAT, O_PATH):
        assert decide_open(policy, opening("/etc/shadow", flags, 0o600)) == Fail(
            errno.ENOENT, reason="deny /etc/shadow with ENOENT (--deny)"
        )
    decision = decide_open(policy, opening("/k/x", O_RDONLY))
    assert isinstance(decision, Fail)
    assert decision.errno == errno.EACCES


def test_redirect_exact() -> None:
    policy = Policy([Redirect(exact("/etc/passwd"), exact("/etc/hostname"), "--redirect")])
    assert decide_open(policy, opening("/etc/passwd", O_RDONLY | O_CLOEXEC)) == EmulateOpen(
        path="/etc/hostname",
        flags=O_RDONLY,
        mode=0,
        cloexec=True,
        reason="redirect /etc/passwd -> /etc/hostname (--redirect)",
        no_symlinks=False,
    )


def test_redirect_keeps_flags_and_creation_mode() -> None:
    policy = Policy([Redirect(exact("/a"), exact("/b"))])
    flags = O_WRONLY | O_CREAT | O_TRUNC | os.O_APPEND
    decision = decide_open(policy, opening("/a", flags | O_CLOEXEC, 0o640))
    assert isinstance(decision, EmulateOpen)
    assert (decision.flags, decision.mode, decision.cloexec) == (flags, 0o640, True)
    assert decision.create_errno == 0
    assert not decision.exclusive


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/a", "/b"),
        ("/a/x", "/b/x"),
        ("/a/x/y", "/b/x/y"),
    ],
)
def test_redirect_tree_onto_tree(path: str, target: str) -> None:
    policy = Policy([Redirect(tree("/a"), tree("/b"))])
    decision = decide_open(policy, opening(path, O_RDONLY))
    assert isinstance(decision, EmulateOpen)
    assert decision.path == target


def test_redirect_trees_at_the_root() -> None:
    from_root = Policy([Redirect(tree("/"), tree("/chroot"))])
    onto_root = Policy([Redirect(tree("/home/u"), tree("/"))])
    cases = [
        (from_root, "/", "/chroot"),
        (from_root, "/etc/x", "/chroot/etc/x"),
        (onto_root, "/home/u", "/"),
        (onto_root, "/home/u/etc", "/etc"),
    ]
    for policy, path, target in cases:
        decision = decide_open(policy, opening(path, O_RDONLY))
        assert isinstance(decision, EmulateOpen)
        assert decision.path == target


def test_redirect_tree_onto_file() -> None:
    policy = Policy([Redirect(tree("/a"), exact("/dev/null"))])
    for path in ("/a", "/a/x", "/a/x/y"):
        decision = decide_open(policy, opening(path, O_RDONLY))
        assert isinstance(decision, EmulateOpen)
        assert decision.path == "/dev/null"


READONLY = Policy([ReadOnly(tree("/ro"), origin="p.toml:4")])


@pytest.mark.parametrize(
    "flags",
    [
        O_WRONLY,
        O_RDWR,
        O_RDONLY | O_TRUNC,
        O_WRONLY | O_CREAT | O_TRUNC,  # what creat() arrives as
        os.O_ACCMODE,  # 3: Linux checks it as read + write
        O_WRONLY | O_CLOEXEC,
        os.O_TMPFILE | O_RDWR,
    ],
)
def test_readonly_refuses_writes(flags: int) -> None:
    decision = decide_open(READONLY, opening("/ro/f", flags, 0o644))
    assert isinstance(decision, RefuseWrite)
    assert decision.path == "/ro/f"
    assert decision.reason == "readonly /ro/** (p.toml:4)"


@pytest.mark.parametrize(
    ("flags", "found", "expected"),
    [
        # Recorded against a tmpfs remounted read-only on Linux 6.18.
        (O_WRONLY, "file", errno.EROFS),
        (O_RDONLY | O_TRUNC, "file", errno.EROFS),
        (O_WRONLY | O_CREAT | O_EXCL, "file", errno.EEXIST),
        (O_RDWR | O_CREAT | O_EXCL, "file", errno.EEXIST),
        (O_WRONLY | O_CREAT, "file", errno.EROFS),
        (O_WRONLY, "missing", errno.ENOENT),
        (O_RDONLY | O_TRUNC, "missing", errno.ENOENT),
        (O_WRONLY | O_CREAT, "missing", errno.EROFS),
        (O_WRONLY | O_CREAT, "no-parent", errno.ENOENT),
        (O_WRONLY, "dir", errno.EISDIR),
        (O_WRONLY | O_CREAT | O_EXCL, "dir", errno.EEXIST),
        # Against a read-only bind mount and a read-only tmpfs, as root and
        # as nobody (tests/integration/test_readonly_special.py): the mount
        # lets a FIFO, a socket or a device be opened for writing (0).
        (O_WRONLY, "special", 0),
        (O_RDWR | O_TRUNC, "special", 0),
        (O_RDONLY | O_TRUNC, "special", 0),
        (O_WRONLY | O_CREAT, "special", 0),
        (O_WRONLY | O_CREAT | O_EXCL, "special", errno.EEXIST),
        (O_WRONLY | O_DIRECTORY, "special", errno.ENOTDIR),
        (O_WRONLY | O_DIRECTORY, "file", errno.ENOTDIR),
        (O_RDONLY | O_CREAT, "dir", errno.EISDIR),
        (O_RDONLY | O_CREAT | O_EXCL, "dir", errno.EEXIST),
        (O_RDONLY | O_CREAT, "file", 0),
        (O_RDONLY | O_CREAT, "missing", errno.EROFS),
        (os.O_TMPFILE | O_RDWR, "dir", errno.EROFS),
        (os.O_TMPFILE | O_WRONLY, "file", errno.ENOTDIR),
        (os.O_TMPFILE | O_WRONLY, "special", errno.ENOTDIR),
        (os.O_TMPFILE | O_WRONLY, "missing", errno.ENOENT),
        (os.O_TMPFILE | O_WRONLY, "no-parent", errno.ENOENT),
    ],
)
def test_refuse_write_errno_follows_a_read_only_mount(
    flags: int, found: Found, expected: int
) -> None:
    assert refuse_write_errno(flags, found) == expected


def test_readonly_creat_syscall() -> None:
    request = opening("/ro/new", O_CREAT | O_WRONLY | O_TRUNC, 0o644, syscall="creat")
    decision = decide_open(READONLY, request)
    assert isinstance(decision, RefuseWrite)
    assert refuse_write_errno(decision.flags, "missing") == errno.EROFS


@pytest.mark.parametrize(
    ("flags", "emulated", "cloexec", "create_errno", "exclusive"),
    [
        (O_RDONLY, O_RDONLY, False, 0, False),
        (O_RDONLY | O_CLOEXEC, O_RDONLY, True, 0, False),
        (O_RDONLY | O_DIRECTORY, O_DIRECTORY, False, 0, False),
        (O_RDONLY | O_CREAT, O_RDONLY, False, errno.EROFS, False),
        (O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, O_RDONLY, True, errno.EROFS, True),
        # O_EXCL without O_CREAT still means something for block devices.
        (O_RDONLY | O_EXCL, O_EXCL, False, 0, False),
        (O_PATH, O_PATH, False, 0, False),
        (O_PATH | O_CLOEXEC | O_DIRECTORY, O_PATH | O_DIRECTORY, True, 0, False),
        # open(2) ignores everything but a few flags next to O_PATH, O_CREAT included.
        (O_PATH | O_WRONLY | O_TRUNC | O_CREAT, O_PATH, False, 0, False),
        (O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, os.O_NONBLOCK | os.O_NOFOLLOW, False, 0, False),
    ],
)
def test_readonly_allows_reads(
    flags: int, emulated: int, cloexec: bool, create_errno: int, exclusive: bool
) -> None:
    assert decide_open(READONLY, opening("/ro/f", flags, 0o644)) == EmulateOpen(
        path="/ro/f",
        flags=emulated,
        mode=0,  # nothing will be created, so the mode means nothing
        cloexec=cloexec,
        reason="readonly /ro/** (p.toml:4)",
        no_symlinks=True,
        create_errno=create_errno,
        exclusive=exclusive,
        in_program_root=True,  # the program's own file, in its own root
    )


def test_readonly_root_of_the_tree_and_outside() -> None:
    assert isinstance(decide_open(READONLY, opening("/ro", O_RDONLY | O_DIRECTORY)), EmulateOpen)
    assert decide_open(READONLY, opening("/rox", O_WRONLY)) == Continue()


def test_legacy_open_mode_is_masked_like_the_kernel_does() -> None:
    policy = Policy([Redirect(exact("/a"), exact("/b"))])
    garbage = (0xDEAD_BEEF << 32) | 0o100644  # S_IFREG and high bits too
    # Without O_CREAT the mode register is whatever the program left in it.
    reading = decide_open(policy, opening("/a", O_RDONLY, garbage, syscall="open"))
    creating = decide_open(policy, opening("/a", O_WRONLY | O_CREAT, garbage, syscall="open"))
    assert isinstance(reading, EmulateOpen)
    assert isinstance(creating, EmulateOpen)
    assert reading.mode == 0
    assert creating.mode == 0o644
    # Bits no kernel knows are dropped by open(2) too.
    high = decide_open(policy, opening("/a", O_RDONLY | (1 << 40), syscall="open"))
    assert isinstance(high, EmulateOpen)
    assert high.flags == O_RDONLY


@pytest.mark.parametrize(
    ("flags", "mode", "message"),
    [
        (O_RDONLY, 0o644, "mode given without O_CREAT"),
        (O_CREAT | O_WRONLY, 0o10644, "bits outside 07777"),
        (O_PATH | O_WRONLY, 0, "O_PATH combined"),
        (O_PATH | O_CREAT, 0, "O_PATH combined"),
        (O_CREAT | O_DIRECTORY, 0o600, "O_CREAT with O_DIRECTORY"),
        (os.O_TMPFILE | O_RDONLY, 0o600, "O_TMPFILE without"),
        (os.O_TMPFILE | O_CREAT | O_RDWR, 0o600, "O_CREAT with O_DIRECTORY"),
        (os.O_TMPFILE & ~O_DIRECTORY | O_RDWR, 0o600, "O_TMPFILE without"),
    ],
)
def test_openat2_refuses_what_open_would_ignore(flags: int, mode: int, message: str) -> None:
    policy = Policy([ReadOnly(exact("/a"))])
    decision = decide_open(policy, opening("/a", flags, mode, syscall="openat2"))
    assert isinstance(decision, Fail)
    assert decision.errno == errno.EINVAL
    assert message in decision.reason
    assert "readonly /a" in decision.reason


@pytest.mark.parametrize("syscall", ["open", "openat", "openat2"])
def test_flags_build_open_flags_refuses_whatever_the_path(syscall: str) -> None:
    # Checked in build_open_flags() (fs/open.c) before any lookup: EINVAL
    # before a read-only tree's EROFS, EISDIR or EEXIST.
    for flags in (
        O_CREAT | O_DIRECTORY | O_RDONLY,
        os.O_TMPFILE | O_RDONLY,
        os.O_TMPFILE | O_CREAT | O_RDWR,
    ):
        decision = decide_open(READONLY, opening("/ro/d", flags, 0o600, syscall=syscall))
        assert isinstance(decision, Fail) and decision.errno == errno.EINVAL, (flags, decision)
    # The legacy calls drop O_TMPFILE with O_PATH, as build_open_how() does.
    legacy = decide_open(READONLY, opening("/ro/d", O_PATH | os.O_TMPFILE | O_RDWR))
    assert isinstance(legacy, EmulateOpen)


def test_openat2_valid_requests_pass() -> None:
    policy = Policy([Redirect(exact("/a"), exact("/b"))])
    request = opening("/a", O_CREAT | O_WRONLY | O_CLOEXEC, 0o600, syscall="openat2")
    decision = decide_open(policy, request)
    assert isinstance(decision, EmulateOpen)
    assert (decision.flags, decision.mode, decision.cloexec) == (O_CREAT | O_WRONLY, 0o600, True)
    assert decide_open(policy, opening("/a", O_PATH | O_CLOEXEC, syscall="openat2")) == (
        EmulateOpen(path="/b", flags=O_PATH, mode=0, cloexec=True, reason="redirect /a -> /b")
    )


def test_enforcing_is_made_once_and_keeps_the_rules() -> None:
    rules: list[Rule] = [Private(tree("/tmp")), Deny(exact("/etc/shadow"))]
    policy = Policy(rules)
    assert policy.has_private and not Policy(rules[1:]).has_private
    enforcing = policy.enforcing()
    assert enforcing == Policy(rules, "enforce")
    assert policy.enforcing() is enforcing
    assert enforcing.enforcing() is enforcing


def test_opens_view_traps_the_open_family_only() -> None:
    rules: list[Rule] = [
        Redirect(exact("/etc/passwd"), exact("/etc/hostname")),
        Deny(exact("/x"), errno.ENOENT),
        ReadOnly(tree("/srv")),
        Content(exact("/etc/motd"), b"hi"),
    ]
    assert trapped(Policy(rules, view="opens")) == OPEN_SYSCALLS | ROOT
    with_exec = Policy([*rules, Exec(tree("/usr"))], view="opens")
    assert trapped(with_exec) == OPEN_SYSCALLS | {"execve", "execveat"} | ROOT
    assert trapped(Policy([Exec(tree("/usr"))], view="opens")) == {"execve", "execveat"} | ROOT
    assert Policy(rules, view="opens") != Policy(rules)


@pytest.mark.parametrize(
    ("rules", "mode", "message"),
    [
        ([], "enforce", "enforcing mode needs the full view"),
        ([Private(tree("/tmp"))], "virtualize", "private rules need the full view"),
    ],
)
def test_opens_view_refuses_what_needs_the_full_view(
    rules: list[Rule], mode: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(rules, mode, "opens")
    with pytest.raises(ValueError, match="unknown view"):
        Policy([], "virtualize", "some")
