"""The strategy's front and archive in the client: get_front / get_archive, and frames that
follow the set live from agent updates, against a real server on 127.0.0.1.

The truth each test compares with is the engine's own ``member_set``; the client's copy is
built from one reply (asked for by the client itself when the run shows it keeps a set) and
the live updates after it. Every wait is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tdevlab
from tdevlab import Engine
from tdevlab.client import Backoff, Client
from tdevlab.client.frames import Frames
from tdevlab.client.members import MemberSet, set_columns
from tdevlab.engine import NSGA2, MapElites
from tdevlab.engine.params import Parameters
from tdevlab.exceptions import InvalidCommand
from tdevlab.server import EvolutionServer
from tests.conftest import eventually
from tests.serving import SECRET, TIMEOUT, make_server

#: Seconds between generations: slow enough that a run is followed generation by generation.
INTERVAL = 0.02


async def _event(client: Client, predicate: Callable[[dict[str, Any]], bool]) -> None:
    """Wait (bounded) for an evolution_update whose data satisfies ``predicate``."""
    async with asyncio.timeout(TIMEOUT):
        await client.wait_for("evolution", lambda m: predicate(m["data"]))


def _ids(data: dict[str, Any]) -> set[str]:
    return {agent["agent_id"] for agent in data["agents"]}


def _server(strategy: Any = None, **engine: Any) -> Any:
    settings = {"seed": 5, "population_size": 24, **engine}
    if strategy is not None:
        settings["strategy"] = strategy
    return make_server(engine=Engine(**settings), generation_interval=INTERVAL)


async def _follower(server: Any, role: str = "viewer") -> Client:
    client = await tdevlab.connect(server.url, token=server.token(f"{role}-1", role))
    await client.subscribe()
    return client


def _same_as_engine(frame: pd.DataFrame, truth: dict[str, Any], kind: str) -> None:
    """The client's frame has the engine's members with the engine's values."""
    assert set(frame.index) == _ids(truth)
    names = set_columns(truth["objectives" if kind == "front" else "descriptors"])
    for agent in truth["agents"]:
        row = frame.loc[agent["agent_id"]]
        assert row["name"] == agent["name"]
        for field in ("fitness", "memory_kb", "speed_us", "birth_generation"):
            assert row[field] == agent[field], field
        values = agent["objectives" if kind == "front" else "descriptors"]
        for column, value in zip(names, values, strict=True):
            assert row[column] == value, column
        if kind == "archive":
            assert [row[f"cell_{c}"] for c in names] == agent["cell"]


async def _settle(client: Client, server: Any, kind: str) -> dict[str, Any]:
    """Stop the run (acked once its generation ended); wait until the client has seen its
    last generation and holds the engine's set; return the engine's."""
    await client.stop()
    truth: dict[str, Any] = {}

    def caught_up() -> bool:
        nonlocal truth
        truth = server.engine.member_set(kind)
        if client.generation != truth["generation"]:
            return False
        return set(getattr(client.frames, kind).index) == _ids(truth)

    await eventually(caught_up)
    return truth


async def test_get_front_replies_with_the_engines_front() -> None:
    """get_front returns the front with its objectives and reference, for viewers too."""
    async with _server(NSGA2()) as server:
        operator = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await operator.subscribe("evolution")
        await operator.start()
        await _event(operator, lambda d: d["generation"] >= 3)
        await operator.stop()  # acked once the generation in progress ended
        viewer = await tdevlab.connect(server.url, token=server.token("val", "viewer"))
        reply = await viewer.get_front()
        truth = server.engine.member_set("front")
        assert reply == truth
        assert reply["objectives"] == ["max:fitness", "min:memory_kb", "min:speed_us"]
        assert len(reply["reference"]) == 3
        assert reply["agents"], "a feasible front after 3 generations"
        # A reply replaces the frames' copy at once, without any subscription.
        _same_as_engine(viewer.frames.front, truth, "front")
        seen: list[dict[str, Any]] = []
        viewer.on("front", seen.append)
        await viewer.get_front()
        assert [m["data"]["generation"] for m in seen] == [truth["generation"]]
        assert viewer.frames.front.attrs["generation"] == truth["generation"]
        with pytest.raises(InvalidCommand, match="nsga2"):
            await viewer.get_archive()
        await viewer.close()
        await operator.close()


async def test_a_subscribed_client_follows_the_front_live_and_across_a_rollback() -> None:
    """One reply (asked by the client itself), then agent updates keep frames.front equal
    to the engine's front; a rollback makes the client ask again."""
    async with _server() as server:
        client = await _follower(server, role="operator")
        ack = await client.start(strategy="nsga2")
        assert ack["strategy"]["name"] == client.strategy == "nsga2"
        await eventually(lambda: "generation" in client.frames.front.attrs)
        first = client.frames.front.attrs["generation"]
        await _event(client, lambda d: d["generation"] >= first + 6)
        truth = await _settle(client, server, "front")
        _same_as_engine(client.frames.front, truth, "front")
        # Only the first reply came: every later change was followed from updates.
        assert client.frames.front.attrs["generation"] == first
        assert truth["generation"] >= first + 6

        await client.rollback(first + 2)
        await client.start()
        await _event(
            client,
            lambda d: d["branch"] == 1 and d["generation"] >= first + 6,
        )
        truth = await _settle(client, server, "front")
        _same_as_engine(client.frames.front, truth, "front")
        assert client.frames.front.attrs["branch"] == 1  # asked again after the rollback
        await client.close()


async def test_a_subscribed_client_follows_the_archive_and_its_cells() -> None:
    """frames.archive follows the archive live: members, descriptors and the cells the
    client computes from the reply's bins and ranges, as the engine bins them."""
    async with _server() as server:
        client = await _follower(server, role="operator")
        strategy = {"name": "map-elites", "bins": [8, 6]}
        ack = await client.start(strategy=strategy, population_size=16)
        assert ack["strategy"]["config"]["bins"] == [8, 6]
        await eventually(lambda: "bins" in client.frames.archive.attrs)
        first = client.frames.archive.attrs["generation"]
        await _event(client, lambda d: d["generation"] >= first + 8)
        truth = await _settle(client, server, "archive")
        _same_as_engine(client.frames.archive, truth, "archive")
        assert client.frames.archive.attrs["generation"] == first
        assert client.frames.archive.attrs["ranges"] == [[0.0, 13.0], [0.0, 6.0]]
        assert len(client.frames.archive) == len(truth["agents"]) > 1
        reply = await client.get_archive()
        assert reply == server.engine.member_set("archive")
        assert client.frames.front.empty
        await client.close()


async def test_objectives_that_are_genes_get_gene_columns() -> None:
    """An objective that is a gene is a gene_<name> column, filled live from the genes."""
    strategy = NSGA2(objectives=["max:fitness", "min:temperature"])
    async with _server(strategy) as server:
        client = await _follower(server, role="operator")
        await client.start()
        await eventually(lambda: "objectives" in client.frames.front.attrs)
        first = client.frames.front.attrs["generation"]
        await _event(client, lambda d: d["generation"] >= first + 5)
        truth = await _settle(client, server, "front")
        assert "gene_temperature" in client.frames.front.columns
        _same_as_engine(client.frames.front, truth, "front")
        await client.close()


async def test_a_ga_run_keeps_no_set() -> None:
    """Under the GA both requests are refused naming it; the client never asks by itself."""
    async with _server() as server:
        client = await _follower(server, role="operator")
        await client.start()
        await _event(client, lambda d: d["generation"] >= 3)
        await client.stop()
        for request in (client.get_front, client.get_archive):
            with pytest.raises(InvalidCommand, match="'ga'") as refused:
                await request()
            assert refused.value.details["strategy"] == "ga"
        assert client.frames.front.empty
        assert client.frames.archive.empty
        assert not client.frames.member_sets["front"].known
        assert client.frames.rejected == 0
        await client.close()


async def test_after_a_reconnect_the_client_asks_for_the_set_again() -> None:
    """The front changed while the client was away (a rollback announces nothing): after
    reconnecting the client holds the engine's front again."""
    engine = Engine(seed=5, population_size=24, strategy=NSGA2())
    async with make_server(engine=engine, generation_interval=INTERVAL) as first:
        port = first.port
        client = await tdevlab.connect(
            first.url,
            token=first.token("ada", "operator"),
            backoff=Backoff(initial=0.05, cap=0.2, max_attempts=200),
        )
        await client.subscribe()
        await client.start()
        await _event(client, lambda d: d["generation"] >= 8)
        await _settle(client, first, "front")
    await eventually(lambda: client.connection_state == "reconnecting")
    await asyncio.to_thread(engine.rollback, 3)
    truth = _ids(engine.member_set("front"))
    assert set(client.frames.front.index) != truth  # the client's copy is stale now
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=SECRET):
        await eventually(lambda: set(client.frames.front.index) == truth)
        assert client.frames.front.attrs["generation"] == 3
        await client.close()


def test_the_sync_client_has_the_same_requests_and_frames() -> None:
    """connect_sync: start with a strategy, get_front / get_archive, frames.front."""
    server = _server()
    url = server.start()
    try:
        token = server.token("ada", "operator")
        with tdevlab.connect_sync(url, token=token) as client:
            client.subscribe()
            started = client.start(strategy={"name": "nsga2"}, population_size=20)
            assert started["strategy"]["name"] == client.strategy == "nsga2"
            client.wait_for("evolution", lambda m: m["data"]["generation"] >= 3, timeout=TIMEOUT)
            client.stop()
            reply = client.get_front()
            assert reply == server.engine.member_set("front")
            assert set(client.frames.front.index) == _ids(reply)
            future = client.call("get_front")
            assert future.result(TIMEOUT)["kind"] == "front"
            with pytest.raises(InvalidCommand, match="nsga2"):
                client.get_archive()
    finally:
        server.stop()


# -- the member set without a server: replies and updates in either order ------------------

STAMP = "2026-11-27T10:34:02.061Z"


def _reply(kind: str, generation: int, agents: list[dict[str, Any]], branch: int = 0) -> Any:
    data: dict[str, Any] = {
        "kind": kind,
        "generation": generation,
        "branch": branch,
        "strategy": "nsga2" if kind == "front" else "map-elites",
        "agents": agents,
    }
    if kind == "front":
        data.update(objectives=["max:fitness", "min:memory_kb"], reference=[0.0, 10.0])
    else:
        data.update(descriptors=["memory_kb", "speed_us"], bins=[4, 3], ranges=[[0, 8], [0, 3]])
    return {"type": kind, "id": "m1", "timestamp": STAMP, "reply_to": "c1", "data": data}


def _member(number: int, kind: str = "front", fitness: float = 0.5) -> dict[str, Any]:
    memory, speed = float(number % 8), float(number % 3)
    entry: dict[str, Any] = {
        "agent_id": f"agent-{number}",
        "name": f"Agent_v{number}",
        "fitness": fitness,
        "memory_kb": memory,
        "speed_us": speed,
        "birth_generation": 0,
    }
    if kind == "front":
        entry["objectives"] = [fitness, memory]
    else:
        entry["descriptors"] = [memory, speed]
        entry["cell"] = [min(int(memory / 8 * 4), 3), min(int(speed / 3 * 3), 2)]
    return entry


def _update(number: int, generation: int, reason: str, seq: int) -> dict[str, Any]:
    member = _member(number)
    return {
        "type": "agent_update",
        "id": f"u{seq}",
        "timestamp": STAMP,
        "channel": "agents",
        "seq": seq,
        "data": {
            **{k: member[k] for k in ("agent_id", "name", "fitness", "memory_kb", "speed_us")},
            "status": "evolving",
            "generation": generation,
            "birth_generation": 0,
            "parents": [],
            "genes": {"temperature": 0.5},
            "reason": reason,
        },
    }


def test_a_reply_then_newer_updates_that_came_before_it() -> None:
    """Updates newer than a reply that arrived before it are applied again after it."""
    frames = Frames()
    frames.ingest(_update(1, 1, "front", 1))
    frames.ingest(_update(2, 3, "front", 2))  # newer than the reply below
    frames.ingest(_update(1, 3, "left_front", 3))
    frames.ingest(_reply("front", 2, [_member(1), _member(3)]))
    assert frames.rejected == 0, frames.last_rejection
    assert sorted(frames.front.index) == ["agent-2", "agent-3"]
    assert frames.front.loc["agent-2", "memory_kb"] == 2.0


def test_updates_older_than_a_reply_converge() -> None:
    """Stale updates after a reply leave the set right once the channel has caught up."""
    frames = Frames()
    frames.ingest(_reply("front", 5, [_member(2)]))
    frames.ingest(_update(1, 4, "front", 1))  # entered at 4, left at 5 (both stale)
    frames.ingest(_update(1, 5, "left_front", 2))
    frames.ingest(_update(3, 6, "front", 3))
    assert sorted(frames.front.index) == ["agent-2", "agent-3"]


def test_malformed_replies_are_rejected_leaving_the_set() -> None:
    """A bad reply or member update is counted as rejected; the set is unchanged."""
    frames = Frames()
    frames.ingest(_reply("front", 1, [_member(1)]))
    version = frames.versions["front"]
    bad_replies = [
        {**_reply("front", 2, [_member(2)]), "data": None},
        _reply("front", "2", [_member(2)]),  # type: ignore[arg-type]
        _reply("front", 2, [{**_member(2), "fitness": "high"}]),
        _reply("front", 2, [{**_member(2), "objectives": [1.0]}]),
        _reply("archive", 2, [{**_member(2, "archive"), "agent_id": 7}]),
    ]
    bad_archive = _reply("archive", 2, [_member(2, "archive")])
    bad_archive["data"]["ranges"] = [[1, 0], [0, 3]]
    bad_update = _update(4, 2, "front", 1)
    bad_update["data"]["fitness"] = None
    for message in [*bad_replies, bad_archive, bad_update]:
        frames.ingest(message)
    assert frames.rejected == len(bad_replies) + 2
    assert frames.versions["front"] == version
    assert list(frames.front.index) == ["agent-1"]
    assert frames.agent_history.empty  # the bad update left no agent row either
    assert frames.archive.empty


def test_cells_are_computed_as_the_engine_bins(rng: np.random.Generator) -> None:
    """A live elite's cell equals MapElites.cell_of for values across and beyond the grid."""
    strategy = MapElites(bins=(7, 5))
    params = Parameters(memory_limit_kb=6.5, speed_limit_us=3.0)
    ranges = strategy.grid_ranges(params).tolist()
    values = np.column_stack([rng.uniform(-2, 15, 400), rng.uniform(-1, 7, 400)])
    values[:4] = [[0.0, 0.0], [13.0, 6.0], [6.5, 3.0], [13 / 7, 6 / 5]]  # edges exactly
    expected = np.unravel_index(strategy.cell_of(values, params), (7, 5))
    members = MemberSet("archive")
    reply = _reply("archive", 0, [])["data"]
    members.replace({**reply, "bins": [7, 5], "ranges": ranges})
    for i, (memory, speed) in enumerate(values.tolist()):
        data = copy.deepcopy(_update(i, 1, "archive", i)["data"])
        data.update(memory_kb=memory, speed_us=speed)
        members.update(data, True, 0)
    frame = members.frame
    assert frame["cell_memory_kb"].tolist() == expected[0].tolist()
    assert frame["cell_speed_us"].tolist() == expected[1].tolist()


def test_a_categorical_gene_is_missing_until_a_reply() -> None:
    """A live value the wire cannot give (a categorical gene's index) is missing, not wrong."""
    members = MemberSet("archive")
    reply = _reply("archive", 0, [])["data"]
    members.replace(
        {**reply, "descriptors": ["memory_kb", "architecture"], "ranges": [[0, 8], [0, 3]]}
    )
    data = _update(1, 1, "archive", 1)["data"]
    members.update({**data, "genes": {"architecture": "rnn"}}, True, 0)
    row = members.frame.loc["agent-1"]
    assert math.isnan(row["gene_architecture"])
    assert pd.isna(row["cell_gene_architecture"])
    assert row["cell_memory_kb"] == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def junk_replies(draw: st.DrawFn) -> Any:
    """A front or archive reply with fields of the set or of a member replaced by junk."""
    kind = draw(st.sampled_from(["front", "archive"]))
    message = _reply(kind, 3, [_member(1, kind), _member(2, kind)])
    data = message["data"]
    for _ in range(draw(st.integers(1, 3))):
        agents = data.get("agents")
        members = agents if isinstance(agents, list) and agents else [data]
        target = data if draw(st.booleans()) else draw(st.sampled_from(members))
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            target.pop(key)
        else:
            target[key] = draw(JSON)
    return message


@pytest.mark.parametrize(
    ("kind", "where", "key"),
    [("front", "member", "birth_generation"), ("archive", "member", "birth_generation"),
     ("archive", "set", "bins")],
)  # fmt: skip
@pytest.mark.parametrize("huge", [2**63, -(2**63) - 1, 2**70])
def test_integers_beyond_int64_are_rejected_whole(
    kind: str, where: str, key: str, huge: int
) -> None:
    """An integer no int64 column holds (found by the junk test below) rejects the reply
    whole: the set and its frame stay as they were."""
    frames = Frames()
    frames.ingest(_reply(kind, 1, [_member(9, kind)]))
    before = getattr(frames, kind).copy()
    message = _reply(kind, 2, [_member(1, kind), _member(2, kind)])
    if where == "member":
        message["data"]["agents"][1][key] = huge
    else:
        message["data"][key] = [huge, 3]
    frames.ingest(message)
    assert frames.rejected == 1
    pd.testing.assert_frame_equal(getattr(frames, kind), before)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(junk_replies(), max_size=6))
def test_junk_replies_are_taken_whole_or_not_at_all(messages: list[Any]) -> None:
    """A junk reply never raises: it replaces its set (which then builds a frame) or is
    counted as rejected, leaving the set as it was."""
    frames = Frames()
    frames.ingest(_reply("front", 1, [_member(9)]))
    frames.ingest(_reply("archive", 1, [_member(9, "archive")]))
    for message in messages:
        kind = message["type"]
        before = (frames.versions[kind], frames.rejected, getattr(frames, kind).copy())
        frames.ingest(message)
        if frames.rejected == before[1]:
            assert frames.versions[kind] == before[0] + 1
            assert len(getattr(frames, kind)) == len(message["data"]["agents"])
        else:
            assert frames.versions[kind] == before[0]
            pd.testing.assert_frame_equal(getattr(frames, kind), before[2])
