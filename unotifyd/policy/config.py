"""Policy files and command-line rules.

A policy file is TOML::

    version = 1              # required: the format version, must be 1
    mode = "virtualize"      # optional; the only mode so far

    [[redirect]]             # opening `from` opens `to` instead
    from = "/etc/passwd"
    to = "/etc/hostname"

    [[deny]]                 # opening `path` fails with `errno` (default EACCES)
    path = "/etc/shadow"
    errno = "ENOENT"

    [[readonly]]             # `path` may be read, opening it to write fails (EROFS)
    path = "/srv/data/**"

Patterns and matching are described in :mod:`unotifyd.policy.rules`. Anything
else -- an unknown key, a wrong type, a missing key, a bad path or errno, two
rules on one pattern -- is a :class:`PolicyError` naming the file and the line
of the offending key (or of its table's header when the key is missing).

On the command line the same rules are ``--redirect FROM=TO``,
``--deny PATH[:ERRNO]`` and ``--readonly PATH``. :func:`combine` merges them
with a file: a command-line rule replaces the file's rule on the same pattern,
so a policy can be adjusted for one run without editing it.

:func:`load_policy` is the only function here that does I/O.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .rules import (
    MODES,
    Deny,
    DuplicateRuleError,
    Policy,
    ReadOnly,
    Redirect,
    Rule,
    find_duplicate,
    parse_deny,
    parse_errno,
    parse_pattern,
    parse_readonly,
    parse_redirect,
    rule_pattern,
)

__all__ = [
    "FORMAT_VERSION",
    "PolicyError",
    "combine",
    "load_policy",
    "parse_policy",
    "rules_from_options",
]

#: The only ``version`` this code reads.
FORMAT_VERSION = 1

# Keys of each rule table. The first tuple is every allowed key, the second the
# required ones.
_RULE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "redirect": (("from", "to"), ("from", "to")),
    "deny": (("path", "errno"), ("path",)),
    "readonly": (("path",), ("path",)),
}
_TOP_KEYS = ("version", "mode", *_RULE_KEYS)


class PolicyError(Exception):
    """A policy could not be read: ``source`` (a file or an option), ``line``, ``message``."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        # args mirror __init__'s parameters so that the error survives pickling.
        super().__init__(source, line, message)
        self.source = source
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.source}: {self.message}"
        return f"{self.source}:{self.line}: {self.message}"


# --- Finding lines -------------------------------------------------------------
#
# tomllib returns plain dicts with no positions, so errors found after parsing
# are placed by scanning the text again. This is best effort by design: it
# understands headers, `key =` lines, quoted keys, comments and multi-line
# strings, which is what policy files contain. When it cannot tell, an error
# points at the table header, or carries no line at all -- never a wrong one
# on purpose.

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_LINE = re.compile(rf"\s*({_KEY})\s*[.=]")
# A whole line, so that a line of an array of arrays (`  ["a"],`) is no header.
_HEADER_LINE = re.compile(rf"\s*(\[\[?)\s*({_KEY})((?:\s*\.\s*{_KEY})*)\s*\]\]?\s*(?:#.*)?$")
_MULTILINE_QUOTES = ('"""', "'''")


def _unquote(key: str) -> str:
    # Escapes inside quoted keys are not decoded: nobody writes "p\u0061th".
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


class Locator:
    """Line numbers of top-level keys, ``[[kind]]`` headers and their keys."""

    def __init__(self, text: str) -> None:
        self._top: dict[str, int] = {}
        # kind -> one (header line, key -> line) per [[kind]] header, in order.
        self._tables: dict[str, list[tuple[int, dict[str, int]]]] = {}
        keys: dict[str, int] | None = self._top
        # Lines end at "\n" only, as for tomllib: str.splitlines() would also
        # split at U+2028 and the like, and count differently.
        lines = iter(enumerate(text.split("\n"), start=1))
        for number, line in lines:
            header = _HEADER_LINE.match(line)
            if header is not None:
                name = _unquote(header.group(2))
                self._top.setdefault(name, number)
                keys = None  # keys of a table we do not care about
                if header.group(1) == "[[" and not header.group(3):
                    keys = {}
                    self._tables.setdefault(name, []).append((number, keys))
                continue
            key = _KEY_LINE.match(line)
            if key is None:
                continue
            if keys is not None:
                keys.setdefault(_unquote(key.group(1)), number)
            self._skip_multiline_string(line[key.end() :], lines)

    @staticmethod
    def _skip_multiline_string(value: str, lines: Iterator[tuple[int, str]]) -> None:
        # A multi-line string may hold text that looks like keys or headers.
        for quotes in _MULTILINE_QUOTES:
            if value.count(quotes) % 2 == 1:
                for _, line in lines:
                    if quotes in line:
                        return
                return

    def top(self, key: str) -> int | None:
        """Line of top-level ``key`` (or of the first header naming it)."""
        return self._top.get(key)

    def header(self, kind: str, index: int) -> int | None:
        """Line of the ``index``-th ``[[kind]]`` header.

        Rules written as an inline array (``deny = [{path = "/x"}]``) have no
        header: they get the line of the ``deny =`` key.
        """
        tables = self._tables.get(kind, [])
        if index < len(tables):
            return tables[index][0]
        return self._top.get(kind)

    def key(self, kind: str, index: int, key: str) -> int | None:
        """Line of ``key`` in the ``index``-th ``[[kind]]`` table, else its header's."""
        tables = self._tables.get(kind, [])
        if index < len(tables):
            line, keys = tables[index]
            return keys.get(key, line)
        return self._top.get(kind)


# --- Parsing -------------------------------------------------------------------

_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is an int to Python, not to TOML
    (str, "a string"),
    (int, "an integer"),
    (float, "a float"),
    (dict, "a table"),
    (list, "an array"),
    (datetime.datetime, "a date-time"),  # before date: a datetime is a date
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def toml_type(value: object) -> str:
    for python_type, name in _TOML_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def toml_decode_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> PolicyError:
    message = str(exc)
    position = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if position is not None:
        detail = message[: position.start()]
        return PolicyError(
            source, int(position.group(1)), f"invalid TOML: {detail} (column {position.group(2)})"
        )
    end = re.search(r"\s*\(at end of document\)$", message)
    if end is not None:
        message = message[: end.start()] + " at the end of the file"
        # The statement left unfinished is on the last line that has any text.
        last = text.rstrip().count("\n") + 1
        return PolicyError(source, last, f"invalid TOML: {message}")
    return PolicyError(source, None, f"invalid TOML: {message}")


class TomlChecker:
    """Base of the checkers that turn a TOML document into a value or a located error.

    Shared by policy files and the daemon's config, which are versioned the
    same way.
    """

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.where = Locator(text)

    def error(self, line: int | None, message: str) -> PolicyError:
        return PolicyError(self.source, line, message)

    def check_version(self, doc: Mapping[str, Any], expected: int) -> None:
        """Require ``version = expected`` at the top of the document."""
        if "version" not in doc:
            raise self.error(None, f"missing 'version = {expected}' (the format of this file)")
        version = doc["version"]
        line = self.where.top("version")
        if type(version) is not int:
            raise self.error(
                line, f"'version' must be the integer {expected}, not {toml_type(version)}"
            )
        if version != expected:
            raise self.error(
                line, f"unsupported version {version}: this unotifyd reads version {expected}"
            )


class _Parser(TomlChecker):
    """Turns a parsed TOML document into a :class:`Policy`, or a located error."""

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        # The version comes first: under another version every other key may
        # mean something else, so other complaints would mislead.
        self.check_version(doc, FORMAT_VERSION)
        mode = self.mode(doc)
        located: list[tuple[int | None, Rule]] = []
        for key, value in doc.items():
            if key in ("version", "mode"):
                continue
            if key not in _RULE_KEYS:
                raise self.error(
                    self.where.top(key),
                    f"unknown key {key!r} (allowed keys: {', '.join(_TOP_KEYS)})",
                )
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                raise self.error(
                    self.where.top(key),
                    f"{key!r} must be an array of tables, written [[{key}]], "
                    f"not {toml_type(value)}",
                )
            for index, table in enumerate(value):
                line = self.where.header(key, index)
                located.append((line, self.rule(key, index, table, line)))
        # Document order, so that duplicates and describe() read like the file.
        located.sort(key=lambda item: item[0] if item[0] is not None else 0)
        rules = [rule for _, rule in located]
        duplicate = find_duplicate(rules)
        if duplicate is not None:
            first, second = duplicate
            line = next(line for line, rule in located if rule is second)
            raise self.error(line, str(DuplicateRuleError(first, second)))
        return Policy(rules, mode)

    def mode(self, doc: Mapping[str, Any]) -> str:
        mode = doc.get("mode", "virtualize")
        allowed = ", ".join(repr(m) for m in sorted(MODES))
        if not isinstance(mode, str):
            raise self.error(
                self.where.top("mode"),
                f"'mode' must be a string ({allowed}), not {toml_type(mode)}",
            )
        if mode not in MODES:
            raise self.error(self.where.top("mode"), f"unknown mode {mode!r} (allowed: {allowed})")
        return mode

    def rule(self, kind: str, index: int, table: Mapping[str, Any], header: int | None) -> Rule:
        allowed, required = _RULE_KEYS[kind]
        for key in table:
            if key not in allowed:
                raise self.error(
                    self.where.key(kind, index, key),
                    f"unknown key {key!r} in [[{kind}]] (allowed keys: {', '.join(allowed)})",
                )
        for key in required:
            if key not in table:
                raise self.error(header, f"[[{kind}]] is missing the required key {key!r}")
        values: dict[str, str] = {}
        for key, value in table.items():
            if not isinstance(value, str):
                raise self.error(
                    self.where.key(kind, index, key),
                    f"{key!r} in [[{kind}]] must be a string, not {toml_type(value)}",
                )
            values[key] = value

        origin = self.source if header is None else f"{self.source}:{header}"
        if kind == "redirect":
            with self.blame(kind, index, "from"):
                source = parse_pattern(values["from"])
            # Redirect() itself refuses a file onto a tree: the fault is in `to`.
            with self.blame(kind, index, "to"):
                return Redirect(source, parse_pattern(values["to"]), origin)
        with self.blame(kind, index, "path"):
            pattern = parse_pattern(values["path"])
        if kind == "readonly":
            return ReadOnly(pattern, origin)
        number = errno.EACCES
        if "errno" in values:
            with self.blame(kind, index, "errno"):
                number = parse_errno(values["errno"])
        return Deny(pattern, number, origin)

    @contextmanager
    def blame(self, kind: str, index: int, key: str) -> Iterator[None]:
        """Turn a ValueError about ``key`` of a rule table into a located error."""
        try:
            yield
        except ValueError as exc:
            raise self.error(self.where.key(kind, index, key), str(exc)) from exc


def parse_policy(text: str, source: str) -> Policy:
    """Parse the policy file contents ``text``; ``source`` names it in errors.

    Raises :class:`PolicyError` and nothing else, whatever ``text`` is.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_decode_error(exc, text, source) from exc
    except RecursionError as exc:
        # tomllib recurses once per nested array or inline table.
        raise PolicyError(source, None, "invalid TOML: nested too deeply") from exc
    return _Parser(text, source).policy(doc)


def load_policy(path: str) -> Policy:
    """Read and parse the policy file at ``path``.

    This is the policy layer's only I/O. Raises :class:`PolicyError`, also
    when the file cannot be read or is not UTF-8.
    """
    return parse_policy(read_toml_text(path, "policy"), path)


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
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(path, line, "not UTF-8 text (TOML files must be)") from exc


_OPTION_PARSERS: tuple[tuple[str, Callable[[str, str | None], Rule]], ...] = (
    ("--redirect", parse_redirect),
    ("--deny", parse_deny),
    ("--readonly", parse_readonly),
)


def rules_from_options(
    redirects: Sequence[str] | None,
    denies: Sequence[str] | None,
    readonlys: Sequence[str] | None,
) -> list[Rule]:
    """Parse the values of ``--redirect``, ``--deny`` and ``--readonly``.

    ``None`` counts as no value, as argparse leaves an ``append`` option that
    was never given.

    Raises :class:`PolicyError` whose ``source`` is the option at fault, for a
    bad value or for two options on the same pattern.
    """
    rules: list[Rule] = []
    for (option, parse), values in zip(
        _OPTION_PARSERS, (redirects, denies, readonlys), strict=True
    ):
        for value in values or ():
            try:
                rules.append(parse(value, option))
            except ValueError as exc:
                raise PolicyError(option, None, f"{value!r}: {exc}") from exc
    duplicate = find_duplicate(rules)
    if duplicate is not None:
        first, second = duplicate
        raise PolicyError(
            second.origin or "command line", None, str(DuplicateRuleError(first, second))
        )
    return rules


def combine(file_policy: Policy | None, cli_rules: Sequence[Rule]) -> Policy:
    """Merge command-line rules into a file's policy.

    A command-line rule replaces the file's rule on the same pattern, whatever
    the kinds of the two. The mode is the file's. Raises :class:`PolicyError`
    if ``cli_rules`` themselves name a pattern twice.
    """
    if file_policy is None:
        file_policy = Policy()
    replaced = {rule_pattern(rule) for rule in cli_rules}
    kept = [rule for rule in file_policy.rules if rule_pattern(rule) not in replaced]
    try:
        return Policy([*kept, *cli_rules], file_policy.mode)
    except DuplicateRuleError as exc:
        raise PolicyError(exc.second.origin or "command line", None, str(exc)) from exc
