"""The kernel layer's readers, exercised on this test process itself (no seccomp needed)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from unotifyd.kernel import abi
from unotifyd.kernel.errors import BadArgument, ProgramGone
from unotifyd.kernel.program import MemoryReader, PathResolver

ME = os.getpid()


@pytest.fixture
def mem() -> MemoryReader:
    return MemoryReader()


def _guarded_page() -> tuple[mmap.mmap, int]:
    """A readable page followed by an inaccessible one; returns (map, address of page 1)."""
    m = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + mmap.PAGESIZE, mmap.PAGESIZE, 0) == 0  # PROT_NONE
    return m, addr


def test_read_path_of_this_process(mem: MemoryReader) -> None:
    buf = ctypes.create_string_buffer(b"/etc/hostname")
    assert mem.read_path(ME, ctypes.addressof(buf)) == b"/etc/hostname"


def test_read_path_ending_at_a_page_boundary(mem: MemoryReader) -> None:
    # The NUL is the last byte before an unmapped page: reading must not
    # touch the next page (the kernel's strncpy_from_user would not).
    m, addr = _guarded_page()
    text = b"/x" * 100
    start = mmap.PAGESIZE - len(text) - 1
    m[start : start + len(text) + 1] = text + b"\0"
    assert mem.read_path(ME, addr + start) == text


def test_read_path_running_into_an_unreadable_page_is_efault(mem: MemoryReader) -> None:
    m, addr = _guarded_page()
    m[mmap.PAGESIZE - 5 : mmap.PAGESIZE] = b"/abcd"  # no NUL before the guard page
    with pytest.raises(BadArgument) as e:
        mem.read_path(ME, addr + mmap.PAGESIZE - 5)
    assert e.value.errno == errno.EFAULT
    # A pointer into the PROT_NONE page itself: the kernel cannot read it either.
    with pytest.raises(BadArgument) as e:
        mem.read_path(ME, addr + mmap.PAGESIZE + 10)
    assert e.value.errno == errno.EFAULT


def test_read_path_into_unmapped_memory_is_efault(mem: MemoryReader) -> None:
    # Map and unmap with libc directly: a Python mmap object would unmap
    # the address again when collected, whatever lives there by then.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    addr = libc.mmap(None, mmap.PAGESIZE, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    assert libc.munmap(addr, mmap.PAGESIZE) == 0
    with pytest.raises(BadArgument) as e:
        mem.read_path(ME, addr)
    assert e.value.errno == errno.EFAULT


def test_read_path_without_nul_within_path_max_is_enametoolong(mem: MemoryReader) -> None:
    buf = ctypes.create_string_buffer(b"a" * (abi.PATH_MAX + 10))
    with pytest.raises(BadArgument) as e:
        mem.read_path(ME, ctypes.addressof(buf))
    assert e.value.errno == errno.ENAMETOOLONG


def test_read_path_of_exactly_path_max_minus_one_works(mem: MemoryReader) -> None:
    text = b"/" + b"a" * (abi.PATH_MAX - 2)
    buf = ctypes.create_string_buffer(text)
    assert mem.read_path(ME, ctypes.addressof(buf)) == text


def test_null_pointer_is_efault(mem: MemoryReader) -> None:
    with pytest.raises(BadArgument) as e:
        mem.read_path(ME, 0)
    assert e.value.errno == errno.EFAULT


def test_a_vanished_process_is_target_gone(mem: MemoryReader) -> None:
    # A reaped child: its pid is free (a joined thread may not be gone from
    # the kernel's pid table yet, which made a thread-based test flaky).
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits at once
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(ProgramGone):
        mem.read_path(pid, 4096)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_text("x")
    (tmp_path / "link-dir").symlink_to("real")
    (tmp_path / "link-file").symlink_to(tmp_path / "real" / "file")
    (tmp_path / "dangling").symlink_to("nowhere/new")
    (tmp_path / "loop").symlink_to("loop")
    return tmp_path.resolve()


def resolve(path: str | Path, *, follow: bool = True, dirfd: int = abi.AT_FDCWD) -> str:
    return PathResolver().resolve(ME, dirfd, os.fsencode(path), follow=follow)


def test_resolves_dots_slashes_and_symlinks(tree: Path) -> None:
    real = str(tree / "real" / "file")
    assert resolve(f"{tree}//link-dir/./../real/file") == real
    assert resolve(tree / "link-file") == real
    assert resolve(tree / "link-dir" / "file") == real


def test_nofollow_keeps_the_final_link(tree: Path) -> None:
    assert resolve(tree / "link-file", follow=False) == str(tree / "link-file")


def test_missing_components_are_appended_as_written(tree: Path) -> None:
    assert resolve(tree / "link-dir" / "new" / "x") == str(tree / "real" / "new" / "x")
    # O_CREAT through a dangling link creates the link's target.
    assert resolve(tree / "dangling") == str(tree / "nowhere" / "new")


def test_relative_to_a_dirfd(tree: Path) -> None:
    fd = os.open(tree / "link-dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert resolve("file", dirfd=fd) == str(tree / "real" / "file")
        assert resolve("../link-file", dirfd=fd) == str(tree / "real" / "file")
    finally:
        os.close(fd)


def test_relative_to_the_cwd(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "real")
    assert resolve("file") == str(tree / "real" / "file")


def test_proc_self_is_the_program_not_the_supervisor(tree: Path) -> None:
    # Resolved on behalf of another process, /proc/self and /dev/fd are its own.
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only waits
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        resolver = PathResolver()
        got = resolver.resolve(child, abi.AT_FDCWD, b"/proc/self/status", follow=True)
        assert got == f"/proc/{child}/status"
        # /dev/fd is a link to /proc/self/fd: the child's fd 0, not ours.
        fd0 = os.readlink(f"/proc/{child}/fd/0")
        got = resolver.resolve(child, abi.AT_FDCWD, b"/dev/fd/0", follow=True)
        assert got == (fd0 if fd0.startswith("/") else f"/proc/{child}/fd/0")
    finally:
        os.close(w)
        os.waitpid(child, 0)


def test_errors_the_kernel_would_give(tree: Path) -> None:
    cases: list[tuple[str | Path, int]] = [
        (tree / "real" / "file" / "x", errno.ENOTDIR),
        (f"{tree}/real/file/", errno.ENOTDIR),
        (tree / "loop", errno.ELOOP),
    ]
    for path, err in cases:
        with pytest.raises(OSError) as e:
            resolve(path)
        assert e.value.errno == err, path
    with pytest.raises(OSError) as e:
        resolve("x", dirfd=12345)
    assert e.value.errno == errno.EBADF


@pytest.fixture
def chrooted(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A child process chrooted into a small tree, with its cwd at /etc there."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside\n")
    # Absolute links are taken inside the root, as the program takes them.
    (root / "etc" / "alias").symlink_to("/etc/passwd")
    (root / "etc" / "up").symlink_to("../../../../etc/passwd")
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child waits in its chroot
        try:
            os.close(w)
            os.chroot(root)
            os.chdir("/etc")
            os.write(ready_w, b"x")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    try:
        yield pid, root
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def test_a_program_with_its_own_root_is_resolved_inside_it(chrooted: tuple[int, Path]) -> None:
    pid, _root = chrooted
    resolver = PathResolver()
    assert resolver.root_id(pid) is not None

    def inside(path: bytes, *, follow: bool = True) -> str:
        return resolver.resolve(pid, abi.AT_FDCWD, path, follow=follow)

    assert inside(b"/etc/alias") == "/etc/passwd"  # not the host's /etc/passwd
    assert inside(b"/etc/up") == "/etc/passwd"  # .. stops at the program's root
    assert inside(b"/../../etc/./passwd") == "/etc/passwd"
    assert inside(b"alias") == "/etc/passwd"  # relative to its cwd, /etc inside
    assert inside(b"/etc/alias", follow=False) == "/etc/alias"
    assert inside(b"/etc/new/file") == "/etc/new/file"  # still to be created
