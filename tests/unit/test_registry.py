"""The registry of trapped calls: numbers, families and operations cover each other.

Pure: no kernel, except where a number newer than libseccomp is checked
against the running kernel itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import get_args

import pyseccomp
import pytest

from unotifyd.calls import ops, sends
from unotifyd.calls.decode import Args
from unotifyd.calls.registry import (
    BY_NAME,
    BY_NR,
    OPERATIONS,
    FilterSpec,
    filter_spec,
    names,
    trapped,
)
from unotifyd.daemon.server import load, sandbox_id
from unotifyd.kernel import abi, rawsys
from unotifyd.policy import Content, Deny, Exec, Pattern, Policy, ReadOnly
from unotifyd.policy.backstop import backstop
from unotifyd.policy.syscalls import Family

# Calls libseccomp 2.5.4 does not know, with the kernel that brought them.
NEWER_THAN_LIBSECCOMP = {
    "setxattrat": (6, 13), "getxattrat": (6, 13), "listxattrat": (6, 13),
    "removexattrat": (6, 13), "file_getattr": (6, 17), "file_setattr": (6, 17),
}  # fmt: skip


def test_syscall_numbers_agree_with_libseccomp() -> None:
    unknown = []
    for name, nr in abi.SYSCALL_NUMBERS.items():
        known = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)
        if known < 0:
            unknown.append(name)  # newer than this libseccomp: see the next test
        else:
            assert known == nr, name
    assert set(unknown) <= set(NEWER_THAN_LIBSECCOMP)


def test_syscall_numbers_newer_than_libseccomp_are_the_kernels() -> None:
    """Each number is the call its name says: EBADF for a bad dirfd, not ENOSYS."""
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 17):
        pytest.skip("needs Linux 6.17 (file_getattr) to check these numbers")
    xattr_args = ctypes.create_string_buffer(16)  # struct xattr_args, all zero
    file_attr = ctypes.create_string_buffer(24)  # struct file_attr
    valid_rest: dict[str, tuple[rawsys.Arg, ...]] = {
        "setxattrat": (0, b"user.x", xattr_args, 16),
        "getxattrat": (0, b"user.x", xattr_args, 16),
        "listxattrat": (0, None, 0),
        "removexattrat": (0, b"user.x"),
        "file_getattr": (file_attr, 24, 0),
        "file_setattr": (file_attr, 24, 0),
    }
    for name in NEWER_THAN_LIBSECCOMP:
        # Each takes (dirfd, path, ...): with its other arguments valid,
        # dirfd -1 and a relative path is EBADF, where another call would
        # say something else and a missing one ENOSYS.
        with pytest.raises(OSError) as caught:
            rawsys.syscall(abi.SYSCALL_NUMBERS[name], -1, b"x", *valid_rest[name])
        assert caught.value.errno == errno.EBADF, (name, caught.value)


def test_every_entry_has_a_number_an_operation_and_a_family() -> None:
    assert len(BY_NR) == len(BY_NAME)  # no two entries share a number
    families = set(get_args(Family))
    for name, entry in BY_NAME.items():
        assert entry.name == name
        assert entry.nr == abi.SYSCALL_NUMBERS[name]
        assert entry.op in OPERATIONS, name
        assert entry.family in families, name
    # Every family is trapped by some policy, and has calls.
    assert all(names(f) for f in get_args(Family))


def test_every_operation_is_used_and_performable() -> None:
    used = {entry.op for entry in BY_NAME.values()}
    assert used == set(OPERATIONS)
    for op, operation in OPERATIONS.items():
        if operation.kind == "path":
            assert operation.perform is not None and operation.paths, op
            # Performed as the op of that name (the raw call it makes); the
            # sends live in a module of their own.
            assert operation.perform is getattr(sends if op.startswith("send") else ops, op), op
        elif operation.kind == "open":
            assert operation.open_decoder is not None, op
        else:
            assert operation.perform is None, op


# How many arguments each *at operation takes (its man page's prototype).
ARITY = {
    "rootchange": 2,  # no at_form: chroot, pivot_root and setns are let through
    "nschange": 1,  # no at_form: unshare is let through
    "cwdchange": 1,  # no at_form: fchdir is let through
    "sendto": 6, "sendmsg": 3, "sendmmsg": 4,
    "openat": 4, "openat2": 4, "newfstatat": 4, "statx": 5, "faccessat2": 4,
    "readlinkat": 4, "statfs": 3, "getxattr": 6, "listxattr": 5, "setxattr": 7,
    "removexattr": 4, "getxattrat": 6, "listxattrat": 5, "setxattrat": 6,
    "removexattrat": 4, "file_getattr": 5, "file_setattr": 5, "name_to_handle_at": 5,
    "inotify_add_watch": 3, "unlinkat": 3, "mkdirat": 3, "mknodat": 4, "renameat2": 5,
    "linkat": 5, "symlinkat": 3, "fchmodat2": 4, "fchownat": 5, "truncate": 3,
    "utimensat": 4, "chdir": 2, "execveat": 5, "getdents64": 3, "connect": 3, "bind": 3,
    "ioctl": 3,
}  # fmt: skip


def test_every_legacy_form_is_rewritten_into_its_operations_layout() -> None:
    assert set(ARITY) == set(OPERATIONS)
    raw: Args = (101, 102, 103, 104, 105, 106)
    for name, entry in BY_NAME.items():
        if entry.at_form is None:
            continue
        a = entry.at_form(raw)
        assert len(a) == ARITY[entry.op], name
        # Each of the program's arguments is used, in order; the rest are constants.
        mine = [x for x in a if x in raw]
        assert mine == sorted(mine), name
        for spec in entry.paths or entry.operation.paths:
            if spec.fd_only:  # fchmod(fd, mode): no path, the fd is the program's
                assert a[spec.dirfd_arg or 0] in raw, name
                continue
            # A path argument is one of the program's, never a constant.
            assert a[spec.path_arg] in raw, name
            if spec.dirfd_arg is not None:
                assert a[spec.dirfd_arg] in (*raw, abi.AT_FDCWD), name


def test_the_kernels_own_rewrites() -> None:
    """Spot checks against the kernel's definitions (fs/stat.c, fs/namei.c, fs/open.c)."""
    a: Args = (11, 12, 13, 14, 15, 16)
    cwd, nofollow = abi.AT_FDCWD, abi.AT_SYMLINK_NOFOLLOW
    assert BY_NAME["lstat"].args_of(a) == (cwd, 11, 12, nofollow)
    assert BY_NAME["rmdir"].args_of(a) == (cwd, 11, abi.AT_REMOVEDIR)
    assert BY_NAME["rename"].args_of(a) == (cwd, 11, cwd, 12, 0)
    assert BY_NAME["symlink"].args_of(a) == (11, cwd, 12)
    assert BY_NAME["lchown"].args_of(a) == (cwd, 11, 12, 13, nofollow)
    assert BY_NAME["creat"].args_of(a) == (cwd, 11, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 12)
    assert BY_NAME["openat"].args_of(a) == a


def test_policies_trap_whole_families() -> None:
    every = Policy([Deny(Pattern("/a"), errno.ENOENT), Exec(Pattern("/usr", tree=True))])
    # sendmsg and sendmmsg only in enforcing mode, whose filter refuses the root
    # family; changes through an fd only where a rule is about files (below),
    # or in enforcing mode (a system setting's chmod on an fd is refused).
    assert trapped(every) == frozenset(BY_NAME) - names("sendmsg") - names("change_fd")
    enforcing = Policy([*every.rules], mode="enforce")
    assert trapped(enforcing) == frozenset(BY_NAME) - names("root")
    # Exec rules alone: the opens and changes too, in enforcing mode.
    execs = Policy([Exec(Pattern("/usr", tree=True))], mode="enforce")
    assert trapped(execs) == (
        names("exec") | names("open") | names("change") | names("change_fd")
    )
    read_only = Policy([ReadOnly(Pattern("/r"))])
    assert trapped(read_only) == (
        names("open") | names("change") | names("change_fd") | names("probe") | names("socket")
        | names("root")
    )  # fmt: skip
    assert names("change_fd") == {"fchmod", "fchown", "fsetxattr", "fremovexattr", "ioctl"}
    assert names("change_fd") <= trapped(Policy([*every.rules, *read_only.rules]))
    assert names("change_fd") <= trapped(Policy([Content(Pattern("/motd"), b"hi\n")]))


def test_a_change_through_an_fd_by_utimensat_is_trapped_where_the_family_is() -> None:
    """utimensat(fd, NULL, ...) is futimens(fd): with a path only, unless some
    rule can refuse a change through an fd (the filter's only_if_set)."""
    deny = filter_spec(Policy([Deny(Pattern("/a"), errno.EACCES)]))
    assert "utimensat" in deny.trapped and ("utimensat", 1) in deny.only_if_set
    read_only = filter_spec(Policy([ReadOnly(Pattern("/r", tree=True))]))
    assert "utimensat" in read_only.trapped and ("utimensat", 1) not in read_only.only_if_set
    assert ("futimesat", 1) in deny.only_if_set


def test_a_daemon_profile_traps_changes_through_an_fd_whatever_its_rules() -> None:
    """A profile may gain a read-only tree under a running program (a restart
    reloads it): its filter traps change_fd from the start, in full."""
    policy = Policy([Deny(Pattern("/a"), errno.EACCES)])
    spec = filter_spec(policy, policy_may_change=True)
    assert names("change_fd") <= spec.trapped
    assert spec.trapped - names("change_fd") == filter_spec(policy).trapped
    assert not {name for name, _ in spec.only_if_set} & {"utimensat", "futimesat"}
    assert filter_spec(Policy(), policy_may_change=True).trapped == frozenset()
    opens_only = Policy([Deny(Pattern("/tmp", tree=True))], view="opens")
    assert trapped(opens_only) == names("open") | names("root")


def test_the_daemon_compiles_its_profiles_as_ones_that_may_change(tmp_path: Path) -> None:
    """The filters the daemon hands out (daemon/server.py, load) are made with
    ``policy_may_change``: a redirect's traps change_fd, which launch's does not."""
    (tmp_path / "p.toml").write_text(
        'version = 1\n[[redirect]]\nfrom = "/etc/passwd"\nto = "/etc/hostname"\n'
    )
    config = tmp_path / "unotifyd.toml"
    config.write_text('version = 1\n[[profile]]\nname = "p"\npolicy = "p.toml"\nuids = [0]\n')
    loaded = load(str(config))
    policy = loaded.config.profiles["p"].policy
    assert loaded.filters["p"] == filter_spec(policy, policy_may_change=True).compile()
    assert loaded.filters["p"] != filter_spec(policy).compile()


def test_a_filters_digest_names_what_it_does() -> None:
    """FilterSpec.digest, stored with a daemon's listeners: the same for two
    policies whose filters trap, refuse and let through the same calls, and
    another where one traps more (a deny added to read-only trees traps the
    stat family) or refuses more (enforcing mode)."""
    ro = Policy([ReadOnly(Pattern("/usr", tree=True))])
    ro_too = Policy([ReadOnly(Pattern("/opt", tree=True)), ReadOnly(Pattern("/srv"))])
    more = Policy([ReadOnly(Pattern("/usr", tree=True)), Deny(Pattern("/usr/x"), errno.EACCES)])
    enforced = Policy([ReadOnly(Pattern("/usr", tree=True))], mode="enforce")
    digest = filter_spec(ro, policy_may_change=True).digest()
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert filter_spec(ro_too, policy_may_change=True).digest() == digest
    assert filter_spec(more, policy_may_change=True).digest() != digest
    assert filter_spec(enforced, policy_may_change=True).digest() != digest
    # What the filter does, not the order its parts were gathered in.
    spec = filter_spec(more, policy_may_change=True)
    shuffled = FilterSpec(spec.trapped, spec.refused[::-1], spec.unless[::-1], spec.only[::-1],
                          spec.only_if_set[::-1])
    assert shuffled.digest() == spec.digest()


def test_the_daemon_names_each_profiles_sandbox(tmp_path: Path) -> None:
    """load() names what each profile's programs run in: the filter it hands
    out and the Landlock ruleset its client adds. Two exec allow-lists trap
    the same calls (the filter is the same) but keep different files from
    running (audit helper-55: the narrower one was not told apart)."""
    policies = {
        "ro": '[[readonly]]\npath = "/usr/**"\n',
        "deny": '[[deny]]\npath = "/usr/x"\n',
        "wide": '[[exec]]\npath = "/usr/bin/**"\n',
        "narrow": '[[exec]]\npath = "/usr/bin/git"\n',
    }
    profiles = ""
    for name, text in policies.items():
        (tmp_path / f"{name}.toml").write_text(f"version = 1\n{text}")
        profiles += f'[[profile]]\nname = "{name}"\npolicy = "{name}.toml"\nuids = [0]\n'
    config = tmp_path / "unotifyd.toml"
    config.write_text(f"version = 1\n{profiles}")
    loaded = load(str(config))
    for name in policies:
        policy = loaded.config.profiles[name].policy
        spec = filter_spec(policy, policy_may_change=True)
        assert loaded.filter_ids[name] == sandbox_id(spec, backstop(policy))
    assert len(set(loaded.filter_ids.values())) == len(policies)
    assert loaded.filters["wide"] == loaded.filters["narrow"]
