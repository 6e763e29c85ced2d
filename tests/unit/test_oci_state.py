"""The OCI state message parser and profile choice: pure, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from unotifyd.oci.state import (
    PROFILE_ANNOTATION,
    ContainerState,
    StateError,
    StateReader,
    choose_profile,
    parse_state,
)

# Captured from the Debian 12 runtimes on this machine (runc 1.1.5, crun 1.8.1):
# runc writes compact JSON and nothing after it...
RUNC = (
    b'{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":10559,"metadata":"profile=web",'
    b'"state":{"ociVersion":"1.0.2-dev","id":"t1","status":"creating","pid":10559,'
    b'"bundle":"/tmp/ocix/bundle"}}'
)
# ...crun pretty-prints it and ends with a newline.
CRUN = (
    b'{\n    "ociVersion": "0.2.0",\n    "fds": [\n        "seccompFd"\n    ],\n'
    b'    "pid": 10860,\n    "metadata": "profile=web",\n    "state": {\n'
    b'        "ociVersion": "0.2.0",\n        "id": "t2",\n        "status": "creating",\n'
    b'        "pid": 10860,\n        "bundle": "/tmp/ocix/bundle"\n    }\n}\n'
)


def message(**changes: Any) -> bytes:
    doc: dict[str, Any] = json.loads(RUNC)
    state = changes.pop("state", {})
    doc.update(changes)
    doc["state"].update(state)
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]
    return json.dumps(doc).encode()


def feed_all(data: bytes, chunk: int) -> ContainerState | None:
    reader = StateReader()
    got = None
    for i in range(0, len(data), chunk):
        got = reader.feed(data[i : i + chunk])
        if got is not None:
            return got
    return got


@pytest.mark.parametrize(("data", "version", "cid", "pid"), [
    (RUNC, "1.0.2-dev", "t1", 10559),
    (CRUN, "0.2.0", "t2", 10860),
])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_both_runtimes_parse_in_any_chunks(
    data: bytes, version: str, cid: str, pid: int, chunk: int
) -> None:
    state = feed_all(data, chunk)
    assert state == ContainerState(
        version, ("seccompFd",), pid, "profile=web", cid, "creating", "/tmp/ocix/bundle", {}
    )
    assert state.seccomp_fd_index == 0


def test_complete_without_eof_and_not_before() -> None:
    # The runtime keeps the connection open: the reader must answer the
    # moment the object closes, and never a byte earlier.
    reader = StateReader()
    for i in range(len(RUNC) - 1):
        assert reader.feed(RUNC[i : i + 1]) is None
        assert not reader.done
    assert reader.feed(RUNC[-1:]) is not None
    assert reader.done
    reader.eof()  # EOF after a complete message is fine


def test_crun_newline_may_come_with_or_after_the_object() -> None:
    reader = StateReader()
    assert reader.feed(CRUN[:-1]) is not None
    assert reader.feed(b"\n") is not None


def test_braces_and_escapes_inside_strings_do_not_end_the_message() -> None:
    tricky = 'a "} { ] [" \\" \\\\ ünïcødé }'
    data = message(metadata="profile=web", state={"annotations": {"k}": tricky, "x": "\\"}})
    state = feed_all(data, 1)
    assert state is not None
    assert state.annotations == {"k}": tricky, "x": "\\"}


@pytest.mark.parametrize(("data", "error"), [
    (b"[1, 2]", "not a JSON object"),
    (b"  x", "not a JSON object"),
    (RUNC + b"{}", "data after"),
    (b'{"ociVersion": }', "not valid JSON"),
    (b'{"a": "\xff"}', "not valid JSON"),
])
def test_malformed_messages(data: bytes, error: str) -> None:
    with pytest.raises(StateError, match=error):
        feed_all(data, 4096)


def test_too_large_is_refused_before_the_end() -> None:
    reader = StateReader(limit=100)
    reader.feed(b'{"a": "' + b"x" * 90)
    with pytest.raises(StateError, match="larger than 100"):
        reader.feed(b"x" * 20)


def test_eof_before_the_end() -> None:
    reader = StateReader()
    reader.feed(RUNC[:20])
    with pytest.raises(StateError, match="closed the connection"):
        reader.eof()


@pytest.mark.parametrize(("changes", "error"), [
    ({"ociVersion": None}, "missing 'ociVersion'"),
    ({"fds": None}, "missing 'fds'"),
    ({"fds": []}, "must name 'seccompFd' once"),
    ({"fds": ["seccompFd", "seccompFd"]}, "once"),
    ({"fds": [3]}, "list of names"),
    ({"pid": None}, "missing 'pid'"),
    ({"pid": "12"}, "'pid' must be a int"),
    ({"pid": True}, "'pid' must be a int"),
    ({"pid": 0}, "bad pid"),
    ({"metadata": 1}, "'metadata' must be a str"),
    ({"state": None}, "missing 'state'"),
    ({"state": {"id": ""}}, "empty container id"),
    ({"state": {"id": 5}}, "'id' must be a str"),
    ({"state": {"annotations": {"a": 1}}}, "annotation values"),
    ({"state": {"annotations": []}}, "'annotations' must be a dict"),
])
def test_bad_fields(changes: dict[str, Any], error: str) -> None:
    if changes.get("state") is None and "state" in changes:
        data = json.dumps({k: v for k, v in json.loads(RUNC).items() if k != "state"}).encode()
    else:
        data = message(**changes)
    with pytest.raises(StateError, match=error):
        parse_state(data)


def test_unknown_fields_and_several_fds_are_accepted() -> None:
    state = parse_state(message(fds=["other", "seccompFd"], future={"x": 1}))
    assert state.seccomp_fd_index == 1


def state_with(metadata: str = "", annotations: dict[str, str] | None = None) -> ContainerState:
    return parse_state(message(metadata=metadata, state={"annotations": annotations or {}}))


@pytest.mark.parametrize(("metadata", "profile"), [
    ("profile=web", "web"),
    ("web", "web"),
    ("  profile=build-1.x  ", "build-1.x"),
    ("profile=web, ", "web"),
])
def test_metadata_names_the_profile(metadata: str, profile: str) -> None:
    choice = choose_profile(state_with(metadata, {PROFILE_ANNOTATION: "other"}), "default")
    assert (choice.name, choice.source) == (profile, "metadata")


@pytest.mark.parametrize(("metadata", "error"), [
    ("profle=web", "unknown key 'profle'"),
    ("profile=web,profile=db", "given twice"),
    ("profile=we/b", "bad profile name"),
    ("profile=", "bad profile name"),
    ("profile=web junk", "not key=value"),
    ("we b", "bad profile name"),
])
def test_bad_metadata_is_refused_not_defaulted(metadata: str, error: str) -> None:
    with pytest.raises(StateError, match=error):
        choose_profile(state_with(metadata), "default")


def test_annotation_then_default() -> None:
    annotated = choose_profile(state_with("", {PROFILE_ANNOTATION: "db"}), "default")
    assert (annotated.name, annotated.source) == ("db", f"annotation {PROFILE_ANNOTATION}")
    default = choose_profile(state_with("", {"other": "x"}), "default")
    assert (default.name, default.source) == ("default", "default")
    with pytest.raises(StateError, match="bad profile name"):
        choose_profile(state_with("", {PROFILE_ANNOTATION: "../x"}), None)
    with pytest.raises(StateError, match="no profile"):
        choose_profile(state_with(""), None)
