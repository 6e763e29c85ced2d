"""Redirects on the real kernel: however a program names a file, it opens the target."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import Files
from .helpers import ATTEMPT, ORIGINAL, REDIRECTED, describe, py, run_launch, run_native, write

pytestmark = pytest.mark.kernel


def test_cat_etc_passwd_prints_the_target(files: Files) -> None:
    proc = run_launch("--redirect", f"/etc/passwd={files.target}", argv=["cat", "/etc/passwd"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_readme_example_prints_the_host_name() -> None:
    proc = run_launch("--redirect", "/etc/passwd=/etc/hostname", argv=["cat", "/etc/passwd"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == Path("/etc/hostname").read_text()
    assert proc.stdout != Path("/etc/passwd").read_text()


def test_shell_input_redirection(files: Files) -> None:
    proc = run_launch(
        "--redirect", f"/etc/passwd={files.target}", argv=["sh", "-c", "cat < /etc/passwd"]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_paths_not_in_a_rule_are_untouched(files: Files) -> None:
    other = write(files.root / "src" / "other.txt", "OTHER\n")
    proc = run_launch("--redirect", files.redirect, argv=["cat", str(other), str(files.src)])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "OTHER\n" + REDIRECTED
    # Redirected, not copied: the source is unchanged.
    assert files.src.read_text() == ORIGINAL


def test_openat_relative_to_a_dirfd(files: Files) -> None:
    code = """
        import os, sys
        dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(sys.argv[2], os.O_RDONLY, dir_fd=dfd)
        print(os.read(fd, 100).decode(), end="")
    """
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src.parent), files.src.name)
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_openat_relative_to_a_dirfd_with_dotdot(files: Files) -> None:
    sub = files.src.parent / "sub"
    sub.mkdir()
    code = """
        import os, sys
        dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(sys.argv[2], os.O_RDONLY, dir_fd=dfd)
        print(os.read(fd, 100).decode(), end="")
    """
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(sub), f"../{files.src.name}"))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_relative_path_from_the_cwd(files: Files) -> None:
    proc = run_launch(
        "--redirect", files.redirect, argv=["cat", files.src.name], cwd=files.src.parent
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_relative_path_after_chdir_in_the_program(files: Files) -> None:
    code = """
        import os, sys
        os.chdir(sys.argv[1])
        print(open(sys.argv[2]).read(), end="")
    """
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src.parent), files.src.name)
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_double_slash_dot_and_dotdot(files: Files) -> None:
    proc = run_launch(
        "--redirect", f"/etc/passwd={files.target}", argv=["cat", "/etc//../etc/./passwd"]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_dotdot_above_the_root(files: Files) -> None:
    proc = run_launch(
        "--redirect", f"/etc/passwd={files.target}", argv=["cat", "/../../etc/passwd"]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_symlink_to_the_redirected_file(files: Files) -> None:
    link = files.root / "link"
    link.symlink_to(files.src)
    proc = run_launch("--redirect", files.redirect, argv=["cat", str(link)])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_relative_symlink_chain_to_the_redirected_file(files: Files) -> None:
    (files.root / "l1").symlink_to("l2")
    (files.root / "l2").symlink_to(f"src/../src/{files.src.name}")
    proc = run_launch("--redirect", files.redirect, argv=["cat", "l1"], cwd=files.root)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_symlinked_directory_in_the_path(files: Files) -> None:
    linkdir = files.root / "linkdir"
    linkdir.symlink_to(files.src.parent)
    proc = run_launch("--redirect", files.redirect, argv=["cat", f"{linkdir}/{files.src.name}"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_dotdot_after_a_symlinked_directory_is_physical(files: Files) -> None:
    # linkdir -> src/sub, so linkdir/../data.txt is src/data.txt, not root/data.txt.
    sub = files.src.parent / "sub"
    sub.mkdir()
    write(files.root / files.src.name, "DECOY\n")
    (files.root / "linkdir").symlink_to(sub)
    proc = run_launch(
        "--redirect", files.redirect, argv=["cat", f"linkdir/../{files.src.name}"], cwd=files.root
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_rule_written_through_a_symlinked_directory(files: Files) -> None:
    linkdir = files.root / "linkdir"
    linkdir.symlink_to(files.src.parent)
    proc = run_launch(
        "--redirect", f"{linkdir}/{files.src.name}={files.target}", argv=["cat", str(files.src)]
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED


def test_o_nofollow_on_a_symlink_to_the_redirected_file_is_eloop(files: Files) -> None:
    link = files.root / "link"
    link.symlink_to(files.src)
    code = ATTEMPT + "print(attempt(sys.argv[1], os.O_RDONLY | os.O_NOFOLLOW))"
    proc = run_launch("--redirect", files.redirect, argv=py("import sys" + code, str(link)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "ELOOP\n"


# --- Directory trees ---------------------------------------------------------------


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "srctree", tmp_path / "dsttree"
    write(src / "a" / "b", "SRC a/b\n")
    write(src / "a" / "only-in-src", "SRC only\n")
    write(src / "top", "SRC top\n")
    write(dst / "a" / "b", "DST a/b\n")
    write(dst / "top", "DST top\n")
    # A sibling whose name starts like the source tree's: not inside it.
    write(tmp_path / "srctree2" / "a" / "b", "SIBLING\n")
    write(tmp_path / "outside", "OUTSIDE\n")
    return src, dst


def test_tree_redirect_maps_files_below(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    proc = run_launch("--redirect", f"{src}/**={dst}/**", argv=["cat", f"{src}/a/b", f"{src}/top"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "DST a/b\nDST top\n"


def test_tree_redirect_file_missing_in_target_is_enoent(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    code = "import sys" + ATTEMPT + "print(attempt(sys.argv[1], os.O_RDONLY))"
    proc = run_launch("--redirect", f"{src}/**={dst}/**", argv=py(code, f"{src}/a/only-in-src"))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "ENOENT\n"


def test_dotdot_in_a_tree_redirect_whose_source_is_not_on_disk(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    """``..`` after a missing name is ENOENT (the kernel's), except where a
    tree the rules make shows that name as a directory (issue 16)."""
    src, dst = trees
    ghost = tmp_path / "ghost" / "v"
    code = "import sys" + ATTEMPT + "[print(attempt(p, os.O_RDONLY)) for p in sys.argv[1:]]"
    # Missing on disk, and where a '..' leaves it, in the target too: ENOENT.
    paths = [f"{ghost}/a/../top", f"{ghost}/../v/top", f"{tmp_path}/nowhere/../outside",
             f"{ghost}/nothere/../top", f"{src}/nothere/../top"]  # fmt: skip
    proc = run_launch("--redirect", f"{ghost}/**={dst}/**", "--redirect", f"{src}/**={dst}/**",
                      argv=py(code, *paths))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "DST top\n\nDST top\n\nENOENT\nENOENT\nENOENT\n", describe(proc)


def test_tree_redirect_leaves_siblings_alone(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    root = src.parent
    proc = run_launch(
        "--redirect",
        f"{src}/**={dst}/**",
        argv=["cat", f"{root}/srctree2/a/b", f"{root}/outside"],
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "SIBLING\nOUTSIDE\n"


def test_tree_redirect_lists_the_target_directory(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    code = "import os, sys; print(sorted(os.listdir(sys.argv[1])))"
    proc = run_launch("--redirect", f"{src}/**={dst}/**", argv=py(code, f"{src}/a"))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "['b']\n"


def test_tree_redirect_creates_in_the_target(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    proc = run_launch(
        "--redirect", f"{src}/**={dst}/**", argv=["sh", "-c", f"echo NEW > {src}/a/new"]
    )
    assert proc.returncode == 0, describe(proc)
    assert (dst / "a" / "new").read_text() == "NEW\n"
    assert not (src / "a" / "new").exists()


def test_tree_redirect_through_relative_path_and_dirfd(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    code = """
        import os
        dfd = os.open("a", os.O_RDONLY | os.O_DIRECTORY)
        print(os.read(os.open("b", os.O_RDONLY, dir_fd=dfd), 100).decode(), end="")
        print(open("top").read(), end="")
    """
    proc = run_launch("--redirect", f"{src}/**={dst}/**", argv=py(code), cwd=src)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "DST a/b\nDST top\n"


# --- Flags of the injected fd ------------------------------------------------------

# os.open always adds O_CLOEXEC (PEP 446): open with the raw openat syscall.
_FLAGS_PROGRAM = """
import ctypes, fcntl, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
out = []
for name in sys.argv[2:]:
    flags = 0
    for part in name.split("|"):
        flags |= getattr(os, part)
    fd = libc.syscall(257, -100, sys.argv[1].encode(), flags, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), name)
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    out.append({
        "open": name,
        "fd": fd,
        "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
        "getfl": fl,
        "accmode": fl & os.O_ACCMODE,
        "append": bool(fl & os.O_APPEND),
        "nonblock": bool(fl & os.O_NONBLOCK),
    })
    os.close(fd)
print(json.dumps(out))
"""

_FLAG_SETS = [
    "O_RDONLY",
    "O_RDONLY|O_CLOEXEC",
    "O_WRONLY|O_APPEND",
    "O_WRONLY|O_APPEND|O_CLOEXEC",
    "O_RDWR",
    "O_RDWR|O_NONBLOCK",
    "O_RDONLY|O_NONBLOCK|O_CLOEXEC",
]


def _flags(result: str) -> list[dict[str, object]]:
    data = json.loads(result)
    assert isinstance(data, list)
    return data


def test_fd_flags_of_a_redirected_open_match_a_native_open(files: Files) -> None:
    native = run_native(py(_FLAGS_PROGRAM, str(files.target), *_FLAG_SETS))
    assert native.returncode == 0, describe(native)
    argv = py(_FLAGS_PROGRAM, str(files.src), *_FLAG_SETS)
    proc = run_launch("--redirect", files.redirect, argv=argv)
    assert proc.returncode == 0, describe(proc)
    assert _flags(proc.stdout) == _flags(native.stdout)
    # And explicitly, the properties that matter most.
    got = {str(e["open"]): e for e in _flags(proc.stdout)}
    assert got["O_RDONLY"]["cloexec"] is False
    assert got["O_RDONLY|O_CLOEXEC"]["cloexec"] is True
    assert got["O_RDONLY"]["nonblock"] is False
    assert got["O_RDWR"]["nonblock"] is False
    assert got["O_RDWR|O_NONBLOCK"]["nonblock"] is True
    assert got["O_WRONLY|O_APPEND"]["append"] is True
    assert got["O_WRONLY|O_APPEND"]["accmode"] == os.O_WRONLY
    assert got["O_RDWR"]["accmode"] == os.O_RDWR


def test_fd_flags_of_a_readonly_open_match_a_native_open(files: Files) -> None:
    sets = ["O_RDONLY", "O_RDONLY|O_CLOEXEC", "O_RDONLY|O_NONBLOCK"]
    native = run_native(py(_FLAGS_PROGRAM, str(files.src), *sets))
    assert native.returncode == 0, describe(native)
    proc = run_launch(
        "--readonly", f"{files.src.parent}/**", argv=py(_FLAGS_PROGRAM, str(files.src), *sets)
    )
    assert proc.returncode == 0, describe(proc)
    assert _flags(proc.stdout) == _flags(native.stdout)


def test_o_cloexec_fd_is_closed_across_exec_and_plain_fd_is_inherited(files: Files) -> None:
    # The program opens the redirected file twice, with and without O_CLOEXEC,
    # then execs a shell that reads both fds: only the plain one survives.
    code = """
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        path = sys.argv[1].encode()
        keep = libc.syscall(257, -100, path, os.O_RDONLY, 0)
        drop = libc.syscall(257, -100, path, os.O_RDONLY | os.O_CLOEXEC, 0)
        assert keep >= 0 and drop >= 0
        os.execvp("sh", ["sh", "-c", f"cat <&{keep}; cat <&{drop} 2>/dev/null || echo CLOSED"])
    """
    proc = run_launch("--redirect", files.redirect, argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED + "CLOSED\n"


def test_paths_through_proc_self_magic_links(files: Files) -> None:
    # /proc/self/root, /proc/self/cwd and /proc/thread-self/cwd are resolved
    # in the program's context (its pid, its cwd), not the supervisor's.
    rel = files.src.relative_to("/")
    script = (
        f"cat /proc/self/root/{rel}; cd {files.src.parent}; "
        f"cat /proc/self/cwd/{files.src.name}; cat /proc/thread-self/cwd/{files.src.name}"
    )
    proc = run_launch("--redirect", files.redirect, argv=["sh", "-c", script])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED * 3


def test_redirect_to_a_directory_target(tmp_path: Path) -> None:
    src, dst = tmp_path / "srcdir", tmp_path / "dstdir"
    write(src / "x", "X\n")
    write(dst / "y", "Y\n")
    code = "import os, sys; print(sorted(os.listdir(sys.argv[1])))"
    proc = run_launch("--redirect", f"{src}={dst}", argv=py(code, str(src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "['y']\n"


def test_redirect_from_a_thread_uses_the_threads_dirfd_and_cwd(files: Files) -> None:
    code = """
        import os, sys, threading
        out = []
        def work():
            dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
            out.append(os.read(os.open(sys.argv[2], os.O_RDONLY, dir_fd=dfd), 100).decode())
            out.append(open(sys.argv[2]).read())
        os.chdir(sys.argv[1])
        t = threading.Thread(target=work)
        t.start()
        t.join()
        print("".join(out), end="")
    """
    proc = run_launch(
        "--redirect", files.redirect, argv=py(code, str(files.src.parent), files.src.name)
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == REDIRECTED * 2
