"""Agents as the API shows them: ids, names, ``agent_update`` records and mutation logs.

The population keeps agents as array rows with numeric ids; this module is the one place
that turns a row into what a client sees (``agent-17``, ``Optimizer_Agent_v17``, its genes
by name), so every event names an agent the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tdevlab.engine.events import RETIRED, STATUS_NAMES, AgentUpdate, LogEntry
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import Mutation
from tdevlab.engine.population import IntArray, Population
from tdevlab.engine.problems import Problem
from tdevlab.exceptions import AgentNotFound

__all__ = [
    "agent_id",
    "agent_name",
    "agent_number",
    "agent_update",
    "mutation_logs",
]


def agent_id(number: int) -> str:
    """The wire id of agent ``number``: ``agent-<number>``."""
    return f"agent-{int(number)}"


def agent_number(agent: str | int) -> int:
    """The number of an agent id (``"agent-17"`` or ``17``).

    Raises:
        AgentNotFound: if it is neither an integer nor of the form ``agent-<number>``.
    """
    if isinstance(agent, int | np.integer) and not isinstance(agent, bool):
        return int(agent)
    if isinstance(agent, str) and agent.startswith("agent-") and agent[6:].isdigit():
        return int(agent[6:])
    shown = agent[:64] if isinstance(agent, str) else agent
    raise AgentNotFound(
        f"agent id {shown!r} is not of the form 'agent-<number>'",
        details={"agent_id": str(shown)},
    )


def agent_name(problem: Problem, genes: FloatArray, number: int) -> str:
    """``<Role>_Agent_v<number>``, the role from the problem's ``roles`` (else ``Agent``).

    Args:
        problem: The run's problem; ``role_names`` and ``roles(genes)`` are optional.
        genes: The agent's genome row.
        number: The agent's number.
    """
    names = getattr(problem, "role_names", ("Agent",))
    role_of = getattr(problem, "roles", None)
    role = 0 if role_of is None else int(role_of(genes[None, :])[0])
    return f"{names[role % len(names)]}_Agent_v{int(number)}"


def agent_update(
    problem: Problem,
    population: Population,
    row: int,
    generation: int,
    reason: str,
    *,
    retired: bool = False,
) -> AgentUpdate:
    """The ``agent_update`` of one population row.

    Args:
        problem: The run's problem (for the name and the genes by name).
        population: The population holding the agent.
        row: Its row.
        generation: The generation the update belongs to.
        reason: Why it is announced (``new_best``, ``elite``, ``left_elite``, ...).
        retired: Whether the agent is no longer in the current population.
    """
    number = int(population.agent_id[row])
    parents = [agent_id(x) for x in (population.parent_a[row], population.parent_b[row]) if x >= 0]
    status = RETIRED if retired else int(population.status[row])
    return AgentUpdate(
        agent_id=agent_id(number),
        name=agent_name(problem, population.genes[row], number),
        status=STATUS_NAMES[status],
        fitness=float(population.fitness[row]),
        memory_kb=float(population.memory_kb[row]),
        speed_us=float(population.speed_us[row]),
        generation=generation,
        birth_generation=int(population.birth_generation[row]),
        parents=parents,
        genes=problem.gene_space.decode(population.genes[row]),
        reason=reason,
    )


def uploaded_update(
    problem: Problem,
    genes: FloatArray,
    number: int,
    metrics: tuple[float, float, float],
    generation: int,
) -> AgentUpdate:
    """The ``agent_update`` of an uploaded agent waiting to join ``generation``."""
    fitness, memory_kb, speed_us = metrics
    return AgentUpdate(
        agent_id=agent_id(number),
        name=agent_name(problem, genes, number),
        status="evolving",
        fitness=fitness,
        memory_kb=memory_kb,
        speed_us=speed_us,
        generation=generation,
        birth_generation=generation,
        parents=[],
        genes=problem.gene_space.decode(genes),
        reason="uploaded",
    )


def mutation_logs(
    space: GeneSpace, mutation: Mutation, ids: IntArray, generation: int, sample: int
) -> list[LogEntry]:
    """Log entries for an evenly spread sample of at most ``sample`` mutated genes.

    Args:
        space: The gene space (to show values as the genes define them).
        mutation: The mutated cells; ``rows`` index ``ids``.
        ids: Agent numbers of the mutated genomes' rows.
        generation: The generation being made.
        sample: The most entries.
    """
    count = mutation.rows.size
    if not count or not sample:
        return []
    # Evenly spread: deterministic, and no draw from the run's generator.
    m = min(sample, count)
    picks = np.arange(m) * (count - 1) // max(m - 1, 1)
    entries = []
    for k in picks:
        row, col = int(mutation.rows[k]), int(mutation.columns[k])
        gene = space.genes[col]
        details: dict[str, Any] = {
            "mutation_type": "categorical_switch"
            if gene.kind == "categorical"
            else "parameter_adjustment",
            "gene_modified": gene.name,
            "old_value": space.value(col, mutation.old[k]),
            "new_value": space.value(col, mutation.new[k]),
            "agent_id": agent_id(ids[row]),
        }
        entries.append(
            LogEntry(
                level="info",
                message=f"Mutation applied to {details['agent_id']}",
                details=details,
                generation=generation,
            )
        )
    return entries
