"""Frames: server messages in, typed pandas DataFrames and run datasets out."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdevlab import (
    AgentUpdate,
    Alert,
    ControlEvent,
    Engine,
    EvolutionUpdate,
    InvalidParameters,
    LogEntry,
    load_run,
)
from tdevlab.client.frames import CAPPED_TABLES, TABLES, Frames
from tdevlab.engine.events import STATUS_NAMES, STRATEGY_FIELDS
from tdevlab.protocol.envelope import Encoder
from tdevlab.store.export import build_dataset
from tdevlab.store.rows import GENERATION_COLUMNS

STAMP = "2026-11-27T10:34:02.061Z"
EVOLUTION: dict[str, Any] = {
    "id": "baa8df7b-4",
    "type": "evolution_update",
    "timestamp": STAMP,
    "channel": "evolution",
    "seq": 1,
    "data": {
        "generation": 0,
        "average_fitness": 0.1256,
        "best_fitness": 0.3153,
        "improvement": 0.0,
        "agents_evolved": 30,
        "mutations_applied": 0,
        "crossovers": 0,
        "run_id": None,
        "branch": 0,
        "population_size": 30,
        "feasible_fraction": 0.4,
        "diversity": 0.3656,
        "worst_fitness": 8.15e-09,
        "best_agent_id": "agent-26",
        "best_agent_name": "NL_Input_Agent_v26",
        "best_memory_kb": 3.05,
        "best_speed_us": 0.85,
        "mutation_rate": 0.15,
        "crossover_rate": 0.7,
        "evaluation_ms": 0.2139,
    },
}
AGENT: dict[str, Any] = {
    "id": "baa8df7b-5",
    "type": "agent_update",
    "timestamp": STAMP,
    "channel": "agents",
    "seq": 1,
    "data": {
        "agent_id": "agent-26",
        "name": "NL_Input_Agent_v26",
        "status": "elite",
        "fitness": 0.3153,
        "memory_kb": 3.05,
        "speed_us": 0.85,
        "generation": 0,
        "birth_generation": 0,
        "parents": [],
        "genes": {
            "learning_rate": 0.0074,
            "temperature": 0.55,
            "context_window": 491,
            "cache_kb": 0.18,
            "parallelism": 4,
            "architecture": "mlp",
            "retrieval": True,
            "tool_use": False,
            "memory": True,
        },
        "reason": "new_best",
    },
}
LOG: dict[str, Any] = {
    "id": "baa8df7b-10",
    "type": "log",
    "timestamp": STAMP,
    "channel": "logs",
    "seq": 1,
    "level": "info",
    "data": {
        "message": "Mutation applied to agent-31",
        "details": {
            "mutation_type": "parameter_adjustment",
            "gene_modified": "learning_rate",
            "old_value": 0.0244,
            "new_value": 0.0262,
            "agent_id": "agent-31",
        },
        "generation": 1,
    },
}
ALERT: dict[str, Any] = {
    "id": "baa8df7b-237",
    "type": "alert",
    "timestamp": STAMP,
    "channel": "alerts",
    "seq": 1,
    "severity": "warning",
    "data": {
        "alert_id": "alert-1",
        "kind": "fitness_regression",
        "title": "Fitness Regression Detected",
        "message": "Generation 31 fitness dropped by 10%",
        "details": {
            "previous_fitness": 0.419,
            "current_fitness": 0.376,
            "drop": 0.103,
            "affected_agents": ["agent-876"],
            "rollback_generation": 27,
        },
        "recommended_action": "rollback",
        "generation": 31,
    },
}
METRICS: dict[str, Any] = {
    "id": "baa8df7b-2290",
    "type": "metrics",
    "timestamp": STAMP,
    "channel": "metrics",
    "seq": 1,
    "data": {
        "cpu_usage": 102.8,
        "memory_usage": 0.26,
        "active_agents": 30,
        "requests_per_second": 6.43,
        "average_latency_ms": 0.824,
        "error_rate": 0.0,
        "connections": 1,
        "dropped_messages": 0,
    },
}
CONTROL: dict[str, Any] = {
    "id": "baa8df7b-3",
    "type": "control_update",
    "timestamp": STAMP,
    "channel": "control",
    "seq": 1,
    "data": {
        "action": "start",
        "state": "running",
        "previous_state": "idle",
        "generation": -1,
        "parameters": {"mutation_rate": 0.15},
    },
}
SAMPLES = [EVOLUTION, AGENT, LOG, ALERT, METRICS, CONTROL]

UTC = "datetime64[ns, UTC]"
AGENT_DTYPES = {
    "name": "string",
    "status": "category",
    "fitness": "float64",
    "memory_kb": "float64",
    "speed_us": "float64",
    "generation": "int64",
    "birth_generation": "int64",
    "parents": "object",
    "reason": "category",
    "branch": "int64",
    "seq": "Int64",
    "timestamp": UTC,
}
DTYPES: dict[str, dict[str, str]] = {
    "evolution": {
        "average_fitness": "float64",
        "best_fitness": "float64",
        "improvement": "float64",
        "agents_evolved": "int64",
        "mutations_applied": "int64",
        "crossovers": "int64",
        "run_id": "Int64",
        "branch": "int64",
        "population_size": "int64",
        "feasible_fraction": "float64",
        "diversity": "float64",
        "worst_fitness": "float64",
        "best_agent_id": "string",
        "best_agent_name": "string",
        "best_memory_kb": "float64",
        "best_speed_us": "float64",
        "mutation_rate": "float64",
        "crossover_rate": "float64",
        "evaluation_ms": "float64",
        "front_size": "float64",
        "hypervolume": "float64",
        "archive_coverage": "float64",
        "qd_score": "float64",
        "seq": "Int64",
        "timestamp": UTC,
    },
    "agents": AGENT_DTYPES,
    "agent_history": {"agent_id": "string", **AGENT_DTYPES},
    "metrics": {
        "cpu_usage": "float64",
        "memory_usage": "float64",
        "active_agents": "int64",
        "requests_per_second": "float64",
        "average_latency_ms": "float64",
        "error_rate": "float64",
        "connections": "int64",
        "dropped_messages": "int64",
        "seq": "Int64",
    },
    "alerts": {
        "timestamp": UTC,
        "severity": "category",
        "alert_id": "string",
        "kind": "category",
        "title": "string",
        "message": "string",
        "recommended_action": "string",
        "generation": "int64",
        "details": "object",
        "branch": "int64",
        "seq": "Int64",
    },
    "logs": {
        "timestamp": UTC,
        "level": "category",
        "message": "string",
        "generation": "int64",
        "details": "object",
        "branch": "int64",
        "seq": "Int64",
    },
    "control": {
        "timestamp": UTC,
        "action": "category",
        "state": "category",
        "previous_state": "category",
        "generation": "int64",
        "parameters": "object",
    },
}
INDEX = {
    "evolution": ("generation", "int64"),
    "agents": ("agent_id", "string"),
    "metrics": ("timestamp", UTC),
}
GENE_DTYPES = {
    "gene_learning_rate": "float64",
    "gene_context_window": "int64",
    "gene_architecture": "category",
    "gene_retrieval": "bool",
}


def evolution(generation: int, branch: int = 0, **changes: Any) -> dict[str, Any]:
    """An evolution_update message for ``generation`` on ``branch``."""
    message = copy.deepcopy(EVOLUTION)
    message["seq"] = generation + 1
    message["data"].update(generation=generation, branch=branch, **changes)
    return message


def agent(agent_id: str, status: str, generation: int, **top: Any) -> dict[str, Any]:
    """An agent_update message."""
    message = copy.deepcopy(AGENT)
    message.update(top)
    message["data"].update(agent_id=agent_id, status=status, generation=generation)
    return message


def rollback_alert(generation: int, branch: int, abandoned: int) -> dict[str, Any]:
    """The alert the engine sends when it rolls back."""
    message = copy.deepcopy(ALERT)
    message["data"].update(
        kind="rollback",
        title="Rollback Performed",
        recommended_action=None,
        generation=generation,
        details={"generation": generation, "branch": branch, "abandoned_branch": abandoned},
    )
    return message


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    """A frame's column dtypes as text."""
    return {str(k): str(v) for k, v in frame.dtypes.items()}


def assert_same_tables(a: Frames, b: Frames) -> None:
    """Every table of ``a`` equals ``b``'s, values and dtypes."""
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)


# -- tables and dtypes ---------------------------------------------------------------------


def test_every_table_has_its_columns_and_dtypes() -> None:
    """Each wire sample lands in its table with the documented columns, index and dtypes."""
    frames = Frames()
    frames.ingest_many(SAMPLES)
    assert frames.rejected == 0, frames.last_rejection
    for name in TABLES:
        frame = getattr(frames, name)
        assert len(frame) == 1, name
        got = dtypes(frame)
        assert {k: got[k] for k in DTYPES[name]} == DTYPES[name], name
        assert list(got)[: len(DTYPES[name])] == list(DTYPES[name]), name
        if name in INDEX:
            assert (frame.index.name, str(frame.index.dtype)) == INDEX[name]
    for name in ("agents", "agent_history"):
        got = dtypes(getattr(frames, name))
        assert {k: got[k] for k in GENE_DTYPES} == GENE_DTYPES
    row = frames.evolution.iloc[0]
    assert row["best_agent_id"] == "agent-26"
    assert pd.isna(row["run_id"])
    assert row["timestamp"] == pd.Timestamp(STAMP)
    assert frames.metrics.index[0] == pd.Timestamp(STAMP)
    assert list(frames.agents["status"].cat.categories) == list(STATUS_NAMES)
    assert frames.alerts["details"].iloc[0]["affected_agents"] == ["agent-876"]
    assert frames.logs["level"].iloc[0] == "info"


def test_empty_tables_have_the_same_columns_and_dtypes() -> None:
    """A fresh Frames returns empty DataFrames typed like filled ones (genes come with agents)."""
    frames = Frames()
    for name in TABLES:
        frame = getattr(frames, name)
        assert frame.empty, name
        assert dtypes(frame) == DTYPES[name], name
        if name in INDEX:
            assert (frame.index.name, str(frame.index.dtype)) == INDEX[name]


def test_unknown_types_are_ignored_and_replies_count() -> None:
    """ack/pong/error are ignored; a requested agent_update (reply_to, no seq) is real data."""
    frames = Frames()
    frames.ingest({"id": "a", "type": "ack", "timestamp": STAMP, "reply_to": "r1", "data": {}})
    frames.ingest({"id": "b", "type": "pong", "timestamp": STAMP})
    assert (frames.ignored, frames.rejected, frames.version) == (2, 0, 0)
    frames.ingest(agent("agent-7", "evolving", 3))
    reply = agent("agent-7", "retired", 9, reply_to="r2")
    del reply["seq"], reply["channel"]
    reply["data"]["reason"] = "requested"
    frames.ingest(reply)
    assert frames.rejected == 0, frames.last_rejection
    latest = frames.agents.loc["agent-7"]
    assert (latest["status"], latest["generation"], latest["reason"]) == ("retired", 9, "requested")
    assert pd.isna(latest["seq"])
    assert list(frames.agent_history["status"]) == ["evolving", "retired"]


def test_agents_keep_the_latest_state_of_each_agent() -> None:
    """agents has one row per agent (first-seen order), agent_history every update."""
    frames = Frames()
    frames.ingest_many(
        [
            agent("agent-1", "elite", 0),
            agent("agent-2", "elite", 0),
            agent("agent-1", "evolving", 1),
            agent("agent-3", "violating", 2),
        ]
    )
    assert list(frames.agents.index) == ["agent-1", "agent-2", "agent-3"]
    assert list(frames.agents["status"]) == ["evolving", "elite", "violating"]
    assert list(frames.agents["generation"]) == [1, 0, 2]
    assert len(frames.agent_history) == 4


def test_an_unknown_category_value_is_kept() -> None:
    """A status or level outside the known set is added after the known categories."""
    frames = Frames()
    frames.ingest(agent("agent-1", "dormant", 0))
    frames.ingest({**LOG, "level": "debug"})
    assert list(frames.agents["status"].cat.categories) == [*STATUS_NAMES, "dormant"]
    assert frames.agents["status"].iloc[0] == "dormant"
    assert frames.logs["level"].iloc[0] == "debug"


# -- caching and versions ------------------------------------------------------------------


def test_frames_are_built_lazily_and_cached_until_new_rows() -> None:
    """A table returns the same object until it gets a row; other tables' rows do not matter."""
    frames = Frames()
    frames.ingest(evolution(0))
    first = frames.evolution
    metrics = frames.metrics
    assert frames.evolution is first
    frames.ingest(METRICS)
    frames.ingest({"id": "x", "type": "pong", "timestamp": STAMP})
    frames.ingest({"type": "evolution_update", "data": {}})  # rejected
    assert frames.evolution is first
    assert frames.metrics is not metrics
    assert len(frames.metrics) == 1
    frames.ingest(evolution(1))
    second = frames.evolution
    assert second is not first
    assert list(second.index) == [0, 1]
    assert list(first.index) == [0]
    agents = frames.agents
    frames.ingest(agent("agent-1", "elite", 0))
    assert frames.agents is not agents
    assert frames.agents is frames.agents


def test_versions_grow_with_each_accepted_message() -> None:
    """version grows by one per accepted message, per table too; clear() still grows it."""
    frames = Frames()
    seen = [frames.version]
    for message in SAMPLES:
        before = frames.versions
        frames.ingest(message)
        seen.append(frames.version)
        changed = {k for k, v in frames.versions.items() if v != before[k]}
        expected = {
            "evolution_update": {"evolution"},
            "agent_update": {"agents", "agent_history"},
            "log": {"logs"},
            "alert": {"alerts"},
            "metrics": {"metrics"},
            "control_update": {"control"},
        }[message["type"]]
        assert changed == expected
    assert seen == list(range(7))
    frames.ingest({"type": "metrics"})
    frames.ingest({"type": "hello"})
    assert frames.version == 6
    before = frames.versions
    frames.clear()
    assert frames.version > 6
    assert all(v > before[k] for k, v in frames.versions.items())
    assert all(getattr(frames, name).empty for name in TABLES)
    assert (frames.rejected, frames.ignored) == (0, 0)


# -- row caps ------------------------------------------------------------------------------


def test_row_caps_keep_the_newest_rows_and_count_the_dropped() -> None:
    """Past max_rows the oldest rows go, at once or in blocks; frames never show more."""
    frames = Frames(max_rows={"evolution": 10, "metrics": None})
    for g in range(1000):
        frames.ingest(evolution(g))
        frames.ingest(METRICS)
        if g % 97 == 0:
            assert len(frames.evolution) == min(g + 1, 10)
    assert list(frames.evolution.index) == list(range(990, 1000))
    assert frames.dropped["evolution"] == 990
    assert len(frames.metrics) == 1000
    assert frames.dropped["metrics"] == 0
    assert frames.max_rows["logs"] == 100_000
    assert frames.version == 2000  # dropped rows still count as accepted


def test_capped_evolution_keeps_its_strings_right_and_bounded() -> None:
    """With a new best agent every generation, the kept rows name theirs; old names go."""
    frames = Frames(max_rows=5)
    for g in range(5000):
        frames.ingest(evolution(g, best_agent_id=f"agent-{g}", best_agent_name=f"Agent_v{g}"))
    tail = frames.evolution
    assert list(tail["best_agent_id"]) == [f"agent-{g}" for g in range(4995, 5000)]
    assert list(tail["best_agent_name"]) == [f"Agent_v{g}" for g in range(4995, 5000)]
    assert len(frames._evolution.strings) < 2500  # the string dictionary is compacted


def test_agents_survive_history_caps() -> None:
    """The agents table keeps every agent even when agent_history drops rows."""
    frames = Frames(max_rows=2)
    for n in range(600):
        frames.ingest(agent(f"agent-{n}", "elite", n))
    assert len(frames.agent_history) == 2
    assert frames.dropped["agent_history"] == 598
    assert len(frames.agents) == 600


@pytest.mark.parametrize(
    "max_rows",
    [-1, 1.5, True, "10", {"population": 5}, {"evolution": -3}, ["evolution"]],
)
def test_bad_row_caps_are_refused(max_rows: Any) -> None:
    """A negative, non-int or unknown-table cap raises InvalidParameters."""
    with pytest.raises(InvalidParameters):
        Frames(max_rows=max_rows)


def test_unbounded_and_zero_caps() -> None:
    """max_rows=None keeps everything; 0 keeps nothing but still counts."""
    unbounded, nothing = Frames(max_rows=None), Frames(max_rows=0)
    for g in range(300):
        unbounded.ingest(evolution(g))
        nothing.ingest(evolution(g))
    assert len(unbounded.evolution) == 300
    assert unbounded.dropped["evolution"] == 0
    assert nothing.evolution.empty
    assert nothing.dropped["evolution"] == 300
    assert set(unbounded.dropped) == set(CAPPED_TABLES)


# -- malformed messages --------------------------------------------------------------------


def broken(message: dict[str, Any], path: tuple[str, ...], value: Any = KeyError) -> Any:
    """A copy of ``message`` with ``path`` deleted (value KeyError) or set to ``value``."""
    out = copy.deepcopy(message)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


BAD = [
    broken(EVOLUTION, ("data", "evaluation_ms")),  # the last numeric field missing
    broken(EVOLUTION, ("data", "evaluation_ms"), "fast"),
    broken(EVOLUTION, ("data", "generation"), 1.5),
    broken(EVOLUTION, ("data", "generation"), 2**70),
    broken(EVOLUTION, ("data", "best_agent_name"), None),
    broken(EVOLUTION, ("timestamp",), "yesterday"),
    broken(EVOLUTION, ("timestamp",), "2026-11-27T10:34:02"),  # no time zone
    broken(EVOLUTION, ("timestamp",), "9999-01-01T00:00:00Z"),  # beyond datetime64[ns]
    broken(EVOLUTION, ("data",), [1, 2]),
    broken(AGENT, ("data", "parents"), ["agent-1", 2]),
    broken(AGENT, ("data", "genes"), {"depth": [1]}),
    broken(AGENT, ("data", "reason")),
    broken(LOG, ("level",)),
    broken(LOG, ("data", "details"), "none"),
    broken(ALERT, ("data", "recommended_action"), 3),
    broken(ALERT, ("severity",), None),
    broken(METRICS, ("data", "connections"), "1"),
    broken(CONTROL, ("data", "parameters"), None),
    {"data": {}},
    None,
    "evolution_update",
    [EVOLUTION],
    {"type": ["evolution_update"]},
]


def test_malformed_messages_are_rejected_leaving_no_trace() -> None:
    """Each malformed message is counted, with a reason; the tables stay as they were."""
    frames = Frames()
    frames.ingest_many(SAMPLES)
    reference = Frames()
    reference.ingest_many(SAMPLES)
    version = frames.version
    for n, message in enumerate(BAD, 1):
        frames.ingest(message)
        assert frames.rejected == n, message
        assert frames.last_rejection
    assert frames.version == version
    assert_same_tables(frames, reference)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
KEYS = sorted({k for m in SAMPLES for k in m} | {k for m in SAMPLES for k in m["data"]})


@st.composite
def junk(draw: st.DrawFn) -> Any:
    """A wire sample with fields removed or replaced by arbitrary JSON, or plain junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    message = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 3))):
        target = (
            message
            if draw(st.booleans()) or not isinstance(message.get("data"), dict)
            else message["data"]
        )
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(JSON | st.sampled_from(["agent-1", 3, 2.5, "abandoned_branch"]))
    return message


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(junk(), max_size=12))
def test_junk_never_breaks_the_tables(messages: list[Any]) -> None:
    """Arbitrary junk never raises; each message is accepted, rejected or ignored, and the
    tables equal those built from the accepted messages alone."""
    frames, accepted = Frames(), Frames()
    for message in messages:
        before = (frames.version, frames.rejected, frames.ignored)
        frames.ingest(message)
        after = (frames.version, frames.rejected, frames.ignored)
        assert sum(a - b for a, b in zip(after, before, strict=True)) == 1
        if after[0] > before[0]:
            accepted.ingest(message)
    assert accepted.rejected == 0
    assert_same_tables(frames, accepted)
    run = frames.to_run()
    assert len(run.generations) == len(frames.evolution)
    assert len(run.events) == len(frames.agent_history) + len(frames.logs) + len(frames.alerts)


# -- branches and datasets -----------------------------------------------------------------


def test_rollback_branches_mark_the_active_lineage() -> None:
    """After rollbacks generations repeat across branches; active follows the latest lineage."""
    frames = Frames()
    frames.ingest_many(evolution(g) for g in range(10))  # branch 0: 0..9
    frames.ingest(rollback_alert(5, branch=1, abandoned=0))
    frames.ingest_many(evolution(g, branch=1) for g in range(6, 9))  # branch 1: 6..8
    # No alert for this one: the fork is inferred from the first row of branch 2.
    frames.ingest_many(evolution(g, branch=2) for g in range(8, 11))  # branch 2: 8..10
    assert not frames.evolution.index.is_unique
    generations = frames.to_run().generations
    active = generations[generations["active"]]
    assert list(zip(active["branch"], active["generation"], strict=True)) == [
        *((0, g) for g in range(6)),
        (1, 6),
        (1, 7),
        *((2, g) for g in range(8, 11)),
    ]
    branches = frames.to_run().metadata["branches"]
    assert branches == [
        {"branch": 0, "parent_branch": None, "fork_generation": -1},
        {"branch": 1, "parent_branch": 0, "fork_generation": 5},
        {"branch": 2, "parent_branch": 1, "fork_generation": 7},
    ]
    assert frames.alerts["branch"].iloc[0] == 1  # a rollback's alert belongs to the new branch


def test_to_parquet_round_trips_through_load_run(tmp_path: Path) -> None:
    """to_parquet writes a dataset load_run reads back with equal values and dtypes."""
    frames = Frames()
    frames.ingest_many(SAMPLES)
    frames.ingest_many(evolution(g, run_id=4) for g in range(1, 5))
    frames.ingest(agent("agent-40", "violating", 3, seq=2))
    run = frames.to_run({"run": {"problem": "agent_design"}})
    path = frames.to_parquet(tmp_path / "ds", {"run": {"problem": "agent_design"}})
    loaded = load_run(path)
    for name, table in run.tables().items():
        pd.testing.assert_frame_equal(table, loaded.tables()[name], check_exact=True)
    meta = loaded.metadata
    assert meta["source"] == "client frames"
    assert meta["population_complete"] is False
    assert meta["run"]["problem"] == "agent_design"
    assert meta["run"]["run_id"] == 4
    assert (loaded.generations["run_id"] == 4).all()
    assert loaded.population.empty
    assert list(loaded.events["kind"]) == ["agent_update", "log", "alert", "agent_update"]
    assert loaded.agents.set_index("agent_id").loc["agent-40", "feasible"] == np.False_


def test_empty_frames_make_a_loadable_dataset(tmp_path: Path) -> None:
    """Nothing received still writes a dataset with every table's columns."""
    path = Frames().to_parquet(tmp_path / "empty")
    loaded = load_run(path)
    assert all(table.empty for table in loaded.tables().values())
    assert list(loaded.generations.columns) == ["run_id", *GENERATION_COLUMNS, "active"]


# -- a real engine's stream ----------------------------------------------------------------


def wire(engine: Engine) -> list[bytes]:
    """Subscribe to ``engine`` and encode its events as the server publishes them."""
    encoder = Encoder("test")
    seq: dict[str, int] = {}
    out: list[bytes] = []

    def publish(channel: str, type_: str, data: Any, now: float, number: int | None = None,
                **top: Any) -> None:  # fmt: skip
        seq[channel] = seq.get(channel, 0) + 1 if number is None else number
        message = encoder.message(type_, data, now=now, channel=channel, seq=seq[channel], **top)
        out.append(encoder.encode(message))

    def listener(event: Any) -> None:  # as EvolutionServer._publish_engine_event
        if isinstance(event, EvolutionUpdate):
            data = event.to_dict()
            now = data.pop("timestamp")
            publish("evolution", "evolution_update", data, now, engine.recorded_generations)
        elif isinstance(event, AgentUpdate):
            publish("agents", "agent_update", event.to_dict(), time.time())
        elif isinstance(event, Alert):
            data = event.to_dict()
            publish("alerts", "alert", data, time.time(), severity=data.pop("severity"))
        elif isinstance(event, LogEntry):
            data = event.to_dict()
            publish("logs", "log", data, time.time(), level=data.pop("level"))
        elif isinstance(event, ControlEvent):
            publish("control", "control_update", event.to_dict(), time.time())

    engine.subscribe(listener)
    return out


def test_an_engine_stream_matches_the_engine_history(tmp_path: Path) -> None:
    """Frames fed the server's encoding of a real run equal the engine's stored history."""
    engine = Engine(seed=11, population_size=30)
    texts = wire(engine)
    list(engine.run(generations=12))
    engine.rollback(6)
    list(engine.run(generations=4))
    frames = Frames()
    frames.ingest_many(msgspec.json.decode(text) for text in texts)
    assert frames.rejected == 0, frames.last_rejection
    assert frames.ignored == 0

    reference = build_dataset(engine.store, engine.run_id or 0)
    stored = reference.generations
    got = frames.evolution.reset_index()
    assert len(got) == len(stored) == 16
    for column in GENERATION_COLUMNS:
        if column == "timestamp":  # the envelope keeps milliseconds
            delta = (got[column] - stored[column]).abs()
            assert (delta < pd.Timedelta(milliseconds=1)).all()
        elif column in STRATEGY_FIELDS:  # the GA has no strategy measures: NaN on both sides
            assert got[column].isna().all(), column
            assert stored[column].isna().all(), column
        else:
            assert got[column].tolist() == stored[column].tolist(), column
    assert list(got["seq"]) == list(range(1, 17))
    assert list(frames.control["action"])[:2] == ["start", "finish"]

    run = frames.to_run({"gene_space": engine.space.describe()})
    pd.testing.assert_series_equal(run.generations["active"], stored["active"])
    assert list(run.generations.columns) == list(stored.columns)
    for name in ("generations", "agents", "population", "events"):
        assert dtypes(run.tables()[name]) == dtypes(reference.tables()[name]), name
        for column, dtype in run.tables()[name].dtypes.items():
            if isinstance(dtype, pd.CategoricalDtype) and column != "kind":
                expected = reference.tables()[name][column].cat.categories
                assert list(dtype.categories) == list(expected), column
    rollback = run.events[run.events["title"] == "Rollback Performed"]
    assert list(rollback["branch"]) == [1]
    pd.testing.assert_frame_equal(  # the envelope keeps milliseconds of the timestamps
        run.events.drop(columns="timestamp"), reference.events.drop(columns="timestamp")
    )
    agents = run.agents.set_index("agent_id")
    expected = reference.agents.set_index("agent_id").loc[agents.index]
    same = [c for c in agents.columns if c not in ("last_generation", "feasible", "status")]
    pd.testing.assert_frame_equal(agents[same], expected[same])
    loaded = load_run(frames.to_parquet(tmp_path / "ds"))
    assert loaded.active_generations["branch"].tolist() == [0] * 7 + [1] * 4
