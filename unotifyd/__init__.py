"""unotifyd: a seccomp user-notification supervisor."""

__version__ = "0.1.0"
