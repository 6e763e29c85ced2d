"""The shipped systemd units, and socket activation with ``systemd-socket-activate``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import REPO, TIMEOUT, describe, env, public_dir, write

pytestmark = pytest.mark.kernel

UNITS = REPO / "systemd"
#: Where the units expect unotifyd (the README's install line).
INSTALLED = "/opt/unotifyd/bin/unotifyd"


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not tmp_path (0700): nothing here needs it, but keep the layout of
    # test_daemon.py, whose clients may run as another user.
    with public_dir("unotifyd-systemd-") as d:
        yield d


def test_systemd_analyze_verify_passes_every_unit_without_a_warning(workdir: Path) -> None:
    """``systemd-analyze verify`` on every unit, the template and the drop-in example.

    verify checks that ExecStart= binaries exist; the only change made to the
    units is pointing ``/opt/unotifyd/bin/unotifyd`` at an executable that
    exists here.
    """
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: tests/run installs package systemd"
    exe = write(workdir / "bin" / "unotifyd", "#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    units = workdir / "units"
    units.mkdir()
    names = []
    for unit in sorted(UNITS.iterdir()):
        if unit.suffix in (".service", ".socket"):
            text = unit.read_text()
            assert INSTALLED in text or unit.suffix == ".socket", unit
            (units / unit.name).write_text(text.replace(INSTALLED, str(exe)))
            names.append(unit.name)
    assert {"unotifyd.service", "unotifyd.socket", "unotifyd-run@.service"} <= set(names)
    # The drop-in example, on a stand-in for the service it extends.
    dropins = sorted((UNITS / "examples").glob("*.service.d"))
    assert dropins
    for dropin in dropins:
        service = dropin.name.removesuffix(".d")
        write(units / service, "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
        (units / dropin.name).mkdir()
        for conf in dropin.glob("*.conf"):
            (units / dropin.name / conf.name).write_text(
                conf.read_text().replace(INSTALLED, str(exe))
            )
        names.append(service)
    proc = subprocess.run(
        [tool, "verify", *(f"./{n}" for n in names)], cwd=units, capture_output=True,
        text=True, timeout=TIMEOUT, check=False,
    )
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == proc.stderr == "", describe(proc)


def _config(d: Path) -> Path:
    src = write(d / "src.txt", "ORIGINAL\n")
    red = write(d / "red.txt", "RED\n")
    write(d / "red.toml", f'version = 1\n[[redirect]]\nfrom = "{src}"\nto = "{red}"\n')
    return write(d / "unotifyd.toml",
                 'version = 1\n[[profile]]\nname = "red"\npolicy = "red.toml"\nuids = [0]\n')


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def test_socket_activation_starts_the_daemon_on_the_first_connection(workdir: Path) -> None:
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate is missing: tests/run installs package systemd"
    config = _config(workdir)
    sock = str(workdir / "unotifyd.sock")
    log = workdir / "activate.log"
    e = env()
    with open(log, "w") as out:
        # What unotifyd.socket does: a SOCK_SEQPACKET socket named "control",
        # the daemon started only when someone connects (execed in place).
        proc = subprocess.Popen(
            [tool, "--seqpacket", "--listen", sock, "--fdname=control",
             "-E", f"PYTHONPATH={e['PYTHONPATH']}", "-E", f"PATH={e['PATH']}",
             sys.executable, "-m", "unotifyd", "serve", "--socket", sock,
             "--config", str(config), "--stop-timeout", "1"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=e,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(sock):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no socket"
            time.sleep(0.02)
        time.sleep(0.2)
        # Nobody connected yet: no daemon, only the activator.
        assert os.path.basename(_cmdline(proc.pid)[0]) == "systemd-socket-activate"
        assert "unotifyd: serving" not in log.read_text()

        # The first client is served by the daemon its connection started.
        code = "import sys; print(open(sys.argv[1]).read(), end='')"
        first = subprocess.run(
            [sys.executable, "-m", "unotifyd", "launch", "--daemon", sock, "--profile", "red",
             "--", sys.executable, "-c", code, str(workdir / "src.txt")],
            capture_output=True, text=True, timeout=TIMEOUT, env=e, check=False,
        )
        assert (first.returncode, first.stdout) == (0, "RED\n"), describe(first)
        assert _cmdline(proc.pid)[1:4] == ["-m", "unotifyd", "serve"]
        status = subprocess.run(
            [sys.executable, "-m", "unotifyd", "status", "--json", "--daemon", sock],
            capture_output=True, text=True, timeout=TIMEOUT, env=e, check=False,
        )
        assert status.returncode == 0, describe(status)
        report = json.loads(status.stdout)
        assert report["pid"] == proc.pid
        assert report["profiles"]["red"]["started"] == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
        # The socket belongs to whoever activated us: not ours to remove.
        assert os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
