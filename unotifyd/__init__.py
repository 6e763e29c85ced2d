"""unotifyd: a seccomp user-notification supervisor.

``unotifyd.Supervisor`` (the trio library API, :mod:`unotifyd.daemon.api`)
is imported on first use, so that ``import unotifyd`` stays free of trio.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LaunchError", "SandboxedProcess", "Supervisor", "__version__"]

# Every command imports this module, launch --daemon too: no typing here
# (~2.4 ms); mypy takes any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .daemon.api import LaunchError, SandboxedProcess, Supervisor

_LAZY = frozenset({"LaunchError", "SandboxedProcess", "Supervisor"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .daemon import api  # noqa: PLC0415

        return getattr(api, name)
    raise AttributeError(f"module 'unotifyd' has no attribute {name!r}")
