"""Fuzzing the policy parser and the control protocol, and a live daemon's socket.

The parser and the codec are pure: hypothesis drives them with structured
garbage (near-valid documents and frames) beyond the unit tests' random
bytes. Every malformed input must end in the one documented error type
with a clear message; no other exception may escape. The live test throws
random records at ``unotifyd serve`` and checks that each gets an error
reply (or a closed connection), that no fd leaks, and that it still serves.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unotifyd.daemon.protocol import (
    MAX_FRAME,
    MAX_REQUEST,
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
from unotifyd.policy import Policy, PolicyError, parse_policy

from ..integration.helpers import kernel_refuses_rights
from .support import Procs, Report, describe, public_dir, start_daemon, write

#: How the pure fuzzers' inputs ended, printed once the module is done.
_COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if _COUNTS:
        Report(request.config)("fuzz-parsers", **dict(sorted(_COUNTS.items())),
                               other_exceptions=0)


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- the policy parser ---------------------------------------------------------------------

_KEYS = ["version", "mode", "from", "to", "path", "errno", "erno", "x", "", "from.to", '"a b"']
_TABLES = ["redirect", "deny", "readonly", "allow", "", "redirect.x"]
_paths = st.one_of(
    st.sampled_from(["/etc/passwd", "/etc/**", "/tmp/x/**", "relative", "/", "/**", "//a/./b/..",
                     "/a/**/b", "/a/*", "/a\x00b", "~/x", "/proc/self/fd/0", "/" + "a" * 5000]),
    st.text(max_size=40).map(lambda s: "/" + s),
    st.text(max_size=20),
)
_scalars = st.one_of(
    _paths,
    st.sampled_from(["virtualize", "enforce", "ENOENT", "EACCES", "EWHAT", "enoent", "0", "-1"]),
    st.integers(-(2**64), 2**64),
    st.booleans(),
    st.floats(allow_nan=True),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3)),
    max_leaves=6,
)


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # mostly valid TOML; when not, that is a test too
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def _policy_texts(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"version = {_toml_value(draw(st.one_of(st.just(1), _scalars)))}")
    if draw(st.booleans()):
        lines.append(f"mode = {_toml_value(draw(st.one_of(st.just('virtualize'), _scalars)))}")
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"[[{draw(st.sampled_from(_TABLES))}]]")
        for key in draw(st.lists(st.sampled_from(_KEYS), max_size=4)):
            value = draw(st.one_of(_paths, _values))
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    if draw(st.booleans()) and lines:
        # Damage one line: cut it, or splice in a random character.
        i = draw(st.integers(0, len(lines) - 1))
        cut = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:cut] + draw(st.sampled_from(["", "\"", "[", "=", "\n=", "\\", "#"]))
    return "\n".join(lines) + "\n"


def _check_policy(text: str) -> str:
    """Parse ``text``; return "ok" or "error", failing on anything else."""
    try:
        policy = parse_policy(text, "fuzz.toml")
    except PolicyError as e:
        message = str(e)
        assert message.startswith("fuzz.toml"), message
        assert e.message.strip(), repr(e)
        assert "Traceback" not in message
        if e.line is not None:
            assert 1 <= e.line <= max(1, text.count("\n") + 1), (e.line, text)
        _COUNTS["policy_errors"] += 1
        return "error"
    assert isinstance(policy, Policy)
    _COUNTS["policy_ok"] += 1
    return "ok"


@FUZZ
@given(_policy_texts())
def test_policy_parser_near_valid_documents(text: str) -> None:
    _check_policy(text)


@FUZZ
@given(st.text(max_size=400))
def test_policy_parser_arbitrary_text(text: str) -> None:
    _check_policy(text)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["redirect", "deny", "readonly"]), _paths, _paths),
                max_size=6))
def test_policy_parser_valid_shapes_random_paths(rules: list[tuple[str, str, str]]) -> None:
    text = "version = 1\n"
    for kind, a, b in rules:
        text += f"[[{kind}]]\n"
        if kind == "redirect":
            text += f"from = {json.dumps(a)}\nto = {json.dumps(b)}\n"
        else:
            text += f"path = {json.dumps(a)}\n"
    _check_policy(text)


# --- the control protocol codec -----------------------------------------------------------

_names = st.text(max_size=30)
_requests = st.one_of(
    st.builds(LaunchRequest, _names, _names),
    st.just(HandOver()),
    st.builds(Abort, st.integers(-(2**40), 2**40)),
    st.just(StatusRequest()),
    st.just(ReloadRequest()),
)
_replies = st.one_of(
    st.builds(FilterReply, _names, st.binary(max_size=64)),
    st.builds(Ack, _names),
    st.builds(ErrorReply, _names, _names),
    st.builds(StatusReply, st.dictionaries(_names, st.integers(), max_size=3)),
    st.builds(Reloaded, st.lists(_names, max_size=3).map(tuple)),
)
_CODES = {"bad-message", "too-large", "unsupported-version"}
_FIELDS = ["v", "type", "profile", "program", "errno", "bpf", "code", "message", "report",
           "profiles", "extra"]
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
              st.text(max_size=10), st.sampled_from(["launch", "listener", "abort", "status",
                                                      "reload", "filter", "ack", "error",
                                                      "reloaded", "AAAA", "!!"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=5,
)


def _check_record(record: bytes, direction: Direction) -> str:
    try:
        msg = decode_record(record, direction)
    except ProtocolError as e:
        assert e.code in _CODES, e.code
        assert str(e).strip()
        _COUNTS["codec_errors"] += 1
        return "error"
    assert isinstance(msg, Message)
    assert msg.DIRECTION is direction
    _COUNTS["codec_ok"] += 1
    return "ok"


def _frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


@FUZZ
@given(st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6),
       st.sampled_from(list(Direction)), st.booleans())
def test_codec_near_valid_objects(obj: dict[str, Any], direction: Direction, fix_v: bool) -> None:
    if fix_v:
        obj["v"] = 1
    try:
        payload = json.dumps(obj).encode()
    except ValueError:
        return
    _check_record(_frame(payload), direction)


@FUZZ
@given(st.one_of(_requests, _replies), st.data())
def test_codec_mutated_valid_frames(msg: Message, data: st.DataObject) -> None:
    record = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(record) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            record[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del record[i:]
            if not record:
                break
        elif op == "dup":
            record[i:i] = record[i:i + 4]
        else:
            record[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    for direction in Direction:
        _check_record(bytes(record), direction)


@FUZZ
@given(st.lists(st.one_of(_requests.map(encode), st.binary(max_size=12)), max_size=6),
       st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_frame_decoder_on_garbage_streams(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    dec = FrameDecoder(Direction.REQUEST)
    pos = 0
    i = 0
    broken = False
    while pos < len(stream):
        chunk = stream[pos:pos + cuts[i % len(cuts)]]
        pos += len(chunk)
        i += 1
        try:
            dec.feed(chunk)
            while dec.next_message() is not None:
                pass
        except ProtocolError as e:
            assert e.code in _CODES
            broken = True
            _COUNTS["stream_errors"] += 1
            break
    if broken:
        # Once broken, it stays broken, with the same kind of error.
        with pytest.raises(ProtocolError):
            dec.feed(b"x")


# --- a live daemon -------------------------------------------------------------------------


def _random_record(rng: random.Random, i: int) -> bytes:
    kind = i % 8
    if kind == 0:
        return rng.randbytes(rng.randint(0, 64))
    if kind == 1:
        return _frame(rng.randbytes(rng.randint(0, 64)))
    if kind == 2:  # a header that lies about the length
        return struct.pack("!I", rng.randint(0, 2**32 - 1)) + rng.randbytes(rng.randint(0, 16))
    if kind == 3:  # JSON with random fields
        obj: dict[str, object] = {f: rng.choice([1, "launch", None, [], {}, "x" * 10, -1, 2.5])
                                  for f in rng.sample(_FIELDS, rng.randint(0, 5))}
        return _frame(json.dumps(obj).encode())
    if kind == 4:  # a launch for a profile that does not exist
        return encode(LaunchRequest(rng.choice(["nope", "", "p\x00", "../p"]), "x"))
    if kind == 5:  # a reply sent as a request
        return encode(Ack("x"))
    if kind == 6:  # bigger than the daemon reads
        return _frame(b"{" + b" " * (MAX_REQUEST + rng.randint(0, 3000)) + b"}")
    # A listener hand-over out of turn.
    return encode(HandOver())


@pytest.mark.kernel
def test_live_daemon_survives_random_records(procs: Procs, report: Report) -> None:
    rng = random.Random(20240508)
    records = 400
    with public_dir("unotifyd-rel-fuzz-") as d:
        src, dst = d / "src", write(d / "dst", "REDIRECTED\n")
        policy = f'version = 1\n[[redirect]]\nfrom = "{src}"\nto = "{dst}"\n'
        with start_daemon(procs, {"p": policy}) as daemon:
            baseline = daemon.settled_fds()
            outcomes: Counter[str] = Counter()
            r, w = os.pipe()
            try:
                for i in range(records):
                    record = _random_record(rng, i)
                    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                        s.settimeout(15)
                        s.connect(daemon.socket)
                        try:
                            if i % 5 == 4:  # with an fd or two attached
                                socket.send_fds(s, [record], [r, w][: 1 + i % 2])
                            else:
                                s.send(record)
                        except OSError as e:
                            outcomes[f"send-{e.errno}"] += 1
                            continue
                        try:
                            reply = s.recv(MAX_FRAME)
                        except TimeoutError:
                            outcomes["no-answer"] += 1
                            continue
                    if not reply:
                        outcomes["closed"] += 1
                        continue
                    msg = decode_record(reply, Direction.REPLY)
                    if isinstance(msg, ErrorReply):
                        outcomes["error:" + msg.code] += 1
                        assert msg.message.strip()
                    elif isinstance(msg, FilterReply):
                        outcomes["filter"] += 1  # a valid launch: we hang up instead
                    else:
                        outcomes[f"other:{msg.TYPE}"] += 1
            finally:
                os.close(r)
                os.close(w)
            status = daemon.wait_idle()
            after = daemon.fds()
            check = daemon.run("p", ["cat", str(src)])
            log = daemon.log()
            alive = daemon.alive()
    errors = sum(n for k, n in outcomes.items() if k.startswith("error:"))
    report("daemon-fuzz", records=records, error_replies=errors, closed=outcomes["closed"],
           no_answer=outcomes["no-answer"], other=records - errors - outcomes["closed"],
           codes="/".join(f"{k[6:]}:{n}" for k, n in sorted(outcomes.items())
                          if k.startswith("error:")),
           fds_before=baseline, fds_after=after, still_serving=int(check.stdout ==
                                                                  "REDIRECTED\n"))
    # Where the kernel lets the daemon refuse fds (SO_PASSRIGHTS), a record
    # sent with fds is refused at the sendmsg, before the daemon sees it.
    refused = records // 5 if kernel_refuses_rights() else 0
    assert outcomes[f"send-{errno.EPERM}"] == refused, dict(outcomes)
    assert errors + refused == records, dict(outcomes)
    assert alive
    assert after == baseline
    assert "Traceback" not in log, log
    assert (check.returncode, check.stdout) == (0, "REDIRECTED\n"), describe(check)
    assert sum(status["refusals"].values()) >= records - refused

