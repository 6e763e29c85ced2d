"""The OCI settings of the daemon config: ``oci_socket`` and ``oci_default_profile``."""

from __future__ import annotations

import pytest

from unotifyd.daemon.config import DaemonConfig, parse_config
from unotifyd.policy import Policy, PolicyError, parse_policy

SOURCE = "/etc/unotifyd/unotifyd.toml"


def read_policy(path: str) -> Policy:
    return parse_policy("version = 1\n", path)


def parse(text: str) -> DaemonConfig:
    return parse_config(text, SOURCE, read_policy=read_policy)


PROFILES = '\n[[profile]]\nname = "web"\npolicy = "web.toml"\n'


def test_absent_means_no_agent_and_no_default() -> None:
    config = parse("version = 1\n" + PROFILES)
    assert (config.oci_socket, config.oci_default_profile) == (None, None)


def test_both_set() -> None:
    config = parse(
        'version = 1\noci_socket = "/run/unotifyd/oci.sock"\noci_default_profile = "web"\n'
        + PROFILES
    )
    assert config.oci_socket == "/run/unotifyd/oci.sock"
    assert config.oci_default_profile == "web"


@pytest.mark.parametrize(("line", "error"), [
    ('oci_socket = "oci.sock"', f"{SOURCE}:2: 'oci_socket' must be absolute"),
    ("oci_socket = 1", f"{SOURCE}:2: 'oci_socket' must be a string"),
    ('oci_default_profile = "db"', f"{SOURCE}:2: 'oci_default_profile': no profile 'db' "
                                   "(profiles: web)"),
    ('oci_default = "web"', f"{SOURCE}:2: unknown key 'oci_default'"),
])
def test_errors_name_the_line(line: str, error: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(f"version = 1\n{line}\n" + PROFILES)
    assert str(info.value).startswith(error)
