"""The daemon's config: profiles, access control, and errors with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from unotifyd.daemon.cli import format_status
from unotifyd.daemon.config import DaemonConfig, load_config, parse_config
from unotifyd.policy import Policy, PolicyError, parse_policy

USERS = {"alice": 1000, "bob": 1001, "nobody": 65534}
GROUPS = {"staff": 50, "wheel": 10}
POLICIES = {
    "/etc/unotifyd/build.toml": 'version = 1\n[[deny]]\npath = "/etc/shadow"\n',
    "/etc/unotifyd/test.toml": "version = 1\n",
    "/etc/unotifyd/bad.toml": 'version = 1\n\n[[deny]]\nerno = "EPERM"\n',
}


def read_policy(path: str) -> Policy:
    if path not in POLICIES:
        raise FileNotFoundError(2, "No such file or directory")
    return parse_policy(POLICIES[path], path)


def parse(text: str, source: str = "/etc/unotifyd/unotifyd.toml") -> DaemonConfig:
    return parse_config(
        textwrap.dedent(text),
        source,
        read_policy=read_policy,
        lookup_user=USERS.__getitem__,
        lookup_group=GROUPS.__getitem__,
    )


def error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return str(info.value)


GOOD = """\
    version = 1
    admin_uids = ["bob"]
    admin_gids = [10]

    [[profile]]
    name = "build"
    policy = "build.toml"
    uids = [1000, "nobody"]

    [[profile]]
    name = "test"
    policy = "/etc/unotifyd/test.toml"
    gids = ["staff"]
"""


def test_a_good_config() -> None:
    config = parse(GOOD)
    assert list(config.profiles) == ["build", "test"]
    build = config.profiles["build"]
    assert build.policy_file == "/etc/unotifyd/build.toml"  # relative to the config
    assert build.uids == {1000, 65534}
    assert build.origin == "/etc/unotifyd/unotifyd.toml:5"
    assert len(build.policy.rules) == 1
    assert config.profiles["test"].gids == {50}
    assert config.admin_uids == {1001}
    assert config.admin_gids == {10}


def test_who_may_use_what() -> None:
    config = parse(GOOD)
    alice = (1000, frozenset({1000}))
    stranger = (2000, frozenset({2000}))
    staff = (2001, frozenset({2001, 50}))
    assert config.may_use("build", *alice)
    assert not config.may_use("test", *alice)
    assert config.usable_profiles(*alice) == ["build"]
    assert config.usable_profiles(*staff) == ["test"]
    assert not config.may_connect(*stranger)
    assert config.may_connect(*staff)
    assert not config.may_use("nope", *alice)
    # Root, admins by uid and by group may use everything.
    for who in [(0, frozenset({0})), (1001, frozenset()), (3000, frozenset({10}))]:
        assert config.is_admin(*who)
        assert config.usable_profiles(*who) == ["build", "test"]
    assert not config.is_admin(*alice)


def test_an_empty_config_is_valid() -> None:
    config = parse("version = 1\n")
    assert not config.profiles
    assert not config.may_connect(1000, frozenset())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "unotifyd.toml: missing 'version = 1'"),
        ("version = 2\n", "unotifyd.toml:1: unsupported version 2"),
        ('version = "1"\n', "unotifyd.toml:1: 'version' must be the integer 1, not a string"),
        ("version = 1\nprofiles = []\n", "unotifyd.toml:2: unknown key 'profiles'"),
        ("version = 1\nprofile = 3\n", "unotifyd.toml:2: 'profile' must be an array of tables"),
        ("version = 1\n[[profile]\n", "unotifyd.toml:2: invalid TOML"),
        (
            'version = 1\n\n[[profile]]\nname = "a"\n',
            "unotifyd.toml:3: [[profile]] #1 is missing the required key 'policy'",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\nuid = [1]\n',
            "unotifyd.toml:5: unknown key 'uid' in [[profile]] #1 (allowed keys: name, policy, "
            "uids, gids)",
        ),
        (
            'version = 1\n[[profile]]\nname = "a b"\npolicy = "test.toml"\n',
            "unotifyd.toml:3: bad profile name 'a b'",
        ),
        (
            'version = 1\n[[profile]]\nname = 7\npolicy = "test.toml"\n',
            "unotifyd.toml:3: 'name' in [[profile]] #1 must be a string, not an integer",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\nuids = ["carol"]\n',
            "unotifyd.toml:5: 'uids': unknown user 'carol'",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\ngids = [-1]\n',
            "unotifyd.toml:5: 'gids': -1 is not a valid group id",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\nuids = 1000\n',
            "unotifyd.toml:5: 'uids' must be an array of user ids or names, not an integer",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\nuids = [true]\n',
            "unotifyd.toml:5: 'uids' must hold user ids or names, not a boolean",
        ),
        (
            "version = 1\nadmin_gids = [\"nogroup\"]\n",
            "unotifyd.toml:2: 'admin_gids': unknown group 'nogroup'",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "missing.toml"\n',
            "unotifyd.toml:4: profile 'a': cannot read the policy /etc/unotifyd/missing.toml: "
            "No such file or directory",
        ),
        (
            'version = 1\n[[profile]]\nname = "a"\npolicy = "test.toml"\n'
            '[[profile]]\nname = "a"\npolicy = "build.toml"\n',
            "unotifyd.toml:6: profile 'a' is defined twice (first at "
            "/etc/unotifyd/unotifyd.toml:2)",
        ),
    ],
)
def test_errors_name_file_and_line(text: str, expected: str) -> None:
    assert expected in error(text)


def test_a_bad_policy_is_reported_in_its_own_file() -> None:
    message = error('version = 1\n[[profile]]\nname = "a"\npolicy = "bad.toml"\n')
    assert message.startswith("/etc/unotifyd/bad.toml:4: unknown key 'erno'")
    # ...and says which profile of which config uses it.
    assert message.endswith("(the policy of profile 'a', /etc/unotifyd/unotifyd.toml:4)")


def test_load_config_keeps_rule_paths_and_refuses_two_rules_on_one_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.txt"
    target.write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "p.toml").write_text(
        f'version = 1\n[[redirect]]\nfrom = "{tmp_path}/link/a"\nto = "{target}"\n'
    )
    (tmp_path / "d.toml").write_text(
        'version = 1\n[[profile]]\nname = "p"\npolicy = "p.toml"\nuids = [0]\n'
    )
    config = load_config(str(tmp_path / "d.toml"))
    # Kept as written: the supervisor resolves rule paths in each program's
    # own root (a container's differs from ours).
    assert f"{tmp_path}/link/a" in config.profiles["p"].policy.describe()[0]
    # A link and its target in two rules name one file: refused at load.
    (tmp_path / "p.toml").write_text(
        f'version = 1\n[[deny]]\npath = "{tmp_path}/link/a"\n'
        f'[[readonly]]\npath = "{tmp_path}/real/a"\n'
    )
    with pytest.raises(PolicyError):
        load_config(str(tmp_path / "d.toml"))


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the config"):
        load_config(str(tmp_path / "none.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"version = 1\n\xff\n")
    with pytest.raises(PolicyError, match=r"bad.toml:2: not UTF-8"):
        load_config(str(bad))


def test_status_text_shows_counters_and_programs() -> None:
    report = {
        "version": "0.1.0", "pid": 42, "uptime": 3725.0, "socket": "/s", "config": "/c",
        "reloads": 1, "connections": 9, "refusals": {"unknown-profile": 2},
        "programs_running": 2, "programs_finished": 5,
        "profiles": {
            "build": {"started": 6, "running": 1, "notifications": 120,
                      "decisions": {"continue": 100, "redirect": 20}, "configured": True},
            "old": {"started": 1, "running": 1, "notifications": 0, "decisions": {},
                    "configured": False},
        },
        "programs": [{"name": "build:7", "pid": 7, "uid": 1000, "seconds": 2.5,
                      "notifications": 3, "command": "make"}],
    }
    text = format_status(report)
    assert "pid 42, up 1h02m05s" in text
    assert "programs: 2 running, 5 finished" in text
    assert "refused: unknown-profile 2" in text
    assert "old (removed)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("PROFILE"))
    assert header.split() == [
        "PROFILE", "RUNNING", "STARTED", "NOTIFICATIONS", "CONTINUE", "REDIRECT"
    ]
    assert any(line.split() == ["build", "1", "6", "120", "100", "20"] for line in lines)
    assert any(line.split()[:2] == ["build:7", "7"] and line.endswith("make") for line in lines)
    assert "... and 1 more" in text
