"""The long-running daemon: one supervisor serving many sandboxed programs.

Layout (dependencies point down)::

    cli.py        argparse glue for ``serve``, ``status``, ``reload`` and
                  ``launch --daemon`` (no trio at import)
    quick.py      ``launch --daemon``'s fast path: recognized without
                  argparse, then this process becomes the C client
    launch.c      the client in C (``unotifyd-launch``, built by setup.py)
    client.py     the client side in Python, no trio: ``launch --daemon``
                  installs the filter the daemon sends, hands the listener
                  over, execs (where launch.c was not built); status, reload
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
