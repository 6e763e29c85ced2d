"""The control protocol's codec: bytes in, messages out, no sockets."""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unotifyd.daemon.protocol import (
    MAX_FRAME,
    MAX_REQUEST,
    PROGRAM_NAME_MAX,
    PROTOCOL_VERSION,
    Abort,
    Ack,
    Direction,
    ErrorReply,
    FilterReply,
    FrameDecoder,
    HandOver,
    LaunchRequest,
    Message,
    ProtocolError,
    Reloaded,
    ReloadRequest,
    StatusReply,
    StatusRequest,
    decode_record,
    encode,
)
from unotifyd.daemon.server import fitting_status

#: The version every well-formed frame of these tests carries.
V = PROTOCOL_VERSION

REQUESTS: list[Message] = [
    LaunchRequest("build", "make"),
    HandOver(),
    Abort(22),
    StatusRequest(),
    ReloadRequest(),
]
REPLIES: list[Message] = [
    FilterReply("build:12", b"\x06\x00\x00\x00\x00\x00\xff\x7f", ("/usr/**",), True, True),
    Ack("build:12"),
    ErrorReply("unknown-profile", "unknown profile 'x'"),
    StatusReply({"programs_running": 3, "profiles": {"a": {"started": 1}}}),
    Reloaded(("a", "b")),
]


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def frame_json(obj: object) -> bytes:
    return frame(json.dumps(obj).encode())


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: m.TYPE)
def test_requests_round_trip(msg: Message) -> None:
    assert decode_record(encode(msg), Direction.REQUEST, MAX_REQUEST) == msg


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: m.TYPE)
def test_replies_round_trip(msg: Message) -> None:
    assert decode_record(encode(msg), Direction.REPLY) == msg


def test_wire_format_is_length_then_json() -> None:
    data = encode(LaunchRequest("build", "make"))
    (length,) = struct.unpack("!I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == {
        "v": PROTOCOL_VERSION, "type": "launch", "profile": "build", "program": "make"
    }


def test_bpf_travels_as_base64() -> None:
    data = encode(FilterReply("p", b"\x00\x01\x02\xff", None, False, False))
    assert json.loads(data[4:])["bpf"] == "AAEC/w=="


def test_a_direction_only_accepts_its_own_messages() -> None:
    with pytest.raises(ProtocolError, match="unknown request type 'filter'"):
        decode_record(encode(FilterReply("p", b"", None, False, False)), Direction.REQUEST)
    with pytest.raises(ProtocolError, match="unknown reply type 'launch'"):
        decode_record(encode(LaunchRequest("a", "b")), Direction.REPLY)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (b"", "empty message"),
        (b"\x00\x00", "no complete header"),
        (frame(b"{}")[:-1], "header announces 2 bytes of payload, the message holds 1"),
        (frame(b"{}") + b"x", "1 bytes after the frame"),
        (frame(b"\xff"), "not UTF-8"),
        (frame(b"{"), "invalid JSON"),
        (frame(b"[1]"), "not a JSON object"),
        (frame(b'{"v": NaN}'), "NaN is not JSON"),
        (frame(b'{"v":1,"v":1,"type":"status"}'), "duplicate key 'v'"),
        (frame(b"[" * 100_000 + b"]" * 100_000), "invalid JSON"),
        (frame_json({"type": "status"}), "missing protocol version"),
        (frame_json({"v": "1", "type": "status"}), "missing protocol version"),
        (frame_json({"v": 99, "type": "status"}), "unsupported protocol version 99"),
        (frame_json({"v": V}), "unknown request type None"),
        (frame_json({"v": V, "type": "shutdown"}), "unknown request type 'shutdown'"),
        (frame_json({"v": V, "type": "status", "x": 1}), "status: unknown field 'x'"),
        (frame_json({"v": V, "type": "launch", "profile": "a"}), "missing field 'program'"),
        (
            frame_json({"v": V, "type": "launch", "profile": 1, "program": "x"}),
            "field 'profile' must be a string",
        ),
        (frame_json({"v": V, "type": "abort", "errno": True}), "must be an errno number"),
        (frame_json({"v": V, "type": "abort", "errno": 1.5}), "must be an errno number"),
        # strerror() takes a C int: 2**31 once ended the daemon (OverflowError).
        (frame_json({"v": V, "type": "abort", "errno": 2**31}), "must be an errno number, 1 to"),
        (frame_json({"v": V, "type": "abort", "errno": 0}), "must be an errno number"),
        (frame_json({"v": V, "type": "abort", "errno": 4096}), "must be an errno number"),
    ],
)
def test_bad_records_are_refused_with_a_reason(record: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        decode_record(record, Direction.REQUEST, 10 * MAX_FRAME)
    assert error in str(info.value)


def test_version_errors_have_their_own_code() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_record(frame_json({"v": 9, "type": "status"}), Direction.REQUEST)
    assert info.value.code == "unsupported-version"


def test_bad_base64_is_refused() -> None:
    record = frame_json({
        "v": V, "type": "filter", "program": "p", "bpf": "not base64!",
        "exec_allowed": None, "scope_signals": False, "no_core_dumps": False,
    })  # fmt: skip
    with pytest.raises(ProtocolError, match="'bpf' must be a base64 string"):
        decode_record(record, Direction.REPLY)


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(Direction.REQUEST, MAX_REQUEST)
    decoder.feed(struct.pack("!I", MAX_REQUEST))  # 4 + MAX_REQUEST > limit
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.code == "too-large"


def test_decoder_stays_broken_after_an_error() -> None:
    decoder = FrameDecoder(Direction.REQUEST)
    decoder.feed(frame(b"nope"))
    with pytest.raises(ProtocolError):
        decoder.next_message()
    with pytest.raises(ProtocolError):
        decoder.feed(encode(StatusRequest()))
    with pytest.raises(ProtocolError):
        decoder.next_message()


def test_decoder_reassembles_a_stream_byte_by_byte() -> None:
    stream = b"".join(encode(m) for m in REQUESTS)
    decoder = FrameDecoder(Direction.REQUEST)
    out: list[Message] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    assert out == REQUESTS
    assert decoder.buffered == 0


def test_encode_refuses_a_frame_over_the_limit() -> None:
    with pytest.raises(ValueError, match="exceeds the frame limit"):
        encode(StatusReply({"x": "y" * MAX_FRAME}))


def test_messages_are_immutable_values() -> None:
    msg = LaunchRequest("build", "make")
    assert msg == LaunchRequest(profile="build", program="make")
    assert hash(msg) == hash(LaunchRequest("build", "make"))
    assert msg != LaunchRequest("build", "cc")
    assert HandOver() != StatusRequest()  # no fields either, but another message
    # The JSON order:
    fields = FilterReply("p", b"\x00", None, False, False).FIELDS
    assert fields == ("program", "bpf", "exec_allowed", "scope_signals", "no_core_dumps")
    assert repr(FilterReply("p", b"\x00", ("/usr",), True, True)) == (
        "FilterReply(program='p', bpf=b'\\x00', exec_allowed=('/usr',), scope_signals=True, "
        "no_core_dumps=True)"
    )
    with pytest.raises(AttributeError, match="immutable"):
        msg.profile = "other"
    assert msg.profile == "build"
    assert copy.copy(msg) == msg
    assert pickle.loads(pickle.dumps(Reloaded(("a", "b")))) == Reloaded(("a", "b"))


# --- Property tests ----------------------------------------------------------------

_text = st.text(max_size=50)
_messages = st.one_of(
    st.builds(LaunchRequest, _text, _text),
    st.just(HandOver()),
    st.builds(Abort, st.integers(1, 4095)),
    st.just(StatusRequest()),
    st.just(ReloadRequest()),
)
_replies = st.one_of(
    st.builds(
        FilterReply,
        _text,
        st.binary(max_size=200),
        st.none() | st.lists(_text, max_size=3).map(tuple),
        st.booleans(),
    ),
    st.builds(Ack, _text),
    st.builds(ErrorReply, _text, _text),
    st.builds(Reloaded, st.lists(_text, max_size=5).map(tuple)),
    st.builds(
        StatusReply,
        st.dictionaries(_text, st.one_of(st.integers(-1000, 1000), _text, st.none())),
    ),
)


@given(_messages)
def test_any_request_round_trips(msg: Message) -> None:
    assert decode_record(encode(msg), Direction.REQUEST, MAX_FRAME) == msg


@given(_replies)
def test_any_reply_round_trips(msg: Message) -> None:
    assert decode_record(encode(msg), Direction.REPLY) == msg


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for direction in Direction:
        with contextlib.suppress(ProtocolError):
            decode_record(data, direction, MAX_REQUEST)


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(_text, children, max_size=4),
        max_leaves=20,
    ),
    st.sampled_from(["launch", "listener", "abort", "status", "reload", "filter", "x", None]),
)
def test_arbitrary_json_objects_raise_only_protocol_errors(value: object, kind: object) -> None:
    for obj in ({"v": V, "type": kind, "profile": value, "program": value, "errno": value},
                {"v": value, "type": kind}, value):
        record = frame(json.dumps(obj).encode())
        try:
            msg = decode_record(record, Direction.REQUEST, MAX_FRAME)
        except ProtocolError:
            continue
        assert decode_record(encode(msg), Direction.REQUEST, MAX_FRAME) == msg


@given(st.lists(_messages, max_size=5), st.lists(st.integers(1, 50), min_size=1))
def test_stream_chunking_does_not_matter(msgs: list[Message], cuts: list[int]) -> None:
    stream = b"".join(encode(m) for m in msgs)
    decoder = FrameDecoder(Direction.REQUEST)
    out: list[Message] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    assert out == msgs


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("exec_allowed", "/usr", "'exec_allowed' must be null or an array of strings"),
        ("exec_allowed", [1], "'exec_allowed' must be null or an array of strings"),
        ("scope_signals", 1, "'scope_signals' must be true or false"),
        ("no_core_dumps", None, "'no_core_dumps' must be true or false"),
    ],
)
def test_the_backstop_fields_are_checked(field: str, value: object, error: str) -> None:
    obj: dict[str, object] = {
        "v": V, "type": "filter", "program": "p", "bpf": "",
        "exec_allowed": None, "scope_signals": False, "no_core_dumps": False,
    }  # fmt: skip
    obj[field] = value
    with pytest.raises(ProtocolError, match=error):
        decode_record(frame_json(obj), Direction.REPLY)


def test_a_status_report_too_large_for_a_frame_is_shortened_not_refused() -> None:
    """500 programs whose commands are 256 characters that JSON escapes to
    12 bytes each: their report once made encode() raise, which ended the
    daemon at a `status`. The list is cut; the counts stay."""
    command = "\U0001f600" * PROGRAM_NAME_MAX
    programs = [{"name": f"p:{i}", "command": command} for i in range(500)]
    report: dict[str, object] = {"programs_running": 500, "programs": programs}
    with pytest.raises(ValueError, match="exceeds"):  # the control
        encode(StatusReply(report))
    reply = fitting_status(report)
    assert len(encode(reply)) <= MAX_FRAME
    shown = reply.report["programs"]
    assert 0 < len(shown) < 500 and shown == programs[: len(shown)]
    assert reply.report["programs_running"] == 500
