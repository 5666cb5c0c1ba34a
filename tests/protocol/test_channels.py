"""The one table of channels and the event types they carry."""

from __future__ import annotations

import json

import pytest

from tdevlab.protocol import messages
from tdevlab.protocol.channels import CHANNEL_OF_EVENT, CHANNELS, EVENT_OF_CHANNEL
from tdevlab.protocol.messages import Subscribe, parse_text


def test_the_channels_are_the_spec_s_in_its_order() -> None:
    """spec: "Available Channels", each with the type of its events."""
    assert CHANNELS == ("evolution", "agents", "metrics", "alerts", "logs", "control")
    assert [EVENT_OF_CHANNEL[c] for c in CHANNELS] == [
        "evolution_update",
        "agent_update",
        "metrics",
        "alert",
        "log",
        "control_update",
    ]


def test_event_types_map_back_to_their_channel() -> None:
    """Each event type belongs to exactly one channel."""
    assert {CHANNEL_OF_EVENT[kind]: kind for kind in CHANNEL_OF_EVENT} == dict(EVENT_OF_CHANNEL)


def test_the_table_cannot_be_changed_by_an_importer() -> None:
    """The mappings are read-only views: nobody edits the shared fact in place."""
    with pytest.raises(TypeError):
        EVENT_OF_CHANNEL["extra"] = "extra_update"  # type: ignore[index]
    with pytest.raises(TypeError):
        CHANNEL_OF_EVENT["extra_update"] = "extra"  # type: ignore[index]


def test_the_parser_checks_channels_against_the_same_table() -> None:
    """messages.CHANNELS is this table, and every channel in it parses in a subscribe."""
    assert messages.CHANNELS is CHANNELS
    message = parse_text(json.dumps({"type": "subscribe", "channels": list(CHANNELS)}))
    assert isinstance(message, Subscribe)
    assert message.channels == list(CHANNELS)
