"""Agents as the API shows them: ids, names, ``agent_update`` records and mutation logs.

The population keeps agents as array rows with numeric ids; this module is the one place
that turns a row into what a client sees (``agent-17``, ``Optimizer_Agent_v17``, its genes
by name), so every event names an agent the same way.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from tdevlab.engine.code import parse_agent_code, render_agent_code
from tdevlab.engine.events import RETIRED, STATUS_NAMES, AgentUpdate, LogEntry
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import Mutation
from tdevlab.engine.params import SHOWN_CHARS, Parameters
from tdevlab.engine.population import IntArray, Population
from tdevlab.engine.problems import Evaluation, Problem
from tdevlab.engine.storage import RunStore
from tdevlab.exceptions import (
    AgentNotFound,
    ConstraintViolation,
    GenerationNotFound,
    InvalidCommand,
)
from tdevlab.exceptions import shown as quoted

#: The most members a front or archive reply lists (about 250 bytes each).
MAX_MEMBERS = 10_000

__all__ = [
    "AgentAccess",
    "AgentBatch",
    "Pending",
    "agent_id",
    "agent_name",
    "agent_number",
    "agent_update",
    "agent_updates",
    "mutation_logs",
]


class Pending(NamedTuple):
    """An uploaded agent waiting for the next generation (its id is given on upload)."""

    agent_id: int
    genes: FloatArray
    metrics: tuple[float, float, float]


def agent_id(number: int) -> str:
    """The wire id of agent ``number``: ``agent-<number>``."""
    return f"agent-{int(number)}"


def agent_number(agent: str | int) -> int:
    """The number of an agent id (``"agent-17"`` or ``17``).

    Raises:
        AgentNotFound: if it is neither an integer nor of the form ``agent-<number>``.
    """
    if isinstance(agent, int | np.integer) and not isinstance(agent, bool) and 0 <= agent < 2**63:
        return int(agent)
    digits = agent[6:] if isinstance(agent, str) and agent.startswith("agent-") else ""
    # ASCII digits only (isdigit() takes any script's digits), and within a stored integer.
    if digits.isascii() and digits.isdigit() and len(digits) <= 18:
        return int(digits)
    text = shown(agent)
    raise AgentNotFound(
        f"agent id {text} is not of the form 'agent-<number>'", details={"agent_id": text}
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


def agent_updates(
    problem: Problem,
    population: Population,
    rows: IntArray,
    generation: int,
    reason: str,
    *,
    retired: bool = False,
) -> list[AgentUpdate]:
    """:func:`agent_update` for many rows at once (the same records, gathered per field).

    A front or an archive changes by dozens of agents a generation: one gather per field
    and one ``roles`` call cost far less than a row at a time.
    """
    if rows.size == 0:
        return []
    return AgentBatch(problem, population, rows, generation, reason, retired=retired).build()


class AgentBatch:
    """The :func:`agent_updates` of some rows, made when first read (an
    :class:`~tdevlab.engine.events.AgentUpdates` part).

    The rows' values are gathered now (a few small arrays: the batch holds no population,
    and the population may change no more than it does), the records built by
    :meth:`build`, once.
    """

    __slots__ = ("_built", "_columns", "_generation", "_problem", "_reason", "_retired")

    def __init__(
        self,
        problem: Problem,
        population: Population,
        rows: IntArray,
        generation: int,
        reason: str,
        *,
        retired: bool = False,
    ) -> None:
        self._problem, self._generation, self._reason = problem, generation, reason
        self._retired = retired
        p = population
        self._columns = tuple(
            column[rows]
            for column in (
                p.agent_id,
                p.status,
                p.fitness,
                p.memory_kb,
                p.speed_us,
                p.birth_generation,
                p.parent_a,
                p.parent_b,
                p.genes,
            )
        )
        self._built: list[AgentUpdate] | None = None

    def __len__(self) -> int:
        return int(self._columns[0].size)

    def build(self) -> list[AgentUpdate]:
        """The records, in row order (built on the first call)."""
        if self._built is not None:
            return self._built
        numbers, status, fitness, memory_kb, speed_us, birth, parent_a, parent_b, genes = (
            self._columns
        )
        problem, generation, reason = self._problem, self._generation, self._reason
        names = getattr(problem, "role_names", ("Agent",))
        role_of = getattr(problem, "roles", None)
        size = len(self)
        roles = [0] * size if role_of is None else np.asarray(role_of(genes)).tolist()
        statuses = [RETIRED] * size if self._retired else status.tolist()
        decode = problem.gene_space.decode_values
        self._built = [
            AgentUpdate(
                agent_id=agent_id(number),
                name=f"{names[int(role) % len(names)]}_Agent_v{number}",
                status=STATUS_NAMES[code],
                fitness=f,
                memory_kb=m,
                speed_us=sp,
                generation=generation,
                birth_generation=b,
                parents=[agent_id(x) for x in (a, pb) if x >= 0],
                genes=decode(row),
                reason=reason,
            )
            for number, role, code, f, m, sp, b, a, pb, row in zip(
                numbers.tolist(),
                roles,
                statuses,
                fitness.tolist(),
                memory_kb.tolist(),
                speed_us.tolist(),
                birth.tolist(),
                parent_a.tolist(),
                parent_b.tolist(),
                genes.tolist(),
                strict=True,
            )
        ]
        return self._built


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
    rows = mutation.rows[picks]
    entries = []
    # One gather per field, then plain Python values: per-cell NumPy scalars cost more.
    for number, col, old, new in zip(
        ids[rows].tolist(),
        mutation.columns[picks].tolist(),
        mutation.old[picks].tolist(),
        mutation.new[picks].tolist(),
        strict=True,
    ):
        gene = space.genes[col]
        details: dict[str, Any] = {
            "mutation_type": "categorical_switch"
            if gene.kind == "categorical"
            else "parameter_adjustment",
            "gene_modified": gene.name,
            "old_value": space.value(col, old),
            "new_value": space.value(col, new),
            "agent_id": agent_id(number),
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


class AgentAccess:
    """The Engine's agent requests: status (current or retired), code, uploads."""

    problem: Problem
    space: GeneSpace
    params: Parameters
    population: Population | None
    generation: int
    run_id: int | None
    store: RunStore
    _lock: threading.RLock
    _next_agent_id: int
    _pending: list[Pending]

    strategy: Any
    _strategy_state: dict[str, Any]
    branch: int

    @abstractmethod
    def _evaluate(self, genes: FloatArray, first_id: int) -> tuple[Evaluation, float]: ...

    def member_set(self, kind: str) -> dict[str, Any]:
        """The strategy's current front (``kind="front"``) or archive (``"archive"``).

        Returns:
            ``kind``, ``generation``, ``branch``, the strategy, the set's own fields (NSGA-II:
            ``objectives``, ``reference``; MAP-Elites: ``descriptors``, ``bins``,
            ``ranges``) and ``agents``: one entry per member with its id, name, fitness,
            memory_kb, speed_us, birth generation and the set's columns (``objectives``, or
            ``descriptors`` and ``cell``). Genes are left out: ``agent()`` has them.

        Raises:
            InvalidCommand: if the run's strategy has no such set (naming the strategy).
        """
        table_of = getattr(self.strategy, "member_table", None)
        with self._lock:
            pop = self.population
            table = None
            if table_of is not None and pop is not None:
                table = table_of(self._strategy_state, self.space, pop, self.params)
            if table_of is None or (table is not None and table["kind"] != kind):
                raise InvalidCommand(
                    f"this run's strategy {self.strategy.name!r} keeps no {kind}",
                    details={"strategy": self.strategy.name, "kind": kind},
                )
            out: dict[str, Any] = {
                "kind": kind,
                "generation": self.generation,
                "branch": self.branch,
                "strategy": self.strategy.name,
                "agents": [],
            }
            if table is None or pop is None:  # no generation yet: an empty set
                return out
            rows = table.pop("rows")
            extra = table.pop("columns")
            out.update({k: v for k, v in table.items() if k != "kind"})
            names = list(extra)
            # A reply stays bounded: the fittest MAX_MEMBERS (``total`` says how many there are).
            out["total"] = int(rows.size)
            chosen = np.arange(rows.size)
            if rows.size > MAX_MEMBERS:
                chosen = np.sort(np.argsort(-pop.fitness[rows], kind="stable")[:MAX_MEMBERS])
            out["truncated"] = bool(rows.size > MAX_MEMBERS)
            for i in chosen.tolist():
                row = int(rows[i])
                number = int(pop.agent_id[row])
                entry = {
                    "agent_id": agent_id(number),
                    "name": agent_name(self.problem, pop.genes[row], number),
                    "fitness": float(pop.fitness[row]),
                    "memory_kb": float(pop.memory_kb[row]),
                    "speed_us": float(pop.speed_us[row]),
                    "birth_generation": int(pop.birth_generation[row]),
                }
                for name in names:
                    entry[name] = extra[name][i]
                out["agents"].append(entry)
            return out

    @abstractmethod
    def _publish(self, event: Any) -> None: ...

    def population_set(self) -> dict[str, Any]:
        """The whole current population, one entry per agent (the ``population`` reply).

        The agents channel announces only notable agents; this is every agent alive now.

        Returns:
            ``kind`` (``"population"``), ``generation``, ``branch``, ``total``,
            ``truncated`` and ``agents``: each ``agent_id``, ``status``, ``fitness``,
            ``memory_kb``, ``speed_us`` and ``birth_generation``, the fittest
            :data:`MAX_MEMBERS` at most. Genes are left out: ``agent()`` has them.
        """
        with self._lock:
            pop = self.population
            out: dict[str, Any] = {
                "kind": "population",
                "generation": self.generation,
                "branch": self.branch,
                "total": 0 if pop is None else len(pop.agent_id),
                "truncated": False,
                "agents": [],
            }
            if pop is None:
                return out
            rows = np.arange(len(pop.agent_id))
            if rows.size > MAX_MEMBERS:
                rows = np.sort(np.argsort(-pop.fitness, kind="stable")[:MAX_MEMBERS])
                out["truncated"] = True
            columns = zip(
                pop.agent_id[rows].tolist(),
                pop.status[rows].tolist(),
                pop.fitness[rows].tolist(),
                pop.memory_kb[rows].tolist(),
                pop.speed_us[rows].tolist(),
                pop.birth_generation[rows].tolist(),
                strict=True,
            )
            out["agents"] = [
                {
                    "agent_id": agent_id(number),
                    "status": STATUS_NAMES[status],
                    "fitness": fitness,
                    "memory_kb": memory,
                    "speed_us": speed,
                    "birth_generation": born,
                }
                for number, status, fitness, memory, speed, born in columns
            ]
            return out

    def agent(self, agent_id: str | int) -> AgentUpdate:
        """Return an agent's status, current or retired (retired ones from the store).

        Raises:
            AgentNotFound: if the run never had that agent (or its generation is not kept).
        """
        number = agent_number(agent_id)
        with self._lock:
            pop = self.population
            if pop is not None:
                row = pop.row_of(number)
                if row is not None:
                    return agent_update(self.problem, pop, row, self.generation, "requested")
            if self.run_id is not None:
                where = self.store.find_agent_generation(self.run_id, number)
                if where is not None:
                    try:
                        snap = self.store.load_snapshot(self.run_id, where[0], where[1])
                    except GenerationNotFound:
                        snap = None
                    row = None if snap is None else snap.population.row_of(number)
                    if snap is not None and row is not None:
                        return agent_update(
                            self.problem,
                            snap.population,
                            row,
                            snap.generation,
                            "requested",
                            retired=True,
                        )
        raise AgentNotFound(
            f"no agent {shown(agent_id)} in this run", details={"agent_id": shown(agent_id)}
        )

    def agent_code(self, agent_id: str | int) -> str:
        """Return an agent's genome as readable Python source (see :mod:`tdevlab.engine.code`).

        Raises:
            AgentNotFound: as :meth:`agent`.
        """
        update = self.agent(agent_id)
        return render_agent_code(
            self.space,
            self.space.encode(update.genes),
            agent_id=update.agent_id,
            name=update.name,
            generation=update.birth_generation,
        )

    def add_agent_code(self, source: str | bytes) -> AgentUpdate:
        """Parse uploaded agent code (never executed) and add the agent (see :meth:`add_agent`).

        Raises:
            ConstraintViolation: if the code is over the memory limit in size, or the agent
                breaks a constraint.
            InvalidAgentCode: if the code is not a valid genome of this problem.
        """
        return self.add_agent(self.parse_code(source))

    def add_agent(self, genome: Mapping[str, Any]) -> AgentUpdate:
        """Evaluate a genome now and queue it to join the next generation.

        The agent gets its id at once; in the next generation it takes the place of the
        weakest new agent. It draws nothing from the run's random generator.

        Returns:
            The agent's status (``reason="uploaded"``).

        Raises:
            InvalidParameters: if the genome does not fit the gene space.
            ConstraintViolation: if the agent breaks the memory or speed limit.
            EvaluationError: if the problem cannot evaluate it.
        """
        row = self.space.encode(genome)
        with self._lock:
            p = self.params
            evaluation, _ = self._evaluate(row[None, :], self._next_agent_id)
            metrics = tuple(float(a[0]) for a in evaluation)
            broken = {
                name: {"value": value, "limit": limit}
                for name, value, limit in (
                    ("memory_kb", metrics[1], p.memory_limit_kb),
                    ("speed_us", metrics[2], p.speed_limit_us),
                )
                if value > limit
            }
            if broken:
                text = ", ".join(f"{k} {v['value']:.3f} > {v['limit']}" for k, v in broken.items())
                raise ConstraintViolation(
                    f"agent refused: {text}", details={"constraints": broken, "reason": text}
                )
            number = self._next_agent_id
            self._next_agent_id += 1
            fitness, memory_kb, speed_us = metrics
            self._pending.append(Pending(number, row, (fitness, memory_kb, speed_us)))
            update = uploaded_update(
                self.problem, row, number, (fitness, memory_kb, speed_us), self.generation + 1
            )
        self._publish(update)
        return update

    def parse_code(self, source: str | bytes) -> dict[str, Any]:
        """Parse agent source into a genome dict, without executing it.

        Raises:
            ConstraintViolation: if the source is larger than the memory limit.
            InvalidAgentCode: if it is not a valid genome of this problem.
        """
        row = parse_agent_code(
            source, self.space, max_bytes=int(self.params.memory_limit_kb * 1024)
        )
        return self.space.decode(row)


def shown(value: object) -> str:
    """A client-supplied value as an engine error message names it (64 bytes at most)."""
    return quoted(value, SHOWN_CHARS)
