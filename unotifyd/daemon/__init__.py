"""The long-running daemon: one supervisor serving many sandboxed programs.

Layout (dependencies point down)::

    cli.py        argparse glue for ``serve``, ``status``, ``reload`` and
                  ``launch --daemon`` (no trio at import)
    client.py     the client side, no trio: ``launch --daemon`` installs the
                  filter the daemon sends, hands the listener over, execs
    server.py     the trio daemon: control socket, access control, reload
    api.py        ``unotifyd.Supervisor``, the trio library API
    programs.py   serving and releasing listeners, per-program counters
    handover.py   restarts without loss: fd store, SIGUSR2 hand-over
    systemd.py    sd_notify and LISTEN_FDS, wire format apart from I/O
    config.py     the daemon's TOML config: profiles and who may use them
    protocol.py   the control protocol's codec, pure (no I/O)

Only ``server.py``, ``api.py`` and ``programs.py`` import trio: a program
started with ``launch --daemon`` must not pay ~70 ms for it.
"""

#: Where ``serve`` listens and its clients connect, unless told otherwise.
DEFAULT_SOCKET = "/run/unotifyd/unotifyd.sock"
