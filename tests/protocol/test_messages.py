"""Parsing client frames: every message type of the spec, and errors that name the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab.exceptions import InvalidCommand
from tdevlab.protocol.messages import (
    CHANNELS,
    FILTERS,
    TYPES,
    AgentCodeUpload,
    Auth,
    Control,
    GetAgent,
    GetAgentCode,
    Ping,
    Request,
    Rollback,
    SetParameters,
    Subscribe,
    Unsubscribe,
    parse_binary,
    parse_text,
    request_id,
)

FAST = settings(max_examples=200, deadline=None, database=None)
ACTIONS = ("start", "stop", "pause", "resume")
CODE = "def evolve(agent):\n    return agent  # é ✓\n\nprint('done')\n"

# The spec's example bodies, copied verbatim from the API document (websocket-api.md).
SPEC_AUTH = """{
  "type": "auth",
  "token": "<jwt_token>"
}"""
SPEC_SUBSCRIBE = """{
  "type": "subscribe",
  "channel": "evolution",
  "filters": {
    "generation_min": 100,
    "fitness_min": 0.9
  }
}"""
# The spec writes the action as "start|stop|pause|resume"; {action} stands for each of them.
SPEC_CONTROL = """{
  "type": "control",
  "action": "{action}",
  "parameters": {
    "population_size": 100,
    "mutation_rate": 0.15
  }
}"""
SPEC_GET_AGENT = """{
  "type": "get_agent",
  "agent_id": "agent-123"
}"""
SPEC_COMMAND = """{
  "type": "command",
  "cmd": "rollback",
  "args": {
    "generation": 95
  }
}"""
SPEC_SUBSCRIBE_CHANNELS = """{
  "type": "subscribe",
  "channels": ["evolution", "metrics", "alerts"]
}"""
SPEC_UNSUBSCRIBE = """{
  "type": "unsubscribe",
  "channels": ["logs"]
}"""
# What the spec's JavaScript sends: JSON.stringify({type: 'ping', timestamp: Date.now()}).
SPEC_PING = '{"type":"ping","timestamp":1704067200000}'


def invalid(text: str | bytes) -> InvalidCommand:
    """Assert parse_text refuses the frame with InvalidCommand; return the exception."""
    with pytest.raises(InvalidCommand) as info:
        parse_text(text)
    assert info.value.code == "INVALID_COMMAND"
    return info.value


def invalid_binary(data: bytes) -> InvalidCommand:
    """Assert parse_binary refuses the frame with InvalidCommand; return the exception."""
    with pytest.raises(InvalidCommand) as info:
        parse_binary(data)
    return info.value


def dumps(**fields: Any) -> str:
    """A text frame with these fields."""
    return json.dumps(fields)


# -- the spec's examples ----------------------------------------------------------------------


def test_spec_auth_example_parses() -> None:
    """The spec's auth message gives Auth(token)."""
    assert parse_text(SPEC_AUTH) == Auth(token="<jwt_token>")


def test_spec_subscribe_with_filters_example_parses() -> None:
    """The spec's channel + filters subscription keeps both."""
    message = parse_text(SPEC_SUBSCRIBE)
    assert message == Subscribe(
        channel="evolution", filters={"generation_min": 100, "fitness_min": 0.9}
    )
    assert isinstance(message, Subscribe)
    assert message.channels is None


@pytest.mark.parametrize("action", ACTIONS)
def test_spec_control_example_parses_for_each_action(action: str) -> None:
    """The spec's control message parses for start, stop, pause and resume."""
    message = parse_text(SPEC_CONTROL.replace("{action}", action))
    assert message == Control(
        action=action, parameters={"population_size": 100, "mutation_rate": 0.15}
    )


def test_control_action_is_left_to_the_engine() -> None:
    """The action is not checked here: the engine's transition table owns the actions."""
    message = parse_text(SPEC_CONTROL.replace("{action}", "start|stop|pause|resume"))
    assert isinstance(message, Control)
    assert message.action == "start|stop|pause|resume"


def test_spec_get_agent_example_parses() -> None:
    """The spec's agent status request gives GetAgent(agent_id)."""
    assert parse_text(SPEC_GET_AGENT) == GetAgent(agent_id="agent-123")


def test_spec_command_example_parses() -> None:
    """The spec's rollback command becomes a typed Rollback."""
    assert parse_text(SPEC_COMMAND) == Rollback(generation=95)


def test_set_parameters_command_becomes_typed() -> None:
    """``set_parameters`` becomes SetParameters with its args as the parameters."""
    message = parse_text(dumps(type="command", cmd="set_parameters", args={"x": 1}, id="s"))
    assert message == SetParameters(id="s", parameters={"x": 1})


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({}, "integer 'generation'"),
        ({"generation": "3"}, "integer 'generation'"),
        ({"generation": True}, "integer 'generation'"),
        ({"generation": 1.0}, "integer 'generation'"),
        ({"generation": 1, "branch": 2}, "['branch']"),
    ],
)
def test_bad_rollback_arguments_are_named(args: dict[str, Any], named: str) -> None:
    """Rollback takes exactly one integer ``generation``; anything else is named."""
    error = invalid(dumps(type="command", cmd="rollback", args=args, id=4))
    assert named in str(error)
    assert error.details["id"] == 4


def test_spec_channel_subscription_example_parses() -> None:
    """The spec's channels-list subscription keeps the list in order."""
    message = parse_text(SPEC_SUBSCRIBE_CHANNELS)
    assert message == Subscribe(channels=["evolution", "metrics", "alerts"])


def test_spec_unsubscription_example_parses() -> None:
    """The spec's unsubscribe gives Unsubscribe(channels)."""
    assert parse_text(SPEC_UNSUBSCRIBE) == Unsubscribe(channels=["logs"])


def test_spec_ping_example_parses() -> None:
    """The spec's heartbeat ping keeps its millisecond timestamp."""
    message = parse_text(SPEC_PING)
    assert message == Ping(timestamp=1704067200000)


def test_spec_python_client_frames_parse() -> None:
    """What the spec's Python client sends (json.dumps of dicts) parses."""
    assert parse_text(json.dumps({"type": "auth", "token": "t"})) == Auth(token="t")
    assert parse_text(json.dumps({"type": "subscribe", "channels": ["evolution", "metrics"]})) == (
        Subscribe(channels=["evolution", "metrics"])
    )


# -- each message type ------------------------------------------------------------------------


def test_parse_accepts_bytes() -> None:
    """A text frame given as UTF-8 bytes parses like the str."""
    assert parse_text(SPEC_GET_AGENT.encode()) == parse_text(SPEC_GET_AGENT)


@pytest.mark.parametrize("channel", CHANNELS)
def test_subscribe_to_each_channel(channel: str) -> None:
    """Every channel of the spec can be subscribed by name."""
    assert parse_text(dumps(type="subscribe", channel=channel)) == Subscribe(channel=channel)


def test_subscribe_with_channel_and_channels() -> None:
    """Both forms at once keep both fields."""
    message = parse_text(dumps(type="subscribe", channel="logs", channels=["metrics"]))
    assert message == Subscribe(channel="logs", channels=["metrics"])


def test_subscribe_with_since() -> None:
    """`since` maps channels to the last sequence number seen."""
    message = parse_text(dumps(type="subscribe", channels=["evolution"], since={"evolution": 7}))
    assert isinstance(message, Subscribe)
    assert message.since == {"evolution": 7}


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"generation_min": 0},
        {"fitness_min": -1.5},
        {"generation_min": 100, "fitness_min": 0.9},
        {"fitness_min": 1e300},
        {"generation_min": 10**20},
    ],
)
def test_subscribe_keeps_numeric_filters(filters: dict[str, Any]) -> None:
    """Finite numeric filters are kept as given."""
    message = parse_text(dumps(type="subscribe", channel="evolution", filters=filters))
    assert isinstance(message, Subscribe)
    assert message.filters == filters


def test_unsubscribe_by_channel() -> None:
    """Unsubscribe also accepts a single `channel`."""
    assert parse_text(dumps(type="unsubscribe", channel="logs")) == Unsubscribe(channel="logs")


def test_control_parameters_default_to_empty() -> None:
    """A control without parameters gets an empty dict."""
    assert parse_text(dumps(type="control", action="pause")) == Control(action="pause")
    message = parse_text(dumps(type="control", action="pause"))
    assert isinstance(message, Control)
    assert message.parameters == {}


def test_get_agent_code_parses() -> None:
    """get_agent_code carries the agent id."""
    assert parse_text(dumps(type="get_agent_code", agent_id="agent-1")) == GetAgentCode(
        agent_id="agent-1"
    )


def test_unknown_command_is_named() -> None:
    """An unknown command is refused naming it and the known commands."""
    error = invalid(dumps(type="command", cmd="explode", id="x1"))
    assert "'explode'" in str(error)
    assert "rollback" in str(error)
    assert error.details == {"id": "x1", "cmd": "explode"}


@pytest.mark.parametrize("timestamp", [0, 1704067200000, 1.5, "now", None])
def test_ping_keeps_timestamp(timestamp: Any) -> None:
    """A ping keeps whatever timestamp the client sent."""
    assert parse_text(dumps(type="ping", timestamp=timestamp)) == Ping(timestamp=timestamp)


def test_ping_without_timestamp() -> None:
    """A bare ping has timestamp None."""
    assert parse_text('{"type":"ping"}') == Ping()


@pytest.mark.parametrize("rid", ["abc", "", 0, 42, -7, 2**62])
@pytest.mark.parametrize(
    "fields",
    [
        {"type": "auth", "token": "t"},
        {"type": "subscribe", "channel": "metrics"},
        {"type": "unsubscribe", "channels": ["metrics"]},
        {"type": "control", "action": "start"},
        {"type": "get_agent", "agent_id": "a"},
        {"type": "get_agent_code", "agent_id": "a"},
        {"type": "command", "cmd": "rollback", "args": {"generation": 1}},
        {"type": "ping"},
    ],
)
def test_request_id_is_kept(rid: str | int, fields: dict[str, Any]) -> None:
    """An `id` given as a string or an integer is kept on every message type."""
    message = parse_text(json.dumps({**fields, "id": rid}))
    assert message.id == rid
    assert type(message.id) is type(rid)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"ping","timestamp":5,"extra":{"a":[1,2]},"x":null}', Ping(timestamp=5)),
        ('{"type":"get_agent","agent_id":"a","verbose":true}', GetAgent(agent_id="a")),
        ('{"type":"auth","token":"t","client":"js"}', Auth(token="t")),
        ('{"type":"unsubscribe","channels":["logs"],"filters":{"bogus":1}}', Unsubscribe(
            channels=["logs"]
        )),
    ],
)  # fmt: skip
def test_unknown_extra_fields_are_ignored(text: str, expected: Request) -> None:
    """Fields the spec does not name are ignored."""
    assert parse_text(text) == expected


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", '{"type":', "{'type': 'ping'}", "", "   "])
def test_non_json_is_refused(text: str) -> None:
    """Text that is not JSON is refused as such."""
    assert "not valid JSON" in str(invalid(text))


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "array"), ('[{"type":"ping"}]', "array"), ('"ping"', "str"), ("5", "int"),
     ("1.5", "float"), ("null", "null"), ("true", "bool")],
)  # fmt: skip
def test_json_that_is_not_an_object_is_refused(text: str, kind: str) -> None:
    """Only JSON objects are messages; the error says what was sent instead."""
    message = str(invalid(text))
    assert "object" in message
    assert kind in message


def test_missing_type_lists_known_types() -> None:
    """An object without `type` is refused, listing the known types."""
    message = str(invalid('{"token": "t"}'))
    assert "type" in message
    for name in TYPES:
        assert name in message


@pytest.mark.parametrize("kind", ["explode", "Auth", "", "agent_code", "pong", 5, None])
def test_unknown_type_lists_known_types(kind: Any) -> None:
    """An unknown `type` is refused, listing every known type."""
    message = str(invalid(dumps(type=kind)))
    assert "known types" in message
    for name in TYPES:
        assert repr(name) in message


def test_known_types_are_the_spec_client_types() -> None:
    """The parser knows the spec's client types plus get_agent_code, get_lineage, get_front,
    get_archive, get_population."""
    assert set(TYPES) == {
        "auth", "subscribe", "unsubscribe", "control", "get_agent", "get_agent_code",
        "get_lineage", "get_front", "get_archive", "get_population", "command", "ping",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"type": "get_agent", "agent_id": 5}, "$.agent_id"),
        ({"type": "get_agent_code", "agent_id": ["a"]}, "$.agent_id"),
        ({"type": "ping", "timestamp": {"t": 1}}, "$.timestamp"),
        ({"type": "ping", "timestamp": [1]}, "$.timestamp"),
        ({"type": "subscribe", "channel": 1}, "$.channel"),
        ({"type": "subscribe", "channels": "evolution"}, "$.channels"),
        ({"type": "subscribe", "channels": ["evolution", 2]}, "$.channels"),
        ({"type": "subscribe", "channel": "evolution", "filters": [1]}, "$.filters"),
        ({"type": "subscribe", "channel": "evolution", "since": {"evolution": "x"}}, "$.since"),
        ({"type": "unsubscribe", "channels": {"logs": 1}}, "$.channels"),
        ({"type": "control", "action": 1}, "$.action"),
        ({"type": "control", "action": "start", "parameters": []}, "$.parameters"),
        ({"type": "command", "cmd": None}, "$.cmd"),
        ({"type": "command", "cmd": "rollback", "args": "95"}, "$.args"),
        ({"type": "ping", "id": True}, "$.id"),
        ({"type": "ping", "id": 1.5}, "$.id"),
        ({"type": "ping", "id": ["a"]}, "$.id"),
    ],
)
def test_wrong_field_type_is_refused_naming_the_field(fields: dict[str, Any], path: str) -> None:
    """A field of the wrong type is refused; the message names the field."""
    message = str(invalid(json.dumps(fields)))
    assert message.startswith("invalid message")
    assert path in message


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"type": "control"}, "action"),
        ({"type": "get_agent"}, "agent_id"),
        ({"type": "get_agent_code"}, "agent_id"),
        ({"type": "command"}, "cmd"),
    ],
)
def test_missing_required_field_is_refused(fields: dict[str, Any], name: str) -> None:
    """A message without one of its required fields is refused, naming it."""
    assert name in str(invalid(json.dumps(fields)))


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"ping","timestamp":NaN}',
        '{"type":"ping","timestamp":Infinity}',
        '{"type":"ping","timestamp":-Infinity}',
        '{"type":"subscribe","channel":"evolution","filters":{"fitness_min":NaN}}',
    ],
)
def test_nan_and_infinity_literals_are_refused(text: str) -> None:
    """NaN and Infinity are not JSON and are refused."""
    invalid(text)


def test_deeply_nested_field_is_refused_not_a_recursion_error() -> None:
    """100000 nested arrays inside a field give InvalidCommand, not RecursionError."""
    depth = 100_000
    text = '{"type":"auth","id":"deep","token":' + "[" * depth + "]" * depth + "}"
    error = invalid(text)
    assert "deep" in str(error)


def test_deeply_nested_top_level_is_refused() -> None:
    """100000 nested arrays at the top level give InvalidCommand."""
    invalid("[" * 100_000 + "]" * 100_000)


def test_deeply_nested_objects_are_refused() -> None:
    """Deeply nested objects in control parameters give InvalidCommand."""
    depth = 50_000
    text = '{"type":"control","action":"start","parameters":' + '{"a":' * depth + "1" + "}" * depth
    invalid(text + "}")


def test_moderate_nesting_parses() -> None:
    """Moderate nesting (within limits) still parses."""
    nested: Any = 1
    for _ in range(20):
        nested = {"a": nested}
    message = parse_text(dumps(type="control", action="start", parameters=nested, id=3))
    assert message.id == 3


@pytest.mark.parametrize("channel", ["bogus", "Evolution", "", "evolution "])
def test_unknown_channel_is_named(channel: str) -> None:
    """An unknown channel is named in the message and in details."""
    error = invalid(dumps(type="subscribe", channels=["evolution", channel], id="s1"))
    assert repr(channel) in str(error)
    assert error.details == {"id": "s1", "unknown_channels": [channel]}


def test_unknown_channel_in_single_form_and_unsubscribe() -> None:
    """The `channel` form and unsubscribe check channel names too."""
    assert invalid(dumps(type="subscribe", channel="nope")).details["unknown_channels"] == ["nope"]
    error = invalid(dumps(type="unsubscribe", channels=["nope", "logs"]))
    assert error.details["unknown_channels"] == ["nope"]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "subscribe"},
        {"type": "subscribe", "channels": []},
        {"type": "subscribe", "channels": None},
        {"type": "subscribe", "filters": {"fitness_min": 1}},
        {"type": "unsubscribe"},
        {"type": "unsubscribe", "channels": []},
    ],
)
def test_subscribe_without_channels_is_refused(fields: dict[str, Any]) -> None:
    """subscribe and unsubscribe need `channel` or `channels`."""
    assert "needs 'channel' or 'channels'" in str(invalid(json.dumps(fields)))


@pytest.mark.parametrize("name", ["fitness_max", "generation", "", "Fitness_min"])
def test_unknown_filter_is_named(name: str) -> None:
    """An unknown filter is named in the message and in details."""
    error = invalid(dumps(type="subscribe", channel="evolution", filters={name: 1}))
    assert repr(name) in str(error)
    assert error.details["filter"] == name
    for known in FILTERS:
        assert known in str(error)


@pytest.mark.parametrize("value", ["high", "0.9", None, True, False, [0.9], {"v": 1}])
def test_non_numeric_filter_value_is_refused(value: Any) -> None:
    """Filter values must be numbers (booleans and numeric strings are not)."""
    error = invalid(dumps(type="subscribe", channel="evolution", filters={"fitness_min": value}))
    assert "fitness_min" in str(error)
    assert "finite number" in str(error)
    assert error.details["filter"] == "fitness_min"


@pytest.mark.parametrize("literal", ["1e999", "-1e999"])
def test_overflowing_filter_value_is_refused(literal: str) -> None:
    """1e999 (infinite as a float) is refused as a filter value."""
    text = '{"type":"subscribe","channel":"evolution","filters":{"fitness_min":' + literal + "}}"
    assert "filters" in str(invalid(text))


@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_integer_filter_value_is_refused(digits: int) -> None:
    """A huge integer filter value gives InvalidCommand (not OverflowError)."""
    text = (
        '{"type":"subscribe","channel":"evolution","filters":{"generation_min":'
        + "9" * digits
        + "}}"
    )
    invalid(text)


def test_unknown_since_channel_is_named() -> None:
    """`since` may only name known channels."""
    error = invalid(dumps(type="subscribe", channel="evolution", since={"bogus": 1}))
    assert "'bogus'" in str(error)
    assert error.details["channel"] == "bogus"


@pytest.mark.parametrize(
    ("text", "rid"),
    [
        ('{"type":"explode","id":"r1"}', "r1"),
        ('{"id":7}', 7),
        ('{"type":"get_agent","agent_id":5,"id":"r2"}', "r2"),
        ('{"type":"subscribe","channel":"bogus","id":"r3"}', "r3"),
        ('{"type":"subscribe","channel":"evolution","filters":{"x":1},"id":0}', 0),
        ('{"type":"command","cmd":"fly","id":"r4"}', "r4"),
        ('{"type":"subscribe","id":"r5"}', "r5"),
    ],
)
def test_request_id_is_recovered_into_details(text: str, rid: str | int) -> None:
    """When the object had a usable id, the error's details carry it."""
    assert invalid(text).details["id"] == rid


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type":"explode"}',
        '{"type":"explode","id":true}',
        '{"type":"explode","id":[1]}',
        '{"type":"explode","id":null}',
        '[{"id":"x"}]',
        '{"id":"x",',
    ],
)
def test_no_request_id_when_none_is_usable(text: str) -> None:
    """Without a usable id, details carry no id."""
    assert "id" not in invalid(text).details


@pytest.mark.parametrize(
    ("text", "rid"),
    [('{"id":"a"}', "a"), ('{"id":3}', 3), ('{"id":false}', None), ("[]", None), ("{", None),
     (b'{"id":"b"}', "b")],
)  # fmt: skip
def test_request_id_is_best_effort(text: str | bytes, rid: str | int | None) -> None:
    """request_id reads a string or integer id, else None."""
    assert request_id(text) == rid


def test_lone_surrogate_text_is_refused() -> None:
    """A str with a lone surrogate (not encodable as UTF-8) gives InvalidCommand."""
    invalid('{"type":"ping","id":"\ud800"}')


def test_invalid_utf8_bytes_are_refused() -> None:
    """Bytes that are not UTF-8 inside a JSON string give InvalidCommand."""
    invalid(b'{"type":"ping","id":"\xff"}')


def test_invalid_utf8_bytes_outside_strings_are_refused() -> None:
    """Bytes that are not UTF-8 outside strings give InvalidCommand."""
    invalid(b"\xff\xfe")


# -- binary frames ----------------------------------------------------------------------------

META = b'{"type":"agent_code","agent_id":"agent-1"}'


@pytest.mark.parametrize("separator", [b"\n", b"", b"\r\n"])
def test_binary_frame_forms_give_the_same_code(separator: bytes) -> None:
    """JSON then newline (spec receiving), JSON then code (spec sending) and CRLF all parse."""
    upload = parse_binary(META + separator + CODE.encode())
    assert upload == AgentCodeUpload(id=None, agent_id="agent-1", code=CODE)


def test_spec_blob_upload_parses() -> None:
    """The spec's Blob([JSON.stringify(meta), encode(code)]) frame parses."""
    meta = json.dumps({"type": "agent_code", "agent_id": "agent-123"}, separators=(",", ":"))
    upload = parse_binary(meta.encode() + b"x = 1\n")
    assert upload.agent_id == "agent-123"
    assert upload.code == "x = 1\n"


def test_binary_frame_strips_only_one_newline() -> None:
    """Code that itself starts with a newline keeps it (one separator is removed)."""
    assert parse_binary(META + b"\n\nbody").code == "\nbody"
    assert parse_binary(META + b"\r\n\r\nbody").code == "\r\nbody"


def test_binary_frame_split_like_the_spec_receiver() -> None:
    """The code equals what the spec's receiver gets from text.split('\\n')."""
    frame = META + b"\n" + CODE.encode()
    _, *code = frame.decode().split("\n")
    assert parse_binary(frame).code == "\n".join(code)


def test_binary_frame_keeps_the_request_id() -> None:
    """A string or integer id in the metadata is kept; other ids are dropped."""
    assert parse_binary(b'{"type":"agent_code","id":"u1"}\nx').id == "u1"
    assert parse_binary(b'{"type":"agent_code","id":12}\nx').id == 12
    assert parse_binary(b'{"type":"agent_code","id":true}\nx').id is None
    assert parse_binary(b'{"type":"agent_code","id":[1]}\nx').id is None


def test_binary_frame_without_agent_id_or_code() -> None:
    """agent_id is optional and the code may be empty."""
    assert parse_binary(b'{"type":"agent_code"}') == AgentCodeUpload(
        id=None, agent_id=None, code=""
    )


def test_binary_metadata_extra_fields_are_ignored() -> None:
    """Unknown metadata fields do not matter."""
    upload = parse_binary(b'{"type":"agent_code","agent_id":"a","lang":"py"}\ncode')
    assert upload == AgentCodeUpload(id=None, agent_id="a", code="code")


@pytest.mark.parametrize("data", [b"\xff\xfe", META + b"\n\xff", META + b"\n\xed\xa0\x80"])
def test_binary_frame_that_is_not_utf8_is_refused(data: bytes) -> None:
    """Binary frames must be UTF-8 (the code is text)."""
    assert "UTF-8" in str(invalid_binary(data))


@pytest.mark.parametrize(
    "data",
    [b"", b"code first\n" + META, b" " + META + b"\ncode", b"{", b"\n" + META, b"NaN\nx",
     b'{"type":"agent_code","agent_id":NaN}\nx'],
)  # fmt: skip
def test_binary_frame_without_leading_json_is_refused(data: bytes) -> None:
    """The frame must start with a JSON value."""
    assert "must start with a JSON metadata object" in str(invalid_binary(data))


@pytest.mark.parametrize("meta", [b"[1,2]", b'"agent_code"', b"5", b"null", b"true"])
def test_binary_metadata_that_is_not_an_object_is_refused(meta: bytes) -> None:
    """The metadata must be a JSON object."""
    assert "must be a JSON object" in str(invalid_binary(meta + b"\ncode"))


@pytest.mark.parametrize(
    "meta",
    [b'{"agent_id":"a"}', b'{"type":"auth"}', b'{"type":"agent-code"}', b'{"type":5}'],
)
def test_binary_metadata_of_another_type_is_refused(meta: bytes) -> None:
    """The metadata type must be agent_code."""
    assert "'agent_code'" in str(invalid_binary(meta + b"\ncode"))


def test_binary_metadata_type_error_keeps_the_id() -> None:
    """A wrong metadata type still reports the request id in details."""
    assert invalid_binary(b'{"type":"x","id":"u9"}\n').details == {"id": "u9"}


@pytest.mark.parametrize("agent_id", [b"5", b"[1]", b'{"a":1}', b"true"])
def test_binary_agent_id_must_be_a_string(agent_id: bytes) -> None:
    """A non-string agent_id is refused."""
    data = b'{"type":"agent_code","agent_id":' + agent_id + b"}\ncode"
    assert "agent_id" in str(invalid_binary(data))


def test_binary_deeply_nested_metadata_is_refused() -> None:
    """Deep nesting in the metadata gives InvalidCommand, not RecursionError."""
    depth = 100_000
    data = b'{"type":"agent_code","x":' + b"[" * depth + b"]" * depth + b"}\ncode"
    invalid_binary(data)


def test_binary_huge_integer_metadata_is_refused() -> None:
    """An integer over Python's digit limit in the metadata gives InvalidCommand."""
    invalid_binary(b'{"type":"agent_code","n":' + b"9" * 10_000 + b"}\ncode")


@pytest.mark.parametrize("field", ["id", "agent_id"])
def test_binary_metadata_strings_are_utf8_encodable(field: str) -> None:
    """A lone surrogate escape in the metadata is refused (as parse_text does), never kept."""
    data = b'{"type":"agent_code","' + field.encode() + b'":"\\udc00"}\ncode'
    try:
        upload = parse_binary(data)
    except InvalidCommand:
        return
    for value in (upload.id, upload.agent_id):
        if isinstance(value, str):
            value.encode("utf-8")  # a reply naming it would fail to encode otherwise


# -- properties -------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = (
    json_values
    | st.sampled_from(CHANNELS + ACTIONS + FILTERS)
    | st.lists(st.sampled_from(CHANNELS + ("bogus",)), max_size=4)
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from((*TYPES, "bogus")) | json_scalars},
    optional={
        "id": json_scalars,
        "token": field_values,
        "channel": field_values,
        "channels": field_values,
        "filters": st.dictionaries(st.sampled_from((*FILTERS, "x")), json_scalars, max_size=3)
        | json_values,
        "since": st.dictionaries(st.sampled_from((*CHANNELS, "x")), json_scalars, max_size=3),
        "action": field_values,
        "parameters": json_values,
        "agent_id": field_values,
        "cmd": field_values,
        "args": json_values,
        "timestamp": json_values,
    },
)


def assert_parses_or_refuses(text: str | bytes) -> Request | None:
    """parse_text returns a ClientMessage or raises InvalidCommand; nothing else."""
    try:
        message = parse_text(text)
    except InvalidCommand:
        return None
    assert isinstance(message, Request)
    return message


@FAST
@given(st.text())
def test_arbitrary_text_parses_or_is_invalid(text: str) -> None:
    """Any text gives a ClientMessage or InvalidCommand."""
    assert_parses_or_refuses(text)


@pytest.mark.slow
@FAST
@given(json_values)
def test_arbitrary_json_parses_or_is_invalid(value: Any) -> None:
    """Any JSON-ish value (NaN and Infinity included) gives a ClientMessage or InvalidCommand."""
    assert_parses_or_refuses(json.dumps(value))


@pytest.mark.slow
@FAST
@given(message_like)
def test_message_shaped_objects_parse_or_are_invalid(fields: dict[str, Any]) -> None:
    """Objects shaped like messages parse to the type they name, or are InvalidCommand."""
    message = assert_parses_or_refuses(json.dumps(fields))
    if message is not None:
        assert message.__struct_config__.tag == fields["type"]


@FAST
@given(st.binary())
def test_arbitrary_bytes_upload_parses_or_is_invalid(data: bytes) -> None:
    """Any binary frame gives an AgentCodeUpload or InvalidCommand."""
    try:
        upload = parse_binary(data)
    except InvalidCommand:
        return
    assert isinstance(upload, AgentCodeUpload)


@FAST
@pytest.mark.slow
@given(
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    st.sampled_from([b"\n", b"", b"\r\n", b"\n\n", b" "]),
    st.binary(max_size=40),
)
def test_metadata_then_arbitrary_bytes_parse_or_are_invalid(
    extra: dict[str, Any], separator: bytes, tail: bytes
) -> None:
    """agent_code metadata followed by any bytes gives an upload or InvalidCommand."""
    meta = {**extra, "type": "agent_code"}
    try:
        upload = parse_binary(json.dumps(meta).encode() + separator + tail)
    except InvalidCommand:
        return
    assert isinstance(upload, AgentCodeUpload)


@FAST
@given(st.text(max_size=30), st.text())
def test_uploaded_code_comes_back_exactly(agent_id: str, code: str) -> None:
    """With a newline separator, the code after the metadata is returned unchanged."""
    meta = json.dumps({"type": "agent_code", "agent_id": agent_id}).encode()
    upload = parse_binary(meta + b"\n" + code.encode())
    assert upload.agent_id == agent_id
    assert upload.code == code
