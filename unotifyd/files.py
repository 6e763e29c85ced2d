"""Reading from disk what policies are made of: policy and config files, content files.

The policy layer (:mod:`unotifyd.policy`) does no I/O: it parses text, and
reads a content rule's file through the reader it is given. This module is
that reader, and reads the TOML files the command line and the daemon name.
"""

from __future__ import annotations

import os
import stat

from .policy import Policy, PolicyError
from .policy.config import MAX_CONTENT_SIZE, check_content_size, parse_policy


def load_policy(path: str) -> Policy:
    """Read and parse the policy file at ``path``.

    Raises :class:`PolicyError`, also when the file (or a file a content rule
    names) cannot be read or is not UTF-8.
    """
    return parse_policy(read_toml_text(path, "policy"), path, read_file=read_content_file)


def validated(policy: Policy, source: str) -> Policy:
    """``policy`` itself, once checked that no two rules name one file here.

    Rule paths stay as written: the supervisor resolves them in each
    program's own root (a container's may differ from ours), where programs'
    paths are resolved too. Resolving them here too catches two rules that
    would name the same file (a link and its target) while nothing runs yet.
    Raises :class:`PolicyError`.
    """
    try:
        policy.canonicalized(os.path.realpath)
    except ValueError as e:
        raise PolicyError(source, None, str(e)) from e
    return policy


def read_toml_text(path: str, what: str) -> str:
    """The text of the TOML file at ``path`` (a ``what``: "policy", "config").

    Raises :class:`PolicyError` when it cannot be read or is not UTF-8 (TOML
    files must be), with the line of the first bad byte.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise PolicyError(path, None, f"cannot read the {what}: {exc.strerror or exc}") from exc
    return toml_text(data, path)


def toml_text(data: bytes, path: str) -> str:
    """``data``, read from the TOML file ``path``, as text; PolicyError if it is not UTF-8
    (TOML files must be), with the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(path, line, "not UTF-8 text (TOML files must be)") from exc


def read_content_file(path: str) -> bytes:
    """The bytes of the regular file at ``path``, for a content rule.

    The file is read once, whole. Raises :class:`ValueError` with a message
    for humans when it cannot be read, is not a regular file (a FIFO or a
    device could block the reader or never end), or holds more than
    :data:`MAX_CONTENT_SIZE` bytes.
    """
    try:
        # stat() first: opening a device may do something (rewind a tape).
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path} is not a regular file")
        # O_NONBLOCK: should a FIFO be swapped in since, opening it must not
        # wait for a writer; fstat() below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        check_content_size(info.st_size, path)
        data = bytearray()
        # One byte more than allowed tells a file that grew since fstat().
        while len(data) <= MAX_CONTENT_SIZE:
            chunk = os.read(fd, MAX_CONTENT_SIZE + 1 - len(data))
            if not chunk:
                break
            data += chunk
        check_content_size(len(data), path)
        return bytes(data)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
