"""The OCI seccomp agent: containers of runc and crun served through ``listenerPath``.

:mod:`.state` parses the runtime's message (pure); :mod:`.agent` accepts
runtime connections in the daemon (trio). Importing this package imports
neither.
"""
