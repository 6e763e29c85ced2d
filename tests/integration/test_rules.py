"""Deny and read-only rules on the real kernel, and the program's own credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Files
from .helpers import ATTEMPT, ORIGINAL, REDIRECTED, describe, py, run_launch, write

pytestmark = pytest.mark.kernel

#: Prints the JSON list of ``attempt(path, flags)`` for each "PATH FLAG|FLAG" argument.
_ATTEMPTS = (
    "import json, sys"
    + ATTEMPT
    + """
results = []
for spec in sys.argv[1:]:
    path, _, names = spec.rpartition(" ")
    flags = 0
    for name in names.split("|"):
        flags |= getattr(os, name)
    results.append(attempt(path, flags))
print(json.dumps(results))
"""
)


def attempts(*opts: str, specs: list[tuple[Path | str, str]], **kw: Any) -> list[str]:
    """Run the attempts under ``opts``; return one result per spec."""
    proc = run_launch(*opts, argv=py(_ATTEMPTS, *(f"{p} {f}" for p, f in specs)), **kw)
    assert proc.returncode == 0, describe(proc)
    results = json.loads(proc.stdout)
    assert isinstance(results, list) and len(results) == len(specs), describe(proc)
    return [str(r) for r in results]


# --- deny --------------------------------------------------------------------------


def test_deny_with_a_chosen_errno(files: Files) -> None:
    assert attempts("--deny", f"{files.src}:ENOENT", specs=[(files.src, "O_RDONLY")]) == ["ENOENT"]


def test_deny_default_errno_is_eacces(files: Files) -> None:
    # We are root: natively this open succeeds; only the rule can refuse it.
    assert attempts("--deny", str(files.src), specs=[(files.src, "O_RDONLY")]) == ["EACCES"]


def test_deny_other_errno_names(files: Files) -> None:
    assert attempts("--deny", f"{files.src}:EIO", specs=[(files.src, "O_RDONLY")]) == ["EIO"]


def test_deny_however_the_path_is_named(files: Files) -> None:
    link = files.root / "link"
    link.symlink_to(files.src)
    (files.root / "linkdir").symlink_to(files.src.parent)
    out = attempts(
        "--deny",
        f"{files.src}:EPERM",
        specs=[
            (link, "O_RDONLY"),
            (f"{files.root}/linkdir/{files.src.name}", "O_RDONLY"),
            (f"{files.src.parent}//./../src/{files.src.name}", "O_RDONLY"),
            (files.src.name, "O_RDONLY"),
        ],
        cwd=files.src.parent,
    )
    assert out == ["EPERM"] * 4


def test_deny_o_creat_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    out = attempts(
        "--deny",
        str(missing),
        specs=[(missing, "O_WRONLY|O_CREAT"), (missing, "O_RDWR|O_CREAT|O_EXCL")],
    )
    assert out == ["EACCES", "EACCES"]
    assert not missing.exists()


def test_deny_a_tree(files: Files) -> None:
    out = attempts(
        "--deny",
        f"{files.src.parent}/**:ENOENT",
        specs=[
            (files.src, "O_RDONLY"),
            (files.src.parent, "O_RDONLY|O_DIRECTORY"),
            (files.target, "O_RDONLY"),
        ],
    )
    assert out == ["ENOENT", "ENOENT", REDIRECTED]


def test_deny_via_raw_open_openat2_and_creat(files: Files) -> None:
    code = """
        import ctypes, errno, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        class How(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        p = sys.argv[1].encode()
        how = How(os.O_RDONLY, 0, 0)
        for r in (libc.syscall(2, p, os.O_RDONLY, 0),
                  libc.syscall(437, -100, p, ctypes.byref(how), ctypes.c_size_t(24)),
                  libc.syscall(85, p, 0o644)):
            print(errno.errorcode[ctypes.get_errno()] if r < 0 else r)
    """
    proc = run_launch("--deny", f"{files.src}:ENXIO", argv=py(code, str(files.src)))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "ENXIO\nENXIO\nENXIO\n"
    assert files.src.read_text() == ORIGINAL


# --- read-only ---------------------------------------------------------------------


@pytest.fixture
def rotree(tmp_path: Path) -> Path:
    tree = tmp_path / "ro"
    write(tree / "f", "DATA\n")
    write(tree / "sub" / "g", "G\n")
    return tree


def test_readonly_reading_works(rotree: Path) -> None:
    proc = run_launch(
        "--readonly",
        f"{rotree}/**",
        argv=["sh", "-c", f'cat {rotree}/f {rotree}/sub/g && ls {rotree} && cat < "{rotree}/f"'],
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "DATA\nG\nf\nsub\nDATA\n"


def test_readonly_opening_for_writing_is_erofs(rotree: Path) -> None:
    f = rotree / "f"
    out = attempts(
        "--readonly",
        f"{rotree}/**",
        specs=[
            (f, "O_WRONLY"),
            (f, "O_RDWR"),
            (f, "O_RDONLY|O_TRUNC"),
            (f, "O_WRONLY|O_APPEND"),
            (f, "O_WRONLY|O_CREAT"),
            (rotree / "new", "O_WRONLY|O_CREAT"),
            (rotree / "new", "O_RDONLY|O_CREAT"),
        ],
    )
    assert out == ["EROFS"] * 7
    assert f.read_text() == "DATA\n"
    assert not (rotree / "new").exists()


def test_readonly_o_creat_o_excl_of_an_existing_file_is_eexist(rotree: Path) -> None:
    # As on a read-only mount (fs/namei.c do_open: EEXIST comes before the
    # write check in may_open), whatever the access mode.
    f = rotree / "f"
    out = attempts(
        "--readonly",
        f"{rotree}/**",
        specs=[(f, "O_RDONLY|O_CREAT|O_EXCL"), (f, "O_WRONLY|O_CREAT|O_EXCL")],
    )
    assert out == ["EEXIST", "EEXIST"]


def test_readonly_creating_a_new_file_fails_and_no_file_appears(rotree: Path) -> None:
    proc = run_launch(
        "--readonly",
        f"{rotree}/**",
        argv=["sh", "-c", f"echo X > {rotree}/sub/new; echo status=$?"],
    )
    assert proc.stdout == "status=2\n", describe(proc)
    assert "Read-only file system" in proc.stderr, describe(proc)
    assert not (rotree / "sub" / "new").exists()
    out = attempts(
        "--readonly",
        f"{rotree}/**",
        specs=[
            (rotree / "new2", "O_RDWR|O_CREAT|O_EXCL"),
            (rotree / "new3", "O_WRONLY|O_CREAT|O_TRUNC"),
        ],
    )
    assert out == ["EROFS", "EROFS"]
    assert sorted(p.name for p in rotree.iterdir()) == ["f", "sub"]


def test_readonly_o_creat_for_reading_an_existing_file_works(rotree: Path) -> None:
    assert attempts("--readonly", f"{rotree}/**", specs=[(rotree / "f", "O_RDONLY|O_CREAT")]) == [
        "DATA\n"
    ]


def test_readonly_matches_a_real_read_only_mount(rotree: Path) -> None:
    """Every case answered as a ``mount -o ro`` file system answers it.

    The expected column was recorded on Linux 6.18 against a tmpfs remounted
    read-only: a missing file is ENOENT before any write check unless the open
    would create it, a directory opened for writing is EISDIR.
    """
    f, missing = rotree / "f", rotree / "missing"
    table: list[tuple[Path, str, str]] = [
        (f, "O_WRONLY", "EROFS"),
        (f, "O_RDONLY|O_TRUNC", "EROFS"),
        (f, "O_WRONLY|O_CREAT|O_EXCL", "EEXIST"),
        (f, "O_RDONLY|O_CREAT|O_EXCL", "EEXIST"),
        (f, "O_RDONLY|O_CREAT", "DATA\n"),
        (f, "O_WRONLY|O_CREAT", "EROFS"),
        (missing, "O_WRONLY", "ENOENT"),
        (missing, "O_RDONLY|O_TRUNC", "ENOENT"),
        (missing, "O_WRONLY|O_CREAT", "EROFS"),
        (missing, "O_RDONLY|O_CREAT", "EROFS"),
        (rotree / "nodir" / "x", "O_WRONLY|O_CREAT", "ENOENT"),
        (rotree, "O_WRONLY", "EISDIR"),
        (rotree, "O_RDONLY|O_DIRECTORY", "opened"),
    ]
    out = attempts("--readonly", f"{rotree}/**", specs=[(p, fl) for p, fl, _ in table])
    got = {f"{p.name} {fl}": r for (p, fl, _), r in zip(table, out, strict=True)}
    want = {f"{p.name} {fl}": r for p, fl, r in table}
    assert got == want


# --- the program's credentials -----------------------------------------------------

_AS_NOBODY = (
    "import json, sys"
    + ATTEMPT
    + """
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
print(json.dumps([attempt(path, os.O_RDONLY) for path in sys.argv[1:]]))
"""
)


def test_redirect_opens_with_the_programs_credentials(files: Files) -> None:
    # /etc/shadow is root's alone: a program running as nobody must not read it
    # through a redirect (the supervisor runs as root: no confused deputy).
    # A world-readable target still works, so the failure is the credentials'.
    proc = run_launch(
        "--redirect",
        "/etc/passwd=/etc/shadow",
        "--redirect",
        "/etc/group=/etc/hostname",
        argv=py(_AS_NOBODY, "/etc/passwd", "/etc/group"),
    )
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout) == ["EACCES", Path("/etc/hostname").read_text()]


def test_readonly_opens_with_the_programs_credentials(rotree: Path) -> None:
    # pytest's tmp_path is 0700 root: nobody cannot even reach the tree.
    proc = run_launch("--readonly", f"{rotree}/**", argv=py(_AS_NOBODY, str(rotree / "f")))
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout) == ["EACCES"]


def test_policy_rules_of_all_kinds_together(files: Files, rotree: Path) -> None:
    policy = files.root / "policy.toml"
    policy.write_text(
        "version = 1\n"
        f'[[redirect]]\nfrom = "{files.src}"\nto = "{files.target}"\n'
        f'[[deny]]\npath = "{rotree}/sub/**"\nerrno = "ENOENT"\n'
        f'[[readonly]]\npath = "{rotree}/**"\n'
    )
    out = attempts(
        "--policy",
        str(policy),
        specs=[
            (files.src, "O_RDONLY"),
            (rotree / "sub" / "g", "O_RDONLY"),
            (rotree / "f", "O_RDONLY"),
            (rotree / "f", "O_WRONLY"),
        ],
    )
    assert out == [REDIRECTED, "ENOENT", "DATA\n", "EROFS"]
