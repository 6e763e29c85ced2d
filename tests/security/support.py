"""The machinery of the security suite: identities, attacks, modes, and the comparison.

Every attack is one call of ``progs/attack.c`` (an op and its arguments),
with what the kernel answers it *natively* for each identity. A test takes
a family of attacks, an identity and a mode, and:

1. builds a fresh workspace and runs every attack natively (no unotifyd):
   each answer must be the expected one. This is the control: it proves the
   attack program works (root natively may set ``security.capability``) and
   that the identity is what it claims (nobody natively may not);
2. builds another fresh workspace and runs the same attacks under
   ``unotifyd launch`` with the mode's rules, which make the supervisor
   perform the calls;
3. compares the two runs attack by attack. Any difference fails the test;
   an *escape* is a difference where unotifyd gave what the kernel refused
   (a success, data, or an errno that tells what lies behind a refusal)
   or revealed what the kernel hid (kernel addresses, physical frames,
   ``trusted.*`` attributes).

Each test prints ``RESULT family[mode-identity]: runs=N escapes=E differences=D``,
and the lines are printed again at the end of the run.

Run as root: ``bash tests/run tests/security`` (or, with the venv made,
``PATH=$PWD/.venv/bin:$PATH .venv/bin/python -m pytest tests/security -q``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..integration.helpers import AS_NOBODY, describe, run_launch, run_native

NOBODY = 65534
#: Sources of the C programs the suite builds.
PROGS = Path(__file__).resolve().parent / "progs"

# --- Identities --------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who the program runs as.

    ``prefix`` is the argv that turns the test's root into that identity.
    In a workspace, ``uid`` owns the program's own files and ``other`` the
    files of someone else (so that root and root without capabilities face
    a file of nobody's, and nobody faces one of root's).
    """

    name: str
    prefix: tuple[str, ...]
    uid: int
    other: int


#: Capabilities dropped from every set: a process of uid 0 that the kernel
#: treats as an ordinary owner of root's files, nothing more.
NO_CAPS: tuple[str, ...] = (
    "setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
)  # fmt: skip

IDENTITIES: dict[str, Identity] = {
    "root": Identity("root", (), 0, NOBODY),
    "root-nocaps": Identity("root-nocaps", NO_CAPS, 0, NOBODY),
    "user": Identity("user", (*AS_NOBODY, "--"), NOBODY, 0),
}

# --- Attacks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One call of the attack program, and its native answers.

    ``call`` is the op and its arguments, where ``{w}`` stands for the
    workspace as the program names it, ``{me}``/``{other}`` for the uids of
    :class:`Identity` and ``{sleeper}`` for the pid of a root process.
    ``native`` maps each identity to what the call answers natively: the
    whole outcome, or its first words. ``opens``: the call is an open (it
    runs under ``--view opens`` too). ``writes``: it changes the file system
    (it does not run under a read-only rule). ``reveals``: words in an
    outcome that show what the kernel hides from the unprivileged.
    ``in_domain``: what the call answers instead in a mode that puts the
    program in a Landlock domain (:attr:`Mode.landlock`), where the kernel
    refuses it the ptrace access to processes outside that natively it has.
    """

    label: str
    call: tuple[str, ...]
    native: Mapping[str, str]
    opens: bool = False
    writes: bool = False
    reveals: tuple[str, ...] = ()
    in_domain: str | None = None


def natively(root: str, unprivileged: str, *, nocaps: str | None = None) -> dict[str, str]:
    """Native answers: ``root``'s, and ``unprivileged``'s for nobody and (unless
    ``nocaps`` says otherwise) for root without capabilities."""
    return {"root": root, "root-nocaps": nocaps or unprivileged, "user": unprivileged}


def matches(outcome: str, want: str) -> bool:
    return outcome == want or outcome.startswith(want + " ")


REFUSALS = frozenset({"EACCES", "EPERM"})


def refused(outcome: str) -> bool:
    """True if the kernel (or the supervisor) said no: at the call, or at the read."""
    return any(word.removeprefix("read=") in REFUSALS for word in outcome.split())


def is_escape(attack: Attack, native: str, got: str) -> bool:
    """True if ``got`` (under unotifyd) gave the program more than ``native``."""
    if got == native:
        return False
    if refused(native) and not refused(got):
        return True
    return any(word in got and word not in native for word in attack.reveals)


# --- Workspaces, families and modes ---------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A fresh directory tree for one run.

    ``real`` is where the files are (0755, root's); ``view`` an empty
    directory beside it, which a tree redirect maps onto ``real``.
    """

    real: Path
    view: Path

    @classmethod
    def make(cls, scratch: Path) -> Workspace:
        real = Path(tempfile.mkdtemp(dir=scratch, prefix="ws-"))
        real.chmod(0o755)
        view = real.with_name(real.name + "-view")
        view.mkdir(mode=0o755)
        return cls(real, view)


def put(path: Path, text: str, *, owner: int, mode: int = 0o644) -> Path:
    """A file holding ``text``, owned by ``owner`` (uid and gid) with ``mode``."""
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def directory(path: Path, *, owner: int, mode: int = 0o755) -> Path:
    """A new directory owned by ``owner`` (uid and gid) with ``mode``."""
    path.mkdir()
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


Build = Callable[[Workspace, Identity, bool], None]
Options = Callable[[Workspace], tuple[str, ...]]


def _nothing(ws: Workspace) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Family:
    """Attacks that share a workspace layout.

    ``build(ws, identity, native)`` fills a workspace (``native`` says it is
    for the native control). ``rules`` are launch options every mode adds
    (a private tree, a redirect: the rule under test). ``native_prefix``
    is argv run before the identity's in the native control (to set up what
    the rule stands for, e.g. a read-only bind mount).
    """

    name: str
    attacks: tuple[Attack, ...]
    build: Build
    rules: Options = _nothing
    native_prefix: Options = _nothing


@dataclass(frozen=True)
class Mode:
    """How unotifyd is run: its options, and which name of the workspace the program uses."""

    name: str
    options: Options
    through_view: bool = False
    runs: Callable[[Attack], bool] = field(default=lambda attack: True)
    #: The program runs in a Landlock domain (enforcing mode scopes its signals).
    landlock: bool = False


def _deny_unrelated(ws: Workspace) -> tuple[str, ...]:
    return ("--enforce", "--deny", f"{ws.real}/.denied-unrelated")


def _tree_redirect(ws: Workspace) -> tuple[str, ...]:
    return ("--redirect", f"{ws.view}/**={ws.real}/**")


#: Enforcing mode: one unrelated deny traps every path call, and enforce
#: performs each in the supervisor.
ENFORCE = Mode("enforce", _deny_unrelated, landlock=True)
#: The default mode, through a tree redirect onto the workspace: every call
#: on a path under it is performed by the supervisor.
VIRTUALIZE = Mode("virtualize", _tree_redirect, through_view=True)
#: The default mode with the workspace read-only: reads are performed by the
#: supervisor (opens, ``access``), changes fail with EROFS, so only attacks
#: that change nothing run.
VIRTUALIZE_RO = Mode(
    "virtualize-ro", lambda ws: ("--readonly", f"{ws.real}/**"), runs=lambda a: not a.writes
)
#: ``--view opens`` through the tree redirect: only the open family is trapped.
OPENS = Mode(
    "opens",
    lambda ws: ("--view", "opens", *_tree_redirect(ws)),
    through_view=True,
    runs=lambda a: a.opens,
)
#: Modes for families whose rule is in ``Family.rules`` (enforce, or not).
ENFORCE_WITH_RULES = Mode("enforce", lambda ws: ("--enforce",), landlock=True)
VIRTUALIZE_WITH_RULES = Mode("virtualize", _nothing)

# --- Running and comparing -----------------------------------------------------------------


def attack_argv(binary: Path, attacks: Sequence[Attack], names: Mapping[str, object]) -> list[str]:
    """argv running ``attacks`` in one process, placeholders replaced."""
    argv: list[str] = [str(binary)]
    for attack in attacks:
        if len(argv) > 1:
            argv.append(";")
        argv += [attack.label, *(arg.format(**names) for arg in attack.call)]
    return argv


def outcomes(proc: subprocess.CompletedProcess[str], attacks: Sequence[Attack]) -> dict[str, str]:
    """{label: outcome} from the attack program's output; every attack must have answered."""
    assert proc.returncode == 0, describe(proc)
    got = {}
    for line in proc.stdout.splitlines():
        label, _, outcome = line.partition(" ")
        got[label] = outcome.strip()
    assert [a.label for a in attacks] == list(got), describe(proc)
    return got


@dataclass
class Comparison:
    runs: int = 0
    escapes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


_RESULTS_KEY = pytest.StashKey[list[str]]()


class Report:
    """Prints a test's figures as ``RESULT name: k=v ...`` lines, at once
    (even under output capture) and again at the end of the run."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __call__(self, name: str, **figures: object) -> str:
        line = f"RESULT {name}: " + " ".join(f"{k}={v}" for k, v in figures.items())
        self._config.stash.setdefault(_RESULTS_KEY, []).append(line)
        capman = self._config.pluginmanager.getplugin("capturemanager")
        cm = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with cm:
            sys.stdout.write(f"\n{line}\n")
            sys.stdout.flush()
        return line


def collected_results(config: pytest.Config) -> list[str]:
    return config.stash.get(_RESULTS_KEY, [])


@dataclass
class Lab:
    """What a test needs to run attacks: the program, scratch space, a root process."""

    binary: Path
    scratch: Path
    sleeper: int
    report: Report

    def names(self, ws: Path, identity: Identity) -> dict[str, object]:
        return {"w": ws, "me": identity.uid, "other": identity.other, "sleeper": self.sleeper}

    def probe(self, family: Family, identity: Identity, mode: Mode) -> None:
        """Run ``family``'s attacks natively and under unotifyd in ``mode``
        as ``identity``; report, then assert the controls hold and the two
        runs give the same answers."""
        attacks = [a for a in family.attacks if mode.runs(a)]
        assert attacks, f"no attack of {family.name} runs in {mode.name}"

        ws = Workspace.make(self.scratch)
        family.build(ws, identity, True)
        argv = attack_argv(self.binary, attacks, self.names(ws.real, identity))
        native = outcomes(
            run_native([*family.native_prefix(ws), *identity.prefix, *argv], cwd="/"), attacks
        )
        broken = [
            f"{a.label}: natively {native[a.label]!r}, expected {a.native[identity.name]!r}"
            for a in attacks
            if not matches(native[a.label], a.native[identity.name])
        ]

        ws = Workspace.make(self.scratch)
        family.build(ws, identity, False)
        base = ws.view if mode.through_view else ws.real
        argv = attack_argv(self.binary, attacks, self.names(base, identity))
        opts = (*mode.options(ws), *family.rules(ws))
        proc = run_launch(*opts, argv=[*identity.prefix, *argv], cwd="/")
        assert "internal error" not in proc.stderr, describe(proc)
        got = outcomes(proc, attacks)

        result = Comparison(runs=len(attacks))
        for a in attacks:
            if got[a.label] == native[a.label]:
                continue
            if mode.landlock and a.in_domain is not None and got[a.label] == a.in_domain:
                continue  # narrower than native, on purpose (see Attack.in_domain)
            call = " ".join(a.call)
            line = f"{a.label} ({call}): natively {native[a.label]!r}, unotifyd {got[a.label]!r}"
            result.differences.append(line)
            if is_escape(a, native[a.label], got[a.label]):
                result.escapes.append(line)
        self.report(
            f"{family.name}[{mode.name}-{identity.name}]",
            runs=result.runs,
            escapes=len(result.escapes),
            differences=len(result.differences),
        )
        where = f"as {identity.name} under `unotifyd launch {' '.join(opts)}`"
        if broken:
            pytest.fail("native control does not hold:\n  " + "\n  ".join(broken), pytrace=False)
        if result.escapes:
            pytest.fail(
                f"{len(result.escapes)} escape(s) {where}:\n  " + "\n  ".join(result.escapes),
                pytrace=False,
            )
        if result.differences:
            pytest.fail(
                f"answers differ from native {where}:\n  " + "\n  ".join(result.differences),
                pytrace=False,
            )


# --- Builds and scratch space ---------------------------------------------------------------



def build_c(out_dir: Path, name: str, *flags: str) -> Path:
    """Compile ``progs/NAME.c`` (with gcc ``flags``) into ``out_dir`` and return the
    (world-executable) binary."""
    exe = out_dir / name
    proc = subprocess.run(
        ["gcc", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(exe),
         str(PROGS / f"{name}.c")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"gcc {name}.c failed:\n{proc.stderr}"
    exe.chmod(0o755)
    return exe
