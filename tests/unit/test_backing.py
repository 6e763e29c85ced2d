"""Backing: sealed memfds for content rules, scratch directories for private ones."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import unotifyd.serve.backing as backing_module
from unotifyd.policy import (
    Content,
    Deny,
    EmulateOpen,
    Exec,
    Fail,
    OpenRequest,
    Pattern,
    Policy,
    Private,
    ReadOnly,
    decide_open,
)
from unotifyd.serve.backing import SEALS, Backing, BackingError, default_private_root

MOTD = Pattern("/etc/motd")
CACHE = Pattern("/var/cache/app", tree=True)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private root of the test's own (the default is under /run)."""
    return tmp_path / "private"


@pytest.fixture
def no_leak() -> Iterator[None]:
    before = open_fds()
    yield
    # listdir's own fd is gone again when it returns.
    assert open_fds() == before


def backing_of(rule: Content | Private, backing: Backing) -> str:
    match = backing.policy.match(rule.pattern.path)
    assert match is not None
    bound = match.rule
    assert isinstance(bound, Content | Private)
    assert bound.backing is not None
    return bound.backing


# --- Nothing to back --------------------------------------------------------------


def test_policy_without_content_or_private_costs_nothing(root: Path, no_leak: None) -> None:
    policy = Policy([Deny(MOTD), ReadOnly(CACHE), Exec(Pattern("/usr/bin", tree=True))])
    with Backing(policy, private_root=str(root)) as backing:
        assert backing.policy is policy
        assert backing.scratch_directory is None
    assert not root.exists()
    empty = Policy()
    assert Backing(empty).policy is empty


# --- Content ---------------------------------------------------------------------


def test_content_is_read_through_its_backing_path(no_leak: None) -> None:
    rule = Content(MOTD, b"hello\n")
    with Backing(Policy([rule])) as backing:
        path = backing_of(rule, backing)
        assert path.startswith("/proc/self/fd/")
        with open(path, "rb") as a, open(path, "rb") as b:
            # Each open is its own open file description, with its own offset.
            assert a.read(2) == b"he"
            assert b.read() == b"hello\n"
            assert a.read() == b"llo\n"
        info = os.stat(path)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o444
        assert info.st_size == len(b"hello\n")
        # Rules compare without their backing; the bound policy is another object.
        assert backing.policy == Policy([rule])
        assert backing.policy is not Policy([rule])


def test_content_memfd_is_sealed_and_refuses_writes(no_leak: None) -> None:
    rule = Content(MOTD, b"x" * 100)
    with Backing(Policy([rule])) as backing:
        path = backing_of(rule, backing)
        fd = int(path.rsplit("/", 1)[1])
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
        with pytest.raises(PermissionError):  # F_SEAL_SEAL: no seal can be lifted or added
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        # Root may open it for writing despite mode 0444, but not write it.
        writer = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for attempt in (
                lambda: os.write(writer, b"y"),
                lambda: os.pwrite(writer, b"y", 100),  # grow
                lambda: os.ftruncate(writer, 1),  # shrink
                lambda: os.ftruncate(writer, 1000),  # grow
            ):
                with pytest.raises(OSError) as info:
                    attempt()
                assert info.value.errno == errno.EPERM
        finally:
            os.close(writer)
        with open(path, "rb") as f:
            assert f.read() == b"x" * 100


def test_content_empty_and_large(no_leak: None) -> None:
    empty = Content(Pattern("/e"), b"")
    big = Content(Pattern("/b"), bytes(range(256)) * 4096)  # 1 MiB
    with Backing(Policy([empty, big])) as backing:
        with open(backing_of(empty, backing), "rb") as f:
            assert f.read() == b""
        with open(backing_of(big, backing), "rb") as f:
            assert f.read() == big.data


def test_content_memfd_name_is_cut_to_what_the_kernel_takes(no_leak: None) -> None:
    rule = Content(Pattern("/" + "é" * 200), b"long")  # 400 bytes of UTF-8
    with Backing(Policy([rule])) as backing:
        path = backing_of(rule, backing)
        assert os.readlink(path).startswith("/memfd:unotifyd:/")
        with open(path, "rb") as f:
            assert f.read() == b"long"


def test_decisions_use_the_backing() -> None:
    rule = Content(MOTD, b"m")
    unbound = decide_open(Policy([rule]), OpenRequest("openat", "/etc/motd", os.O_RDONLY, 0))
    assert unbound == Fail(errno.EIO, reason=unbound.reason)  # never bound: fails closed
    with Backing(Policy([rule])) as backing:
        decision = decide_open(backing.policy, OpenRequest("openat", "/etc/motd", os.O_RDONLY, 0))
        assert isinstance(decision, EmulateOpen)
        assert decision.path == backing_of(rule, backing)


# --- Private ---------------------------------------------------------------------


def test_private_gets_a_scratch_directory_removed_at_close(root: Path, no_leak: None) -> None:
    first = Private(CACHE)
    second = Private(Pattern("/tmp", tree=True))
    backing = Backing(Policy([first, Deny(MOTD), second]), private_root=str(root))
    a, b = backing_of(first, backing), backing_of(second, backing)
    assert a != b
    sandbox = backing.scratch_directory
    assert sandbox is not None
    assert os.path.dirname(a) == os.path.dirname(b) == sandbox
    assert os.path.dirname(sandbox) == str(root)
    for path, mode in ((a, 0o1777), (b, 0o1777), (sandbox, 0o711), (str(root), 0o711)):
        info = os.lstat(path)
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == mode, path
    assert os.listdir(a) == []
    # A program's writes: files, directories, read-only ones.
    Path(a, "d", "e").mkdir(parents=True)
    Path(a, "d", "e", "f").write_text("data")
    Path(a, "d").chmod(0o500)
    backing.close()
    assert not os.path.exists(sandbox)
    assert root.is_dir()  # shared by sandboxes: stays
    assert backing.closed


def test_private_removal_does_not_follow_planted_symlinks(root: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep")
    rule = Private(CACHE)
    with Backing(Policy([rule]), private_root=str(root)) as backing:
        scratch = Path(backing_of(rule, backing))
        (scratch / "to-dir").symlink_to(precious)
        (scratch / "to-file").symlink_to(precious / "keep")
        (scratch / "sub").mkdir()
        (scratch / "sub" / "up").symlink_to(tmp_path)
    assert not scratch.exists()
    assert (precious / "keep").read_text() == "keep"


def test_sandboxes_get_distinct_directories(root: Path) -> None:
    policy = Policy([Private(CACHE)])
    with (
        Backing(policy, private_root=str(root)) as one,
        Backing(policy, private_root=str(root)) as two,
    ):
        assert one.scratch_directory != two.scratch_directory
        assert backing_of(Private(CACHE), one) != backing_of(Private(CACHE), two)
    assert os.listdir(root) == []


def test_stale_sandboxes_of_gone_supervisors_are_swept(root: Path) -> None:
    """A sandbox directory left by a supervisor that no longer runs (here:
    our pid with another start time, as after a pid was reused) is removed
    when the next one is made; a live supervisor's, and anything not named
    as a sandbox, stay."""
    policy = Policy([Private(CACHE)])
    with Backing(policy, private_root=str(root)) as live:
        assert live.scratch_directory is not None
        live_name = os.path.basename(live.scratch_directory)
        stale = root / f"sandbox-{os.getpid()}-1-{'ab' * 8}"
        (stale / "0" / "deep").mkdir(parents=True)
        (stale / "0" / "deep" / "file").write_text("left behind\n")
        (stale / "0" / "link").symlink_to("/etc")  # removed, never followed
        other = root / "not-a-sandbox"
        other.mkdir()
        with Backing(policy, private_root=str(root)) as new:
            assert new.scratch_directory is not None
            names = set(os.listdir(root))
            assert names == {live_name, os.path.basename(new.scratch_directory), other.name}
    assert os.listdir(root) == [other.name]
    assert os.path.isdir("/etc")


@pytest.mark.parametrize("kind", ["symlink", "file", "group-writable"])
def test_unsafe_private_root_is_refused(tmp_path: Path, kind: str, no_leak: None) -> None:
    root = tmp_path / "private"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        root.symlink_to(tmp_path / "elsewhere")
    elif kind == "file":
        root.write_text("")
    else:
        root.mkdir()
        root.chmod(0o775)
    # Content first: its memfd, made before the root is refused, is closed again.
    policy = Policy([Content(MOTD, b"m"), Private(CACHE)])
    with pytest.raises(BackingError, match="private root"):
        Backing(policy, private_root=str(root))
    if kind == "symlink":
        assert os.listdir(tmp_path / "elsewhere") == []


def test_private_root_of_another_uid_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    root = tmp_path / "private"
    root.mkdir(mode=0o711)
    os.chown(root, 12345, 12345)
    with pytest.raises(BackingError, match="belongs to uid 12345"):
        Backing(Policy([Private(CACHE)]), private_root=str(root))


def test_default_private_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/x:/run/y")
    assert default_private_root() == "/run/x/private"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    expected = "/run/unotifyd/private" if os.geteuid() == 0 else None
    if expected is not None:
        assert default_private_root() == expected
    else:
        assert default_private_root().endswith(f"unotifyd-private-{os.geteuid()}")


# --- Closing ---------------------------------------------------------------------


def test_close_is_idempotent_and_closes_each_fd_once(root: Path, no_leak: None) -> None:
    rules: list[Content | Private] = [
        Content(MOTD, b"a"),
        Content(Pattern("/etc/issue"), b"b"),
        Private(CACHE),
    ]
    backing = Backing(Policy(rules), private_root=str(root))
    fds = [int(backing_of(rule, backing).rsplit("/", 1)[1]) for rule in rules[:2]]
    was_closed = backing.closed
    backing.close()
    assert (was_closed, backing.closed) == (False, True)
    # Reuse one of the numbers: a second close must not close it.
    reused = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert reused in fds
        backing.close()
        with backing:
            pass
        os.fstat(reused)  # still open
    finally:
        os.close(reused)


def test_close_reports_a_scratch_directory_it_could_not_remove(
    root: Path, monkeypatch: pytest.MonkeyPatch, no_leak: None
) -> None:
    backing = Backing(Policy([Content(MOTD, b"a"), Private(CACHE)]), private_root=str(root))
    sandbox = backing.scratch_directory
    assert sandbox is not None
    monkeypatch.setattr(backing_module, "_remove_tree", lambda path: OSError(errno.EBUSY, "busy"))
    with pytest.raises(OSError, match="busy"):
        backing.close()  # the memfd is closed all the same: no_leak checks
    backing.close()  # raised once only
    assert backing.closed
    monkeypatch.undo()
    assert backing_module._remove_tree(sandbox) is None
