"""The decisions for path calls other than opens (unotifyd.policy.paths). Pure: no kernel."""

from __future__ import annotations

import errno
import os

import pytest

from unotifyd.policy import Deny, Pattern, Policy, ReadOnly, Redirect, parse_deny
from unotifyd.policy.decision import (
    Continue,
    Fail,
    OpenRequest,
    decide_open,
    is_system_setting,
)
from unotifyd.policy.paths import (
    EXEC_NOT_ALLOWED,
    MapPath,
    PathRequest,
    RefuseChange,
    combine,
    decide_on_fd,
    decide_path,
    hidden_names,
    judge_too_deep,
    link_out_of_read_only,
    moves_a_rule,
    refuse_change_errno,
)
from unotifyd.policy.rules import Content, Exec, Private


def req(path: str, role: str = "read", syscall: str = "stat") -> PathRequest:
    return PathRequest(syscall, role, path)  # type: ignore[arg-type]


REDIRECT = Redirect(Pattern("/etc/passwd"), Pattern("/etc/hostname"))
TREE = Redirect(Pattern("/a", tree=True), Pattern("/b", tree=True))


def test_no_rule_continues_and_enforce_emulates_in_place() -> None:
    assert isinstance(decide_path(Policy([REDIRECT]), req("/x")), Continue)
    d = decide_path(Policy([REDIRECT], "enforce"), req("/x"))
    assert d == MapPath("/x", "enforce: no rule", in_program_root=True, no_symlinks=True)
    proc = decide_path(Policy([REDIRECT], "enforce"), req("/proc/1/fd/3"))
    assert isinstance(proc, MapPath) and not proc.no_symlinks


def test_redirect_maps_and_reads_as_a_link_to_its_target() -> None:
    d = decide_path(Policy([REDIRECT]), req("/etc/passwd"))
    assert isinstance(d, MapPath)
    assert (d.path, d.link_text, d.in_program_root) == ("/etc/hostname", "/etc/hostname", False)
    inside = decide_path(Policy([TREE]), req("/a/x/y", "modify"))
    assert isinstance(inside, MapPath) and inside.path == "/b/x/y" and inside.link_text is None


@pytest.mark.parametrize("role", ["remove", "replace"])
def test_the_redirected_path_itself_is_busy(role: str) -> None:
    d = decide_path(Policy([TREE]), req("/a", role))
    assert isinstance(d, Fail) and d.errno == errno.EBUSY
    assert isinstance(decide_path(Policy([TREE]), req("/a/x", role)), MapPath)


def test_deny_fails_every_role() -> None:
    policy = Policy([Deny(Pattern("/s"), errno.ENOENT)])
    for role in ("read", "exec", "chdir", "create", "remove", "modify"):
        d = decide_path(policy, req("/s", role))
        assert isinstance(d, Fail) and d.errno == errno.ENOENT


def test_readonly_refuses_changes_only() -> None:
    policy = Policy([ReadOnly(Pattern("/r", tree=True))])
    assert isinstance(decide_path(policy, req("/r/f", "read")), Continue)
    assert isinstance(decide_path(policy, req("/r/f", "exec")), Continue)
    assert decide_path(policy, req("/r/f", "remove")) == RefuseChange(
        "/r/f", "remove", str(policy.rules[0])
    )


def test_content_is_a_read_only_file_and_private_maps_confined() -> None:
    content = Content(Pattern("/motd"), b"hi", backing="/proc/self/fd/9")
    private = Private(Pattern("/p", tree=True), backing="/run/x/0")
    policy = Policy([content, private])
    d = decide_path(policy, req("/motd"))
    assert isinstance(d, MapPath) and d.content and d.path == "/proc/self/fd/9"
    assert isinstance(decide_path(policy, req("/motd", "modify")), RefuseChange)
    d = decide_path(policy, req("/p/q", "create"))
    assert isinstance(d, MapPath) and (d.path, d.confine) == ("/run/x/0/q", "/run/x/0")
    unbound = Policy([Content(Pattern("/motd"), b"hi")])
    d2 = decide_path(unbound, req("/motd"))
    assert isinstance(d2, Fail) and d2.errno == errno.EIO  # fail closed


def test_exec_rules_allow_list() -> None:
    policy = Policy([Exec(Pattern("/usr", tree=True)), REDIRECT])
    assert isinstance(decide_path(policy, req("/usr/bin/true", "exec", "execve")), Continue)
    d = decide_path(policy, req("/tmp/x", "exec", "execve"))
    assert isinstance(d, Fail) and d.errno == errno.EACCES and d.reason == EXEC_NOT_ALLOWED
    # Only exec is concerned by exec rules.
    assert isinstance(decide_path(policy, req("/tmp/x")), Continue)


def test_combine() -> None:
    fail = Fail(errno.EACCES)
    assert combine([Continue(), fail]) is fail
    assert isinstance(combine([Continue(), Continue()]), Continue)
    assert combine([Continue(), MapPath("/x")]) is None


@pytest.mark.parametrize(
    ("syscall", "role", "found", "others", "expected"),
    [
        ("unlink", "remove", "missing", (), errno.EROFS),
        ("unlink", "remove", "no-parent", (), errno.ENOENT),
        ("mkdir", "create", "dir", (), errno.EEXIST),
        ("mkdir", "create", "missing", (), errno.EROFS),
        ("chmod", "modify", "missing", (), errno.ENOENT),
        ("truncate", "modify", "dir", (), errno.EISDIR),
        # vfs_truncate(): a FIFO, a socket or a device before the mount's EROFS.
        ("truncate", "modify", "special", (), errno.EINVAL),
        ("chmod", "modify", "special", (), errno.EROFS),
        ("mknod", "create", "special", (), errno.EEXIST),
        ("rename", "remove", "file", ("file", "no-parent"), errno.ENOENT),
        ("link", "create", "missing", ("missing", "missing"), errno.ENOENT),
    ],
)
def test_refuse_change_errno_matches_a_read_only_mount(
    syscall: str, role: str, found: str, others: tuple[str, ...], expected: int
) -> None:
    assert refuse_change_errno(syscall, role, found, others) == expected  # type: ignore[arg-type]


def test_hidden_names() -> None:
    policy = Policy([Deny(Pattern("/h/secret"), errno.ENOENT), Deny(Pattern("/h/other"))])
    assert hidden_names(policy, "/h") == {b"secret"}
    assert hidden_names(policy, "/") == frozenset()


def test_a_call_on_an_open_file_is_about_the_file_not_its_name() -> None:

    deny = Policy([Deny(Pattern("/s"), errno.ENOENT), Redirect(Pattern("/a"), Pattern("/b"))])
    for role in ("read", "modify"):
        assert isinstance(decide_on_fd(deny, role, "/s"), Continue)
        assert isinstance(decide_on_fd(deny, role, "/a"), Continue)
    ro = Policy([ReadOnly(Pattern("/r", tree=True))])
    assert isinstance(decide_on_fd(ro, "read", "/r/f"), Continue)
    changed = decide_on_fd(ro, "modify", "/r/f")
    assert isinstance(changed, Fail) and changed.errno == errno.EROFS
    execs = Policy([Exec(Pattern("/usr", tree=True))])
    assert isinstance(decide_on_fd(execs, "exec", "/usr/bin/true"), Continue)
    for nameless in (None, "/tmp/x"):
        refused = decide_on_fd(execs, "exec", nameless)
        assert isinstance(refused, Fail) and refused.errno == errno.EACCES
    assert isinstance(decide_on_fd(Policy(), "exec", None), Continue)


def test_a_file_too_deep_to_name_fails_closed_where_a_rule_might_name_it() -> None:
    # Reached anew through a magic link, its name unread (judge_too_deep).
    ro = Policy([ReadOnly(Pattern("/r", tree=True))])
    assert judge_too_deep(ro, "read") is None
    refused = judge_too_deep(ro, "modify")
    assert refused is not None and refused.errno == errno.EROFS
    refused = judge_too_deep(ro, "read", link_out=True)
    assert refused is not None and refused.errno == errno.EXDEV
    for rule in (Deny(Pattern("/s")), Redirect(Pattern("/a"), Pattern("/b"))):
        refused = judge_too_deep(Policy([rule, ReadOnly(Pattern("/r", tree=True))]), "read")
        assert refused is not None and refused.errno == errno.EACCES
    assert judge_too_deep(Policy([Exec(Pattern("/usr", tree=True))]), "modify") is None


def test_a_file_of_a_read_only_tree_is_not_linked_out() -> None:

    ro = Policy([ReadOnly(Pattern("/r", tree=True)), ReadOnly(Pattern("/q", tree=True))])
    out = link_out_of_read_only(ro, "/r/f", "/tmp/f")
    assert isinstance(out, Fail) and out.errno == errno.EXDEV
    assert isinstance(link_out_of_read_only(ro, "/r/f", "/q/f"), Fail)  # another tree: EXDEV
    assert link_out_of_read_only(ro, "/r/f", "/r/g") is None  # within: refused as a change
    assert link_out_of_read_only(ro, "/tmp/f", "/r/g") is None
    assert link_out_of_read_only(ro, None, "/tmp/g") is None


def test_a_rename_that_would_carry_a_rule_along_is_exdev() -> None:
    policy = Policy(
        [Deny(Pattern("/home/a/secret")), ReadOnly(Pattern("/srv/ro", tree=True)),
         Exec(Pattern("/usr", tree=True))]
    )  # fmt: skip
    for moved in ("/home/a", "/home", "/", "/srv"):
        out = moves_a_rule(policy, moved)
        assert isinstance(out, Fail) and out.errno == errno.EXDEV, moved
    # The rule's own path is the rules' to answer (deny, EROFS); others move freely.
    for free in ("/home/a/secret", "/srv/ro", "/srv/ro/x", "/home/b", "/usr/lib", "/home/ab"):
        assert moves_a_rule(policy, free) is None, free
    assert moves_a_rule(policy, None) is None


@pytest.mark.parametrize("path", ["/proc/sys/kernel/core_pattern", "/sys/kernel/uevent_helper",
                                  "/proc/sysrq-trigger", "/sys/fs/cgroup/cgroup.procs"])
def test_enforcing_mode_changes_no_system_setting(path: str) -> None:
    """Opened for writing or with O_TRUNC: EACCES; changed by name or on an
    fd: EPERM; read: judged as any file. A deny's errno comes first (it may
    hide the name); virtualize mode is a view and refuses nothing here."""
    enforce = Policy([parse_deny("/elsewhere", "t")], mode="enforce")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        d = decide_open(enforce, OpenRequest("openat", path, flags, 0))
        assert isinstance(d, Fail) and d.errno == errno.EACCES, (flags, d)
    assert not isinstance(decide_open(enforce, OpenRequest("openat", path, os.O_RDONLY, 0)), Fail)
    for role in ("modify", "create", "remove", "replace"):
        changed = decide_path(enforce, PathRequest("fchmodat2", role, path))
        assert isinstance(changed, Fail) and changed.errno == errno.EPERM, (role, changed)
        assert decide_on_fd(enforce, role, path) == changed
    assert not isinstance(decide_path(enforce, PathRequest("newfstatat", "read", path)), Fail)
    hidden = Policy([parse_deny(f"{path}:ENOENT", "t")], mode="enforce")
    d = decide_open(hidden, OpenRequest("openat", path, os.O_WRONLY, 0))
    assert isinstance(d, Fail) and d.errno == errno.ENOENT
    view = Policy([parse_deny("/elsewhere", "t")])
    assert decide_path(view, PathRequest("fchmodat2", "modify", path)) == Continue()
    assert decide_open(view, OpenRequest("openat", path, os.O_WRONLY, 0)) == Continue()
    assert not is_system_setting("/sysroot/x") and not is_system_setting("/proc/system")
