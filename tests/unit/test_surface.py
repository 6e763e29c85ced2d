"""The refused syscall surface: its table, which calls each mode refuses, and
how a policy re-allows one (unotifyd.policy.surface)."""

from __future__ import annotations

import ctypes
import errno
import os

import pyseccomp
import pytest

from unotifyd.calls.registry import (
    BY_NAME,
    MOVES_A_CWD,
    ONLY_WHEN,
    cwds_seen,
    filter_spec,
    names,
    namespaces_seen,
)
from unotifyd.kernel import passthrough, rawsys
from unotifyd.kernel.filter import compile_filter
from unotifyd.policy import (
    Deny,
    Policy,
    PolicyError,
    ReadOnly,
    combine,
    parse_deny,
    parse_pattern,
    parse_policy,
    parse_readonly,
    parse_redirect,
    surface,
)
from unotifyd.policy.config import parse_allow_syscalls

#: Refused calls libseccomp 2.5.4 does not know, with the kernel that brought them.
NEWER_THAN_LIBSECCOMP = {"open_tree_attr": (6, 15)}

DENY = Deny(parse_pattern("/secret"))


def test_numbers_agree_with_libseccomp() -> None:
    unknown = []
    for name, refusal in surface.SURFACE.items():
        known = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)
        if known < 0:
            unknown.append(name)
        else:
            assert known == refusal.number, name
    assert set(unknown) <= set(NEWER_THAN_LIBSECCOMP)


def test_open_tree_attr_is_the_kernels() -> None:
    """467 is open_tree_attr: a bad dirfd gives EBADF, not ENOSYS."""
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 15):
        pytest.skip("needs Linux 6.15 (open_tree_attr) to check its number")
    rc = rawsys.libc_syscall(
        ctypes.c_long(467), ctypes.c_long(-1), b"x", ctypes.c_long(0), None, ctypes.c_long(0)
    )
    assert rc == -1
    assert ctypes.get_errno() == errno.EBADF


def test_refused_calls_are_trapped_only_for_other_arguments() -> None:
    """ioctl alone is both: trapped for the commands that change a file,
    refused for those that type into the terminal, never for the same one."""
    # The calls that change a root: refused in enforcing mode, else trapped (and so
    # seen): never both in one filter (see trapped()).
    assert set(BY_NAME) & set(surface.SURFACE) == {"ioctl"} | names("root")
    enforcing = filter_spec(Policy([ReadOnly(parse_pattern("/r/**"))], "enforce"))
    assert not enforcing.trapped & names("root")
    assert names("root") <= {name for name, *_ in enforcing.refused}
    trapped_for = {value for name, (_, _, value) in ONLY_WHEN if name == "ioctl"}
    refused_for = {value for _, _, value in surface.SURFACE["ioctl"].when}
    assert trapped_for and refused_for and not trapped_for & refused_for
    # The filter of an enforcing policy with a read-only tree has both.
    spec = filter_spec(Policy([ReadOnly(parse_pattern("/r/**"))], "enforce"))
    assert "ioctl" in spec.trapped and "ioctl" in {name for name, *_ in spec.refused}
    assert spec.compile()


def test_a_call_trapped_and_refused_for_the_same_arguments_is_an_error() -> None:
    test = (1, 0xFFFFFFFF, 0x5412)
    with pytest.raises(ValueError, match="both trapped and refused: ioctl"):
        compile_filter({"ioctl"}, [("ioctl", 16, errno.EPERM, (test,))], only=[("ioctl", test)])
    with pytest.raises(ValueError, match="both trapped and refused: ioctl"):
        compile_filter({"ioctl"}, [("ioctl", 16, errno.EPERM, (test,))])


def test_each_refusal_has_an_errno_a_route_and_a_condition() -> None:
    for name, refusal in surface.SURFACE.items():
        assert refusal.name == name
        assert refusal.errno in (errno.EPERM, errno.ENOSYS), name
        assert refusal.route, name
        assert (refusal.condition == "always") == (not refusal.when), name
    # The calls a libc falls back from, or that a kernel may lack: ENOSYS.
    enosys = {n for n, r in surface.SURFACE.items() if r.errno == errno.ENOSYS}
    assert enosys == {
        "io_uring_setup", "io_uring_enter", "io_uring_register", "clone3", "fsopen",
        "fsconfig", "fsmount", "fspick", "move_mount", "mount_setattr", "open_tree",
        "open_tree_attr", "uselib",
    }  # fmt: skip


def test_clone_and_unshare_are_refused_for_namespace_flags_only() -> None:
    clone = surface.SURFACE["clone"].when
    # clone's flags are its first argument on x86_64; one test per bit.
    assert {index for index, _, _ in clone} == {0}
    assert all(mask == value for _, mask, value in clone)
    assert sum(mask for _, mask, _ in clone) == 0x7E020000  # Docker's mask
    unshare = surface.SURFACE["unshare"].when
    assert sum(mask for _, mask, _ in unshare) == 0x7E020080  # and CLONE_NEWTIME
    # open_tree is refused whatever its flags (a plain one is an O_PATH fd).
    assert surface.SURFACE["open_tree"].when == ()


def test_enforce_refuses_the_whole_table() -> None:
    policy = Policy([DENY], "enforce")
    assert surface.refused(policy) == frozenset(surface.SURFACE)
    # Even without a rule: enforcing mode is a boundary whatever the rules.
    assert surface.refused(Policy(mode="enforce")) == frozenset(surface.SURFACE)


def test_virtualize_refuses_io_uring_only_and_only_with_rules() -> None:
    io_uring = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
    assert surface.refused(Policy([DENY])) == io_uring
    assert surface.refused(Policy([DENY], view="opens")) == io_uring
    assert surface.refused(Policy()) == frozenset()


def test_allow_syscalls_take_calls_out() -> None:
    policy = Policy([DENY], "enforce", allow_syscalls=["ptrace", "clone3"])
    assert surface.refused(policy) == frozenset(surface.SURFACE) - {"ptrace", "clone3"}
    names = [name for name, *_ in surface.refused_calls(policy)]
    assert names == sorted(names)
    assert "ptrace" not in names
    assert policy != Policy([DENY], "enforce")
    assert hash(policy) == hash(Policy([DENY], "enforce", allow_syscalls=["clone3", "ptrace"]))
    assert policy.enforcing().allow_syscalls == policy.allow_syscalls


def test_an_unknown_name_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match="did you mean io_uring_setup"):
        Policy(allow_syscalls=["io_uring_setpu"])
    with pytest.raises(ValueError, match="'open' is not a system call unotifyd refuses"):
        Policy(allow_syscalls=["open"])
    with pytest.raises(PolicyError, match=r"--allow-syscall: 'ptrac' .*did you mean ptrace"):
        parse_allow_syscalls(["ptrac"])


def test_warnings_name_the_route() -> None:
    policy = Policy([DENY], "enforce", allow_syscalls=["io_uring_setup"])
    (line,) = surface.warnings(policy)
    assert line.startswith("warning: io_uring_setup is allowed by the policy: io_uring")
    (line,) = surface.warnings(Policy([DENY], allow_syscalls=["ptrace"]))
    assert "changes nothing" in line
    assert surface.warnings(Policy([DENY], "enforce")) == []


def test_policy_file_key() -> None:
    text = 'version = 1\nmode = "enforce"\nallow_syscalls = ["ptrace", "bpf"]\n'
    policy = parse_policy(text, "p.toml")
    assert policy.allow_syscalls == {"ptrace", "bpf"}
    merged = combine(policy, [], {"clone3"})
    assert merged.allow_syscalls == {"ptrace", "bpf", "clone3"}
    assert merged.mode == "enforce"


def test_policy_file_errors_name_the_line() -> None:
    text = 'version = 1\nallow_syscalls = [\n  "ptrace",\n  "io_uring_setpu",\n]\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.toml")
    assert str(info.value).startswith(
        "p.toml:4: 'io_uring_setpu' is not a system call unotifyd refuses (did you mean "
        "io_uring_setup"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy('version = 1\n\nallow_syscalls = "ptrace"\n', "p.toml")
    assert str(info.value) == (
        "p.toml:3: 'allow_syscalls' must be an array of system call names, such as "
        '["io_uring_setup"], not a string'
    )


def test_compile_filter_refuses_a_call_both_trapped_and_refused() -> None:
    with pytest.raises(ValueError, match="both trapped and refused: openat"):
        compile_filter({"openat"}, [("openat", 257, errno.EPERM, ())])
    bpf = compile_filter({"openat"}, surface.refused_calls(Policy([DENY], "enforce")))
    assert len(bpf) % 8 == 0
    assert len(bpf) > len(compile_filter({"openat"}, ()))


def test_unshare_is_trapped_for_a_new_user_or_mount_namespace_where_not_refused() -> None:
    """Served.namespaces_pinned holds only while no thread can move itself to
    another user or mount namespace unseen: virtualizing mode traps unshare
    for those flags (and no other), enforcing mode refuses it (no rule of
    its filter notifies what is refused), and a policy that re-allows it
    gets the trap back."""
    rules = [ReadOnly(parse_pattern("/r/**"))]
    unshare_only = {test for name, test in ONLY_WHEN if name == "unshare"}
    new_namespaces = (surface.CLONE_NEWUSER, surface.CLONE_NEWNS)
    assert unshare_only == {(0, flag, flag) for flag in new_namespaces}
    for mode, allow, trapped_too in (
        ("virtualize", (), True),
        ("enforce", (), False),
        ("enforce", ("unshare",), True),
        ("enforce", ("unshare", "setns"), True),
    ):
        policy = Policy(rules, mode, allow_syscalls=frozenset(allow))
        spec = filter_spec(policy)
        assert ("unshare" in spec.trapped) == trapped_too, (mode, allow)
        assert {test for name, test in spec.only if name == "unshare"} == (
            unshare_only if trapped_too else set()
        )
        assert "setns" in spec.trapped or "setns" in {name for name, *_ in spec.refused}
        assert namespaces_seen(policy)
        assert spec.compile()
    # A filter that traps nothing sees nothing (a policy with no rules); under
    # --enforce a thread clone makes in a mount namespace of its own can take
    # the leader's place by execve, unseen (registry.namespaces_seen).
    assert not namespaces_seen(Policy([], "virtualize"))
    for clone in ("clone", "clone3"):
        assert not namespaces_seen(Policy(rules, "enforce", allow_syscalls=frozenset([clone])))
        assert namespaces_seen(Policy(rules, "virtualize", allow_syscalls=frozenset([clone])))



def _lane_config(moves_cwd: list[int], unsettled: list[int]) -> passthrough.Config:
    return passthrough.config(
        (), (), idle_s=1.0, check_creds=True, ids=(0,) * 8, cap_eff=1, cap_prm=1,
        userns="user:[1]", moves_cwd=moves_cwd, unsettled=unsettled,
    )  # fmt: skip


def test_a_cwd_is_kept_only_where_every_call_that_moves_one_is_seen() -> None:
    """The lane keeps a thread's cwd open between its calls only where the
    filter traps or refuses every call by which one moves (registry
    .MOVES_A_CWD; struct cwds in passthrough.c), and is told so by the
    numbers of those calls; a thread it cannot name, or more than it can
    hold, keeps nothing."""
    redirect = parse_redirect("/etc/passwd=/etc/hostname", "test")
    deny = parse_deny("/x", "test")
    for policy in (Policy([redirect]), Policy([redirect], "enforce"), Policy([deny])):
        assert cwds_seen(policy), policy
        assert set(MOVES_A_CWD) <= filter_spec(policy).trapped | surface.refused(policy)
    # chdir and execve are not trapped: by the opens-only view, read-only trees alone.
    assert not cwds_seen(Policy([redirect], view="opens"))
    assert not cwds_seen(Policy([parse_readonly("/usr/**", "test")]))
    nrs = [BY_NAME[name].nr for name in MOVES_A_CWD]
    kept = _lane_config(nrs, [12, 34])
    assert kept.cwd_kept == 1 and list(kept.unsettled)[:3] == [12, 34, 0]
    assert [nr for nr in range(512) if kept.moves_cwd[nr]] == sorted(nrs)
    for unsettled in ([0], list(range(1, passthrough.UNSETTLED_MAX + 2))):
        assert not _lane_config(nrs, unsettled).cwd_kept
    assert not _lane_config([], []).cwd_kept
