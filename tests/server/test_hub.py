"""The hub writes the first event of a loop turn at once and coalesces the rest, in order."""

from __future__ import annotations

import asyncio

from tests.conftest import eventually
from tests.serving import client, connection_of, make_server


def _log(text: str) -> dict[str, object]:
    return {"message": text, "details": {}, "generation": 0}


async def test_first_event_of_a_turn_is_written_at_once_later_ones_together() -> None:
    """publish() writes the turn's first event before it returns; the turn's later events
    go out in one write when the turn ends; the subscriber gets all of them in order."""
    async with make_server(metrics_interval=0) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["logs"]})
        connection = connection_of(server, "ada")
        await eventually(lambda: not connection.pending)  # the ack is out
        await asyncio.sleep(0)  # and the turn that wrote it has ended
        sent = connection.sent

        server.hub.publish("logs", "log", _log("one"), level="info")
        assert (connection.sent, connection.pending) == (sent + 1, [])
        server.hub.publish("logs", "log", _log("two"), level="info")
        server.hub.publish("logs", "log", _log("three"), level="info")
        assert (connection.sent, len(connection.pending)) == (sent + 1, 2)
        await asyncio.sleep(0)  # the turn ends: what it coalesced is written
        assert (connection.sent, connection.pending) == (sent + 3, [])

        server.hub.publish("logs", "log", _log("four"), level="info")  # a new turn
        assert connection.sent == sent + 4
        texts = [(await c.event("log"))["data"]["message"] for _ in range(4)]
        assert texts == ["one", "two", "three", "four"]


async def test_an_event_goes_behind_a_reply_pending_in_the_same_turn() -> None:
    """A frame already pending for a connection keeps its place: an event published after
    it is not written ahead of it."""
    async with make_server(metrics_interval=0) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["logs"]})
        connection = connection_of(server, "ada")
        await eventually(lambda: not connection.pending)  # the ack is out
        await asyncio.sleep(0)  # and the turn that wrote it has ended
        sent = connection.sent

        connection.enqueue(b'{"type":"pong","data":{}}')
        server.hub.publish("logs", "log", _log("after the pong"), level="info")
        assert (connection.sent, len(connection.pending)) == (sent, 2)
        first = await c.wait_for(lambda m: m.get("type") in ("pong", "log"))
        assert first["type"] == "pong"
        assert (await c.event("log"))["data"]["message"] == "after the pong"
