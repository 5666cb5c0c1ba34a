"""Lineage, diffs and branching from an ancestor, on both stores, against stored parent links."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine
from tdevlab.engine.lineage import MAX_DEPTH
from tdevlab.engine.population import Population
from tdevlab.exceptions import AgentNotFound, InvalidCommand, InvalidParameters, InvalidState
from tests.conftest import eventually_sync

POPULATION = 30


def _engine(kind: str, tmp_path: Path, **kwargs: Any) -> Engine:
    store = None if kind == "memory" else tmp_path / "run.db"
    return Engine(seed=11, population_size=POPULATION, store=store, **kwargs)


def _stored_agents(engine: Engine) -> dict[int, dict[str, Any]]:
    """Brute force: every agent of every stored snapshot, from the generation that made it."""
    assert engine.run_id is not None
    agents: dict[int, dict[str, Any]] = {}
    for row in engine.store.generation_rows(engine.run_id):
        snapshot = engine.store.load_snapshot(engine.run_id, row["branch"], row["generation"])
        pop: Population = snapshot.population
        for i in np.flatnonzero(pop.birth_generation == row["generation"]).tolist():
            agents[int(pop.agent_id[i])] = {
                "branch": row["branch"],
                "birth_generation": row["generation"],
                "parent_a": int(pop.parent_a[i]),
                "parent_b": int(pop.parent_b[i]),
                "fitness": float(pop.fitness[i]),
                "genes": pop.genes[i].copy(),
            }
    return agents


def _run_with_a_fork(engine: Engine) -> None:
    """200 generations of the current lineage, forked once by a rollback at 80."""
    list(engine.run(generations=121))
    engine.rollback(80)
    list(engine.run(generations=120))
    assert engine.generation == 200


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_lineage_of_the_best_agent_matches_a_brute_force_walk(kind: str, tmp_path: Path) -> None:
    """After 200 generations (across a fork), the best agent's line is the stored first-parent
    walk, with second parents beside it, metrics, how each was made and genes changed."""
    with _engine(kind, tmp_path) as engine:
        _run_with_a_fork(engine)
        assert engine.population is not None
        best = int(engine.population.agent_id[0])
        stored = _stored_agents(engine)
        lineage = engine.lineage(f"agent-{best}", depth=200)

    line, agent = [], best
    while agent >= 0 and len(line) <= 200 and agent in stored:
        line.append(agent)
        agent = stored[agent]["parent_a"]
    nodes = lineage.nodes
    is_line = [r in ("self", "ancestor") for r in nodes["relation"]]
    assert [a for a, keep in zip(nodes["agent_id"], is_line, strict=True) if keep] == [
        f"agent-{a}" for a in line
    ]
    assert len(line) > 20
    assert {stored[a]["branch"] for a in line} == {0, 1}
    seconds = {stored[a]["parent_b"] for a in line} - {-1} - set(line)
    assert {a for a, keep in zip(nodes["agent_id"], is_line, strict=True) if not keep} == {
        f"agent-{a}" for a in seconds
    }
    names = engine.space.names
    for i, node in enumerate(nodes["agent_id"]):
        row = stored[int(node.removeprefix("agent-"))]
        assert nodes["branch"][i] == row["branch"]
        assert nodes["birth_generation"][i] == row["birth_generation"]
        assert nodes["fitness"][i] == row["fitness"]
        assert nodes["parent_a"][i] == (
            f"agent-{row['parent_a']}" if row["parent_a"] >= 0 else None
        )
        made = "crossover" if row["parent_b"] >= 0 else "mutation"
        assert nodes["made_by"][i] == (made if row["parent_a"] >= 0 else "initial")
        parent = stored.get(row["parent_a"])
        expected = (
            None
            if parent is None
            else [n for n, x, y in zip(names, row["genes"], parent["genes"], strict=True) if x != y]
        )
        assert nodes["genes_changed"][i] == expected
    listed = set(line) | seconds  # every stored link between two listed agents is an edge
    expected_edges = {
        (f"agent-{stored[a][key]}", f"agent-{a}", kind)
        for a in listed
        for key, kind in (("parent_a", "first_parent"), ("parent_b", "second_parent"))
        if stored[a][key] in listed
    }
    assert set(zip(*lineage.edges.values(), strict=True)) == expected_edges


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_descendants_follow_first_parents_forward(kind: str, tmp_path: Path) -> None:
    """descendants=True lists the first-parent children of the agent, level by level."""
    with _engine(kind, tmp_path) as engine:
        list(engine.run(generations=40))
        stored = _stored_agents(engine)
        root = min(a for a, r in stored.items() if r["birth_generation"] == 10)
        lineage = engine.lineage(root, depth=3, descendants=True)
    level: dict[int, int] = {root: 0}
    frontier = [root]
    for step in range(1, 4):
        frontier = [a for a, r in stored.items() if r["parent_a"] in frontier]
        level.update((a, -step) for a in frontier)
    found = {
        int(a.removeprefix("agent-")): lv
        for a, lv, rel in zip(
            lineage.nodes["agent_id"],
            lineage.nodes["level"],
            lineage.nodes["relation"],
            strict=True,
        )
        if rel in ("self", "descendant")
    }
    assert found == level
    assert not lineage.truncated


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_diff_round_trips(kind: str, tmp_path: Path) -> None:
    """Applying diff(parent, child)'s gene differences to the parent's genes gives the child's,
    and the code diff changes exactly those genes' lines."""
    with _engine(kind, tmp_path) as engine:
        list(engine.run(generations=30))
        assert engine.population is not None
        lineage = engine.lineage(int(engine.population.agent_id[0]), depth=30)
        pairs = [
            (p, c)
            for c, p in zip(lineage.nodes["agent_id"], lineage.nodes["parent_a"], strict=True)
            if p is not None and p in lineage.nodes["agent_id"]
        ]
        assert len(pairs) > 5
        for parent, child in pairs:
            diff = engine.diff(parent, child)
            assert diff.apply(engine.agent(parent).genes) == engine.agent(child).genes
            changed = {line.split(" = ")[0][1:] for line in diff.code.splitlines()
                       if line[:1] in "+-" and " = " in line}  # fmt: skip
            assert changed == {entry["gene"] for entry in diff.genes}
        same = engine.diff(pairs[0][1], pairs[0][1])
        assert same.genes == []
        assert same.code == ""


def _outcome(engine: Engine, generations: int) -> list[tuple[Any, ...]]:
    out = []
    for result in engine.run(generations=generations):
        pop = engine.population
        assert pop is not None
        e = result.evolution
        out.append(
            (e.generation, e.best_fitness, e.average_fitness, pop.genes.tobytes(),
             pop.fitness.tobytes(), pop.agent_id.tobytes(), [a.alert_id for a in result.alerts])
        )  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_branch_then_continue_is_a_rollback_then_continue(kind: str, tmp_path: Path) -> None:
    """branch_from(agent) then 25 generations reproduces, bit for bit, a rollback to the agent's
    birth generation then 25 generations; the branch left is kept."""
    with _engine(kind, tmp_path) as a:
        list(a.run(generations=60))
        assert a.population is not None
        agent = a.lineage(int(a.population.agent_id[0])).nodes
        i = next(i for i, g in enumerate(agent["birth_generation"]) if g <= 40)
        generation = agent["birth_generation"][i]
        result = a.branch_from(agent["agent_id"][i])
        assert (result.generation, result.branch, a.generation) == (generation, 1, generation)
        branched = _outcome(a, 25)
        assert a.run_id is not None
        assert a.store.load_snapshot(a.run_id, 0, 59).generation == 59  # the old branch stays
    with Engine(seed=11, population_size=POPULATION, store=None) as b:
        list(b.run(generations=60))
        b.rollback(generation)
        rolled = _outcome(b, 25)
    assert branched == rolled


def test_branch_from_an_abandoned_branch(tmp_path: Path) -> None:
    """An agent of an abandoned branch: its branch's generation is restored, as a rollback to it
    from that branch would, and new parameters apply to the new branch."""
    with _engine("sqlite", tmp_path) as a:
        list(a.run(generations=60))
        assert a.population is not None
        late = int(a.population.agent_id[0])  # born late on branch 0
        born = a.agent(late).birth_generation
        a.rollback(20)
        list(a.run(generations=5))
        assert a.agent_code(late).startswith("# ")  # an abandoned branch's agent has code
        result = a.branch_from(f"agent-{late}", {"mutation_rate": 0.3})
        assert (result.generation, a.generation, a.branch) == (born, born, 2)
        assert a.params.mutation_rate == 0.3
        assert a.population is not None
        assert late in a.population.agent_id.tolist()
        branched = _outcome(a, 10)
    with Engine(seed=11, population_size=POPULATION) as b:
        list(b.run(generations=60))
        b.rollback(born)
        b.set_parameters(mutation_rate=0.3)
        rolled = _outcome(b, 10)
    # Agent numbers differ (branch 1 numbered its own); genes and metrics do not.
    assert [r[:5] for r in branched] == [r[:5] for r in rolled]


def _untouched(engine: Engine) -> tuple[Any, ...]:
    assert engine.run_id is not None
    return (
        engine.generation,
        engine.branch,
        engine.params,
        engine.rng.bit_generator.state,
        len(engine.store.branches(engine.run_id)),
        engine.state,
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_bad_input_is_refused_and_the_run_untouched(kind: str, tmp_path: Path) -> None:
    """Unknown agents, depths out of 1..10000 and bad parameters are refused, naming the fault."""
    with _engine(kind, tmp_path) as engine:
        with pytest.raises(AgentNotFound):
            engine.lineage("agent-1")  # no generation yet
        list(engine.run(generations=5))
        before = _untouched(engine)
        for agent in ("agent-999999", "bob", "agent-", -1):
            with pytest.raises(AgentNotFound):
                engine.lineage(agent)  # type: ignore[arg-type]
            with pytest.raises(AgentNotFound):
                engine.branch_from(agent)  # type: ignore[arg-type]
        with pytest.raises(AgentNotFound):
            engine.diff("agent-1", "agent-999999")
        for depth in (0, -3, MAX_DEPTH + 1, 2.5, "7", True):
            with pytest.raises(InvalidParameters, match="depth must be an integer from 1 to 10000"):
                engine.lineage("agent-1", depth=depth)  # type: ignore[arg-type]
        with pytest.raises(InvalidParameters, match="mutation_rate"):
            engine.branch_from("agent-1", {"mutation_rate": 7})
        with pytest.raises(InvalidParameters, match="nonsense"):
            engine.branch_from("agent-1", {"nonsense": 1})
        assert _untouched(engine) == before
        assert engine.lineage("agent-1", depth=MAX_DEPTH).depth == MAX_DEPTH


def test_branch_while_a_rollback_is_in_progress_is_refused(tmp_path: Path) -> None:
    """A branch asked while a rollback waits for the generation in progress is INVALID_COMMAND
    naming the rollback; the rollback then happens, and nothing else."""
    with _engine("sqlite", tmp_path) as engine:
        list(engine.run(generations=10))
        with engine._lock:  # a generation in progress holds it
            rollback = threading.Thread(target=engine.rollback, args=(4,))
            rollback.start()
            eventually_sync(lambda: bool(engine._run._moves))
            before = _untouched(engine)
            with pytest.raises(InvalidState, match="a rollback is in progress") as refused:
                engine.branch_from("agent-1")
            assert isinstance(refused.value, InvalidCommand)
            assert refused.value.details["in_progress"] == "rollback"
            assert _untouched(engine) == before
        rollback.join()
        assert (engine.generation, engine.branch) == (4, 1)
        engine.branch_from("agent-1")  # and once it is done, a branch goes ahead
        assert (engine.generation, engine.branch) == (0, 2)


def test_memory_store_lineage_reaches_as_far_as_its_snapshots(tmp_path: Path) -> None:
    """The memory store answers from the generations it keeps: older ancestors end the line."""
    with Engine(seed=11, population_size=POPULATION, keep_snapshots=10) as engine:
        list(engine.run(generations=40))
        assert engine.population is not None
        lineage = engine.lineage(int(engine.population.agent_id[0]))
        assert min(lineage.nodes["birth_generation"]) >= 30
        with pytest.raises(AgentNotFound):
            engine.lineage("agent-1")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_uploads_queued_across_a_rollback_are_found(kind: str, tmp_path: Path) -> None:
    """Uploads waiting across a rollback join the new branch: every stored agent is found, on
    its branch, uploads made by `upload`."""
    with Engine(
        seed=2, population_size=10, store=None if kind == "memory" else tmp_path / "r.db"
    ) as e:
        list(e.run(generations=6))
        assert e.population is not None
        genome = e.agent(int(e.population.agent_id[0])).genes
        uploads = [e.add_agent(genome).agent_id for _ in range(12)]  # 8 join the next one
        e.step()
        e.rollback(5)
        e.step()  # the other 4 join on the new branch
        list(e.run(generations=3))
        stored = _stored_agents(e)
        assert {f"agent-{a}" for a in stored} >= set(uploads)
        for agent, row in stored.items():
            node = e.lineage(agent, depth=1).nodes
            assert node["agent_id"][0] == f"agent-{agent}"
            assert node["branch"][0] == row["branch"]
            assert node["made_by"][0] == (
                "upload" if f"agent-{agent}" in uploads else node["made_by"][0]
            )
