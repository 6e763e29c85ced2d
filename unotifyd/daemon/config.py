"""The daemon's config: profiles, and who may use them.

A TOML file::

    version = 1                   # required: the format version, must be 1
    admin_uids = [1000]           # optional: may run `status` and `reload`
    admin_gids = ["wheel"]        # optional: the same, by group

    [[profile]]
    name = "build"                # what clients ask for (letters, digits, . _ -)
    policy = "build.toml"         # a policy file, as for `launch --policy`;
                                  # relative to this file's directory
    uids = [1000, "alice"]        # who may use it: user ids or names...
    gids = ["staff"]              # ...or group ids or names (any of the groups)

Root is always an admin, and admins may use every profile. A client that
is neither an admin nor listed by any profile is refused at once.

Profiles name policy *files* rather than holding rules inline, so that a
profile can be tried out with ``unotifyd launch --policy FILE`` before the
daemon offers it, and a policy's errors point into its own file.

Errors are :class:`~unotifyd.policy.PolicyError`s with the file and line,
found the same way as for policy files (the locator of
:mod:`unotifyd.policy.config`). :func:`parse_config` does no I/O of its
own: reading policies and looking up user and group names are injected.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

# The helpers that give policy files their file:line errors. They are
# private to unotifyd.policy.config; the daemon's config has the same shape
# (top-level keys and [[tables]]), so it reuses them instead of a copy.
from ..files import read_content_file, read_toml_text, toml_text, validated
from ..policy import Policy, PolicyError, parse_policy
from ..policy.config import TomlChecker, toml_decode_error, toml_type
from ..record import field, record

__all__ = [
    "CONFIG_VERSION",
    "DaemonConfig",
    "Profile",
    "load_config",
    "parse_config",
]

CONFIG_VERSION = 1

_TOP_KEYS = ("version", "admin_uids", "admin_gids", "oci_socket", "oci_default_profile", "profile")
_PROFILE_KEYS = ("name", "policy", "uids", "gids")
_PROFILE_REQUIRED = ("name", "policy")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# (uid_t)-1 means "no change" to setresuid(2) and friends: never a real id.
_MAX_ID = 2**32 - 2


@record(frozen=True)
class Profile:
    """A named policy and the users and groups who may run programs under it."""

    name: str
    policy: Policy
    policy_file: str
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    origin: str = ""  # "config-file:line", for messages

    def allows(self, uid: int, gids: frozenset[int]) -> bool:
        return uid in self.uids or not self.gids.isdisjoint(gids)


@record(frozen=True)
class DaemonConfig:
    source: str
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    admin_uids: frozenset[int] = frozenset()
    admin_gids: frozenset[int] = frozenset()
    # The OCI agent (unotifyd.oci): its socket, and the profile of a
    # container whose metadata and annotations name none.
    oci_socket: str | None = None
    oci_default_profile: str | None = None

    def is_admin(self, uid: int, gids: frozenset[int]) -> bool:
        return uid == 0 or uid in self.admin_uids or not self.admin_gids.isdisjoint(gids)

    def may_use(self, profile: str, uid: int, gids: frozenset[int]) -> bool:
        p = self.profiles.get(profile)
        return p is not None and (self.is_admin(uid, gids) or p.allows(uid, gids))

    def usable_profiles(self, uid: int, gids: frozenset[int]) -> list[str]:
        """The profiles this user may pick, in config order."""
        return [name for name in self.profiles if self.may_use(name, uid, gids)]

    def may_connect(self, uid: int, gids: frozenset[int]) -> bool:
        """True if this user may do anything at all with the daemon."""
        return self.is_admin(uid, gids) or any(
            p.allows(uid, gids) for p in self.profiles.values()
        )


def _lookup_user(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _lookup_group(name: str) -> int:
    return grp.getgrnam(name).gr_gid


class _Parser(TomlChecker):
    def __init__(
        self,
        text: str,
        source: str,
        read_policy: Callable[[str], Policy],
        lookup_user: Callable[[str], int],
        lookup_group: Callable[[str], int],
    ) -> None:
        super().__init__(text, source)
        self.base = os.path.dirname(source)
        self.read_policy = read_policy
        self.lookup = {
            "uids": lookup_user,
            "gids": lookup_group,
            "admin_uids": lookup_user,
            "admin_gids": lookup_group,
        }

    def config(self, doc: Mapping[str, Any]) -> DaemonConfig:
        self.check_version(doc, CONFIG_VERSION)
        for key in doc:
            if key not in _TOP_KEYS:
                raise self.error(
                    self.where.top(key),
                    f"unknown key {key!r} (allowed keys: {', '.join(_TOP_KEYS)})",
                )
        admin_uids = self.ids(doc.get("admin_uids", []), "admin_uids", self.where.top("admin_uids"))
        admin_gids = self.ids(doc.get("admin_gids", []), "admin_gids", self.where.top("admin_gids"))
        tables = doc.get("profile", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error(
                self.where.top("profile"),
                "'profile' must be an array of tables, written [[profile]], "
                f"not {toml_type(tables)}",
            )
        profiles: dict[str, Profile] = {}
        for index, table in enumerate(tables):
            profile = self.profile(index, table)
            if profile.name in profiles:
                raise self.error(
                    self.where.key("profile", index, "name"),
                    f"profile {profile.name!r} is defined twice "
                    f"(first at {profiles[profile.name].origin})",
                )
            profiles[profile.name] = profile
        oci_socket, oci_default = self.oci(doc, profiles)
        return DaemonConfig(
            self.source, profiles, admin_uids, admin_gids, oci_socket, oci_default
        )

    def oci(
        self, doc: Mapping[str, Any], profiles: Mapping[str, Profile]
    ) -> tuple[str | None, str | None]:
        """``oci_socket`` (an absolute path) and ``oci_default_profile`` (a profile)."""
        found: list[str | None] = []
        for key in ("oci_socket", "oci_default_profile"):
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise self.error(
                    self.where.top(key), f"{key!r} must be a string, not {toml_type(value)}"
                )
            found.append(value)
        sock, default = found
        if sock is not None and not sock.startswith("/"):
            raise self.error(
                self.where.top("oci_socket"), f"'oci_socket' must be absolute: {sock!r}"
            )
        if default is not None and default not in profiles:
            raise self.error(
                self.where.top("oci_default_profile"),
                f"'oci_default_profile': no profile {default!r} "
                f"(profiles: {', '.join(profiles) or 'none'})",
            )
        return sock, default

    def profile(self, index: int, table: Mapping[str, Any]) -> Profile:
        header = self.where.header("profile", index)
        what = f"[[profile]] #{index + 1}"
        for key in table:
            if key not in _PROFILE_KEYS:
                raise self.error(
                    self.where.key("profile", index, key),
                    f"unknown key {key!r} in {what} (allowed keys: {', '.join(_PROFILE_KEYS)})",
                )
        for key in _PROFILE_REQUIRED:
            if key not in table:
                raise self.error(header, f"{what} is missing the required key {key!r}")
        for key in ("name", "policy"):
            if not isinstance(table[key], str):
                raise self.error(
                    self.where.key("profile", index, key),
                    f"{key!r} in {what} must be a string, not {toml_type(table[key])}",
                )
        name: str = table["name"]
        if not _NAME.fullmatch(name):
            raise self.error(
                self.where.key("profile", index, "name"),
                f"bad profile name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'",
            )
        what = f"profile {name!r}"
        uids = self.ids(table.get("uids", []), "uids", self.where.key("profile", index, "uids"))
        gids = self.ids(table.get("gids", []), "gids", self.where.key("profile", index, "gids"))
        policy_line = self.where.key("profile", index, "policy")
        if not table["policy"]:
            raise self.error(policy_line, f"{what}: 'policy' is empty")
        path = os.path.normpath(os.path.join(self.base, table["policy"]))
        try:
            policy = self.read_policy(path)
        except OSError as e:
            raise self.error(
                policy_line, f"{what}: cannot read the policy {path}: {e.strerror or e}"
            ) from e
        except PolicyError as e:
            # Its own file and line first (where to fix it), then who uses it.
            where = self.source if policy_line is None else f"{self.source}:{policy_line}"
            raise PolicyError(
                e.source, e.line, f"{e.message} (the policy of {what}, {where})"
            ) from e
        origin = self.source if header is None else f"{self.source}:{header}"
        return Profile(name, policy, path, uids, gids, origin)

    def ids(self, value: object, key: str, line: int | None) -> frozenset[int]:
        """A list of numeric ids or names; names are looked up now."""
        kind = "user" if "uid" in key else "group"
        if not isinstance(value, list):
            raise self.error(
                line, f"{key!r} must be an array of {kind} ids or names, not {toml_type(value)}"
            )
        ids: set[int] = set()
        for item in value:
            if type(item) is int:
                if not 0 <= item <= _MAX_ID:
                    raise self.error(line, f"{key!r}: {item} is not a valid {kind} id")
                ids.add(item)
            elif isinstance(item, str):
                try:
                    ids.add(self.lookup[key](item))
                except KeyError:
                    raise self.error(line, f"{key!r}: unknown {kind} {item!r}") from None
            else:
                raise self.error(
                    line, f"{key!r} must hold {kind} ids or names, not {toml_type(item)}"
                )
        return frozenset(ids)


def parse_config(
    text: str,
    source: str,
    *,
    read_policy: Callable[[str], Policy],
    lookup_user: Callable[[str], int] = _lookup_user,
    lookup_group: Callable[[str], int] = _lookup_group,
) -> DaemonConfig:
    """Parse the daemon config ``text``; ``source`` names it (and locates relative policies).

    ``read_policy(path)`` returns the policy of a profile; it may raise
    :class:`PolicyError` (passed on, naming the profile and config line too) or
    :class:`OSError` (reported at the profile's ``policy`` line). The
    lookups raise ``KeyError`` for an unknown name, like :mod:`pwd`.

    Raises :class:`PolicyError` and nothing else.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_decode_error(exc, text, source) from exc
    except RecursionError as exc:
        raise PolicyError(source, None, "invalid TOML: nested too deeply") from exc
    return _Parser(text, source, read_policy, lookup_user, lookup_group).config(doc)


def read_policy_file(path: str) -> Policy:
    """Read a profile's policy file, resolved like ``launch --policy`` does.

    Raises :class:`OSError` if it cannot be read, :class:`PolicyError` if it
    is not a valid policy.
    """
    with open(path, "rb") as f:  # OSError: reported at the config's line
        data = f.read()
    text = toml_text(data, path)
    return validated(parse_policy(text, path, read_file=read_content_file), path)


def load_config(path: str) -> DaemonConfig:
    """Read the config at ``path`` and every policy it names. Raises :class:`PolicyError`."""
    return parse_config(read_toml_text(path, "config"), path, read_policy=read_policy_file)
