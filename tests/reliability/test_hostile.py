"""Hostile programs: TOCTOU, bad path pointers, symlink races, their own
seccomp filters, ptrace, setuid binaries.

Everything here runs in the default mode, ``virtualize``, which lets the
kernel run the calls no rule covers (CONTINUE) and so is no security
boundary: where an escape is possible the tests *count and print* it
rather than assert it away. Their ``enforce`` variants (``--enforce``:
every trapped open performed by the supervisor on the path it checked)
assert 0 escapes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..integration.helpers import run_launch, run_native
from .support import (
    NOBODY,
    SERVING,
    Report,
    build_c,
    check_served,
    describe,
    kv,
    public_dir,
    serving_env,
    setuid_capable_dir,
    without_stats,
    write,
)

pytestmark = pytest.mark.kernel

TRIES = 100_000


# --- TOCTOU ---------------------------------------------------------------------------


def test_toctou_path_rewrite_under_virtualize_is_counted(
    bin_dir: Path, tmp_path: Path, report: Report
) -> None:
    """A thread flips the path buffer between an allowed and a denied file of
    the same length while the main thread opens it. Under ``virtualize`` the
    supervisor checks the allowed name and answers CONTINUE; the kernel then
    re-reads the buffer and may open the denied file. The escapes are
    counted, not asserted: 0 escapes is the enforcing mode's job (the
    ``enforce`` variant below)."""
    exe = build_c(bin_dir, "toctou")
    allowed = write(tmp_path / "allow" / "file", "ALLOWED\n")
    denied = write(tmp_path / "denyd" / "file", "SECRET\n")
    proc = run_launch("--deny", f"{denied.parent}/**", argv=[str(exe), str(allowed), str(denied),
                                                            str(TRIES)], timeout=120)
    assert proc.returncode == 0, describe(proc)
    r = {k: int(v) for k, v in kv(proc.stdout).items()}
    report("toctou[virtualize]", tries=r["tries"], allowed=r["allowed"], escaped=r["escaped"],
           denied=r["denied"], other=r["other"], note="see-the-enforce-variant")
    assert r["tries"] == TRIES
    assert r["allowed"] + r["escaped"] + r["denied"] + r["other"] == TRIES
    assert r["denied"] > 0  # the rule does apply whenever the check sees the denied name
    assert "internal error" not in proc.stderr


@pytest.mark.parametrize("serving", SERVING)
def test_toctou_path_rewrite_under_enforce_never_escapes(
    bin_dir: Path, tmp_path: Path, report: Report, serving: str
) -> None:
    """The same race under ``--enforce``: the supervisor opens the name it
    checked, so the denied file is never opened, whatever the thread writes;
    whether the compiled lane or Python makes the open."""
    exe = build_c(bin_dir, "toctou")
    allowed = write(tmp_path / "allow" / "file", "ALLOWED\n")
    denied = write(tmp_path / "denyd" / "file", "SECRET\n")
    proc = run_launch("--enforce", "--stats", "--deny", f"{denied.parent}/**",
                      argv=[str(exe), str(allowed), str(denied), str(TRIES)], timeout=180,
                      env=serving_env(serving))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    lane = check_served(serving, proc)
    r = {k: int(v) for k, v in kv(proc.stdout).items()}
    report(f"toctou[enforce,{serving}]", tries=r["tries"], allowed=r["allowed"],
           escaped=r["escaped"], denied=r["denied"], other=r["other"], lane=lane)
    assert r["tries"] == TRIES
    assert r["allowed"] + r["escaped"] + r["denied"] + r["other"] == TRIES
    assert r["escaped"] == 0
    assert r["allowed"] > 0 and r["denied"] > 0
    assert "internal error" not in without_stats(proc.stderr)


# --- paths the kernel must refuse -------------------------------------------------------


def _errnos(out: str) -> dict[tuple[str, str], str]:
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            table[(parts[0], parts[1])] = parts[2]
    return table


#: Cases whose path is readable and well-formed: a rule on its prefix applies to them.
_READABLE = {"path-max-with-nul", "nul-at-page-end", "straddle-rw-pages"}


def test_bad_path_pointers_get_the_kernels_own_errno(
    bin_dir: Path, tmp_path: Path, report: Report
) -> None:
    """Not NUL-terminated within PATH_MAX, exactly PATH_MAX long with and
    without the NUL, NULL, unmapped, PROT_NONE, a kernel address, straddling
    a page boundary (into PROT_NONE, into unmapped memory, across two
    readable pages): with each of open, openat, openat2 and creat. Every
    path starts with a prefix that a rule names, so the supervisor has to
    read it all; the program must get exactly the errno of a native run."""
    exe = build_c(bin_dir, "badpath")
    prefix = tmp_path / "p"
    prefix.mkdir()
    src = tmp_path / "sanity-src"
    dst = write(tmp_path / "sanity-dst", "REDIRECTED\n")
    native = _errnos(run_native([str(exe), str(prefix)]).stdout)
    assert len(native) == 13 * 4, native
    # A rule on a sibling of the paths: read in full, matched by nothing.
    sib = run_launch("--deny", f"{prefix}/zzz", "--redirect", f"{src}={dst}",
                     argv=[str(exe), str(prefix), str(src)])
    # A rule on the whole tree: paths that can be read are denied (ENOTSUP
    # is nothing the kernel would say here), the others keep the kernel's errno.
    tree = run_launch("--deny", f"{prefix}/**:ENOTSUP", "--redirect", f"{src}={dst}",
                      argv=[str(exe), str(prefix), str(src)])
    mismatch_sib: list[str] = []
    mismatch_tree: list[str] = []
    for proc, mismatches, expect_rule in ((sib, mismatch_sib, False),
                                          (tree, mismatch_tree, True)):
        assert proc.returncode == 0, describe(proc)
        assert proc.stdout.endswith("sanity REDIRECTED\n"), describe(proc)
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
        got = _errnos(proc.stdout)
        for key, native_errno in native.items():
            want = "ENOTSUP" if expect_rule and key[0] in _READABLE else native_errno
            if got.get(key) != want:
                mismatches.append(f"{key[0]}/{key[1]}:{got.get(key)}!={want}")
    report("bad-paths", cases=len(native), native_efault=sum(v == "EFAULT" for v in
                                                             native.values()),
           native_enametoolong=sum(v == "ENAMETOOLONG" for v in native.values()),
           mismatches_sibling_rule=len(mismatch_sib), mismatches_tree_rule=len(mismatch_tree),
           supervisor_crashes=0)
    assert mismatch_sib == []
    assert mismatch_tree == []


# --- symlink races ----------------------------------------------------------------------


def _swap_dirs(d: Path) -> tuple[Path, str]:
    """A secret file, and the path of it relative to "/"."""
    secret = write(d / "secret" / "file", "SECRET\n")
    return secret, str(secret).lstrip("/")


def test_symlink_race_against_a_tree_rule_is_counted(
    bin_dir: Path, report: Report
) -> None:
    """A directory on the way to a decoy file is swapped, over and over, for a
    symlink to "/" that makes the same path name a secret file under a
    ``--deny`` tree. Under ``virtualize`` the check may see the directory and
    the kernel the link: escapes are counted, not asserted (the enforcing
    mode makes them 0: the ``enforce`` variant below)."""
    exe = build_c(bin_dir, "symrace")
    tries = 20_000
    with public_dir("unotifyd-rel-sym-") as d:
        secret, rel = _swap_dirs(d)
        swap = d / "jail" / "sw"
        write(swap / rel, "DECOY\n")
        (d / "jail" / "sw.link").symlink_to("/")
        proc = run_launch("--deny", f"{secret.parent}/**",
                          argv=[str(exe), str(swap), f"{swap}/{rel}", str(tries)], timeout=120)
    assert proc.returncode == 0, describe(proc)
    r = {k: int(v) for k, v in kv(proc.stdout).items()}
    report("symlink-race[deny-tree,virtualize]", tries=tries, decoy=r["decoy"],
           escaped=r["secret"], denied_or_error=r["errors"], enoent=r["enoent"],
           note="see-the-enforce-variant")
    assert sum(r[k] for k in ("decoy", "secret", "errors", "enoent")) == tries
    assert "internal error" not in proc.stderr


@pytest.mark.parametrize("serving", SERVING)
def test_symlink_race_against_a_tree_rule_under_enforce_never_escapes(
    bin_dir: Path, report: Report, serving: str
) -> None:
    """The same race under ``--enforce``: the path is resolved once and opened
    refusing any symlink swapped in since (the lane: opened again through the
    fd it resolved), so the secret is never read."""
    exe = build_c(bin_dir, "symrace")
    tries = 20_000
    with public_dir("unotifyd-rel-syme-") as d:
        secret, rel = _swap_dirs(d)
        swap = d / "jail" / "sw"
        write(swap / rel, "DECOY\n")
        (d / "jail" / "sw.link").symlink_to("/")
        proc = run_launch("--enforce", "--stats", "--deny", f"{secret.parent}/**",
                          argv=[str(exe), str(swap), f"{swap}/{rel}", str(tries)], timeout=180,
                          env=serving_env(serving))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    lane = check_served(serving, proc)
    r = {k: int(v) for k, v in kv(proc.stdout).items()}
    report(f"symlink-race[deny-tree,enforce,{serving}]", tries=tries, decoy=r["decoy"],
           escaped=r["secret"], denied_or_error=r["errors"], enoent=r["enoent"], lane=lane)
    assert sum(r[k] for k in ("decoy", "secret", "errors", "enoent")) == tries
    assert r["secret"] == 0
    assert r["decoy"] > 0
    assert "internal error" not in without_stats(proc.stderr)


def test_symlink_in_a_redirect_target_tree_is_counted(bin_dir: Path, report: Report) -> None:
    """The program owns the *target* of a tree redirect and swaps a directory
    in it for a symlink to "/" (racing), or simply leaves one there (static).
    The supervisor performs the open of the target itself; the counts say
    whether it followed the link to a file that a ``--deny`` rule covers."""
    exe = build_c(bin_dir, "symrace")
    tries = 5_000
    with public_dir("unotifyd-rel-symr-") as d:
        secret, rel = _swap_dirs(d)
        (d / "from").mkdir()
        write(d / "jail" / "sw" / rel, "DECOY\n")
        (d / "jail" / "sw.link").symlink_to("/")
        (d / "jail" / "static").symlink_to("/")
        opts = ("--deny", f"{secret.parent}/**", "--redirect", f"{d}/from/**={d}/jail/**")
        race = run_launch(*opts, argv=[str(exe), str(d / "jail" / "sw"),
                                       f"{d}/from/sw/{rel}", str(tries)], timeout=120)
        static = run_launch(*opts, argv=["cat", f"{d}/from/static/{rel}"])
        direct = run_launch(*opts, argv=["cat", str(secret)])
    assert race.returncode == 0, describe(race)
    r = {k: int(v) for k, v in kv(race.stdout).items()}
    report("symlink-in-redirect-target[virtualize]", tries=tries, decoy=r["decoy"],
           escaped=r["secret"], errors=r["errors"], enoent=r["enoent"],
           static_link_escaped=int(static.stdout == "SECRET\n"),
           direct_open_denied=int(direct.returncode != 0 and direct.stdout == ""))
    assert sum(r[k] for k in ("decoy", "secret", "errors", "enoent")) == tries
    assert direct.returncode != 0 and direct.stdout == "", describe(direct)
    assert "internal error" not in race.stderr


def test_symlink_in_a_redirect_target_tree_under_enforce_never_escapes(
    bin_dir: Path, report: Report
) -> None:
    """Under ``--enforce`` a redirect's target is resolved and decided again:
    a symlink in the target tree, static or raced, never reaches a denied file."""
    exe = build_c(bin_dir, "symrace")
    tries = 5_000
    with public_dir("unotifyd-rel-symre-") as d:
        secret, rel = _swap_dirs(d)
        (d / "from").mkdir()
        write(d / "jail" / "sw" / rel, "DECOY\n")
        (d / "jail" / "sw.link").symlink_to("/")
        (d / "jail" / "static").symlink_to("/")
        opts = ("--enforce", "--deny", f"{secret.parent}/**",
                "--redirect", f"{d}/from/**={d}/jail/**")
        race = run_launch(*opts, argv=[str(exe), str(d / "jail" / "sw"),
                                       f"{d}/from/sw/{rel}", str(tries)], timeout=180)
        static = run_launch(*opts, argv=["cat", f"{d}/from/static/{rel}"])
    assert race.returncode == 0, describe(race)
    r = {k: int(v) for k, v in kv(race.stdout).items()}
    report("symlink-in-redirect-target[enforce]", tries=tries, decoy=r["decoy"],
           escaped=r["secret"], errors=r["errors"], enoent=r["enoent"],
           static_link_escaped=int(static.stdout == "SECRET\n"))
    assert sum(r[k] for k in ("decoy", "secret", "errors", "enoent")) == tries
    assert r["secret"] == 0
    assert static.returncode != 0 and static.stdout == "", describe(static)
    assert "internal error" not in race.stderr


# --- the program's own seccomp filters, ptrace, setuid ------------------------------------


def test_own_seccomp_filters_cannot_loosen_the_policy(
    bin_dir: Path, tmp_path: Path, report: Report
) -> None:
    exe = build_c(bin_dir, "selfseccomp")
    src = tmp_path / "src"
    dst = write(tmp_path / "dst", "REDIRECTED\n")
    proc = run_launch("--redirect", f"{src}={dst}", argv=[str(exe), str(src)])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == [
        "nnp=1",
        "own-errno-filter=OK getppid=EPERM open=REDIRECTED",
        "own-trace-filter=OK open=REDIRECTED",
        "own-listener=EBUSY",
        "own-deny-openat=OK open=EXDEV",
    ], describe(proc)
    report("own-seccomp", nnp=1, stricter_filter_ok=1, redirect_kept=2,
           second_listener="EBUSY", self_deny_wins="EXDEV")


def test_ptrace_of_a_child_does_not_bypass_the_policy(
    bin_dir: Path, tmp_path: Path, report: Report
) -> None:
    """The program traces its child with PTRACE_SYSCALL; the child's opens are
    still redirected. Rewriting the path in the child's memory at the
    syscall-entry stop happens before seccomp looks (since 4.8), so the
    supervisor judges the rewritten name: a denied file stays denied."""
    exe = build_c(bin_dir, "ptracer")
    n = 200
    src = tmp_path / "src"
    dst = write(tmp_path / "dst", "REDIRECTED\n")
    secret = write(tmp_path / "sec", "SECRET\n")
    assert len(str(secret)) == len(str(src))
    opts = ("--redirect", f"{src}={dst}", "--deny", str(secret))
    observe = run_launch(*opts, argv=[str(exe), "observe", str(src), str(n)])
    rewrite = run_launch(*opts, argv=[str(exe), "rewrite", str(src), str(n), str(secret)])
    native = run_native([str(exe), "rewrite", str(src), str(n), str(secret)])
    for proc in (observe, rewrite, native):
        assert proc.returncode == 0, describe(proc)
    obs = kv(observe.stdout)
    rew = kv(rewrite.stdout)
    nat = kv(native.stdout)
    report("ptrace", opens=n, observed_redirected=obs["redirected"], observed_stops=obs["stops"],
           rewritten=rew["rewrites"], rewritten_denied=rew["denied"],
           rewritten_escaped=rew["secret"], native_rewritten_secret=nat["secret"])
    assert (obs["redirected"], obs["secret"], obs["denied"], obs["other"]) == (str(n), "0", "0",
                                                                              "0")
    assert int(obs["stops"]) >= 2 * n
    assert rew["rewrites"] == str(n)
    assert (rew["denied"], rew["secret"]) == (str(n), "0"), rewrite.stdout
    assert nat["secret"] == str(n)  # the rewrite does work without unotifyd


def test_setuid_binary_gains_nothing_under_no_new_privs(
    bin_dir: Path, report: Report
) -> None:
    """A setuid-root copy of a small program, run by ``nobody``: natively its
    euid is 0; under unotifyd (NO_NEW_PRIVS) it stays 65534. /usr/bin/passwd
    behaves as it does under ``setpriv --no-new-privs``."""
    showid = build_c(bin_dir, "showid")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with public_dir("unotifyd-rel-suid-", setuid_capable_dir()) as d:
        suid = d / "showid"
        shutil.copy(showid, suid)
        os.chown(suid, 0, 0)
        suid.chmod(0o4755)
        native = run_native([*as_nobody, str(suid)])
        sandboxed = run_launch("--deny", "/nonexistent", argv=[*as_nobody, str(suid)])
    passwd_nnp = run_native([*as_nobody, "--no-new-privs", "passwd", "-S"])
    passwd_native = run_native([*as_nobody, "passwd", "-S"])
    passwd = run_launch("--deny", "/nonexistent", argv=[*as_nobody, "passwd", "-S"])
    report("setuid", native_euid=kv(native.stdout).get("euid"),
           sandboxed_euid=kv(sandboxed.stdout).get("euid"),
           passwd_like_no_new_privs=int(passwd.stdout == passwd_nnp.stdout),
           passwd_like_native=int(passwd.stdout == passwd_native.stdout))
    assert native.stdout == f"uid={NOBODY} euid=0\n", describe(native)
    assert sandboxed.stdout == f"uid={NOBODY} euid={NOBODY}\n", describe(sandboxed)
    assert (passwd.returncode, passwd.stdout) == (passwd_nnp.returncode, passwd_nnp.stdout)
