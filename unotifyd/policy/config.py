"""Policy files and command-line rules.

A policy file is TOML::

    version = 1              # required: the format version, must be 1
    mode = "virtualize"      # optional: "virtualize" (the default) or "enforce"
    view = "full"            # optional: "full" (the default): every path call follows
                             # the rules; "opens": only the open family does (faster)

    [[redirect]]             # opening `from` opens `to` instead
    from = "/etc/passwd"
    to = "/etc/hostname"

    [[deny]]                 # opening `path` fails with `errno` (default EACCES)
    path = "/etc/shadow"
    errno = "ENOENT"

    [[readonly]]             # `path` may be read, opening it to write fails (EROFS)
    path = "/srv/data/**"

    [[content]]              # the file `path` holds what the policy says, read only
    path = "/etc/motd"
    text = "hello\n"         # either the text itself (stored as UTF-8)...
    # file = "motd.txt"      # ...or a file to take the bytes from (not both)

    [[private]]              # a tree private to each sandbox, empty at the start,
    path = "/var/cache/app/**"   # like a tmpfs mounted there: a tree, `/x/**`

    [[exec]]                 # an allow-list: once there is one, executing
    path = "/usr/bin/**"     # anything no [[exec]] covers fails (EACCES)

    allow_syscalls = ["ptrace"]  # optional: calls of the refused surface
                             # (unotifyd.policy.surface) to let through after all

(a top-level key such as ``allow_syscalls`` must come before the first
``[[table]]``, as TOML wants.)

A content rule's ``file`` is read once, when the policy is parsed (a later
change to the file changes nothing until the policy is loaded again); a
relative ``file`` is relative to the directory of the policy file. It must be
a regular file of at most :data:`MAX_CONTENT_SIZE` bytes (16 MiB), as must a
``text``: the contents live in the supervisor's memory, once per sandbox.

A ``private`` rule names a tree (``/x/**``) and nothing else: ``/x`` alone is an
error, here and on the command line, so that a pattern means the same
everywhere. Exec rules are an allow-list apart from the other kinds: a path
may have an exec rule and one other rule (``readonly`` and ``exec`` on
``/usr/bin/**`` is the usual pair).

Patterns and matching are described in :mod:`unotifyd.policy.rules`. Anything
else -- an unknown key, a wrong type, a missing key, a bad path or errno, a
content file that cannot be read, two rules on one pattern -- is a
:class:`PolicyError` naming the file and the line of the offending key (or
of its table's header when the key is missing).

On the command line the same rules are ``--redirect FROM=TO``,
``--deny PATH[:ERRNO]``, ``--readonly PATH``, ``--content PATH=FILE`` (the
contents of FILE, read once; FILE is relative to the working directory),
``--private PATH/**`` and ``--exec PATH``. :func:`combine` merges them with a
file: a command-line rule replaces the file's rule on the same pattern, so a
policy can be adjusted for one run without editing it (an ``--exec`` replaces
only an exec rule, and only an ``--exec`` replaces one).

No I/O is done here: the policy file is read by :mod:`unotifyd.files`, and the
files content rules name are read through the ``read_file`` the caller gives
:func:`parse_policy` and :func:`rules_from_options`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .rules import (
    MODES,
    VIEWS,
    Content,
    Deny,
    DuplicateRuleError,
    Exec,
    Pattern,
    Policy,
    Private,
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
from .surface import check_allowed

if TYPE_CHECKING:
    import tomllib

__all__ = [
    "FORMAT_VERSION",
    "MAX_CONTENT_SIZE",
    "PolicyError",
    "combine",
    "parse_allow_syscalls",
    "parse_content",
    "parse_exec",
    "parse_policy",
    "parse_private",
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
    # One of text and file is required too: checked by _Parser.content().
    "content": (("path", "text", "file"), ("path",)),
    "private": (("path",), ("path",)),
    "exec": (("path",), ("path",)),
}
_TOP_KEYS = ("version", "mode", "view", "allow_syscalls", *_RULE_KEYS)

#: The largest contents a content rule may give (its ``text`` encoded, or its
#: ``file``): each sandbox holds its own copy in memory, in a memfd.
MAX_CONTENT_SIZE = 16 * 1024 * 1024

#: Reads a content rule's file: :func:`unotifyd.files.read_content_file` or a stand-in.
#: Raises :class:`ValueError` (or :class:`OSError`) with a message for humans.
ReadFile = Callable[[str], bytes]


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
)


def toml_type(value: object) -> str:
    # tomllib and datetime (~15 ms to import) only load with a policy
    # file, the only source of TOML dates.
    import datetime  # noqa: PLC0415

    dates = (
        (datetime.datetime, "a date-time"),  # before date: a datetime is a date
        (datetime.date, "a date"),
        (datetime.time, "a time"),
    )
    for python_type, name in (*_TOML_TYPES, *dates):
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
        self.text = text

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

    def __init__(self, text: str, source: str, read_file: ReadFile) -> None:
        super().__init__(text, source)
        self.read_file = read_file

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        # The version comes first: under another version every other key may
        # mean something else, so other complaints would mislead.
        self.check_version(doc, FORMAT_VERSION)
        mode = self.mode(doc)
        view = self.choice(doc, "view", "full", VIEWS)
        allow = self.allow_syscalls(doc)
        located: list[tuple[int | None, Rule]] = []
        for key, value in doc.items():
            if key in ("version", "mode", "view", "allow_syscalls"):
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
        try:
            return Policy(rules, mode, view, allow)
        except ValueError as e:  # a view that does not go with the mode or the rules
            raise self.error(self.where.top("view"), str(e)) from None

    def allow_syscalls(self, doc: Mapping[str, Any]) -> frozenset[str]:
        """``allow_syscalls``: an array of names of refused calls (surface.SURFACE)."""
        value = doc.get("allow_syscalls", [])
        line = self.where.top("allow_syscalls")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(
                line,
                "'allow_syscalls' must be an array of system call names, such as "
                f'["io_uring_setup"], not {toml_type(value)}',
            )
        for name in value:
            try:
                check_allowed([name])
            except ValueError as e:
                raise self.error(self.element_line(line, name), str(e)) from None
        return frozenset(value)

    def element_line(self, line: int | None, text: str) -> int | None:
        """The line of the string ``text`` in the array whose key is on ``line``.

        Best effort, as for :class:`Locator`: the first line from ``line`` on
        that holds ``text`` quoted, up to the line that closes the array;
        else ``line`` itself.
        """
        if line is None:
            return None
        lines = self.text.split("\n")
        for number in range(line, len(lines) + 1):
            current = lines[number - 1].split("#", 1)[0]
            if f'"{text}"' in current or f"'{text}'" in current:
                return number
            if "]" in current:
                break
        return line

    def mode(self, doc: Mapping[str, Any]) -> str:
        return self.choice(doc, "mode", "virtualize", MODES)

    def choice(self, doc: Mapping[str, Any], key: str, default: str, allowed: Set[str]) -> str:
        """The top-level string ``key``, one of ``allowed``."""
        value = doc.get(key, default)
        names = ", ".join(repr(m) for m in sorted(allowed))
        if not isinstance(value, str):
            raise self.error(
                self.where.top(key), f"'{key}' must be a string ({names}), not {toml_type(value)}"
            )
        if value not in allowed:
            raise self.error(self.where.top(key), f"unknown {key} {value!r} (allowed: {names})")
        return value

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
            if kind == "private":
                # Private() refuses a single file: the fault is in `path`.
                return Private(pattern, origin)
            if kind == "exec":
                return Exec(pattern, origin)
            if kind == "content" and pattern.tree:
                raise ValueError(f"content is given for one file, not a tree: {pattern}")
        if kind == "content":
            return self.content(index, values, pattern, origin, header)
        number = errno.EACCES
        if "errno" in values:
            with self.blame(kind, index, "errno"):
                number = parse_errno(values["errno"])
        return Deny(pattern, number, origin)

    def content(
        self,
        index: int,
        values: Mapping[str, str],
        pattern: Pattern,
        origin: str,
        header: int | None,
    ) -> Content:
        """A ``[[content]]`` rule: exactly one of ``text`` and ``file``."""
        if "text" in values and "file" in values:
            # Blame whichever of the two comes second: it is the one added.
            text_line = self.where.key("content", index, "text")
            file_line = self.where.key("content", index, "file")
            line = max(text_line or 0, file_line or 0) or header
            raise self.error(line, "[[content]] takes either 'text' or 'file', not both: keep one")
        if "text" in values:
            with self.blame("content", index, "text"):
                data = values["text"].encode("utf-8")
                check_content_size(len(data), "'text'")
            return Content(pattern, data, origin)
        if "file" not in values:
            raise self.error(
                header, "[[content]] needs 'text' (the contents) or 'file' (a file holding them)"
            )
        with self.blame("content", index, "file"):
            if not values["file"]:
                raise ValueError("'file' is empty: name the file that holds the contents")
            # A relative file is relative to the policy file, whatever the
            # working directory of whoever loads it (the daemon's is /).
            path = os.path.join(os.path.dirname(self.source), values["file"])
            return Content(pattern, _read_content(self.read_file, path), origin)

    @contextmanager
    def blame(self, kind: str, index: int, key: str) -> Iterator[None]:
        """Turn a ValueError about ``key`` of a rule table into a located error."""
        try:
            yield
        except ValueError as exc:
            raise self.error(self.where.key(kind, index, key), str(exc)) from exc


def parse_policy(text: str, source: str, *, read_file: ReadFile | None = None) -> Policy:
    """Parse the policy file contents ``text``; ``source`` names it in errors.

    A content rule's ``file`` is read with ``read_file``
    (:func:`unotifyd.files.read_content_file`; without one, such a rule is
    an error), relative to the directory of ``source``.

    Raises :class:`PolicyError` and nothing else, whatever ``text`` is.
    """
    import tomllib  # noqa: PLC0415 - see toml_type

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_decode_error(exc, text, source) from exc
    except RecursionError as exc:
        # tomllib recurses once per nested array or inline table.
        raise PolicyError(source, None, "invalid TOML: nested too deeply") from exc
    return _Parser(text, source, read_file or _no_files).policy(doc)


def check_content_size(size: int, what: str) -> None:
    limit = MAX_CONTENT_SIZE
    if size > limit:
        mib, rest = divmod(limit, 1024 * 1024)
        most = f"{mib} MiB" if mib and not rest else f"{limit} bytes"
        raise ValueError(f"{what} holds {size} bytes, more than the {most} a content rule may hold")


def _no_files(path: str) -> bytes:
    """The reader of a parse given none: this layer reads no file (see unotifyd.files)."""
    raise ValueError(f"cannot read {path}: no reader of content files was given")


def _read_content(read_file: ReadFile, path: str) -> bytes:
    """``read_file(path)``, with the contract of :func:`read_content_file` enforced."""
    try:
        data = read_file(path)
    except OSError as exc:  # an injected reader may let one through
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    check_content_size(len(data), path)
    return data


def parse_content(
    text: str, origin: str | None = None, *, read_file: ReadFile | None = None
) -> Content:
    """Parse the ``PATH=FILE`` form of a content rule, reading FILE at once.

    The text is split at the first ``=``, as for :func:`parse_redirect`. A
    relative FILE is relative to the working directory. Raises
    :class:`ValueError` with a message for humans.
    """
    path, sep, file = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not of the form PATH=FILE")
    pattern = parse_pattern(path)
    if pattern.tree:
        raise ValueError(f"content is given for one file, not a tree: {pattern}")
    if not file:
        raise ValueError("FILE is empty")
    return Content(pattern, _read_content(read_file or _no_files, file), origin)


def parse_private(text: str, origin: str | None = None) -> Private:
    """Parse the ``PATH/**`` form of a private rule (a tree). Raises :class:`ValueError`."""
    return Private(parse_pattern(text), origin)


def parse_exec(text: str, origin: str | None = None) -> Exec:
    """Parse the ``PATH`` form of an exec rule. Raises :class:`ValueError`."""
    return Exec(parse_pattern(text), origin)


def rules_from_options(
    redirects: Sequence[str] | None,
    denies: Sequence[str] | None,
    readonlys: Sequence[str] | None,
    *,
    contents: Sequence[str] | None = None,
    privates: Sequence[str] | None = None,
    execs: Sequence[str] | None = None,
    read_file: ReadFile | None = None,
) -> list[Rule]:
    """Parse the values of ``--redirect``, ``--deny``, ``--readonly``,
    ``--content``, ``--private`` and ``--exec``.

    ``None`` counts as no value, as argparse leaves an ``append`` option that
    was never given. The files of ``--content`` are read at once with
    ``read_file`` (:func:`unotifyd.files.read_content_file`).

    Raises :class:`PolicyError` whose ``source`` is the option at fault, for a
    bad value, a content file that cannot be read, or for two options on the
    same pattern.
    """

    def content(text: str, origin: str | None) -> Rule:
        return parse_content(text, origin, read_file=read_file)

    options: tuple[tuple[str, Callable[[str, str | None], Rule], Sequence[str] | None], ...] = (
        ("--redirect", parse_redirect, redirects),
        ("--deny", parse_deny, denies),
        ("--readonly", parse_readonly, readonlys),
        ("--content", content, contents),
        ("--private", parse_private, privates),
        ("--exec", parse_exec, execs),
    )
    rules: list[Rule] = []
    for option, parse, values in options:
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


def parse_allow_syscalls(names: Sequence[str] | None) -> frozenset[str]:
    """The values of ``--allow-syscall``: names of refused calls.

    Raises :class:`PolicyError` naming the option and the unknown name, with
    the closest names when some are close.
    """
    for name in names or ():
        try:
            check_allowed([name])
        except ValueError as e:
            raise PolicyError("--allow-syscall", None, str(e)) from None
    return frozenset(names or ())


def _replacement_key(rule: Rule) -> tuple[bool, Pattern]:
    # As find_duplicate() sees rules: an exec rule and another rule on the
    # same pattern do not clash, so neither replaces the other.
    return isinstance(rule, Exec), rule_pattern(rule)


def combine(
    file_policy: Policy | None, cli_rules: Sequence[Rule], allow_syscalls: Iterable[str] = ()
) -> Policy:
    """Merge command-line rules into a file's policy.

    A command-line rule replaces the file's rule on the same pattern, whatever
    the kinds of the two -- except that exec rules form an allow-list apart:
    ``--exec`` replaces only an exec rule, and only ``--exec`` replaces one
    (``--readonly /usr/bin/**`` keeps the file's ``[[exec]]`` on it). The mode
    and view are the file's; ``allow_syscalls`` adds to the file's (``--allow-syscall``,
    checked by :func:`parse_allow_syscalls`). Raises :class:`PolicyError` if ``cli_rules``
    themselves name a pattern twice.
    """
    if file_policy is None:
        file_policy = Policy()
    replaced = {_replacement_key(rule) for rule in cli_rules}
    kept = [rule for rule in file_policy.rules if _replacement_key(rule) not in replaced]
    allow = file_policy.allow_syscalls | frozenset(allow_syscalls)
    try:
        return Policy([*kept, *cli_rules], file_policy.mode, file_policy.view, allow)
    except DuplicateRuleError as exc:
        raise PolicyError(exc.second.origin or "command line", None, str(exc)) from exc
    except ValueError as exc:  # a private rule given to a view = "opens" policy
        raise PolicyError("command line", None, str(exc)) from exc
