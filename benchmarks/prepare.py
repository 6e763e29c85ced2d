"""Set-up: Debian packages, the C programs, which unotifyd to run, the report's header."""

from __future__ import annotations

import datetime
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from harness import BenchError, log

# command -> Debian package that provides it
_COMMANDS = {
    "proot": "proot",
    "bwrap": "bubblewrap",
    "cc": "gcc",
    "git": "git",
}
# Section 5 (containers) also needs these; its root file system is a static busybox.
_CONTAINER_COMMANDS = {
    "runc": "runc",
    "crun": "crun",
    "busybox": "busybox-static",
    "unshare": "util-linux",
    "timeout": "coreutils",
}


def busybox_static() -> bool:
    """Whether the ``busybox`` on PATH is a static executable (no PT_INTERP)."""
    path = shutil.which("busybox")
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return False
            order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            headers = f.read(phentsize * phnum)
    except OSError:
        return False
    types = {int.from_bytes(headers[i : i + 4], order) for i in range(0, len(headers), phentsize)}
    return 3 not in types  # PT_INTERP: dynamically linked


def install_packages(containers: bool = False) -> None:
    """Install the missing commands from Debian packages (apt-get; needs root).

    With ``containers``, also what section 5 needs: runc, crun and a static
    busybox (busybox-static replaces a dynamic busybox).
    """
    commands = {**_COMMANDS, **(_CONTAINER_COMMANDS if containers else {})}
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if containers and not busybox_static():
        missing = sorted({*missing, "busybox-static"})
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(f"missing packages {', '.join(missing)}: run as root, or install them")
    log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"apt-get install {' '.join(missing)} failed:\n{done.stderr}")
    still = [cmd for cmd in commands if shutil.which(cmd) is None]
    if containers and "busybox" not in still and not busybox_static():
        still.append("a static busybox")
    if still:
        raise BenchError(f"still missing after apt-get: {', '.join(still)}")


# The C programs of the benchmarks, all in this directory: name -> extra cc flags.
PROGRAMS = {
    "openloop": (),  # a loop of opens (or getppid) timed from inside
    "ref_unotify": ("-pthread",),  # the C reference supervisor
    "latloop": (),  # every open timed, for latency percentiles
    "spawnloop": (),  # launches a command N times, each timed
}


def build(into: Path, names: Iterable[str] = PROGRAMS) -> None:
    """Compile the C programs ``names`` of this directory into ``into`` (made if missing)."""
    here = Path(__file__).resolve().parent
    into.mkdir(parents=True, exist_ok=True)
    log(f"building the C programs of {here} into {into}")
    for name in names:
        _cc(*PROGRAMS[name], "-o", str(into / name), str(here / f"{name}.c"))


def _cc(*args: str) -> None:
    """``cc -O2 -Wall -Wextra ARGS``; BenchError with its output if it fails."""
    cmd = ["cc", "-O2", "-Wall", "-Wextra", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{done.stderr}")


def _imports_deps(python: str, env: dict[str, str]) -> bool:
    check = [python, "-c", "import trio, pyseccomp, unotifyd"]
    return subprocess.run(check, env=env, capture_output=True, check=False).returncode == 0


def snapshot(repo: Path, rev: str, into: Path) -> str:
    """Extract ``rev`` of the repository into ``into`` (git archive); return its short hash.

    Benchmarks a fixed commit while the work tree keeps changing.
    """
    short = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=False,
    )
    if short.returncode != 0:
        raise BenchError(f"--rev {rev}: not a commit of {repo}: {short.stderr.strip()}")
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", rev], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace')}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    lane = into / "unotifyd" / "kernel" / "passthrough.c"
    if lane.exists():
        # What setup.py builds at install (same flags); the ".so" suffix is
        # one every interpreter's loader tries (kernel/passthrough.py).
        built = subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o",
             str(lane.with_name("_passthrough.so")), str(lane)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise BenchError(f"building the pass-through lane of {rev} failed:\n{built.stderr}")
    return short.stdout.strip()


def _without_editable_hook(python: str, scratch: Path) -> tuple[str, str]:
    """``python``, or an interpreter that imports what it does without its
    editable-install hook, and a note of which.

    ``pip install -e .`` (the test suite's ``.venv``) leaves a ``.pth`` file
    whose import hook every start of that interpreter runs: ~15 ms here
    (pathlib, importlib.util...), which the installed unotifyd of the README
    (``pip install .``) never pays, and which a launch would measure. The
    other interpreter is a venv of the same base Python whose only ``.pth``
    names ``python``'s site-packages as a plain path: the packages are the
    same, but the ``.pth`` files in there are not run (site.addpackage()
    runs those of site directories only).
    """
    where = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    packages = Path(where.stdout.strip())
    if where.returncode != 0 or not any(packages.glob("__editable__*unotifyd*.pth")):
        return python, ""
    venv = scratch / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    made = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (Path(made.stdout.strip()) / "unotifyd-deps.pth").write_text(f"{packages}\n")
    return str(venv / "bin" / "python"), f"; {python}'s packages without its editable hook"


def unotifyd_command(
    repo: Path, source: Path | None = None, scratch: Path | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str], str]:
    """(argv that runs unotifyd in Python, argv of the ``unotifyd`` command as
    a user runs it, environment for every command, how they were chosen).

    From ``source`` (a snapshot) if given; else the installed command if one
    is on PATH; else ``python3 -m unotifyd`` from this checkout. ``-m`` runs
    with the source on PYTHONPATH and the first interpreter that has
    unotifyd's dependencies: this one, then the test suite's ``.venv``
    (given ``scratch``, a directory, without the hook of its editable
    install: see :func:`_without_editable_hook`). Every command of the
    benchmarks gets the same environment, so native runs see the same
    PYTHONPATH as supervised ones.

    The command is what setup.py installs: the C front (the end of
    ``unotifyd/daemon/launch.c``), which makes a launch through the daemon
    itself and execs ``unotifyd-python`` beside it for every other command
    line. From a source tree it is built into ``scratch``, beside a script
    that runs the first argv; a tree older than the front has none, and the
    command is the first argv.
    """
    env = dict(os.environ)
    script = None if source else shutil.which("unotifyd")
    if script:
        installed = Path(script).resolve()
        with open(installed, "rb") as f:
            front = f.read(4) == b"\x7fELF"
        # Run the Python side as `PYTHON SCRIPT`, which is what its #! line
        # does, so that the launch-cost breakdown knows the interpreter.
        python_script = installed.with_name("unotifyd-python") if front else installed
        with open(python_script, "rb") as f:
            first = f.readline().decode(errors="replace")
        words = first[2:].split() if first.startswith("#!") else []
        if len(words) > 1 and Path(words[0]).name == "env":
            words = [shutil.which(words[1]) or sys.executable]
        python = words[0] if words else sys.executable
        uno = (python, str(python_script))
        how = f"{script} (the {'C front' if front else 'console script'} on PATH)"
        return uno, ((script,) if front else uno), env, how
    src = source or repo
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    # An installed unotifyd starts from bytecode pip compiled; a source tree
    # run where PYTHONDONTWRITEBYTECODE is set would compile every module at
    # every launch (~60 ms here) and measure that instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for candidate in (sys.executable, str(repo / ".venv" / "bin" / "python")):
        if Path(candidate).exists() and _imports_deps(candidate, env):
            python, note = candidate, ""
            if scratch is not None:
                python, note = _without_editable_hook(candidate, scratch)
                if not _imports_deps(python, env):
                    raise BenchError(f"{python} cannot import unotifyd's dependencies")
            subprocess.run(
                [python, "-m", "compileall", "-q", str(src / "unotifyd")], env=env, check=True
            )  # fmt: skip
            # -P: no directory of ours first on sys.path. Run from a checkout,
            # ``-m`` would put the current directory there, and a --rev run
            # would measure the work tree's unotifyd, not the snapshot's.
            safe = subprocess.run([python, "-P", "-c", "pass"], check=False).returncode == 0
            how = f"{python}{' -P' if safe else ''} -m unotifyd (PYTHONPATH={src}, "
            how += f"bytecode compiled{note})"
            uno = (python, *(("-P",) if safe else ()), "-m", "unotifyd")
            command = _build_front(src, python, scratch) if scratch is not None else None
            if command is None:
                return uno, uno, env, how
            return uno, (command,), env, f"{how}; the command: {command}, built as setup.py does"
    raise BenchError(
        "no interpreter can import unotifyd's dependencies (trio, pyseccomp): "
        "run `bash tests/run` once (it makes .venv) or `pip install -e .`"
    )


def _build_front(src: Path, python: str, scratch: Path) -> str | None:
    """The C front of ``src`` built into ``scratch``/command with its
    ``unotifyd-python`` (what setup.py installs), or None if ``src`` has none."""
    source = src / "unotifyd" / "daemon" / "launch.c"
    if not source.exists() or b"UNOTIFYD_FRONT" not in source.read_bytes():
        return None
    into = scratch / "command"
    into.mkdir()
    _cc("-pthread", "-DUNOTIFYD_FRONT", "-o", str(into / "unotifyd"), str(source))
    # The console script pip writes for pyproject.toml's unotifyd-python.
    script = into / "unotifyd-python"
    script.write_text(f"#!{python}\nimport sys\nfrom unotifyd.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return str(into / "unotifyd")


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def header(repo: Path, how: str, mode: str, snapshot_of: str | None) -> list[str]:
    """The report's first lines: what was measured, where, when."""
    if snapshot_of:
        commit = f"{snapshot_of} (a snapshot made with git archive)"
    else:
        commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "unotifyd"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes in unotifyd/)"
    proot_out = subprocess.run(
        ["proot", "--version"], capture_output=True, text=True, check=False
    ).stdout
    version = re.search(r"\b\d+\.\d+(\.\d+)?\b", proot_out)
    accel = re.search(r"seccomp_filter = (\w+)", proot_out)
    proot_version = "proot " + (version.group(0) if version else "?")
    if accel:
        proot_version += f" (seccomp_filter accelerator: {accel.group(1)})"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# unotifyd benchmarks",
        "",
        f"- commit: {commit}",
        f"- kernel: {platform.system()} {platform.release()} {platform.machine()}",
        f"- date: {now}; mode: {mode}",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} CPUs",
        f"- Python {platform.python_version()}; unotifyd: {how}",
        f"- peers: {proot_version}; {_first_line(['bwrap', '--version'])}",
        f"- load average at start (1/5/15 min): {load_average()}",
    ]
