"""Directory listings with hidden names left out, on real directories of this process.

Tests of :func:`take_fd` need ``pidfd_getfd(2)`` (5.6). They carry the
``kernel`` mark: every kernel that can run unotifyd at all has it, and the
mark's rule (conftest.py) means they may never skip silently.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unotifyd.kernel.dirents import DIRENT64_HEAD, filter_records, read_listing, take_fd
from unotifyd.kernel.errors import BadArgument, ProgramGone

ME = os.getpid()
N_FILES = 300
SMALL = 512  # a getdents64 count that needs many calls for N_FILES entries


def _hidden(name: bytes) -> bool:
    return name.endswith((b"3", b"7")) or name == b"secret"


def _names(data: bytes) -> list[bytes]:
    out = []
    off = 0
    while off < len(data):
        _, _, reclen, _ = DIRENT64_HEAD.unpack_from(data, off)
        name = data[off + DIRENT64_HEAD.size : off + reclen]
        out.append(name[: name.index(0)])
        off += reclen
    return out


def _drain(fd: int, count: int, hidden: Callable[[bytes], bool]) -> tuple[list[bytes], int]:
    """All names read_listing gives until the end, and how many calls that took."""
    names: list[bytes] = []
    calls = 0
    while True:
        calls += 1
        data = read_listing(fd, count, hidden)
        assert len(data) <= count
        if not data:
            return names, calls
        names += _names(data)


@pytest.fixture
def big_dir(tmp_path: Path) -> Path:
    for i in range(N_FILES):
        (tmp_path / f"file-{i:04d}").touch()
    (tmp_path / "secret").mkdir()
    return tmp_path


@pytest.fixture
def dir_fd(big_dir: Path) -> Iterator[int]:
    fd = os.open(big_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def _expected(d: Path) -> set[bytes]:
    return {os.fsencode(n) for n in os.listdir(d)} | {b".", b".."}


def test_listing_leaves_out_hidden_names(big_dir: Path, dir_fd: int) -> None:
    names, calls = _drain(dir_fd, SMALL, _hidden)
    assert calls > 5  # really read in many chunks
    assert len(names) == len(set(names))
    assert set(names) == {n for n in _expected(big_dir) if not _hidden(n)}
    assert not any(_hidden(n) for n in names)


def test_all_hidden_is_end_not_empty_chunk(big_dir: Path, dir_fd: int) -> None:
    """Chunks of only hidden names are skipped over; b"" only at the real end."""
    keep = {b"file-0299"}
    names, calls = _drain(dir_fd, SMALL, lambda n: n not in keep)
    assert names == [b"file-0299"]
    assert calls == 2


def test_huge_count_nothing_hidden(big_dir: Path, dir_fd: int) -> None:
    names, _ = _drain(dir_fd, 0xFFFF_FFFF, lambda n: False)
    assert sorted(names) == sorted(_expected(big_dir))


def test_count_too_small_is_einval(dir_fd: int) -> None:
    with pytest.raises(OSError) as e:
        read_listing(dir_fd, 8, _hidden)
    assert e.value.errno == errno.EINVAL


def test_not_a_directory_is_enotdir(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        with pytest.raises(OSError) as e:
            read_listing(fd, 4096, _hidden)
        assert e.value.errno == errno.ENOTDIR
    finally:
        os.close(fd)


def test_bad_fd_is_ebadf() -> None:
    with pytest.raises(OSError) as e:
        read_listing(-1, 4096, _hidden)
    assert e.value.errno == errno.EBADF


@pytest.mark.kernel
def test_take_fd_shares_the_offset(big_dir: Path, dir_fd: int) -> None:
    """Reads through our copy move the program's offset; it continues where we left."""
    copy = take_fd(ME, dir_fd)
    try:
        assert os.get_inheritable(copy) is False  # O_CLOEXEC
        assert os.path.samestat(os.fstat(copy), os.fstat(dir_fd))
        first = _names(read_listing(copy, SMALL, _hidden))
        first += _names(read_listing(copy, SMALL, _hidden))
        assert first
    finally:
        os.close(copy)
    # The "program" reads on with its own fd, unfiltered.
    rest, _ = _drain(dir_fd, 4096, lambda n: False)
    assert rest
    assert not set(first) & set(rest)
    everything = set(first) | set(rest)
    assert everything >= {n for n in _expected(big_dir) if not _hidden(n)}
    # Between them, every name was handed out once, hidden ones only unfiltered.
    assert len(first) + len(rest) == len(everything)


@pytest.mark.kernel
def test_take_fd_uses_the_threads_own_fd_table(tmp_path: Path) -> None:
    """A thread that unshared its fd table: its fds, not its process's."""
    libc = ctypes.CDLL(None, use_errno=True)
    seen: dict[str, int] = {}
    ready = threading.Event()
    done = threading.Event()

    def thread() -> None:
        assert libc.unshare(0x400) == 0  # CLONE_FILES
        # Above every fd the process has, so only this table has it.
        fd = os.open(tmp_path, os.O_RDONLY)
        seen["fd"] = os.dup2(fd, 900)
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10)
        os.close(fd)
        os.close(900)

    t = threading.Thread(target=thread)
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(BadArgument):
            take_fd(ME, seen["fd"])
        copy = take_fd(seen["tid"], seen["fd"])
        assert os.readlink(f"/proc/self/fd/{copy}") == str(tmp_path)
        os.close(copy)
    finally:
        done.set()
        t.join()


@pytest.mark.kernel
def test_take_fd_before_thread_pidfds(dir_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before 6.9 pidfd_open rejects PIDFD_THREAD: a non-leader thread's process is used."""
    real = os.pidfd_open

    def old_kernel(pid: int, flags: int = 0) -> int:
        if flags:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", old_kernel)
    tids: list[int] = []
    ready = threading.Event()
    done = threading.Event()

    def thread() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait(10)

    t = threading.Thread(target=thread)
    t.start()
    try:
        assert ready.wait(10)
        assert tids[0] != ME
        copy = take_fd(tids[0], dir_fd)
        assert os.path.samestat(os.fstat(copy), os.fstat(dir_fd))
        os.close(copy)
    finally:
        done.set()
        t.join()


@pytest.mark.kernel
@pytest.mark.parametrize("fd", [987, -1, 2**31])
def test_take_fd_of_unopened_fd_is_ebadf(fd: int) -> None:
    with pytest.raises(BadArgument) as e:
        take_fd(ME, fd)
    assert e.value.errno == errno.EBADF


@pytest.mark.kernel
def test_take_fd_of_gone_process_is_target_gone() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(ProgramGone):
        take_fd(p.pid, 0)


# --- filter_records on synthesized records -----------------------------------

_name = st.binary(min_size=1, max_size=255).filter(lambda b: b"\0" not in b and b"/" not in b)
_record = st.tuples(
    st.integers(0, 2**64 - 1),  # d_ino
    st.integers(-(2**63), 2**63 - 1),  # d_off
    st.integers(0, 255),  # d_type
    _name,
    st.integers(0, 7),  # extra padding beyond the kernel's alignment
)


def _pack(ino: int, off: int, typ: int, name: bytes, extra: int) -> bytes:
    # The kernel rounds d_reclen up to 8 (fs/readdir.c, filldir64); the
    # padding is not necessarily zero, and must be kept as is.
    size = DIRENT64_HEAD.size + len(name) + 1
    reclen = (size + 7) // 8 * 8 + 8 * (extra % 2)
    pad = bytes((0xA5 + i) % 256 for i in range(reclen - size))
    return DIRENT64_HEAD.pack(ino, off, reclen, typ) + name + b"\0" + pad


@given(st.lists(_record, max_size=40), st.sets(_name, max_size=10))
def test_filter_records_keeps_exactly_the_visible_ones(
    records: list[tuple[int, int, int, bytes, int]], hide: set[bytes]
) -> None:
    # Hide some names that do occur, too.
    hide |= {r[3] for r in records[::3]}
    packed = [_pack(*r) for r in records]
    out = filter_records(b"".join(packed), hide.__contains__)
    assert out == b"".join(p for p, r in zip(packed, records, strict=True) if r[3] not in hide)
    assert _names(out) == [r[3] for r in records if r[3] not in hide]


@given(st.binary(max_size=200))
def test_filter_records_rejects_or_parses_garbage(data: bytes) -> None:
    """Never loops or reads past the end: either records come back or ValueError."""
    try:
        out = filter_records(data, lambda n: False)
    except ValueError:
        return
    assert out == data
