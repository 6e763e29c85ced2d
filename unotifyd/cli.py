"""Command line: ``unotifyd launch [OPTIONS] -- PROG [ARGS...]``.

Imports stay lazy: starting a sandboxed program must not pay for modules
its path does not use (trio alone costs ~70 ms to import). The lightest
path is ``launch --daemon``: recognized before argparse and the policy layer
are even imported, it loads only :mod:`unotifyd.daemon.quick`, which execs
the daemon's client in C (or, where it was not built, imports the Python
one, :mod:`unotifyd.daemon.client`). The installed ``unotifyd`` command
does better where the C client was built: it is that same C program (the
front at the end of ``daemon/launch.c``), which makes a plain ``launch
--daemon`` without starting Python and runs this module, through the
script ``unotifyd-python``, for any other command line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Not `from typing import TYPE_CHECKING`: typing costs the launch --daemon
# path ~2.4 ms; mypy takes any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .daemon.server import Daemon, Service
    from .policy import Policy


def _build_parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415 - not on the launch --daemon path

    parser = argparse.ArgumentParser(
        prog="unotifyd",
        description="Supervise the system calls of programs with seccomp user notification.",
    )
    from . import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"unotifyd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    launch = sub.add_parser(
        "launch",
        help="run a program under a policy",
        usage="unotifyd launch [OPTIONS] -- PROG [ARGS...]",
        description="Run PROG under a policy. Options add to the rules of any --policy file "
        "(an option on the same path as a file rule replaces it).",
    )
    launch.add_argument("--policy", metavar="FILE", help="a TOML policy file")
    launch.add_argument(
        "--redirect", metavar="FROM=TO", action="append", default=[],
        help="opening FROM opens TO instead (FROM/**=TO/** maps a tree)",
    )
    launch.add_argument(
        "--deny", metavar="PATH[:ERRNO]", action="append", default=[],
        help="opening PATH fails with ERRNO (default EACCES)",
    )
    launch.add_argument(
        "--readonly", metavar="PATH", action="append", default=[],
        help="opening PATH for writing fails with EROFS",
    )
    launch.add_argument(
        "--content", metavar="PATH=FILE", action="append", default=[],
        help="PATH is a read-only file holding what FILE holds now (read once, at start)",
    )
    launch.add_argument(
        "--private", metavar="PATH/**", action="append", default=[],
        help="the tree PATH/** starts empty and its writes go to a scratch directory "
        "removed at the end, like a tmpfs mounted there (a tree: write the /**)",
    )
    launch.add_argument(
        "--exec", metavar="PATH", action="append", default=[],
        help="PATH (a file, or a tree PATH/**) may be executed; once --exec or an [[exec]] "
        "rule is given, executing anything else fails with EACCES",
    )
    launch.add_argument(
        "--enforce", action="store_true",
        help="enforcing mode: perform every trapped call in the supervisor, never let the "
        "kernel re-read the program's memory (CONTINUE); the same as mode = \"enforce\"",
    )
    launch.add_argument(
        "--allow-syscall", metavar="NAME", action="append", default=[],
        help="let the system call NAME through although the filter would refuse it (see the "
        "README's threat model: io_uring_setup, ptrace, mount...); a warning says what route "
        "it reopens; the same as allow_syscalls = [...] in a policy file",
    )
    launch.add_argument(
        "--view", choices=("full", "opens"),
        help="full (the default): every path call follows the rules, so stat, rename, exec... "
        "agree with open; opens: only the open family does, and nothing else is trapped "
        "(faster for programs that stat a lot); the same as view = ... in a policy file",
    )
    launch.add_argument(
        "--trace", action="store_true", help="one line per intercepted call on stderr"
    )
    launch.add_argument(
        "--trace-json", metavar="FILE", help="the same events as JSON lines in FILE"
    )
    launch.add_argument(
        "--stats", action="store_true",
        help="on stderr: the system calls the filter traps, and at exit how many "
        "notifications each one made and what was decided",
    )
    launch.add_argument(
        "--no-sync-wakeup", dest="sync_wakeup", action="store_false",
        help="do not ask the kernel to wake the program on the supervisor's CPU",
    )
    launch.add_argument(
        "--no-colocate", dest="colocate", action="store_false",
        help="do not run a program's thread on the supervisor's CPU while it takes an "
        "injected fd (its CPU affinity, and the serving thread's, are narrowed for those "
        "microseconds)",
    )
    launch.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROG [ARGS...]")
    _add_daemon_commands(sub, launch)
    return parser


def _add_daemon_commands(
    sub: argparse._SubParsersAction[Any], launch: argparse.ArgumentParser
) -> None:
    """The daemon's commands (``serve``, ``status``, ``reload``) and ``launch --daemon``.

    They live in :mod:`unotifyd.daemon.cli`, which imports no trio.
    """
    from .daemon import cli as daemon_cli  # noqa: PLC0415

    daemon_cli.add_launch_options(launch)
    daemon_cli.add_commands(sub)


def build_policy(args: argparse.Namespace) -> Policy:
    """The policy from ``--policy`` and the rule options; raises PolicyError."""
    from .files import load_policy, read_content_file, validated  # noqa: PLC0415
    from .policy import Policy, PolicyError, combine, rules_from_options  # noqa: PLC0415
    from .policy.config import parse_allow_syscalls  # noqa: PLC0415

    file_policy = load_policy(args.policy) if args.policy else None
    cli_rules = rules_from_options(
        args.redirect, args.deny, args.readonly,
        contents=args.content, privates=args.private, execs=args.exec,
        read_file=read_content_file,
    )  # fmt: skip
    policy = combine(file_policy, cli_rules, parse_allow_syscalls(args.allow_syscall))
    if args.enforce or args.view:
        mode = "enforce" if args.enforce else policy.mode
        try:
            policy = Policy(policy.rules, mode, args.view or policy.view, policy.allow_syscalls)
        except ValueError as e:  # --view opens with --enforce, or with private rules
            raise PolicyError("command line", None, str(e)) from None
    # Rule paths are resolved by the supervisor, in the program's own root.
    return validated(policy, args.policy or "the rules")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # Only a command line that names --daemon imports the fast path, which
    # execs the C client (or imports the Python one: its protocol costs a
    # standalone launch ~3 ms).
    if any(arg.startswith("--daemon") for arg in argv):
        from .daemon import quick  # noqa: PLC0415 - light: no policy, no argparse, no trio

        plain = quick.parse_daemon_launch(argv)
        if plain is not None:
            return quick.launch(*plain)
    from .policy import PolicyError  # noqa: PLC0415

    parser = _build_parser()
    args = parser.parse_args(argv)
    from .daemon import cli as daemon_cli  # noqa: PLC0415

    if daemon_cli.handles(args):
        return daemon_cli.main(args, parser, _oci_agent)
    if args.command == "launch":
        prog = list(args.argv)
        if prog and prog[0] == "--":
            prog = prog[1:]
        if not prog:
            parser.error("launch: no program given (unotifyd launch [OPTIONS] -- PROG [ARGS...])")
        try:
            policy = build_policy(args)
        except PolicyError as e:
            print(f"unotifyd: {e}", file=sys.stderr)
            return 2
        from .launch import EXIT_FAILURE, LaunchError, landlock_warnings, launch  # noqa: PLC0415
        from .policy import surface  # noqa: PLC0415
        from .serve.backing import target_warnings  # noqa: PLC0415

        warnings = [*target_warnings(policy), *surface.warnings(policy), *landlock_warnings(policy)]
        for warning in warnings:
            print(f"unotifyd: {warning}", file=sys.stderr)

        trace_json = None
        try:
            if args.trace_json:
                # Opened before the fork, close-on-exec, by us: the program never sees it.
                trace_json = open(args.trace_json, "a", encoding="utf-8")  # noqa: SIM115
            return launch(
                policy,
                prog,
                trace=sys.stderr if args.trace else None,
                trace_json=trace_json,
                stats=sys.stderr if args.stats else None,
                sync_wakeup=args.sync_wakeup,
                colocate=args.colocate,
            )
        except LaunchError as e:
            print(f"unotifyd: {e}", file=sys.stderr)
            return EXIT_FAILURE
        except OSError as e:
            print(f"unotifyd: {e}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            if trace_json is not None:
                trace_json.close()
    parser.error(f"unknown command {args.command}")


def _oci_agent(path: str, daemon: Daemon) -> Service:
    """The OCI seccomp agent on socket ``path``, served by ``daemon`` (``serve --oci-socket``)."""
    from .oci.agent import OciAgent, bind_oci_socket  # noqa: PLC0415 - only when asked for

    return OciAgent(bind_oci_socket(path), path, daemon)


if __name__ == "__main__":
    sys.exit(main())

