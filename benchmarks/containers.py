"""Section 5: the start-up cost of a container, with and without unotifyd as its seccomp agent.

A container is a static busybox as the whole (read-only) root file system
running ``cat /etc/passwd``; its time is the wall time of ``runc run`` (or
crun's) from spawn to exit. *Without* the agent its spec has no seccomp
block at all; *with* it, the seccomp block sends open/openat/openat2/creat
to a running ``unotifyd serve --oci-socket``, whose profile redirects
``/etc/passwd`` to a host file. Every run's output is checked (the image's
file without, the host file with). Each round runs every (runtime, agent)
pair in turn, K containers each; a figure is the median over rounds of the
mean per container, and a ratio the median of the with/without ratios
taken within each round.

Every runtime runs under ``timeout -k``; every container is ``delete -f``'d
after its run (and again at the end if that failed); the daemon is stopped
and the bundles removed even when something fails. crun refuses a hybrid
cgroup v1/v2 layout, so, as in tests/integration/test_oci.py, it runs in a
private mount namespace without the cgroup2 mount and without a cgroup
manager: its time includes that ``unshare``/``sh``/``umount`` wrapper.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    REDIRECT_FROM,
    BenchError,
    Ctx,
    Grid,
    Report,
    Rounds,
    log,
    ratio,
    rotated,
    scaled,
    table,
    with_spread,
)
from prepare import busybox_static

RUNTIMES = ("runc", "crun")
#: Seconds one container may take, start to exit (they take ~0.1 s).
RUN_TIMEOUT = 20
NOTIFY = ["open", "openat", "openat2", "creat"]
PROFILE = "bench"
#: /etc/passwd of the image, and the host file the agent's profile serves instead.
IMAGE_PASSWD = "root:x:0:0:the image:/:/bin/sh\n"
HOST_PASSWD = "redirected by unotifyd: the host's file\n"
WITHOUT, WITH = "without agent", "with agent"
#: Warm-up containers per (runtime, mode): check the output, size the rounds.
WARMUP = 3
#: Seconds each (runtime, mode) takes in a round: with 4 pairs, 10 rounds in
#: ~50 s (full), 3 rounds in ~12 s (--quick), within the section's budget.
ROUND_S, ROUND_S_QUICK = 1.2, 1.0


@dataclass
class Containers:
    """Bundles, runs and deletes containers; deletes whatever it could not delete at once."""

    dir: Path
    ctx: Ctx
    pending: set[tuple[str, str]] = field(default_factory=set)
    count: int = 0

    def setup(self) -> None:
        rootfs = self.dir / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        busybox = shutil.which("busybox")
        if busybox is None:
            raise BenchError("busybox not found on PATH")
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        for applet in ("sh", "cat"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        for sub in ("proc", "dev", "sys", "tmp", "etc"):
            (rootfs / sub).mkdir()
        (rootfs / "etc" / "passwd").write_text(IMAGE_PASSWD)
        spec = self.dir / "spec"
        spec.mkdir()
        self.ctx.run(["runc", "spec"], cwd=spec, timeout=RUN_TIMEOUT)

    def bundle(self, name: str, listener: str | None) -> Path:
        """A bundle running ``cat /etc/passwd``; a seccomp block notifying ``listener`` if any."""
        spec: dict[str, Any] = json.loads((self.dir / "spec" / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["cat", REDIRECT_FROM]
        spec["root"] = {"path": str(self.dir / "rootfs"), "readonly": True}
        spec["linux"].pop("seccomp", None)
        if listener is not None:
            spec["linux"]["seccomp"] = {
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": listener,
                "listenerMetadata": f"profile={PROFILE}",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": NOTIFY, "action": "SCMP_ACT_NOTIFY"}],
            }
        bundle = self.dir / name
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def run(self, runtime: str, bundle: Path) -> tuple[float, str]:
        """(wall seconds from spawn to exit, stdout) of one container, deleted afterwards."""
        self.count += 1
        cid = f"unotifyd-bench-{os.getpid()}-{self.count}"
        guard = ["timeout", "-k", "5", str(RUN_TIMEOUT)]
        if runtime == "runc":
            argv = [*guard, "runc", "run", "--bundle", str(bundle), cid]
        else:
            argv = [
                *guard, "unshare", "-m", "--propagation", "private", "sh", "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; "
                'exec crun --cgroup-manager=disabled run --bundle "$0" "$1"',
                str(bundle), cid,
            ]
        self.pending.add((runtime, cid))
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv, env=self.ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True,
            )
            try:
                out, err = proc.communicate(timeout=RUN_TIMEOUT + 10)
                elapsed = time.perf_counter() - t0
            except BaseException:  # a timeout, ^C: never leave the runtime running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        except subprocess.TimeoutExpired:
            raise BenchError(f"{runtime}: a container did not exit in {RUN_TIMEOUT + 10} s") \
                from None
        finally:
            self.delete(runtime, cid)
        if proc.returncode != 0:
            raise BenchError(
                f"{runtime} run exited with {proc.returncode}:\n{err.strip()[-1500:]}"
            )
        return elapsed, out

    def delete(self, runtime: str, cid: str) -> None:
        """``delete -f``; forgets the container once its runtime no longer knows it."""

        def ok(*argv: str) -> bool:
            done = subprocess.run(
                ["timeout", "-k", "2", "10", runtime, *argv, cid], stdin=subprocess.DEVNULL,
                capture_output=True, check=False,
            )
            return done.returncode == 0

        # `run` usually deletes what it ran: then delete fails, and so does state.
        if ok("delete", "-f") or not ok("state"):
            self.pending.discard((runtime, cid))

    def cleanup(self) -> None:
        for runtime, cid in sorted(self.pending):
            self.delete(runtime, cid)
        if self.pending:
            log(f"5. containers: could not delete {sorted(self.pending)}")


class Agent:
    """``unotifyd serve --oci-socket`` with one profile redirecting REDIRECT_FROM."""

    def __init__(self, ctx: Ctx, where: Path) -> None:
        self.ctx = ctx
        self.dir = where
        self.oci = str(where / "oci.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.status = ""

    def start(self) -> bool:
        """Start the daemon; False (and ``status`` says why) if it cannot serve containers."""
        ctx = self.ctx
        helped = ctx.run([*ctx.unotifyd, "serve", "--help"], check=False, timeout=30)
        if helped.returncode:
            self.status = "agent: not available (`unotifyd serve` does not exist)"
            return False
        if "--oci-socket" not in helped.stdout:
            self.status = "agent: not available (`unotifyd serve` has no --oci-socket)"
            return False
        host = self.dir / "passwd"
        host.write_text(HOST_PASSWD)
        (self.dir / "policy.toml").write_text(
            f'version = 1\n\n[[redirect]]\nfrom = "{REDIRECT_FROM}"\nto = "{host}"\n'
        )
        config = self.dir / "config.toml"
        config.write_text(
            f'version = 1\n\n[[profile]]\nname = "{PROFILE}"\npolicy = "policy.toml"\n'
            "uids = [0]\n"
        )
        control = self.dir / "unotifyd.sock"
        errors = self.dir / "serve.log"
        argv = [*ctx.unotifyd, "serve", "--socket", str(control), "--config", str(config),
                "--oci-socket", self.oci, "--stop-timeout", "1"]
        with open(errors, "wb") as err:
            self.proc = subprocess.Popen(
                argv, env=ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not (control.exists() and os.path.exists(self.oci)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    "unotifyd serve --oci-socket did not start: "
                    + (self.log()[-500:] or "no sockets after 15 s")
                )
            time.sleep(0.02)
        return True

    def log(self) -> str:
        path = self.dir / "serve.log"
        return path.read_text(errors="replace").strip() if path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def _workspace(ctx: Ctx) -> Iterator[tuple[Containers, Agent]]:
    where = ctx.work / "containers"
    where.mkdir()
    (where / "agent").mkdir()
    boxes = Containers(where, ctx)
    agent = Agent(ctx, where / "agent")
    try:
        yield boxes, agent
    finally:
        try:
            boxes.cleanup()
        finally:
            agent.stop()
            shutil.rmtree(where, ignore_errors=True)


def run(ctx: Ctx, report: Report, rounds: Rounds) -> dict[str, float]:
    for tool in (*RUNTIMES, "busybox", "unshare", "timeout"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found on PATH (prepare installs runc, crun, "
                             "busybox-static)")
    if not busybox_static():
        raise BenchError("busybox on PATH is not static: install busybox-static")
    grid = Grid()
    with _workspace(ctx) as (boxes, agent):
        log("5. container start-up: bundles and agent")
        boxes.setup()
        if not agent.start():
            report.out("## 5. Container start-up")
            report.out()
            report.out(f"Not measured: {agent.status}.")
            report.out()
            return {}
        bundles = {WITHOUT: boxes.bundle("bundle-plain", None),
                   WITH: boxes.bundle("bundle-agent", agent.oci)}
        expected = {WITHOUT: IMAGE_PASSWD, WITH: HOST_PASSWD}
        entries = [(rt, mode) for rt in RUNTIMES for mode in (WITHOUT, WITH)]

        def once(runtime: str, mode: str) -> float:
            """Start-up time of one container; its output checked."""
            try:
                elapsed, out = boxes.run(runtime, bundles[mode])
            except BenchError as e:
                if mode == WITH and not agent.alive():
                    raise BenchError(f"{e}\n(the agent died: {agent.log()[-500:]})") from None
                raise
            if out != expected[mode]:
                raise BenchError(
                    f"{runtime} {mode}: `cat {REDIRECT_FROM}` printed {out[:80]!r}, "
                    f"not {expected[mode]!r}"
                    + ("" if agent.alive() else f"; the agent died: {agent.log()[-500:]}")
                )
            return elapsed

        log("5. container start-up: checking the output of each runtime, with and without")
        # Also a warm-up (page cache, the runtimes' binaries) that sizes the
        # rounds: wall time per container, its deletion included.
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            for runtime, mode in entries:
                once(runtime, mode)
        per_container = (time.perf_counter() - t0) / (WARMUP * len(entries))
        target = ROUND_S_QUICK if ctx.quick else ROUND_S
        per_round = scaled(target, per_container * 1e9, 3, 500)
        for rnd in rounds:
            log(f"5. container start-up: round {rnd + 1}/{rounds.count}")
            for runtime, mode in rotated(entries, rnd):
                times = [once(runtime, mode) for _ in range(per_round)]
                grid.add(runtime, mode, rnd, 1000 * sum(times) / len(times))
        if not agent.alive():
            raise BenchError(f"the agent exited during the runs: {agent.log()[-500:]}")

    report.out(f"## 5. Container start-up ({rounds.label()})")
    report.out()
    report.out(
        f"`{{runc,crun}} run` of a static-busybox container running `cat {REDIRECT_FROM}`, "
        "wall time from spawn to exit; *without*: no seccomp block; *with*: "
        f"{'/'.join(NOTIFY)} notified to `unotifyd serve --oci-socket`, whose profile "
        f"redirects {REDIRECT_FROM} to a host file (every run's output checked). "
        f"{per_round} containers per runtime and mode per round (sized to ~{target} s by a "
        f"warm-up of {WARMUP}), "
        f"{per_round * rounds.done} in all; ms per container (mean of a round), "
        "median [min-max] over rounds. crun runs inside `unshare -m` + `sh` "
        "(cgroup2 mount removed), counted in both of its columns."
    )
    report.out()
    rows = []
    metrics: dict[str, float] = {}
    for runtime in RUNTIMES:
        cells = []
        for mode in (WITHOUT, WITH):
            lo, hi = grid.spread(runtime, mode)
            cells.append(with_spread(grid.med(runtime, mode), lo, hi))
        r = grid.ratio(runtime, WITH, WITHOUT)
        extra = grid.med(runtime, WITH) - grid.med(runtime, WITHOUT)
        metrics[f"container_{runtime}_ratio"] = r
        rows.append([runtime, *cells, ratio(r), f"{extra:+.1f}"])
    headers = ["runtime", "without agent, ms", "with agent, ms", "with / without",
               "with - without, ms"]
    report.out(table(headers, rows))
    report.out()
    return metrics
