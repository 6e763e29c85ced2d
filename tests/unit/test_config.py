"""Policy files, command-line rules, and errors that point at the right line."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unotifyd.calls.registry import trapped
from unotifyd.files import load_policy, read_content_file
from unotifyd.policy import (
    MAX_CONTENT_SIZE,
    Content,
    Deny,
    Exec,
    Pattern,
    Policy,
    PolicyError,
    Private,
    ReadOnly,
    Redirect,
    Rule,
    combine,
    parse_content,
    parse_exec,
    parse_policy,
    parse_private,
    rules_from_options,
)
from unotifyd.policy import config as config_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def lines(*text: str) -> str:
    """Join lines, so that a test can count them: the first is line 1."""
    return "\n".join(text) + "\n"


def error_of(text: str, source: str = "p.toml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source, read_file=read_content_file)
    return info.value


# --- Valid files ---------------------------------------------------------------


def test_full_file() -> None:
    policy = parse_policy(
        lines(
            "# a comment",
            "version = 1",
            'mode = "virtualize"',
            "",
            "[[redirect]]",
            'from = "/etc/passwd"',
            'to = "/etc/hostname"',
            "",
            "[[deny]]  # with a comment",
            'path = "/etc/shadow"',
            'errno = "ENOENT"',
            "",
            "[[readonly]]",
            'path = "/srv//data/**"',
            "",
            "[[deny]]",
            'path = "/root/**"',
            "[[redirect]]",
            'from = "/a/**"',
            'to = "/b/**"',
        ),
        "p.toml",
    )
    assert policy.mode == "virtualize"
    # Document order, whatever the kinds.
    assert policy.rules == (
        Redirect(Pattern("/etc/passwd"), Pattern("/etc/hostname")),
        Deny(Pattern("/etc/shadow"), errno.ENOENT),
        ReadOnly(Pattern("/srv/data", tree=True)),
        Deny(Pattern("/root", tree=True), errno.EACCES),
        Redirect(Pattern("/a", tree=True), Pattern("/b", tree=True)),
    )
    assert [rule.origin for rule in policy.rules] == [
        "p.toml:5",
        "p.toml:9",
        "p.toml:13",
        "p.toml:16",
        "p.toml:18",
    ]


def test_minimal_file_has_no_rules() -> None:
    policy = parse_policy("version = 1", "p.toml")
    assert policy == Policy()
    assert trapped(policy) == frozenset()


def test_inline_tables_and_quoted_keys_are_plain_toml() -> None:
    policy = parse_policy(
        lines(
            "version = 1",
            'deny = [{path = "/a"}, {path = "/b", errno = "EPERM"}]',
            "[[readonly]]",
            '"path" = "/c"',
        ),
        "p.toml",
    )
    assert policy.rules == (
        Deny(Pattern("/a")),
        Deny(Pattern("/b"), errno.EPERM),
        ReadOnly(Pattern("/c")),
    )
    assert [rule.origin for rule in policy.rules] == ["p.toml:2", "p.toml:2", "p.toml:3"]


@pytest.mark.parametrize("name", ["passwd.toml", "readonly-tree.toml", "full-view.toml"])
def test_examples_parse(name: str) -> None:
    policy = load_policy(str(EXAMPLES / name))
    assert policy.rules
    assert all(
        rule.origin and rule.origin.startswith(str(EXAMPLES / name)) for rule in policy.rules
    )


def test_passwd_example() -> None:
    policy = load_policy(str(EXAMPLES / "passwd.toml"))
    assert policy.rules == (Redirect(Pattern("/etc/passwd"), Pattern("/etc/hostname")),)


def test_readonly_tree_example() -> None:
    policy = load_policy(str(EXAMPLES / "readonly-tree.toml"))
    kinds = {type(rule) for rule in policy.rules}
    assert kinds == {Redirect, Deny, ReadOnly}
    assert any(isinstance(rule, Deny) and rule.errno == errno.ENOENT for rule in policy.rules)
    assert any(isinstance(r, Redirect) and r.source.tree and r.target.tree for r in policy.rules)


def test_full_view_example_uses_every_kind() -> None:
    policy = load_policy(str(EXAMPLES / "full-view.toml"))
    kinds = {type(rule) for rule in policy.rules}
    assert kinds == {Redirect, Deny, ReadOnly, Content, Private, Exec}
    assert policy.has_exec_rules
    assert trapped(policy) >= {"openat", "newfstatat", "unlinkat", "execve", "getdents64"}


# --- Content, private and exec rules -------------------------------------------------


def fake_files(files: dict[str, bytes]) -> config_module.ReadFile:
    """A stand-in for read_content_file that reads from ``files``."""

    def read(path: str) -> bytes:
        try:
            return files[path]
        except KeyError:
            raise ValueError(f"cannot read {path}: No such file or directory") from None

    return read


def test_new_kinds() -> None:
    policy = parse_policy(
        lines(
            "version = 1",
            "[[content]]",
            'path = "/etc/motd"',
            'text = "h\\u00e9llo\\n"',  # TOML escapes
            "[[content]]",
            'path = "/etc/issue"',
            'file = "/srv/issue"',
            "[[private]]",
            'path = "/var/cache/app/**"',
            "[[exec]]",
            'path = "/usr/bin/**"',
            "[[exec]]",
            'path = "/opt/tool"',
        ),
        "p.toml",
        read_file=fake_files({"/srv/issue": b"\x00binary\xff"}),
    )
    assert policy.rules == (
        Content(Pattern("/etc/motd"), "h\u00e9llo\n".encode()),
        Content(Pattern("/etc/issue"), b"\x00binary\xff"),
        Private(Pattern("/var/cache/app", tree=True)),
        Exec(Pattern("/usr/bin", tree=True)),
        Exec(Pattern("/opt/tool")),
    )
    assert [rule.origin for rule in policy.rules] == [
        "p.toml:2",
        "p.toml:5",
        "p.toml:8",
        "p.toml:10",
        "p.toml:12",
    ]
    assert all(getattr(rule, "backing", None) is None for rule in policy.rules)


def test_content_may_be_empty_and_text_may_hold_nul() -> None:
    policy = parse_policy(
        lines(
            "version = 1", 'content = [{path = "/a", text = ""}, {path = "/b", text = "x\\u0000"}]'
        ),
        "p.toml",
    )
    assert policy.rules == (Content(Pattern("/a"), b""), Content(Pattern("/b"), b"x\0"))


def test_exec_and_another_rule_on_the_same_path() -> None:
    policy = parse_policy(
        lines(
            "version = 1",
            "[[readonly]]",
            'path = "/usr/**"',
            "[[exec]]",
            'path = "/usr/**"',
            "[[deny]]",
            'path = "/opt/x"',
            "[[exec]]",
            'path = "/opt/x"',
        ),
        "p.toml",
    )
    assert len(policy.rules) == 4
    match = policy.match("/usr/bin/ls")
    assert match is not None and isinstance(match.rule, ReadOnly)
    assert policy.exec_match("/usr/bin/ls") is not None
    assert policy.exec_match("/bin/ls") is None


def test_content_file_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "motd.txt").write_bytes(b"from a file\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "issue").write_bytes(b"issue")
    path = tmp_path / "p.toml"
    path.write_text(
        lines(
            "version = 1",
            "[[content]]",
            'path = "/etc/motd"',
            'file = "motd.txt"',
            "[[content]]",
            'path = "/etc/issue"',
            f'file = "{tmp_path}/sub/../sub/issue"',
        )
    )
    policy = load_policy(str(path))
    assert policy.rules == (
        Content(Pattern("/etc/motd"), b"from a file\n"),
        Content(Pattern("/etc/issue"), b"issue"),
    )


def test_content_file_is_read_once(tmp_path: Path) -> None:
    source = tmp_path / "motd.txt"
    source.write_bytes(b"before")
    policy = parse_policy(
        lines("version = 1", "[[content]]", 'path = "/m"', f'file = "{source}"'),
        "p.toml",
        read_file=read_content_file,
    )
    source.write_bytes(b"after, and longer")
    assert policy.rules == (Content(Pattern("/m"), b"before"),)


def test_content_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_CONTENT_SIZE == 16 * 1024 * 1024
    monkeypatch.setattr(config_module, "MAX_CONTENT_SIZE", 4)
    ok = parse_policy(lines("version = 1", "[[content]]", 'path = "/a"', 'text = "1234"'), "p")
    assert ok.rules == (Content(Pattern("/a"), b"1234"),)
    # Counted in bytes of UTF-8, not in characters.
    error = error_of(lines("version = 1", "[[content]]", 'path = "/a"', 'text = "123\u00e9"'))
    assert error.line == 4
    assert "'text' holds 5 bytes, more than the 4 bytes a content rule may hold" in error.message
    error = error_of_with(
        lines("version = 1", "[[content]]", 'path = "/a"', "", 'file = "/big"'),
        fake_files({"/big": b"12345"}),
    )
    assert error.line == 5
    assert "/big holds 5 bytes, more than the 4 bytes a content rule may hold" in error.message


def error_of_with(text: str, read_file: config_module.ReadFile) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.toml", read_file=read_file)
    return info.value


def test_content_file_errors_point_at_the_file_key(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        (str(tmp_path / "absent"), "cannot read", "No such file or directory"),
        (str(tmp_path), "is not a regular file", ""),
        (str(fifo), "is not a regular file", ""),  # refused, never waited on
        ("/dev/null", "is not a regular file", ""),
    ]
    for path, message, detail in cases:
        error = error_of(
            lines("version = 1", "[[content]]", 'path = "/etc/motd"', f'file = "{path}"')
        )
        assert (error.line, error.source) == (4, "p.toml")
        assert path in error.message
        assert message in error.message
        assert detail in error.message


def test_an_injected_reader_may_raise_oserror() -> None:
    def read(path: str) -> bytes:
        raise PermissionError(13, "Permission denied", path)

    error = error_of_with(lines("version = 1", "[[content]]", 'path = "/a"', 'file = "/x"'), read)
    assert error.line == 4
    assert error.message == "cannot read /x: Permission denied"


def test_read_content_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\x00" * 1000)
    assert read_content_file(str(path)) == b"\x00" * 1000
    (tmp_path / "link").symlink_to(path)
    assert read_content_file(str(tmp_path / "link")) == b"\x00" * 1000
    monkeypatch.setattr(config_module, "MAX_CONTENT_SIZE", 999)
    with pytest.raises(ValueError, match="holds 1000 bytes"):
        read_content_file(str(path))
    if os.geteuid() == 0:
        return  # root reads whatever the mode says
    path.chmod(0)
    with pytest.raises(ValueError, match="Permission denied"):
        read_content_file(str(path))


def test_read_content_file_leaks_no_fd(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    (tmp_path / "f").write_bytes(b"x")
    read_content_file(str(tmp_path / "f"))
    with pytest.raises(ValueError):
        read_content_file(str(tmp_path))
    assert set(os.listdir("/proc/self/fd")) == before


# --- Errors, each at its line ------------------------------------------------------

ERRORS: list[tuple[str, str, int | None, str]] = [
    # (id, text, expected line, part of the message)
    (
        "toml-syntax",
        lines("version = 1", "[[redirect]]", "from = /etc/passwd"),
        3,
        "invalid TOML: Invalid value (column 8)",
    ),
    (
        "toml-end-of-file",
        lines("version = 1", "[[redirect]]", 'from = "/etc', "", "  "),
        3,
        "invalid TOML",
    ),
    (
        "line-separator-is-no-line-break",
        lines("version = 1", "[[deny]] # \u2028", 'path = "/a\u2028b"', "errno = 2"),
        4,
        "'errno' in [[deny]] must be a string",
    ),
    (
        "toml-duplicate-key",
        lines("version = 1", "", "version = 1", ""),
        3,
        "invalid TOML: Cannot overwrite a value",
    ),
    ("version-missing", lines("[[deny]]", 'path = "/x"'), None, "missing 'version = 1'"),
    ("version-unsupported", lines("# v2", "version = 2"), 2, "unsupported version 2"),
    ("version-string", lines("", 'version = "1"'), 2, "must be the integer 1, not a string"),
    ("version-bool", lines("version = true"), 1, "must be the integer 1, not a boolean"),
    ("version-date", lines("version = 1979-05-27"), 1, "must be the integer 1, not a date"),
    (
        "version-date-time",
        lines("version = 1979-05-27T07:32:00Z"),
        1,
        "must be the integer 1, not a date-time",
    ),
    (
        "mode-unknown",
        lines("version = 1", 'mode = "strict"'),
        2,
        "unknown mode 'strict' (allowed: 'enforce', 'virtualize')",
    ),
    ("mode-type", lines("version = 1", "", "mode = 3"), 3, "'mode' must be a string"),
    (
        "top-key-unknown",
        lines("version = 1", "redirects = []"),
        2,
        "unknown key 'redirects' (allowed keys: version, mode, view, allow_syscalls, redirect, "
        "deny, readonly, content, private, exec)",
    ),
    ("top-table-unknown", lines("version = 1", "", "[options]", "x = 1"), 3, "'options'"),
    (
        "kind-not-array",
        lines("version = 1", 'readonly = "/x"'),
        2,
        "'readonly' must be an array of tables, written [[readonly]], not a string",
    ),
    (
        "kind-single-table",
        lines("version = 1", "", "[redirect]", 'from = "/a"', 'to = "/b"'),
        3,
        "not a table",
    ),
    ("kind-dotted-key", lines("version = 1", 'deny.path = "/a"'), 2, "not a table"),
    ("kind-array-of-strings", lines("version = 1", 'deny = ["/a"]'), 2, "[[deny]]"),
    (
        "rule-key-unknown",
        lines(
            "version = 1",
            "[[redirect]]",
            'from = "/a"',
            'to = "/b"',
            "",
            "[[redirect]]",
            "# the typo is below",
            'from = "/c"',
            '  form   = "/d"',
        ),
        9,
        "unknown key 'form' in [[redirect]] (allowed keys: from, to)",
    ),
    (
        "rule-key-unknown-quoted",
        lines("version = 1", "[[deny]]", 'path = "/a"', '"err no" = "EIO"'),
        4,
        "unknown key 'err no' in [[deny]] (allowed keys: path, errno)",
    ),
    (
        "rule-subtable",
        lines("version = 1", "[[readonly]]", 'path = "/a"', "[readonly.x]", "y = 1"),
        2,  # the locator cannot place a sub-table's key: it falls back to the header
        "unknown key 'x' in [[readonly]] (allowed keys: path)",
    ),
    (
        "rule-key-missing",
        lines("version = 1", "", "[[redirect]]", 'from = "/a"', "", "[[deny]]"),
        3,
        "[[redirect]] is missing the required key 'to'",
    ),
    (
        "rule-path-missing",
        lines("version = 1", "[[readonly]]", 'path = "/a"', "[[readonly]]", "# nothing"),
        4,
        "[[readonly]] is missing the required key 'path'",
    ),
    (
        "rule-type",
        lines("version = 1", "[[deny]]", 'path = "/a"', "errno = 2"),
        4,
        "'errno' in [[deny]] must be a string, not an integer",
    ),
    (
        "rule-type-array",
        lines("version = 1", "[[readonly]]", 'path = ["/a", "/b"]'),
        3,
        "'path' in [[readonly]] must be a string, not an array",
    ),
    (
        "errno-unknown",
        lines("version = 1", "[[deny]]", 'errno = "ENOPE"', 'path = "/a"'),
        3,
        "unknown errno name 'ENOPE'",
    ),
    (
        "errno-lower-case",
        lines("version = 1", "[[deny]]", 'path = "/a"', "errno='enoent'"),
        4,
        "did you mean ENOENT?",
    ),
    (
        "path-relative",
        lines("version = 1", "[[readonly]]", 'path = "srv/**"'),
        3,
        "path 'srv' is not absolute",
    ),
    (
        "path-empty",
        lines("version = 1", "[[redirect]]", 'from = "/a"', 'to = ""'),
        4,
        "path is empty",
    ),
    (
        "path-glob",
        lines("version = 1", "[[deny]]", "path = '/etc/*.key'"),
        3,
        "globs other than a trailing '/**' are not supported yet",
    ),
    (
        "path-nul",
        lines("version = 1", "[[deny]]", 'path = "/a\\u0000b"'),
        3,
        "contains a NUL byte",
    ),
    (
        "redirect-file-onto-tree",
        lines("version = 1", "[[redirect]]", 'to = "/b/**"', 'from = "/a"'),
        3,
        "cannot redirect the single path /a onto the tree /b/**",
    ),
    (
        "duplicate-same-kind",
        lines(
            "version = 1",
            "[[deny]]",
            'path = "/etc/shadow"',
            "[[deny]]",
            'path = "/etc//shadow"',
            'errno = "ENOENT"',
        ),
        4,
        "/etc/shadow has two rules: deny /etc/shadow with EACCES (p.toml:2) "
        "and deny /etc/shadow with ENOENT (p.toml:4)",
    ),
    (
        "duplicate-across-kinds",
        lines(
            "version = 1",
            "[[readonly]]",
            'path = "/a/**"',
            "[[redirect]]",
            'from = "/x/**"',
            'to = "/y"',
            "[[readonly]]",
            'path = "/x/**"',
        ),
        7,
        "redirect /x/** -> /y (p.toml:4) and readonly /x/** (p.toml:7)",
    ),
    (
        "multiline-string-hides-headers",
        lines(
            "version = 1",
            "[[deny]]",
            "path = '''/odd",
            "[[deny]]",
            "errno = 'x'",
            "'''",
            "[[deny]]",
            'path = "/b"',
            'errno = "EBAD"',
        ),
        9,
        "unknown errno name 'EBAD'",
    ),
    (
        "array-of-arrays-is-no-header",
        lines(
            "version = 1",
            "[[deny]]",
            'path = "/a"',
            "[[deny]]",
            'path = "/b"',
            "errno = [",
            '  ["EIO"],',
            "]",
            "bogus = 1",
        ),
        9,
        "unknown key 'bogus' in [[deny]]",
    ),
    (
        "header-with-spaces-and-comment",
        lines("version = 1", ' [[ "readonly" ]]   # the data', "", "path = 'x'"),
        4,
        "path 'x' is not absolute",
    ),
    (
        "inline-rule",
        lines("version = 1", "", 'readonly = [{path = "/a"}, {path = "b"}]'),
        3,
        "path 'b' is not absolute",
    ),
    (
        "content-text-and-file",
        lines("version = 1", "[[content]]", 'path = "/m"', 'text = "x"', 'file = "/f"'),
        5,
        "[[content]] takes either 'text' or 'file', not both",
    ),
    (
        "content-file-and-text",
        lines("version = 1", "[[content]]", 'file = "/f"', 'path = "/m"', "", 'text = "x"'),
        6,
        "[[content]] takes either 'text' or 'file', not both",
    ),
    (
        "content-neither",
        lines("version = 1", "", "[[content]]  # empty", 'path = "/m"'),
        3,
        "[[content]] needs 'text' (the contents) or 'file' (a file holding them)",
    ),
    (
        "content-path-missing",
        lines("version = 1", "[[content]]", 'text = "x"'),
        2,
        "[[content]] is missing the required key 'path'",
    ),
    (
        "content-tree",
        lines("version = 1", "[[content]]", 'text = "x"', 'path = "/etc/**"'),
        4,
        "content is given for one file, not a tree: /etc/**",
    ),
    (
        "content-text-type",
        lines("version = 1", "[[content]]", 'path = "/m"', "text = 3"),
        4,
        "'text' in [[content]] must be a string, not an integer",
    ),
    (
        "content-text-multiline-array",
        lines("version = 1", "[[content]]", 'path = "/m"', "text = [", '  "a",', "]"),
        4,
        "'text' in [[content]] must be a string, not an array",
    ),
    (
        "content-file-unreadable",
        lines("version = 1", "[[content]]", 'path = "/m"', 'file = "/nonexistent/unotifyd/x"'),
        4,
        "cannot read /nonexistent/unotifyd/x: No such file or directory",
    ),
    (
        "content-file-empty",
        lines("version = 1", "[[content]]", 'path = "/m"', "file = ''"),
        4,
        "'file' is empty",
    ),
    (
        "content-key-unknown",
        lines("version = 1", "[[content]]", 'path = "/m"', 'data = "x"'),
        4,
        "unknown key 'data' in [[content]] (allowed keys: path, text, file)",
    ),
    (
        "private-not-a-tree",
        lines("version = 1", "[[private]]", "", 'path = "/var/cache/app"'),
        4,
        "a private rule names a tree: write /var/cache/app/**",
    ),
    (
        "private-key-unknown",
        lines("version = 1", "[[private]]", 'path = "/t/**"', 'size = "1M"'),
        4,
        "unknown key 'size' in [[private]] (allowed keys: path)",
    ),
    (
        "exec-path-missing",
        lines("version = 1", "[[exec]]", "[[exec]]", 'path = "/bin/**"'),
        2,
        "[[exec]] is missing the required key 'path'",
    ),
    (
        "exec-glob",
        lines("version = 1", "[[exec]]", 'path = "/usr/bin/*"'),
        3,
        "globs other than a trailing '/**'",
    ),
    (
        "duplicate-content-and-deny",
        lines(
            "version = 1",
            "[[deny]]",
            'path = "/etc/motd"',
            "[[content]]",
            'path = "/etc/motd"',
            'text = "x"',
        ),
        4,
        "/etc/motd has two rules: deny /etc/motd with EACCES (p.toml:2) "
        "and content /etc/motd (1 bytes) (p.toml:4)",
    ),
    (
        "duplicate-private-and-readonly",
        lines("version = 1", "[[private]]", 'path = "/t/**"', "[[readonly]]", 'path = "/t/**"'),
        4,
        "/t/** has two rules: private /t/** (p.toml:2) and readonly /t/** (p.toml:4)",
    ),
    (
        "duplicate-exec",
        lines("version = 1", "[[exec]]", 'path = "/bin/**"', "[[exec]]", 'path = "/bin/./**"'),
        4,
        "/bin/** has two rules: exec /bin/** (p.toml:2) and exec /bin/** (p.toml:4)",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_error_points_at_line(text: str, line: int | None, message: str) -> None:
    error = error_of(text)
    assert (error.source, error.line) == ("p.toml", line)
    assert message in error.message
    where = "p.toml" if line is None else f"p.toml:{line}"
    assert str(error) == f"{where}: {error.message}"


def test_unknown_table_lists_allowed_keys() -> None:
    error = error_of(lines("version = 1", "[options]"))
    assert error.message == (
        "unknown key 'options' (allowed keys: version, mode, view, allow_syscalls, redirect, deny, "
        "readonly, content, private, exec)"
    )


def test_version_is_checked_before_anything_else() -> None:
    error = error_of(lines("version = 2", "[[deny]]", "bogus = 1"))
    assert error.line == 1


def test_deep_nesting_is_a_policy_error() -> None:
    error = error_of("x = " + "[" * 5000 + "]" * 5000)
    assert "invalid TOML" in error.message


def test_policy_error_pickles() -> None:
    error = PolicyError("p.toml", 3, "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.line, copy.message, str(copy)) == (
        "p.toml",
        3,
        "bad",
        "p.toml:3: bad",
    )
    assert str(PolicyError("--deny", None, "bad")) == "--deny: bad"


# --- load_policy: the one function with I/O ------------------------------------------


def test_load_policy_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(lines("version = 1", "[[readonly]]", 'path = "/x"'))
    policy = load_policy(str(path))
    assert policy.rules == (ReadOnly(Pattern("/x")),)
    assert policy.rules[0].origin == f"{path}:2"


def test_load_policy_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(lines("version = 1", "[[readonly]]", "path = 1"))
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    assert str(info.value) == f"{path}:3: 'path' in [[readonly]] must be a string, not an integer"


def test_load_policy_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.source, info.value.line) == (path, None)
    assert "cannot read the policy: No such file or directory" in info.value.message
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_load_policy_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(str(tmp_path))


def test_load_policy_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b'version = 1\n[[deny]]\npath = "/caf\xe9"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    assert info.value.line == 3
    assert "not UTF-8" in info.value.message


# --- Command line ------------------------------------------------------------------


def test_rules_from_options() -> None:
    rules = rules_from_options(
        ["/etc/passwd=/etc/hostname", "/a/**=/b/**"], ["/etc/shadow:ENOENT", "/k"], ["/srv/**"]
    )
    assert rules == [
        Redirect(Pattern("/etc/passwd"), Pattern("/etc/hostname")),
        Redirect(Pattern("/a", tree=True), Pattern("/b", tree=True)),
        Deny(Pattern("/etc/shadow"), errno.ENOENT),
        Deny(Pattern("/k"), errno.EACCES),
        ReadOnly(Pattern("/srv", tree=True)),
    ]
    assert [rule.origin for rule in rules] == ["--redirect"] * 2 + ["--deny"] * 2 + ["--readonly"]
    assert rules_from_options([], [], []) == []
    assert rules_from_options(None, ["/x"], None) == [Deny(Pattern("/x"))]


@pytest.mark.parametrize(
    ("redirects", "denies", "readonlys", "source", "message"),
    [
        (["/etc/passwd"], [], [], "--redirect", "'/etc/passwd': '/etc/passwd' is not of the form"),
        (["/a=/b/**"], [], [], "--redirect", "cannot redirect the single path /a"),
        (["/a/*=/b"], [], [], "--redirect", "globs other than a trailing '/**'"),
        ([], ["/a:EWHAT"], [], "--deny", "'/a:EWHAT': unknown errno name 'EWHAT'"),
        ([], [], ["relative"], "--readonly", "'relative': path 'relative' is not absolute"),
        ([], [], [""], "--readonly", "path is empty"),
        (
            ["/x=/y"],
            ["/a", "/x"],
            [],
            "--deny",
            "/x has two rules: redirect /x -> /y (--redirect) and deny /x with EACCES (--deny)",
        ),
        ([], [], ["/d/**", "/d/./**"], "--readonly", "/d/** has two rules"),
    ],
)
def test_rules_from_options_errors(
    redirects: list[str], denies: list[str], readonlys: list[str], source: str, message: str
) -> None:
    with pytest.raises(PolicyError) as info:
        rules_from_options(redirects, denies, readonlys)
    assert (info.value.source, info.value.line) == (source, None)
    assert message in info.value.message


def test_rules_from_options_new_kinds(tmp_path: Path) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(b"hello\n")
    rules = rules_from_options(
        None,
        None,
        ["/usr/**"],
        contents=[f"/etc/motd={motd}", "/etc/issue=/srv/a=b"],
        privates=["/var/cache/app/**", "/tmp/**"],
        execs=["/usr/**", "/opt/tool"],
        read_file=fake_files({str(motd): b"hello\n", "/srv/a=b": b"eq"}),
    )
    assert rules == [
        ReadOnly(Pattern("/usr", tree=True)),
        Content(Pattern("/etc/motd"), b"hello\n"),
        Content(Pattern("/etc/issue"), b"eq"),  # split at the first '='
        Private(Pattern("/var/cache/app", tree=True)),
        Private(Pattern("/tmp", tree=True)),
        Exec(Pattern("/usr", tree=True)),  # exec and readonly on one pattern: allowed
        Exec(Pattern("/opt/tool")),
    ]
    assert [rule.origin for rule in rules] == [
        "--readonly",
        "--content",
        "--content",
        "--private",
        "--private",
        "--exec",
        "--exec",
    ]
    # The real reader, and a relative FILE: relative to the working directory.
    assert rules_from_options(
        None, None, None, contents=[f"/m={motd}"], read_file=read_content_file
    ) == [Content(Pattern("/m"), b"hello\n")]
    # This layer reads no file itself: without a reader, a content file is an error.
    with pytest.raises(PolicyError, match="no reader of content files"):
        rules_from_options(None, None, None, contents=[f"/m={motd}"])


@pytest.mark.parametrize(
    ("options", "source", "message"),
    [
        ({"contents": ["/etc/motd"]}, "--content", "'/etc/motd' is not of the form PATH=FILE"),
        ({"contents": ["/etc/motd="]}, "--content", "FILE is empty"),
        ({"contents": ["/etc/**=/f"]}, "--content", "content is given for one file, not a tree"),
        ({"contents": ["etc=/f"]}, "--content", "path 'etc' is not absolute"),
        (
            {"contents": ["/m=/nonexistent/unotifyd"]},
            "--content",
            "'/m=/nonexistent/unotifyd': cannot read /nonexistent/unotifyd: No such file",
        ),
        ({"contents": ["/m=/dev/null"]}, "--content", "/dev/null is not a regular file"),
        ({"privates": ["/var/cache"]}, "--private", "write /var/cache/**"),
        ({"execs": ["bin"]}, "--exec", "path 'bin' is not absolute"),
        ({"execs": ["/bin/**", "/bin//**"]}, "--exec", "/bin/** has two rules"),
        (
            {"privates": ["/t/**"], "denies": ["/t/**"]},
            "--private",
            "/t/** has two rules: deny /t/** with EACCES (--deny) and private /t/** (--private)",
        ),
    ],
)
def test_rules_from_options_new_kinds_errors(
    options: dict[str, list[str]], source: str, message: str
) -> None:
    with pytest.raises(PolicyError) as info:
        rules_from_options(
            options.get("redirects"),
            options.get("denies"),
            options.get("readonlys"),
            contents=options.get("contents"),
            privates=options.get("privates"),
            execs=options.get("execs"),
            read_file=read_content_file,
        )
    assert (info.value.source, info.value.line) == (source, None)
    assert message in info.value.message


def test_parse_option_forms() -> None:
    assert parse_private("/a//b/**", "o") == Private(Pattern("/a/b", tree=True))
    assert parse_exec("/bin/sh") == Exec(Pattern("/bin/sh"))
    assert parse_exec("/**") == Exec(Pattern("/", tree=True))
    content = parse_content("/m=rel", "o", read_file=fake_files({"rel": b"r"}))
    assert (content, content.origin) == (Content(Pattern("/m"), b"r"), "o")
    with pytest.raises(ValueError, match="holds"):
        parse_content("/m=big", read_file=fake_files({"big": b"x" * (MAX_CONTENT_SIZE + 1)}))


def test_command_line_exec_rules_stand_apart_from_the_others() -> None:
    file_policy = parse_policy(
        lines(
            "version = 1",
            "[[readonly]]",
            'path = "/usr/**"',
            "[[exec]]",
            'path = "/usr/**"',
            "[[exec]]",
            'path = "/opt/**"',
        ),
        "p.toml",
    )
    # --deny replaces the file's readonly rule, not its exec rule on /usr/**.
    policy = combine(file_policy, rules_from_options(None, ["/usr/**"], None))
    assert policy.rules == (
        Exec(Pattern("/usr", tree=True)),
        Exec(Pattern("/opt", tree=True)),
        Deny(Pattern("/usr", tree=True)),
    )
    # --exec replaces the file's exec rule only.
    policy = combine(file_policy, rules_from_options(None, None, None, execs=["/usr/**"]))
    assert policy.rules == (
        ReadOnly(Pattern("/usr", tree=True)),
        Exec(Pattern("/opt", tree=True)),
        Exec(Pattern("/usr", tree=True)),
    )
    assert [rule.origin for rule in policy.rules] == ["p.toml:2", "p.toml:6", "--exec"]


def test_command_line_content_replaces_a_files_rule() -> None:
    file_policy = parse_policy(lines("version = 1", "[[deny]]", 'path = "/etc/motd"'), "p.toml")
    cli = rules_from_options(
        None, None, None, contents=["/etc/motd=/f"], read_file=fake_files({"/f": b"f"})
    )
    assert combine(file_policy, cli).rules == (Content(Pattern("/etc/motd"), b"f"),)


def test_command_line_replaces_the_files_rule_on_the_same_pattern() -> None:
    file_policy = parse_policy(
        lines(
            "version = 1",
            "[[redirect]]",
            'from = "/etc/passwd"',
            'to = "/etc/hostname"',
            "[[deny]]",
            'path = "/etc/shadow"',
            "[[readonly]]",
            'path = "/srv/**"',
        ),
        "p.toml",
    )
    cli = rules_from_options(["/etc/passwd=/etc/issue"], [], ["/etc/shadow", "/srv"])
    policy = combine(file_policy, cli)
    assert policy.rules == (
        ReadOnly(Pattern("/srv", tree=True)),
        Redirect(Pattern("/etc/passwd"), Pattern("/etc/issue")),
        ReadOnly(Pattern("/etc/shadow")),  # another kind of rule, same pattern: replaced
        ReadOnly(Pattern("/srv")),  # exact /srv is not the tree /srv/**: both stay
    )
    assert [rule.origin for rule in policy.rules] == [
        "p.toml:7",
        "--redirect",
        "--readonly",
        "--readonly",
    ]
    match = policy.match("/etc/passwd")
    assert match is not None
    assert match.rule.origin == "--redirect"
    # The file's policy itself is not modified.
    assert len(file_policy.rules) == 3


def test_combine_without_file_and_without_options() -> None:
    cli = rules_from_options([], ["/x"], [])
    assert combine(None, cli) == Policy(cli)
    assert combine(None, []) == Policy()
    file_policy = parse_policy(lines("version = 1", 'mode = "virtualize"'), "p.toml")
    assert combine(file_policy, []).mode == "virtualize"


def test_combine_rejects_duplicate_command_line_rules() -> None:
    cli: list[Rule] = [
        Deny(Pattern("/x"), origin="--deny"),
        ReadOnly(Pattern("/x"), origin="--readonly"),
    ]
    with pytest.raises(PolicyError) as info:
        combine(None, cli)
    assert info.value.source == "--readonly"
    assert "/x has two rules" in info.value.message


# --- Nothing but PolicyError, whatever the text --------------------------------------

_FRAGMENTS = [
    "version = 1",
    "version = 2",
    "version = '1'",
    'mode = "virtualize"',
    "mode = []",
    "[[redirect]]",
    "[[deny]]",
    "[[readonly]]",
    "[[content]]",
    "[[private]]",
    "[[exec]]",
    'text = "x"',
    "text = 1",
    'file = "/nonexistent"',
    'file = "/dev/null"',
    'file = "relative"',
    "[redirect]",
    "[deny.x]",
    'from = "/a"',
    'from = "/a/**"',
    'to = "/b"',
    'to = "/b/**"',
    'to = "rel"',
    'path = "/a"',
    'path = "/a/**"',
    'path = "/a/*"',
    'path = ""',
    "path = 1",
    "path = {x = 1}",
    'errno = "ENOENT"',
    'errno = "NOPE"',
    "errno = 2",
    "deny = []",
    'deny = [{path = "/q"}]',
    "readonly = [1]",
    "x = 1",
    '"from" = "/z"',
    "# comment",
    "'''",
    '"""',
    "",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("\n".join))
def test_policy_like_text_raises_only_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text, "fuzz.toml")
    except PolicyError as error:
        assert error.source == "fuzz.toml"
        assert error.line is None or 1 <= error.line <= text.count("\n") + 1
    else:
        assert isinstance(policy, Policy)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_policy_error(text: str) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy(text, "fuzz.toml")


# --- The view ----------------------------------------------------------------------


def test_view_is_read_and_kept_by_combine() -> None:
    assert parse_policy(lines("version = 1"), "p.toml").view == "full"
    text = lines("version = 1", 'view = "opens"', "[[deny]]", 'path = "/x"')
    policy = parse_policy(text, "p.toml")
    assert policy.view == "opens"
    merged = combine(policy, rules_from_options(["/a=/b"], [], []))
    assert merged.view == "opens" and len(merged.rules) == 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (lines("version = 1", "view = 3"), 2, "'view' must be a string ('full', 'opens')"),
        (lines("version = 1", 'view = "some"'), 2, "unknown view 'some'"),
        (lines("version = 1", 'mode = "enforce"', 'view = "opens"'), 3, "enforcing mode needs"),
        (lines("version = 1", 'view = "opens"', "[[private]]", 'path = "/tmp/**"'), 2,
         "private rules need the full view"),
    ],
    ids=["type", "unknown", "enforce", "private"],
)  # fmt: skip
def test_view_errors_point_at_its_line(text: str, line: int, message: str) -> None:
    error = error_of(text)
    assert error.line == line and message in error.message, error


def test_command_line_private_rule_and_opens_view() -> None:
    policy = parse_policy(lines("version = 1", 'view = "opens"'), "p.toml")
    with pytest.raises(PolicyError, match="private rules need the full view"):
        combine(policy, rules_from_options([], [], [], privates=["/tmp/**"]))


def test_the_bad_example_is_refused_as_the_readme_shows() -> None:
    with pytest.raises(PolicyError) as e:
        load_policy(str(EXAMPLES / "bad.toml"))
    readme = (EXAMPLES.parent / "README.md").read_text()
    shown = str(e.value).replace(str(EXAMPLES), "examples")
    assert f"`{shown}`" in readme, shown
