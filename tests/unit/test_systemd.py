"""The wire formats of unotifyd.daemon.systemd and of the SIGUSR2 hand-over, without systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from unotifyd.daemon import handover, systemd
from unotifyd.daemon.systemd import ListenFd, StoredProgram

# --- sd_notify messages ---------------------------------------------------------------


def test_notify_message_is_newline_terminated_assignments() -> None:
    msg = systemd.notify_message([("READY", "1"), ("STATUS", "serving 3 program(s)")])
    assert msg == b"READY=1\nSTATUS=serving 3 program(s)\n"


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("STATUS", "two\nlines")],
        [("STATUS", "nul\0")],
        [("ready", "1")],
        [("FD=NAME", "x")],
        [("", "x")],
    ],
)
def test_notify_message_refuses_what_would_change_its_meaning(
    pairs: list[tuple[str, str]],
) -> None:
    with pytest.raises(ValueError):
        systemd.notify_message(pairs)


def test_one_line_makes_any_text_a_status() -> None:
    assert systemd.notify_message([("STATUS", systemd.one_line("a\nb\0c"))]) == b"STATUS=a b c\n"


def test_notify_address_path_and_abstract() -> None:
    assert systemd.notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.notify_address("@sd-notify") == b"\0sd-notify"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        with pytest.raises(ValueError):
            systemd.notify_address(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("control", True),
        ("", True),
        ("with space", True),
        ("a:b", False),
        ("tab\there", False),
        ("é", False),
        ("x" * 255, True),
        ("x" * 256, False),
    ],
)
def test_fd_names_follow_systemds_rules(name: str, ok: bool) -> None:
    if ok:
        assert systemd.check_fd_name(name) == name
    else:
        with pytest.raises(ValueError):
            systemd.check_fd_name(name)


# --- Environment ------------------------------------------------------------------------


def test_watchdog_interval_is_half_the_timeout_and_for_us_only() -> None:
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, 7) == 2.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "8"}, 7) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert systemd.watchdog_interval({}, 7) is None


def test_fdstore_enabled() -> None:
    assert not systemd.fdstore_enabled({})
    assert systemd.fdstore_enabled({"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert systemd.fdstore_enabled({"NOTIFY_SOCKET": "/x", "FDSTORE": "16"})
    assert not systemd.fdstore_enabled({"NOTIFY_SOCKET": "/x", "FDSTORE": "0"})


def test_listen_fds_with_names() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "control:a:b"}
    assert systemd.listen_fds(env, 42) == [ListenFd(3, "control"), ListenFd(4, "a"),
                                            ListenFd(5, "b")]


def test_listen_fds_without_names_are_unknown() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2"}
    assert [f.name for f in systemd.listen_fds(env, 42)] == ["unknown", "unknown"]


def test_listen_fds_meant_for_another_process_are_not_ours() -> None:
    env = {"LISTEN_PID": "41", "LISTEN_FDS": "2"}
    assert systemd.listen_fds(env, 42) == []
    assert systemd.listen_fds({"LISTEN_FDS": "2"}, 42) == []
    assert systemd.listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, 42) == []


@pytest.mark.parametrize(
    "env",
    [
        {"LISTEN_PID": "42", "LISTEN_FDS": "two"},
        {"LISTEN_PID": "42", "LISTEN_FDS": "-1"},
        {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "only-one"},
    ],
)
def test_listen_fds_refuses_malformed_variables(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        systemd.listen_fds(env, 42)


def test_take_listen_fds_sets_cloexec_and_clears_the_variables() -> None:
    r, w = os.pipe()
    try:
        # Put the pipe where systemd would: fd 3 and 4.
        saved = [os.dup(3) if _is_open(3) else -1, os.dup(4) if _is_open(4) else -1]
        try:
            os.dup2(r, 3, inheritable=True)
            os.dup2(w, 4, inheritable=True)
            env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2",
                   "LISTEN_FDNAMES": "r:w", "OTHER": "x"}
            got = systemd.take_listen_fds(env)
            assert got == [ListenFd(3, "r"), ListenFd(4, "w")]
            assert env == {"OTHER": "x"}
            assert not os.get_inheritable(3)
            assert not os.get_inheritable(4)
        finally:
            for fd, old in zip((3, 4), saved, strict=True):
                if old >= 0:
                    os.dup2(old, fd, inheritable=False)
                    os.close(old)
                else:
                    os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# --- Names of stored listeners ---------------------------------------------------------


@pytest.mark.parametrize("filter_id", ["", "0123456789abcdef"])
def test_program_fd_name_round_trip(filter_id: str) -> None:
    prog = StoredProgram("build", 1234, 1000, "0a1b2c", "make -j8 CC=gcc:12 ünï", filter_id)
    name = systemd.program_fd_name(prog)
    assert name.startswith(f"listener/build/1234/1000/0a1b2c/{filter_id or '-'}/make%20")
    assert ":" not in name
    systemd.check_fd_name(name)
    assert systemd.parse_program_fd_name(name) == prog


def test_a_name_an_older_daemon_gave_has_no_filter() -> None:
    """Stored before names said what the program's filter does: the daemon
    that takes it back cannot compare, and says nothing (Continuity.adopt)."""
    back = systemd.parse_program_fd_name("listener/build/1234/1000/0a1b2c/make%20-j8")
    assert back == StoredProgram("build", 1234, 1000, "0a1b2c", "make -j8", "")


def test_program_fd_name_keeps_a_command_that_is_not_utf8() -> None:
    """A name os.fsdecode made of bytes that are not UTF-8 (lone surrogates,
    PEP 383) is escaped as those bytes; it once raised UnicodeEncodeError
    and ended the daemon at the launch."""
    command = os.fsdecode(b"/tmp/bin-\xff \xed\xa0\x80")
    prog = StoredProgram("build", 1, 0, "0a1b2c", command)
    name = systemd.program_fd_name(prog)
    assert name.endswith("/%2Ftmp%2Fbin-%FF%20%ED%A0%80")
    systemd.check_fd_name(name)
    assert systemd.parse_program_fd_name(name) == prog


def test_program_fd_name_cuts_a_long_command_not_the_rest() -> None:
    prog = StoredProgram("p" * 64, 2**22, 2**32 - 2, "f" * 12, "é" * 300, "e" * 16)
    name = systemd.program_fd_name(prog)
    assert len(name) <= systemd.FDNAME_MAX
    back = systemd.parse_program_fd_name(name)
    assert back is not None
    assert (back.profile, back.pid, back.uid, back.token, back.filter_id) == (
        prog.profile, prog.pid, prog.uid, prog.token, prog.filter_id)
    assert set(back.command) == {"é"}  # cut between escapes, never inside one


@pytest.mark.parametrize(
    "name",
    ["control", "unknown", "listener/a/1/0", "listener/a/x/0/ab/", "listener/a b/1/0/ab/",
     "listener/a/1/0/XYZ/", "other/a/1/0/ab/", "listener/a/1/0/ab/0123/cmd",
     "listener/a/1/0/ab//cmd"],
)
def test_other_fd_names_are_no_program(name: str) -> None:
    assert systemd.parse_program_fd_name(name) is None


def test_program_fd_name_refuses_a_bad_profile() -> None:
    with pytest.raises(ValueError):
        systemd.program_fd_name(StoredProgram("a/b", 1, 0, "ab"))
    with pytest.raises(ValueError):
        systemd.program_fd_name(StoredProgram("a", 1, 0, "ab", "", "not/hex"))


# --- The notifier, against a datagram socket playing systemd ----------------------------


def test_notifier_sends_fds_to_the_fd_store(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        notifier = systemd.Notifier.from_environ({"NOTIFY_SOCKET": path})
        assert notifier is not None
        r, w = os.pipe()
        try:
            assert notifier.ready("up")
            notifier.store(r, "listener/a/1/0/ab/cat")
            assert notifier.remove("listener/a/1/0/ab/cat")
            assert manager.recv(4096) == b"READY=1\nSTATUS=up\n"
            msg, fds, _, _ = socket.recv_fds(manager, 4096, 4)
            assert msg == b"FDSTORE=1\nFDNAME=listener/a/1/0/ab/cat\n"
            assert len(fds) == 1
            os.write(w, b"x")
            assert os.read(fds[0], 1) == b"x"  # the same pipe
            os.close(fds[0])
            assert manager.recv(4096) == b"FDSTOREREMOVE=1\nFDNAME=listener/a/1/0/ab/cat\n"
        finally:
            notifier.close()
            os.close(r)
            os.close(w)


def test_notifier_without_a_manager() -> None:
    assert systemd.Notifier.from_environ({}) is None
    notifier = systemd.Notifier("/nonexistent/notify")
    try:
        assert not notifier.watchdog()  # progress reports never raise
        with pytest.raises(OSError):
            notifier.store(0, "x")  # the fd store does: the caller must know
    finally:
        notifier.close()


# --- The SIGUSR2 hand-over's records -----------------------------------------------------


def test_handover_records_round_trip() -> None:
    records: list[tuple[str, dict[str, object]]] = [
        ("hello", {"pid": 5}), ("fds", {"names": ["control", "x"]}), ("end", {"count": 2}),
        ("ready", {}),
    ]
    for kind, fields in records:
        assert handover.decode_record(handover.encode_record(kind, **fields)) == (kind, fields)


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"v":2,"type":"ready"}', b'{"v":1,"type":"bye"}', b'{"v":1,"type":"end"}',
     b'{"v":1,"type":"end","count":"2"}', b'{"v":1,"type":"fds","names":[1]}',
     b'{"v":1,"type":"ready","extra":1}'],
)
def test_handover_refuses_bad_records(data: bytes) -> None:
    with pytest.raises(handover.HandoverError):
        handover.decode_record(data)


def test_handover_encoder_checks_fields() -> None:
    with pytest.raises(ValueError):
        handover.encode_record("hello")
    with pytest.raises(ValueError):
        handover.encode_record("nope")


def test_sort_fds_finds_the_control_socket_and_closes_strays(tmp_path: Path) -> None:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listening.bind(str(tmp_path / "s"))
    listening.listen()
    r, w = os.pipe()
    fake = os.dup(w)  # named like a listener, but a pipe
    out = handover.sort_fds([
        ListenFd(r, "unknown"),
        ListenFd(listening.detach(), "unknown"),
        ListenFd(fake, "listener/a/1/0/ab/x"),
    ])
    try:
        assert out.control is not None
        assert out.control.type == socket.SOCK_SEQPACKET
        assert out.programs == []
        assert len(out.notes) == 2
        for fd in (r, fake):
            with pytest.raises(OSError):
                os.fstat(fd)
    finally:
        if out.control is not None:
            out.control.close()
        os.close(w)
