"""Real programs still work under --enforce, with a deny rule elsewhere.

The refused calls (``policy/surface.py``), the Landlock backstop and the
supervisor performing every trapped call must not cost an ordinary program
anything. Each program runs twice in fresh copies of one workspace, as root
and as an unprivileged user: natively (the control: it works here, and gives
the reference), then under ``unotifyd launch --enforce --deny SECRET/**``
with SECRET a directory beside the work, and an exec allow-list of ``/usr``,
the workspace and the venv (so Landlock is in force). Both runs must succeed and leave the
same files with the same contents behind.

- ``pip``: ``python3 -m pip install --target`` of a local wheel (offline);
- ``git``: ``init``, ``add``, ``commit``, ``clone`` and ``log`` of the clone;
- ``make``: ``make -j2`` of a C program from four sources, then running it;
- ``tar``: ``tar x`` of an archive of a small tree, modes and a symlink included.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ..integration.helpers import SYSTEM_PYTHON, describe, env, run_launch, run_native
from .support import IDENTITIES, Identity, directory

pytestmark = pytest.mark.kernel

TIMEOUT = 120.0


def _wheel(out: Path) -> None:
    """A minimal pure-Python wheel, made by hand: pip needs no build backend for it."""
    path = out / "greet-1.0-py3-none-any.whl"
    files = {
        "greet/__init__.py": "def hello():\n    return 'hello from greet'\n",
        "greet-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n",
        "greet-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        record = [*files, "greet-1.0.dist-info/RECORD"]
        z.writestr("greet-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in record))


_C_MAIN = '#include <stdio.h>\nint a(void); int b(void); int c(void);\n' \
          'int main(void) { printf("%d\\n", a() + b() + c()); return 0; }\n'
_MAKEFILE = """\
prog: main.o a.o b.o c.o
\tgcc -o $@ $^
%.o: %.c
\tgcc -c -o $@ $<
"""


def _setup_make(src: Path) -> None:
    (src / "main.c").write_text(_C_MAIN)
    for name, value in (("a", 1), ("b", 20), ("c", 300)):
        (src / f"{name}.c").write_text(f"int {name}(void) {{ return {value}; }}\n")
    (src / "Makefile").write_text(_MAKEFILE)


def _setup_tar(src: Path) -> None:
    tree = src / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "file").write_text("file\n")
    (tree / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "sub" / "run.sh").chmod(0o750)
    (tree / "sub" / "deeper" / "data").write_bytes(bytes(range(256)) * 64)
    (tree / "link").symlink_to("sub/run.sh")
    with tarfile.open(src / "tree.tar", "w") as t:
        t.add(tree, arcname="tree")
    shutil.rmtree(tree)


_GIT = (
    "git init -q -b main repo && cd repo && echo one > a && mkdir d && echo two > d/b && "
    "git add . && git -c user.name=t -c user.email=t@t commit -q -m first && cd .. && "
    "git clone -q repo clone && git -C clone log --format=%s && cat clone/d/b"
)

#: name -> (set up the workspace's files, the shell script run in it, its expected output).
PROGRAMS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "pip": (
        _wheel,
        # $PY: a venv of the system Python (see pip_python), which any user may run.
        '"$PY" -m pip install -q --no-index --disable-pip-version-check '
        "--no-cache-dir --no-compile --target lib ./greet-1.0-py3-none-any.whl && "
        """PYTHONPATH=lib "$PY" -c 'import greet; print(greet.hello())'""",
        "hello from greet\n",
    ),
    "git": (lambda src: None, _GIT, "first\ntwo\n"),
    "make": (_setup_make, "make -s -j2 && ./prog", "321\n"),
    "tar": (_setup_tar, "tar xf tree.tar && tree/sub/run.sh", "ran\n"),
}


def _snapshot(top: Path) -> dict[str, str]:
    """Every entry below ``top``: kind, mode and content (git's object store and
    index hold timestamps and are left out; their effect is checked by the clone)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = str(path.relative_to(top))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = f"link {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = f"dir {st.st_mode & 0o7777:o}"
            elif rel.endswith((".o", "prog", "direct_url.json", "RECORD")):
                # Build outputs are not bit for bit; pip writes the wheel's
                # path (the workspace's) into direct_url.json, and its hash
                # into RECORD.
                out[rel] = f"file {st.st_mode & 0o7777:o}"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                out[rel] = f"file {st.st_mode & 0o7777:o} {digest}"
    return out


def _workspace(top: Path, label: str, who: Identity, program: str) -> Path:
    """A copy of the program's files (made once: an archive or wheel made twice
    would differ in its timestamps), owned by ``who``, and a secret beside it."""
    template = top / "template"
    if not template.exists():
        template.mkdir()
        PROGRAMS[program][0](template)
    ws = top / label
    shutil.copytree(template, ws, symlinks=True)
    subprocess.run(["chown", "-R", f"{who.uid}:{who.uid}", str(ws)], check=True)
    directory(top / f"{label}-secret", owner=0)
    (top / f"{label}-secret" / "key").write_text("SECRET\n")
    return ws


@pytest.fixture(scope="session")
def pip_python(public: Path) -> Path:
    """A venv of the system Python, with its bundled pip: the test venv may
    live where an unprivileged user cannot run it."""
    venv = public / "pip-venv"
    proc = run_native([SYSTEM_PYTHON, "-m", "venv", str(venv)], timeout=TIMEOUT)
    assert proc.returncode == 0, describe(proc)
    return venv / "bin" / "python"


@pytest.fixture
def lab_dir(public: Path) -> Path:
    scratch = public / "programs-ws"
    scratch.mkdir(mode=0o755, exist_ok=True)
    return scratch


@pytest.mark.parametrize("who", ["root", "user"])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_real_program_works_under_enforce(
    lab_dir: Path, pip_python: Path, program: str, who: str
) -> None:
    identity = IDENTITIES[who]
    top = directory(lab_dir / f"{program}-{who}", owner=0)
    script, expected = PROGRAMS[program][1], PROGRAMS[program][2]
    argv = [*identity.prefix, "sh", "-c", script]
    extra = {"HOME": str(top), "PY": str(pip_python)}

    native_ws = _workspace(top, "native", identity, program)
    native = run_native(argv, cwd=native_ws, timeout=TIMEOUT, env=env(extra))
    assert native.returncode == 0 and native.stdout == expected, describe(native)

    ws = _workspace(top, "enforced", identity, program)
    # An exec allow-list too, so that the kernel's backstop (Landlock) is in
    # force: the system's programs, the workspace's, and the venv's python.
    proc = run_launch(
        "--enforce", "--deny", f"{top}/enforced-secret/**", "--exec", "/usr/**",
        "--exec", f"{ws}/**", "--exec", f"{pip_python.parent.parent}/**",
        argv=argv, cwd=ws, timeout=TIMEOUT, env=env(extra),
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == expected, describe(proc)
    assert _snapshot(ws) == _snapshot(native_ws)
