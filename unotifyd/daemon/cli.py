"""Command line of the daemon: ``serve``, ``status``, ``reload`` and ``launch --daemon``.

Hooked into :mod:`unotifyd.cli` by :func:`add_commands` and
:func:`add_launch_options`. Importing this module is cheap (no trio): the
server is imported only by ``serve``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

# client and protocol are imported where used: the parser of every command
# line imports this module, and a standalone launch needs neither (~3 ms).
from . import DEFAULT_SOCKET

if TYPE_CHECKING:
    from .protocol import Reloaded, ReloadRequest, StatusReply, StatusRequest
    from .server import Daemon, Service

__all__ = ["COMMANDS", "add_commands", "add_launch_options", "format_status", "handles", "main"]

COMMANDS = ("serve", "status", "reload")

# Exit statuses of status/reload: 1 when the daemon refused or failed.
_EXIT_REFUSED = 1


def add_launch_options(launch: argparse.ArgumentParser) -> None:
    """``launch --daemon SOCKET --profile NAME``."""
    group = launch.add_argument_group(
        "through a daemon",
        "Let a running `unotifyd serve` supervise PROG under one of its profiles. PROG "
        "replaces this process (same pid, terminal and exit status); the rule options "
        "above cannot be combined with these: the profile decides.",
    )
    group.add_argument("--daemon", metavar="SOCKET", help="the daemon's control socket")
    group.add_argument("--profile", metavar="NAME", help="the daemon profile to run PROG under")


def _daemon_socket(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--daemon",
        metavar="SOCKET",
        default=DEFAULT_SOCKET,
        help=f"the daemon's control socket (default {DEFAULT_SOCKET})",
    )


def add_commands(sub: Any) -> None:
    """Add ``serve``, ``status`` and ``reload`` to the subcommands ``sub``."""
    serve = sub.add_parser(
        "serve",
        help="run the daemon that supervises programs started with launch --daemon",
        description="Serve sandboxed programs for clients of the control socket, under the "
        "profiles of the config file. SIGTERM/SIGINT stop it, SIGHUP reloads the config.",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        default=DEFAULT_SOCKET,
        help=f"the control socket to create (default {DEFAULT_SOCKET})",
    )
    serve.add_argument("--config", metavar="FILE", required=True, help="the daemon's TOML config")
    serve.add_argument(
        "--trace", action="store_true", help="one line per intercepted call on stderr"
    )
    serve.add_argument("--trace-json", metavar="FILE", help="the same events as JSON lines in FILE")
    serve.add_argument(
        "--stop-timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="on SIGTERM, how long running programs may still be served (default 5)",
    )
    serve.add_argument(
        "--oci-socket",
        metavar="PATH",
        help="also serve OCI containers: the socket their seccomp profile's listenerPath "
        "names (runc, crun); overrides oci_socket in the config",
    )
    status = sub.add_parser(
        "status",
        help="show what a daemon serves",
        description="Programs served, per-profile counters and uptime of a running daemon.",
    )
    _daemon_socket(status)
    status.add_argument("--json", action="store_true", help="the report as JSON")
    reload = sub.add_parser(
        "reload",
        help="make a daemon re-read its config",
        description="Re-read the daemon's config. New programs get the new profiles; running "
        "ones keep theirs. A config with an error is refused and the old one stays.",
    )
    _daemon_socket(reload)


def handles(args: argparse.Namespace) -> bool:
    """True if this module runs the command ``args`` describe."""
    if args.command in COMMANDS:
        return True
    return args.command == "launch" and (args.daemon is not None or args.profile is not None)


#: Makes the OCI agent (``serve --oci-socket``): (socket path, daemon) -> the service.
#: Given by ``unotifyd.cli``: ``oci/`` builds on ``daemon/``, not the other way round.
OciFactory = Callable[[str, "Daemon"], "Service"]


def main(
    args: argparse.Namespace, parser: argparse.ArgumentParser, oci: OciFactory | None = None
) -> int:
    if args.command == "launch":
        return _launch(args, parser)
    if args.command == "serve":
        return _serve(args, oci)
    if args.command == "status":
        return _status(args)
    return _reload(args)


def _launch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    prog = list(args.argv)
    if prog and prog[0] == "--":
        prog = prog[1:]
    if not prog:
        parser.error("launch: no program given (unotifyd launch [OPTIONS] -- PROG [ARGS...])")
    if args.daemon is None or args.profile is None:
        parser.error("launch: --daemon SOCKET and --profile NAME go together")
    local = [
        option
        for option, used in (
            ("--policy", args.policy),
            ("--redirect", args.redirect),
            ("--deny", args.deny),
            ("--readonly", args.readonly),
            ("--content", args.content),
            ("--private", args.private),
            ("--exec", args.exec),
            ("--allow-syscall", args.allow_syscall),
            ("--enforce", args.enforce),
            ("--view", args.view),
            ("--stats", args.stats),
            ("--trace", args.trace),
            ("--trace-json", args.trace_json),
            ("--no-sync-wakeup", not args.sync_wakeup),
            ("--no-colocate", not args.colocate),
        )
        if used
    ]
    if local:
        parser.error(
            f"launch --daemon: {', '.join(local)} cannot be used: the daemon's profile "
            "decides the rules (and the daemon traces)"
        )
    from .quick import launch  # noqa: PLC0415

    return launch(args.daemon, args.profile, prog)


def _serve(args: argparse.Namespace, oci: OciFactory | None) -> int:
    from ..kernel.errors import Unsupported  # noqa: PLC0415
    from ..kernel.filter import check_support  # noqa: PLC0415
    from ..launch import EXIT_FAILURE  # noqa: PLC0415
    from ..policy import PolicyError  # noqa: PLC0415

    try:
        check_support()
    except Unsupported as e:
        print(f"unotifyd: cannot sandbox: {e}", file=sys.stderr)
        return EXIT_FAILURE
    # trio, from here on only.
    from ..serve.trace import Tracer  # noqa: PLC0415
    from . import server  # noqa: PLC0415

    try:
        loaded = server.load(args.config)
    except PolicyError as e:
        print(f"unotifyd: {e}", file=sys.stderr)
        return 2
    # After the config: a successor (SIGUSR2) whose config is bad must exit
    # before its predecessor stops serving anything.
    from . import handover, systemd  # noqa: PLC0415

    try:
        inherited = handover.inherit()
    except (handover.HandoverError, ValueError, OSError) as e:
        print(f"unotifyd: cannot take over from the previous daemon: {e}", file=sys.stderr)
        return EXIT_FAILURE
    # An inherited socket (systemd's, or a predecessor's) is the one at
    # --socket: its own name may be a temporary one it was renamed from.
    socket_path = args.socket
    if inherited.control is not None:
        sock = inherited.control
    else:
        try:
            sock = server.bind_control_socket(args.socket)
        except OSError as e:
            print(f"unotifyd: cannot serve on {args.socket}: {e.strerror or e}", file=sys.stderr)
            return EXIT_FAILURE
    trace_json = None
    tracer = None
    try:
        if args.trace_json:
            trace_json = open(args.trace_json, "a", encoding="utf-8")  # noqa: SIM115
        # Each program holds a listener and a few /proc/PID/mem fds: take
        # every fd the hard limit allows.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # Emulated opens apply the *program's* umask to the mode themselves
        # (as in launch.py); ours must not be applied on top.
        os.umask(0)
        from ..kernel.creds import forbid_inspection  # noqa: PLC0415 - not on the client path

        forbid_inspection()  # before any program is served
        tracer = Tracer(sys.stderr if args.trace else None, trace_json)
        daemon = server.Daemon(
            sock,
            socket_path,
            args.config,
            loaded,
            tracer=tracer,
            stop_timeout=args.stop_timeout,
            inherited_socket=inherited.control is not None,
        )
        try:
            notifier = systemd.Notifier.from_environ()
        except ValueError as e:
            print(f"unotifyd: not notifying the service manager: {e}", file=sys.stderr)
            notifier = None
        daemon.continuity = handover.Continuity(daemon, inherited, notifier)
        if inherited.control is None:
            daemon.continuity.store_control_socket(sock)
        # The OCI agent (unotifyd.oci), when asked for: a second socket,
        # served by the same daemon. A bind error is reported below (exit 125).
        oci_path = args.oci_socket or loaded.config.oci_socket
        if oci_path:
            if oci is None:
                raise OSError(errno.EOPNOTSUPP, "this build of unotifyd has no OCI agent")
            daemon.oci = oci(oci_path, daemon)
            print(f"unotifyd: OCI agent on {oci_path}", file=sys.stderr, flush=True)
        profiles = ", ".join(loaded.config.profiles) or "none"
        print(
            f"unotifyd: serving {socket_path} (profiles: {profiles})", file=sys.stderr, flush=True
        )
        import trio  # noqa: PLC0415

        from ..kernel import kick  # noqa: PLC0415

        kick.install()  # The lanes' servers run in threads of their own: see kick.py.
        trio.run(daemon.run)
    except OSError as e:
        print(f"unotifyd: {e}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        sock.close()
        if tracer is not None:
            tracer.close()  # what is queued is written before the sink closes
        if trace_json is not None:
            trace_json.close()
    return 0


_Reply = TypeVar("_Reply", "StatusReply", "Reloaded")


def _ask(
    args: argparse.Namespace, request: StatusRequest | ReloadRequest, want: type[_Reply]
) -> _Reply | None:
    """Send ``request`` to the daemon; the reply, or None after saying why not."""
    from .client import ClientError, call  # noqa: PLC0415
    from .protocol import ErrorReply  # noqa: PLC0415

    try:
        reply = call(args.daemon, request)
    except ClientError as e:
        print(f"unotifyd: {e}", file=sys.stderr)
        return None
    if isinstance(reply, ErrorReply):
        print(f"unotifyd: {reply.message}", file=sys.stderr)
        return None
    if not isinstance(reply, want):
        print(f"unotifyd: unexpected {reply.TYPE!r} answer", file=sys.stderr)
        return None
    return reply


def _status(args: argparse.Namespace) -> int:
    from .protocol import StatusReply, StatusRequest  # noqa: PLC0415

    reply = _ask(args, StatusRequest(), StatusReply)
    if reply is None:
        return _EXIT_REFUSED
    if args.json:
        print(json.dumps(reply.report, indent=2, sort_keys=True))
    else:
        print(format_status(reply.report), end="")
    return 0


def _reload(args: argparse.Namespace) -> int:
    from .protocol import Reloaded, ReloadRequest  # noqa: PLC0415

    reply = _ask(args, ReloadRequest(), Reloaded)
    if reply is None:
        return _EXIT_REFUSED
    print(f"reloaded: profiles {', '.join(reply.profiles) or 'none'}")
    return 0


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{s:02d}s"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{seconds:.1f}s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell: names left, numbers right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.ljust(width) if i == 0 or header[i] in _TEXT_COLUMNS else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


_TEXT_COLUMNS = frozenset({"COMMAND"})
#: After a program's name: taken back by a restart under a profile that now
#: needs another filter than the one it runs under (Continuity.adopt).
_BEHIND = " (filter behind its profile)"


def format_status(report: Mapping[str, Any]) -> str:
    """The human-readable form of a status report (see ``Daemon.status_report``)."""
    lines = [
        f"unotifyd {report.get('version', '?')}, pid {report.get('pid', '?')}, "
        f"up {_duration(float(report.get('uptime', 0)))}",
        f"socket {report.get('socket', '?')}, config {report.get('config', '?')} "
        f"(reloaded {report.get('reloads', 0)} times)",
        f"programs: {report.get('programs_running', 0)} running, "
        f"{report.get('programs_finished', 0)} finished; "
        f"connections: {report.get('connections', 0)}",
    ]
    refusals: Mapping[str, int] = report.get("refusals") or {}
    if refusals:
        lines.append("refused: " + ", ".join(f"{code} {n}" for code, n in sorted(refusals.items())))
    profiles: Mapping[str, Mapping[str, Any]] = report.get("profiles") or {}
    if profiles:
        kinds = sorted({k for p in profiles.values() for k in (p.get("decisions") or {})})
        header = ["PROFILE", "RUNNING", "STARTED", "NOTIFICATIONS", *(k.upper() for k in kinds)]
        rows = []
        for name, p in profiles.items():
            label = name if p.get("configured", True) else f"{name} (removed)"
            decisions = p.get("decisions") or {}
            rows.append(
                [
                    label,
                    str(p.get("running", 0)),
                    str(p.get("started", 0)),
                    str(p.get("notifications", 0)),
                    *(str(decisions.get(k, 0)) for k in kinds),
                ]
            )
        lines += ["", *_table(header, rows)]
    programs: list[Mapping[str, Any]] = report.get("programs") or []
    if programs:
        rows = [
            [
                str(p.get("name", "?")) + (_BEHIND if p.get("filter_behind") else ""),
                str(p.get("pid", "?")),
                str(p.get("uid", "?")),
                _duration(float(p.get("seconds", 0))),
                str(p.get("notifications", 0)),
                str(p.get("command", "")),
            ]
            for p in programs
        ]
        lines += ["", *_table(["PROGRAM", "PID", "UID", "TIME", "NOTIFICATIONS", "COMMAND"], rows)]
        hidden = int(report.get("programs_running", 0)) - len(programs)
        if hidden > 0:
            lines.append(f"... and {hidden} more")
    return "\n".join(lines) + "\n"
