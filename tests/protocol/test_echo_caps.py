"""What a reply may repeat of a request: ids, timestamps, agent ids and names within the caps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tdevlab.exceptions import InvalidCommand
from tdevlab.protocol.envelope import ECHO_BYTES
from tdevlab.protocol.messages import (
    MAX_CODE_BYTES,
    Auth,
    Ping,
    parse_binary,
    parse_text,
    request_id,
)

LONG = "é" * 129  # 258 bytes: over the cap in bytes, under it in characters


def refused(fields: dict[str, Any]) -> InvalidCommand:
    """Assert parse_text refuses these fields; return the exception."""
    with pytest.raises(InvalidCommand) as info:
        parse_text(json.dumps(fields))
    return info.value


@pytest.mark.parametrize("rid", ["r" * ECHO_BYTES, "é" * 128, 2**63 - 1, -(2**63), 0])
def test_ids_within_the_cap_are_kept(rid: str | int) -> None:
    """A string id of 256 bytes or a 64-bit integer is kept (and so echoed)."""
    assert parse_text(json.dumps({"type": "ping", "id": rid})) == Ping(id=rid)
    assert request_id(json.dumps({"type": "nope", "id": rid})) == rid


@pytest.mark.parametrize("rid", ["r" * (ECHO_BYTES + 1), LONG, 2**63, -(2**63) - 1, 10**400])
def test_ids_over_the_cap_are_refused_without_being_repeated(rid: str | int) -> None:
    """A longer id is refused; the error neither names it nor carries it for reply_to."""
    error = refused({"type": "ping", "id": rid})
    assert "id" not in error.details
    assert str(rid)[:50] not in error.message
    assert request_id(json.dumps({"type": "nope", "id": rid})) is None


def test_an_invalid_message_with_a_long_id_gets_no_reply_to() -> None:
    """A message refused for another reason does not carry an over-long id either."""
    error = refused({"type": "subscribe", "channel": "nope", "id": "r" * 1000})
    assert "id" not in error.details


@pytest.mark.parametrize("timestamp", ["t" * ECHO_BYTES, 1704067200000, 1.5, -(2**63)])
def test_ping_timestamps_within_the_cap_are_kept(timestamp: str | float) -> None:
    """A number or a string of at most 256 bytes is echoed by the pong."""
    assert parse_text(json.dumps({"type": "ping", "timestamp": timestamp})).timestamp == timestamp  # type: ignore[union-attr]


@pytest.mark.parametrize("timestamp", ["t" * (ECHO_BYTES + 1), LONG, 10**30])
def test_ping_timestamps_over_the_cap_are_refused(timestamp: str | int) -> None:
    """A longer timestamp is refused with INVALID_COMMAND naming the cap."""
    error = refused({"type": "ping", "id": "p", "timestamp": timestamp})
    assert "256 bytes" in error.message
    assert error.details["id"] == "p"


@pytest.mark.parametrize("kind", ["get_agent", "get_agent_code"])
def test_agent_ids_over_the_cap_are_refused(kind: str) -> None:
    """An agent id over 256 bytes names no agent: refused before the engine sees it."""
    assert parse_text(json.dumps({"type": kind, "agent_id": "a" * ECHO_BYTES}))
    error = refused({"type": kind, "agent_id": "agent-" + "9" * 600_000, "id": "g"})
    assert len(error.message) < 200
    assert error.details["id"] == "g"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "subscribe", "channels": ["c" * 10_000] * 1000},
        {"type": "subscribe", "channel": "evolution", "filters": {"f" * 10_000: 1}},
        {"type": "subscribe", "channel": "evolution", "filters": {"fitness_min": ["v"] * 9999}},
        {"type": "subscribe", "channel": "evolution", "since": {"s" * 10_000: 1}},
        {"type": "command", "cmd": "c" * 100_000},
        {"type": "command", "cmd": "rollback", "args": {f"a{i}" * 500: 1 for i in range(100)}},
        {"type": "command", "cmd": "rollback", "args": {"generation": "g" * 100_000}},
        {"type": "t" * 100_000},
        {"type": "ping", "id": ["x" * 100_000]},
    ],
)
def test_errors_name_client_values_in_a_bounded_way(fields: dict[str, Any]) -> None:
    """Names and values from the request appear cut: the error stays small."""
    error = refused(fields)
    assert len(error.message.encode()) < 2 * 1024
    assert len(json.dumps(error.details)) < 4 * 1024


def test_a_token_of_any_type_parses_for_the_verifier_to_refuse() -> None:
    """auth's token is not typed by the parser: the verifier refuses it with AUTH_FAILED."""
    assert parse_text('{"type":"auth","token":{"a":1}}') == Auth(token={"a": 1})
    assert parse_text('{"type":"auth"}') == Auth(token=None)


def test_agent_code_upload_over_the_code_cap_is_refused() -> None:
    """Code over MAX_CODE_BYTES is refused: its get_agent_code reply must fit in 64 KiB."""
    head = b'{"type":"agent_code","id":"u"}\n'
    assert parse_binary(head + b"x" * MAX_CODE_BYTES).code == "x" * MAX_CODE_BYTES
    with pytest.raises(InvalidCommand, match="at most") as info:
        parse_binary(head + b"x" * (MAX_CODE_BYTES + 1))
    assert info.value.details["id"] == "u"


@pytest.mark.parametrize(
    "meta",
    [
        {"type": "agent_code", "id": "u" * 300},
        {"type": "agent_code", "id": 10**30},
        {"type": "agent_code", "agent_id": "a" * 300},
        {"type": "x" * 100_000},
    ],
)
def test_agent_code_upload_metadata_over_the_caps_is_refused(meta: dict[str, Any]) -> None:
    """A binary upload's id and agent_id are held to the echo cap; its type is shown cut."""
    with pytest.raises(InvalidCommand) as info:
        parse_binary(json.dumps(meta).encode() + b"\ncode")
    assert len(info.value.message) < 2 * ECHO_BYTES
    assert len(str(info.value.details.get("id"))) <= ECHO_BYTES
