"""The file-system view under races, and what ``--stats`` says it costs (issue 3).

* ``stat`` TOCTOU: like the open race of test_hostile, a thread flips the
  path buffer between an allowed and a denied file while the main thread
  stats it (``stat``, ``newfstatat``, ``statx`` in turn). Under
  ``virtualize`` the supervisor checks one name and the kernel may stat the
  other (CONTINUE): the escapes are counted, not asserted. Under
  ``--enforce`` the supervisor performs the stat of the name it checked:
  0 escapes.
* ``--stats``: the filter traps only the system calls the policy needs, so
  a one-redirect policy traps fewer than a full one; the counts printed at
  exit add up.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ..integration.helpers import run_launch
from .support import (
    SERVING,
    Report,
    build_c,
    check_served,
    describe,
    kv,
    serving_env,
    without_stats,
    write,
)

pytestmark = pytest.mark.kernel

TRIES = 100_000


# --- stat TOCTOU ------------------------------------------------------------------------


def _stat_race(
    bin_dir: Path, tmp_path: Path, *opts: str, serving: str | None = None
) -> tuple[dict[str, int], int]:
    """The race's counts, and how many calls the lane answered (``serving``:
    checked to be the way that served, see support.check_served)."""
    exe = build_c(bin_dir, "statrace")
    allowed = write(tmp_path / "allow" / "file", "ALLOWED\n")
    denied = write(tmp_path / "denyd" / "file", "SECRET\n")
    proc = run_launch(*opts, "--stats", "--deny", f"{denied.parent}/**",
                      argv=[str(exe), str(allowed), str(denied), str(denied.stat().st_ino),
                            str(TRIES)], timeout=180,
                      env=serving_env(serving or "lane"))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    lane = check_served(serving, proc) if serving else 0
    assert "internal error" not in without_stats(proc.stderr), describe(proc)
    r = {k: int(v) for k, v in kv(proc.stdout).items()}
    assert r["tries"] == TRIES, describe(proc)
    assert r["allowed"] + r["escaped"] + r["denied"] + r["other"] == TRIES
    # The rule does apply whenever the check sees the denied name.
    assert r["allowed"] > 0 and r["denied"] > 0, r
    return r, lane


def test_stat_toctou_under_virtualize_is_counted(
    bin_dir: Path, tmp_path: Path, report: Report
) -> None:
    """Stats that returned the denied file's inode are counted, not
    asserted: CONTINUE lets the kernel re-read the path (see the enforce
    variant)."""
    r, _ = _stat_race(bin_dir, tmp_path)
    report("stat-toctou[virtualize]", tries=r["tries"], allowed=r["allowed"],
           escaped=r["escaped"], denied=r["denied"], other=r["other"],
           note="see-the-enforce-variant")  # fmt: skip


@pytest.mark.parametrize("serving", SERVING)
def test_stat_toctou_under_enforce_never_escapes(
    bin_dir: Path, tmp_path: Path, report: Report, serving: str
) -> None:
    """Under ``--enforce`` the supervisor stats the name it checked: never
    the denied file, whatever the other thread writes; whether the compiled
    lane or Python makes the stat."""
    r, lane = _stat_race(bin_dir, tmp_path, "--enforce", serving=serving)
    report(f"stat-toctou[enforce,{serving}]", tries=r["tries"], allowed=r["allowed"],
           escaped=r["escaped"], denied=r["denied"], other=r["other"], lane=lane)  # fmt: skip
    # "other": a path read half-rewritten names no file (ENOENT), natively too.
    assert r["escaped"] == 0


# --- --stats ----------------------------------------------------------------------------

_TRAPS = re.compile(r"^unotifyd: filter traps (\d+) system calls: (.*)$", re.M)
_BY_CALL = re.compile(r"^unotifyd: stats: by system call: (.*)$", re.M)
_TOTAL = re.compile(r"^unotifyd: stats: (\d+) notifications", re.M)


def _stats(proc: subprocess.CompletedProcess[str]) -> tuple[list[str], dict[str, int], int]:
    """(trapped system calls, notifications by system call, total) from ``--stats`` output."""
    assert proc.returncode == 0, describe(proc)
    traps = _TRAPS.findall(proc.stderr)
    assert len(traps) == 1, describe(proc)
    count, names = int(traps[0][0]), traps[0][1].split(", ")
    assert count == len(names) == len(set(names)), describe(proc)
    assert "unotifyd: stats:" in proc.stderr, describe(proc)
    by_call: dict[str, int] = {}
    for m in _BY_CALL.findall(proc.stderr):
        for item in m.split(", "):
            name, _, n = item.rpartition(" ")
            by_call[name] = int(n)
    totals = _TOTAL.findall(proc.stderr)
    assert len(totals) == 1, describe(proc)
    return names, by_call, int(totals[0])


def test_stats_one_redirect_traps_fewer_calls_than_a_full_policy(
    tmp_path: Path, report: Report
) -> None:
    d = tmp_path / "d"
    write(d / "visible", "V\n")
    write(d / "hidden", "H\n")
    target = write(tmp_path / "target", "T\n")
    content = write(tmp_path / "content", "C\n")
    program = ["sh", "-c", f"cat {d}/visible; ls {d}; /bin/true"]
    one = run_launch("--stats", "--redirect", f"{tmp_path}/src={target}", argv=program)
    full = run_launch(
        "--stats", "--redirect", f"{tmp_path}/src={target}", "--deny", f"{d}/hidden:ENOENT",
        "--readonly", f"{tmp_path}/ro/**", "--exec", "/**", "--content",
        f"{tmp_path}/c={content}", "--private", f"{tmp_path}/p/**", argv=program,
    )  # fmt: skip
    readonly = run_launch("--stats", "--readonly", f"{tmp_path}/ro/**", argv=program)
    one_names, one_calls, one_total = _stats(one)
    full_names, full_calls, full_total = _stats(full)
    ro_names, _, _ = _stats(readonly)
    report("stats-trapped", one_redirect=len(one_names), full_policy=len(full_names),
           readonly_only=len(ro_names), one_redirect_notifications=one_total,
           full_policy_notifications=full_total)  # fmt: skip
    assert one.stdout == "V\nhidden\nvisible\n", describe(one)
    assert full.stdout == "V\nvisible\n", describe(full)
    assert len(one_names) < len(full_names)
    assert set(one_names) < set(full_names)
    # A redirect traps exec (a redirected binary runs its target); a read-only
    # tree does not; only hidden paths trap listings.
    assert {"execve", "execveat"} <= set(one_names)
    assert {"execve", "execveat", "getdents64"} <= set(full_names)
    assert "getdents64" not in one_names
    assert "execve" not in ro_names
    # Read-only trees: changes are trapped, and the two reads a read-only
    # mount answers otherwise (access W_OK, statfs); other reads are not.
    assert not {"stat", "newfstatat", "statx", "readlink", "getxattr"} & set(ro_names)
    assert {"openat", "unlinkat", "renameat2", "mkdirat", "fchmodat"} <= set(ro_names)
    assert {"access", "faccessat2", "statfs"} <= set(ro_names)
    # The counts: what was trapped, adding up to the total.
    for names, calls, total in ((one_names, one_calls, one_total),
                                (full_names, full_calls, full_total)):  # fmt: skip
        assert set(calls) <= set(names), (calls, names)
        assert sum(calls.values()) == total
        assert calls.get("openat", 0) > 0
    for calls in (one_calls, full_calls):
        assert calls.get("execve", 0) >= 3  # cat, ls and true at least
    assert full_calls.get("getdents64", 0) > 0
    assert "getdents64" not in one_calls
