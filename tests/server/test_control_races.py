"""Concurrent control requests get one answer each, decided by the engine, over real sockets.

Two operator connections (or one connection twice) send control requests back to back;
every request is acked or refused, never acked and then failed: exactly one ``ack`` per
accepted action, the other ``INVALID_COMMAND`` with ``details.state``, no
``EVOLUTION_FAILED`` on the evolution channel, and a later ``stop`` ends the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tdevlab import Engine
from tdevlab.protocol.limits import Limits
from tests.serving import Client, client, make_server

ROUNDS = 50
# Requests come faster than the API's 100 messages/second here, on purpose.
FAST = Limits(messages_per_second=10_000)
#: Round trips over which a stopped run must make no generation.
PINGS = 5
# Parameters with a start: the engine validates them and the transition in one step.
GROW = {"population_size": 18, "mutation_rate": 0.2}


async def _replies(c: Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The replies to ``ids`` (any order), by id."""
    out: dict[str, dict[str, Any]] = {}
    while len(out) < len(ids):
        message = await c.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") in ids)
        out[message["reply_to"]] = message
    return out


async def _send_together(pairs: list[tuple[Client, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every request at once (one write each), then collect each one's reply."""
    await asyncio.gather(*(c.send(m) for c, m in pairs))
    replies = []
    for c, m in pairs:
        replies.append((await _replies(c, [m["id"]]))[m["id"]])
    return replies


def _failures(c: Client) -> list[Any]:
    return [
        m
        for m in c.buffer
        if isinstance(m, dict)
        and m.get("type") == "error"
        and m["error"]["code"] == "EVOLUTION_FAILED"
    ]


async def _stop_and_check(c: Client, round_: int, server: Any) -> None:
    """``stop`` ends the run: acked with state stopped, and no generation follows."""
    reply = await c.request({"type": "control", "action": "stop"})
    assert reply["type"] == "ack", (round_, reply)
    assert reply["data"]["state"] == "stopped"
    await _assert_stopped(server, c)


async def _assert_stopped(server: Any, c: Client) -> None:
    """The run is stopped and stays so: no generation across several round trips."""
    generation = server.engine.generation
    for _ in range(PINGS):
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert server.engine.state.value == "stopped"
    assert server.engine.generation == generation


def _refused_for_state(reply: dict[str, Any]) -> None:
    assert reply["type"] == "error", reply
    assert reply["error"]["code"] == "INVALID_COMMAND", reply
    assert "state" in reply["error"]["details"], reply


async def test_two_connections_starting_together_get_one_ack_and_one_refusal() -> None:
    """Two starts at once, 50 times: one ack, one INVALID_COMMAND naming the state."""
    server = make_server(
        engine=Engine(seed=1, population_size=16), generation_interval=0.005, limits=FAST
    )
    async with server, client(server, user="ada") as a, client(server, user="bob") as b:
        for c in (a, b):
            await c.request({"type": "subscribe", "channels": ["evolution"]})
        for round_ in range(ROUNDS):
            requests = [
                (a, {"type": "control", "action": "start", "id": f"a{round_}",
                     "parameters": {"population_size": 18}}),
                (b, {"type": "control", "action": "start", "id": f"b{round_}",
                     "parameters": {"population_size": 18}}),
            ]  # fmt: skip
            replies = await _send_together(requests)
            acks = [r for r in replies if r["type"] == "ack"]
            assert len(acks) == 1, (round_, replies)
            assert acks[0]["data"]["state"] == "running"
            refused = next(r for r in replies if r["type"] != "ack")
            _refused_for_state(refused)
            assert refused["error"]["details"]["state"] == "running"
            await _stop_and_check(a, round_, server)
        for c in (a, b):  # a pong comes after any error published before it
            assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert _failures(a) == []
        assert _failures(b) == []


async def test_one_connection_sending_start_twice_gets_one_ack() -> None:
    """The same connection sending start twice in one burst: one ack, one refusal."""
    server = make_server(
        engine=Engine(seed=2, population_size=16), generation_interval=0.005, limits=FAST
    )
    async with server, client(server) as a:
        await a.request({"type": "subscribe", "channels": ["evolution"]})
        for round_ in range(ROUNDS):
            ids = [f"x{round_}", f"y{round_}"]
            for rid in ids:
                await a.send({"type": "control", "action": "start", "id": rid, "parameters": GROW})
            replies = await _replies(a, ids)
            kinds = sorted(r["type"] for r in replies.values())
            assert kinds == ["ack", "error"], (round_, replies)
            _refused_for_state(replies[ids[1]])
            await _stop_and_check(a, round_, server)
        assert _failures(a) == []


async def test_start_and_stop_together_have_one_outcome_each() -> None:
    """start on one connection and stop on another, at once: each gets exactly one reply,
    consistent with the order the engine took them in, and the run ends stopped."""
    server = make_server(
        engine=Engine(seed=3, population_size=16), generation_interval=0.005, limits=FAST
    )
    async with server, client(server, user="ada") as a, client(server, user="bob") as b:
        await a.request({"type": "subscribe", "channels": ["evolution", "control"]})
        outcomes = set()
        for round_ in range(ROUNDS):
            start = {"type": "control", "action": "start", "id": f"s{round_}",
                     "parameters": GROW}  # fmt: skip
            stop = {"type": "control", "action": "stop", "id": f"t{round_}"}
            started, stopped = await _send_together([(a, start), (b, stop)])
            assert started["type"] == "ack", (round_, started)  # start is always valid here
            if stopped["type"] == "ack":
                # The engine took start first: the stop ended that run.
                assert stopped["data"]["state"] == "stopped"
                outcomes.add("stop after start")
            else:
                # The engine took stop first: nothing to stop; stop now.
                _refused_for_state(stopped)
                assert stopped["error"]["details"]["state"] in ("stopped", "idle")
                outcomes.add("stop before start")
                await _stop_and_check(b, round_, server)
            await _assert_stopped(server, a)
        assert _failures(a) == []
        assert outcomes  # which orders happened depends on the scheduler


async def test_rollback_while_starting_has_one_answer() -> None:
    """start and rollback at once: start is acked; the rollback is acked (run at that
    generation) or refused as INVALID_COMMAND naming the state, never an acked failure."""
    server = make_server(
        engine=Engine(seed=4, population_size=16), generation_interval=0.005, limits=FAST
    )
    async with server, client(server, user="ada") as a, client(server, user="bob") as b:
        await a.request({"type": "subscribe", "channels": ["evolution"]})
        for round_ in range(ROUNDS):
            start = {"type": "control", "action": "start", "id": f"s{round_}",
                     "parameters": GROW}  # fmt: skip
            rollback = {"type": "command", "cmd": "rollback", "id": f"r{round_}",
                        "args": {"generation": 0}}  # fmt: skip
            started, rolled = await _send_together([(a, start), (b, rollback)])
            assert started["type"] == "ack", (round_, started)
            if rolled["type"] == "ack":
                assert rolled["data"]["generation"] == 0
            else:
                _refused_for_state(rolled)  # generation 0 not made yet
            await _stop_and_check(a, round_, server)
        assert _failures(a) == []
