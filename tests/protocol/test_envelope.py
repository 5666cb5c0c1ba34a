"""Server messages: the spec's envelope, error messages and binary frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab.exceptions import (
    AgentNotFound,
    AuthFailed,
    ConstraintViolation,
    EvaluationError,
    EvolutionFailed,
    GenerationNotFound,
    InvalidAgentCode,
    InvalidCommand,
    InvalidParameters,
    InvalidState,
    RateLimited,
    StoreError,
    TdevlabError,
    Unauthorized,
)
from tdevlab.protocol.envelope import ECHO_BYTES, MAX_REPLY_BYTES, Encoder, clip, iso_time, shown
from tdevlab.protocol.messages import parse_binary

FAST = settings(max_examples=200, deadline=None, database=None)
NOW = 1_704_067_200.0  # 2024-01-01T00:00:00Z, the spec's example time


def parse_time(stamp: str) -> datetime:
    """Read back an ISO 8601 UTC timestamp ending in Z."""
    assert stamp.endswith("Z")
    return datetime.fromisoformat(stamp[:-1] + "+00:00")


def error_of(encoder: Encoder, exc: TdevlabError, **kwargs: Any) -> dict[str, Any]:
    """Encode an error and decode it back."""
    data = encoder.error(exc, now=NOW, **kwargs)
    assert isinstance(data, bytes)
    decoded: dict[str, Any] = json.loads(data)
    return decoded


# -- iso_time ---------------------------------------------------------------------------------


def test_iso_time_of_the_epoch() -> None:
    """iso_time(0) is the epoch with milliseconds and Z."""
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW, "2024-01-01T00:00:00.000Z"),
        (NOW + 0.5, "2024-01-01T00:00:00.500Z"),
        (NOW + 0.0015, "2024-01-01T00:00:00.001Z"),
        (NOW + 59.999, "2024-01-01T00:00:59.999Z"),
        (951_782_400.0, "2000-02-29T00:00:00.000Z"),
    ],
)
def test_iso_time_has_milliseconds_in_utc(now: float, expected: str) -> None:
    """iso_time writes UTC with millisecond precision (truncated)."""
    assert iso_time(now) == expected


@FAST
@given(st.floats(0, 4_102_444_800))  # up to 2100
def test_iso_time_parses_back(now: float) -> None:
    """iso_time output is ISO 8601 UTC with Z, within 1 ms of now."""
    stamp = iso_time(now)
    assert len(stamp) == 24
    parsed = parse_time(stamp)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert abs(parsed.timestamp() - now) < 0.0011


# -- message -----------------------------------------------------------------------------------


def test_message_has_id_type_timestamp_and_data() -> None:
    """A message has exactly id, type, timestamp and data (in that order)."""
    encoder = Encoder("srv")
    message = encoder.message("evolution_update", {"generation": 101}, now=NOW)
    assert message == {
        "id": "srv-1",
        "type": "evolution_update",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "data": {"generation": 101},
    }
    assert list(message) == ["id", "type", "timestamp", "data"]


def test_message_timestamp_reads_back_as_now() -> None:
    """The timestamp parses with datetime.fromisoformat to the `now` given."""
    message = Encoder("srv").message("metrics", {}, now=NOW + 12.25)
    assert parse_time(message["timestamp"]) == datetime.fromtimestamp(NOW + 12.25, UTC)


def test_message_reply_to_only_when_given() -> None:
    """reply_to appears when a request id is given (0 included) and not otherwise."""
    encoder = Encoder("srv")
    assert "reply_to" not in encoder.message("ack", {}, now=NOW)
    assert "reply_to" not in encoder.message("ack", {}, now=NOW, reply_to=None)
    assert encoder.message("ack", {}, now=NOW, reply_to="r1")["reply_to"] == "r1"
    assert encoder.message("ack", {}, now=NOW, reply_to=0)["reply_to"] == 0


def test_message_top_level_fields_go_beside_data() -> None:
    """Extra fields (an alert's severity, a log's level) sit beside data, as in the spec."""
    alert = Encoder("srv").message("alert", {"alert_id": "a"}, now=NOW, severity="warning")
    assert alert["severity"] == "warning"
    assert alert["data"] == {"alert_id": "a"}
    log = Encoder("srv").message("log", {"message": "m"}, now=NOW, level="info", seq=3)
    assert (log["level"], log["seq"]) == ("info", 3)


def test_ids_are_unique_and_carry_the_prefix() -> None:
    """Over many messages and errors, ids are unique and start with the prefix."""
    encoder = Encoder("node7")
    ids = [encoder.message("metrics", {}, now=NOW)["id"] for _ in range(2000)]
    ids += [error_of(encoder, RateLimited("slow down"))["id"] for _ in range(500)]
    ids += [encoder.next_id() for _ in range(500)]
    assert len(set(ids)) == len(ids) == 3000
    assert all(i.startswith("node7-") for i in ids)
    assert ids[:3] == ["node7-1", "node7-2", "node7-3"]


def test_default_prefixes_differ_between_encoders() -> None:
    """Without a prefix each encoder gets a random one, so ids differ across servers."""
    first, second = Encoder(), Encoder()
    assert first.prefix != second.prefix
    assert len(first.prefix) == 8
    assert first.next_id() != second.next_id()


def test_encode_gives_utf8_json() -> None:
    """encode() returns UTF-8 JSON bytes that load back to the message."""
    encoder = Encoder("srv")
    message = encoder.message("agent_update", {"name": "Agent_ü", "fitness": 0.943}, now=NOW)
    data = encoder.encode(message)
    assert isinstance(data, bytes)
    assert json.loads(data.decode("utf-8")) == message


# -- error ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (AuthFailed("token expired"), "AUTH_FAILED"),
        (Unauthorized("viewers may not control"), "UNAUTHORIZED"),
        (InvalidCommand("unknown command"), "INVALID_COMMAND"),
        (InvalidParameters("population_size must be > 1"), "INVALID_COMMAND"),
        (InvalidState("not running"), "INVALID_COMMAND"),
        (GenerationNotFound("no generation 95"), "INVALID_COMMAND"),
        (InvalidAgentCode("does not parse"), "INVALID_COMMAND"),
        (AgentNotFound("agent-9 does not exist"), "AGENT_NOT_FOUND"),
        (ConstraintViolation("8 KB > 6.5 KB"), "CONSTRAINT_VIOLATION"),
        (EvolutionFailed("Evolution process failed"), "EVOLUTION_FAILED"),
        (EvaluationError("fitness is NaN"), "EVOLUTION_FAILED"),
        (RateLimited("100 messages/second"), "RATE_LIMITED"),
        (StoreError("store missing"), "EVOLUTION_FAILED"),
        (TdevlabError("something"), "EVOLUTION_FAILED"),
    ],
)
def test_error_uses_the_exception_wire_code(exc: TdevlabError, code: str) -> None:
    """error() gives the spec's error format with the exception's wire code."""
    message = error_of(Encoder("srv"), exc)
    assert message["type"] == "error"
    assert message["error"] == {"code": code, "message": exc.message, "details": {}}
    assert message["id"] == "srv-1"
    assert parse_time(message["timestamp"]) == datetime.fromtimestamp(NOW, UTC)
    assert "data" not in message


def test_error_matches_the_spec_example() -> None:
    """The spec's EVOLUTION_FAILED example comes out with its details intact."""
    details = {"generation": 102, "reason": "Memory constraint violation", "agent_id": "agent-789"}
    message = error_of(Encoder("srv"), EvolutionFailed("Evolution process failed", details=details))
    assert message["error"] == {
        "code": "EVOLUTION_FAILED",
        "message": "Evolution process failed",
        "details": details,
    }


def test_error_strips_the_request_id_from_details() -> None:
    """details["id"] is not repeated on the wire, and the exception keeps it."""
    exc = InvalidCommand("bad", details={"id": "r1", "filter": "fitness_max"})
    message = error_of(Encoder("srv"), exc, reply_to="r1")
    assert message["error"]["details"] == {"filter": "fitness_max"}
    assert message["reply_to"] == "r1"
    assert exc.details == {"id": "r1", "filter": "fitness_max"}


def test_error_reply_to_only_when_given() -> None:
    """An error carries reply_to only for a known request id."""
    encoder = Encoder("srv")
    assert "reply_to" not in error_of(encoder, AuthFailed("x"))
    assert error_of(encoder, AuthFailed("x"), reply_to=5)["reply_to"] == 5
    assert error_of(encoder, AuthFailed("x"), reply_to=0)["reply_to"] == 0


def test_error_keeps_agent_not_found_message_readable() -> None:
    """A KeyError subclass's message goes out without repr quotes."""
    message = error_of(Encoder("srv"), AgentNotFound("agent 'a-1' not found"))
    assert message["error"]["message"] == "agent 'a-1' not found"


# -- binary -----------------------------------------------------------------------------------


def spec_receive(frame: bytes) -> tuple[dict[str, Any], str]:
    """Split a binary frame exactly as the spec's receiving example does."""
    metadata, *code = frame.decode("utf-8").split("\n")
    meta: dict[str, Any] = json.loads(metadata)
    return meta, "\n".join(code)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "x = 1",
        "line one\nline two\n",
        "\n\nstarts with blank lines",
        "ends with newlines\n\n\n",
        "crlf\r\nlines\r\n",
        "ünïcødé ✓ 🧬\nagent",
        '{"looks": "like json"}\n{"again": 1}',
    ],
)
def test_binary_frame_splits_like_the_spec_receiver(body: str) -> None:
    """metadata line + \\n + UTF-8 body; the spec's split gives back meta and body."""
    frame = Encoder("srv").binary({"type": "agent_code", "agent_id": "agent-1"}, body, now=NOW)
    assert isinstance(frame, bytes)
    meta, code = spec_receive(frame)
    assert meta == {
        "id": "srv-1",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "type": "agent_code",
        "agent_id": "agent-1",
    }
    assert code == body
    assert frame.endswith(body.encode("utf-8"))


def test_binary_metadata_with_newlines_stays_on_one_line() -> None:
    """Newlines inside metadata strings are escaped, so the first line is still the JSON."""
    frame = Encoder("srv").binary({"type": "agent_code", "note": "a\nb"}, "code\nmore", now=NOW)
    meta, code = spec_receive(frame)
    assert meta["note"] == "a\nb"
    assert code == "code\nmore"


def test_binary_frame_round_trips_through_parse_binary() -> None:
    """What the server sends as agent code parses back as an upload of the same code."""
    body = "def f():\n    return 1\n"
    frame = Encoder("srv").binary({"type": "agent_code", "agent_id": "agent-1"}, body, now=NOW)
    upload = parse_binary(frame)
    assert (upload.agent_id, upload.code, upload.id) == ("agent-1", body, "srv-1")


def test_binary_metadata_follows_id_and_timestamp() -> None:
    """The metadata line starts with id and timestamp, then the given fields."""
    frame = Encoder("srv").binary({"type": "agent_code"}, "", now=NOW)
    assert list(spec_receive(frame)[0]) == ["id", "timestamp", "type"]


metadata = st.dictionaries(
    st.text(max_size=10).filter(lambda key: key not in ("id", "timestamp")),
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    max_size=5,
)


@FAST
@given(metadata, st.text())
def test_any_binary_frame_splits_back(meta: dict[str, Any], body: str) -> None:
    """For any metadata and body, the spec's split recovers both."""
    encoder = Encoder("srv")
    got_meta, got_body = spec_receive(encoder.binary(meta, body, now=NOW))
    assert got_body == body
    assert {k: v for k, v in got_meta.items() if k not in ("id", "timestamp")} == meta
    assert got_meta["id"] == "srv-1"


@FAST
@given(st.text(max_size=30), st.text())
def test_any_agent_code_frame_parses_back(agent_id: str, body: str) -> None:
    """parse_binary reads back every agent_code frame the encoder writes."""
    frame = Encoder("srv").binary({"type": "agent_code", "agent_id": agent_id}, body, now=NOW)
    upload = parse_binary(frame)
    assert (upload.agent_id, upload.code) == (agent_id, body)


# -- echo caps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 256, "short"),
        ("x" * 256, 256, "x" * 256),
        ("x" * 257, 256, "x" * 253 + "..."),
        ("é" * 200, 256, "é" * 126 + "..."),  # 2 bytes each: cut on a character boundary
    ],
)
def test_clip_cuts_to_utf8_bytes(text: str, limit: int, expected: str) -> None:
    """clip keeps text within `limit` UTF-8 bytes and marks a cut with "..."."""
    assert clip(text, limit) == expected
    assert len(clip(text, limit).encode()) <= limit


@pytest.mark.slow
@given(
    st.recursive(
        st.text() | st.integers() | st.floats(),
        lambda v: st.lists(v) | st.dictionaries(st.text(), v),
    )
)
@FAST
def test_shown_is_a_bounded_repr_of_anything(value: Any) -> None:
    """shown(value) is at most ECHO_BYTES of UTF-8, whatever the value."""
    assert len(shown(value).encode("utf-8", "surrogatepass")) <= ECHO_BYTES


def test_shown_does_not_repr_a_huge_value_whole() -> None:
    """A megabyte string or list is shown abbreviated."""
    assert len(shown("x" * 1_000_000)) <= ECHO_BYTES
    assert shown([list(range(1000))] * 1000).startswith("[[0, 1, 2")


def test_error_is_bounded_whatever_the_exception_holds() -> None:
    """A huge message and details: the message cut to 2 KiB, detail strings to 256 bytes,
    lists to 16 items; the error stays far under MAX_REPLY_BYTES."""
    exc = InvalidCommand(
        "m" * 1_000_000,
        details={
            "value": "v" * 1_000_000,
            "names": ["n" * 1000] * 1000,
            "nested": {"a": {"b": {"c": {"d": "x" * 1000}}}},
            "number": 10**400,
        },
    )
    data = Encoder("srv").error(exc, now=NOW)
    assert len(data) < 8 * 1024
    error = json.loads(data)["error"]
    assert len(error["message"].encode()) <= 2048
    assert error["details"]["value"] == "v" * 253 + "..."
    assert len(error["details"]["names"]) == 16
    assert isinstance(error["details"]["nested"]["a"]["b"]["c"], str)
    assert len(error["details"]["number"]) <= ECHO_BYTES


def test_error_with_details_too_big_even_when_bounded_drops_them() -> None:
    """Details that stay over MAX_REPLY_BYTES after bounding are replaced by a marker."""
    wide = {f"k{i}": {f"j{j}": ["x" * 300] * 16 for j in range(16)} for i in range(16)}
    data = Encoder("srv").error(InvalidCommand("wide", details=wide), now=NOW)
    assert len(data) < MAX_REPLY_BYTES
    assert json.loads(data)["error"]["details"] == {"truncated": True}


@pytest.mark.parametrize("reply_to", ["r" * 257, "é" * 129, 2**63, -(2**63) - 1])
def test_a_reply_to_over_the_echo_cap_is_left_out(reply_to: Any) -> None:
    """Neither errors nor messages repeat an id no request could carry."""
    encoder = Encoder("srv")
    assert "reply_to" not in error_of(encoder, InvalidCommand("x"), reply_to=reply_to)
    assert "reply_to" not in encoder.message("ack", {}, now=NOW, reply_to=reply_to)
    assert encoder.message("ack", {}, now=NOW, reply_to="r" * 256)["reply_to"] == "r" * 256
