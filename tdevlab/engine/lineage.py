"""Lineage: where an agent came from, what changed on the way, and branching from an ancestor.

An agent's *line* is its chain of first parents: the agent, the parent it was copied from
(before crossover and mutation; its genes changed are counted against that parent), that
parent's first parent, and so on, across generations and branches. A crossover child's
second parent is shown beside the line (a node with a ``second_parent`` edge), without its
own ancestry: following both parents would cover most of the population within a few
dozen generations (measured at population 200: 8 968 distinct ancestors within 50 steps).
Descendants, on request, follow first parents the other way.

Everything comes from the run store's agent rows (:meth:`RunStore.first_parent_line`,
``descendants``, ``agent_records``: the SQLite store's ``lineage`` table, the memory
store's kept snapshots, a dataset's ``agents`` table). Results are plain column dicts
(``pandas.DataFrame(lineage.nodes)`` makes a table; :func:`tdevlab.store.lineage_frames`
adds dtypes), so the engine stays free of pandas.
"""

from __future__ import annotations

import difflib
import threading
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tdevlab.engine.agents import agent_id as wire_id
from tdevlab.engine.agents import agent_number, shown
from tdevlab.engine.alerts import rollback_events
from tdevlab.engine.code import render_agent_code
from tdevlab.engine.control import ControlEvent, EngineState, RollbackResult, RunControl
from tdevlab.engine.events import AgentUpdate, LogEntry
from tdevlab.engine.genes import GeneSpace
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Snapshot
from tdevlab.engine.problems import Problem
from tdevlab.engine.storage import MADE_BY, AgentRecords, BranchInfo, RunStore
from tdevlab.exceptions import AgentNotFound, InvalidParameters

__all__ = [
    "AgentRows",
    "DEFAULT_DEPTH",
    "MAX_DEPTH",
    "MAX_NODES",
    "GenomeDiff",
    "Lineage",
    "LineageAccess",
    "RecordsIndex",
    "build_lineage",
    "check_depth",
]

#: The depth a lineage request gets when it names none.
DEFAULT_DEPTH = 200
#: The deepest lineage (steps of first parents, or of children) one request may ask for.
MAX_DEPTH = 10_000
#: The most descendants one lineage lists (the nearest first); ``truncated`` says when cut.
MAX_NODES = 10_000


class AgentRows(Protocol):
    """The agent-row queries of a run store that lineage needs (see :class:`RunStore`)."""

    def agent_records(self, run_id: int, agents: list[int]) -> AgentRecords: ...

    def first_parent_line(self, run_id: int, agent: int, depth: int) -> AgentRecords: ...

    def descendants(
        self, run_id: int, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]: ...


class RecordsIndex:
    """The three agent-row queries lineage needs, over agent rows held in memory.

    What the memory store and an offline dataset answer with (the SQLite store queries
    its ``agents`` table instead).

    Args:
        records: The agents, each once, in any order.
    """

    def __init__(self, records: AgentRecords) -> None:
        self.records = records.take(np.argsort(records.agent, kind="stable"))

    def agent_records(self, agents: list[int]) -> AgentRecords:
        """The rows of ``agents`` that exist, each once, in the order asked."""
        table = self.records
        wanted = np.asarray(list(dict.fromkeys(agents)), dtype=np.int64)
        if not len(table) or not wanted.size:
            return table.take(np.empty(0, dtype=np.int64))
        at = np.minimum(np.searchsorted(table.agent, wanted), len(table) - 1)
        return table.take(at[table.agent[at] == wanted])

    def first_parent_line(self, agent: int, depth: int) -> AgentRecords:
        """``agent``, its first parent, and so on, ``depth`` steps at most."""
        table = self.records
        rows: list[int] = []
        while len(rows) <= depth:
            i = int(np.searchsorted(table.agent, agent))
            if i == len(table) or table.agent[i] != agent:
                break
            rows.append(i)
            agent = int(table.parent_a[i])
            if agent < 0:
                break
        return table.take(np.asarray(rows, dtype=np.int64))

    def descendants(
        self, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]:
        """As :meth:`RunStore.descendants`: level by level over the first-parent links."""
        table = self.records
        level: dict[int, int] = {}
        frontier = np.asarray([agent], dtype=np.int64)
        for step in range(1, depth + 1):
            if not frontier.size:
                break
            kids = table.agent[np.isin(table.parent_a, frontier)]
            kids = np.asarray([k for k in kids.tolist() if k not in level and k != agent])
            level.update((k, step) for k in kids.tolist())
            frontier = kids.astype(np.int64)
        found = self.agent_records(list(level))
        found = found.take(np.lexsort((found.agent, found.birth_generation))[:limit])
        steps = np.asarray([level[a] for a in found.agent.tolist()], dtype=np.int64)
        return found, steps, len(level) > limit


def check_depth(depth: object) -> int:
    """``depth`` as an integer in 1 ..= :data:`MAX_DEPTH` (``None``: :data:`MAX_DEPTH`).

    Raises:
        InvalidParameters: naming the value and the range.
    """
    if depth is None:
        return MAX_DEPTH
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int | np.integer)
        or not (1 <= depth <= MAX_DEPTH)
    ):
        raise InvalidParameters(
            f"depth must be an integer from 1 to {MAX_DEPTH}, got {shown(depth)}",
            details={"depth": shown(depth), "minimum": 1, "maximum": MAX_DEPTH},
        )
    return int(depth)


@dataclass(frozen=True)
class Lineage:
    """An agent's line of first parents (and descendants), as two tables of columns.

    Attributes:
        agent_id: The agent asked about.
        depth: How many steps of first parents (and of children) were followed at most.
        nodes: Columns, one entry per agent: ``agent_id``, ``relation`` (``self``,
            ``ancestor``, ``second_parent``, ``descendant``), ``level`` (first-parent steps
            from the agent: positive back, negative forward; a second parent is one above
            its child), ``birth_generation``, ``branch``, ``fitness``, ``memory_kb``,
            ``speed_us``, ``made_by`` (``initial``, ``upload``, ``mutation``,
            ``crossover``), ``parent_a``, ``parent_b`` (ids or ``None``) and
            ``genes_changed`` (names of the genes that differ from its first parent;
            ``None`` when the store did not have that parent at hand).
        edges: Columns ``parent``, ``child``, ``kind`` (``first_parent`` or
            ``second_parent``), one entry per link between two listed agents.
        truncated: Whether descendants were left out (more than :data:`MAX_NODES`).
    """

    agent_id: str
    depth: int
    nodes: dict[str, list[Any]]
    edges: dict[str, list[Any]]
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``lineage`` message's data."""
        return {
            "agent_id": self.agent_id,
            "depth": self.depth,
            "truncated": self.truncated,
            "nodes": self.nodes,
            "edges": self.edges,
        }


@dataclass(frozen=True)
class GenomeDiff:
    """How two agents differ: gene by gene, and as a unified diff of their code.

    Attributes:
        agent_a, agent_b: The agents compared (``a`` is the "from" side).
        genes: One entry per differing gene: ``{"gene", "a", "b"}``, in gene order.
        code: ``difflib.unified_diff`` of their rendered code (empty when equal).
    """

    agent_a: str
    agent_b: str
    genes: list[dict[str, Any]]
    code: str

    def apply(self, genome: Mapping[str, Any]) -> dict[str, Any]:
        """``genome`` (``a``'s genes) with the differences applied: ``b``'s genes."""
        return {**genome, **{entry["gene"]: entry["b"] for entry in self.genes}}

    def to_dict(self) -> dict[str, Any]:
        """As plain data."""
        return {
            "agent_a": self.agent_a,
            "agent_b": self.agent_b,
            "genes": self.genes,
            "code": self.code,
        }


def build_lineage(
    store: AgentRows,
    run_id: int,
    space: GeneSpace,
    agent: str | int,
    depth: int | None = None,
    descendants: bool = False,
) -> Lineage:
    """The lineage of ``agent`` from the store's agent rows.

    Args:
        store: The store holding the run (anything with the three agent-row queries).
        run_id: Which run.
        space: The run's gene space (for the gene names).
        agent: ``agent-<number>`` or a number.
        depth: Steps of first parents (and of children) to follow, 1 ..= :data:`MAX_DEPTH`;
            ``None``: all of them.
        descendants: Also follow children (by first parent), nearest first.

    Raises:
        AgentNotFound: if the store has no row for the agent.
        InvalidParameters: for a depth out of range.
    """
    number = agent_number(agent)
    steps = check_depth(depth)
    line = store.first_parent_line(run_id, number, steps)
    if not len(line):
        raise AgentNotFound(
            f"no agent {shown(agent)} in this run's store", details={"agent_id": shown(agent)}
        )
    parts = [line]
    relation = ["self"] + ["ancestor"] * (len(line) - 1)
    level = list(range(len(line)))
    seen = set(line.agent.tolist())
    second = [(int(b), lvl + 1) for b, lvl in zip(line.parent_b.tolist(), level, strict=True)]
    second = [(b, lvl) for b, lvl in dict(second).items() if b >= 0 and b not in seen]
    if second:
        found = store.agent_records(run_id, [b for b, _ in second])
        at = dict(second)
        parts.append(found)
        relation += ["second_parent"] * len(found)
        level += [at[int(b)] for b in found.agent.tolist()]
        seen.update(found.agent.tolist())
    truncated = False
    if descendants:
        kids, levels, truncated = store.descendants(run_id, number, steps, MAX_NODES)
        keep = np.flatnonzero(~np.isin(kids.agent, np.asarray(list(seen), dtype=np.int64)))
        parts.append(kids.take(keep))
        relation += ["descendant"] * keep.size
        level += (-levels[keep]).tolist()
        seen.update(kids.agent[keep].tolist())
    nodes = AgentRecords.concat(parts, len(space))
    return Lineage(
        wire_id(number),
        steps,
        _node_columns(space, nodes, relation, level),
        _edge_columns(nodes, seen),
        truncated,
    )


def _node_columns(
    space: GeneSpace, nodes: AgentRecords, relation: list[str], level: list[int]
) -> dict[str, list[Any]]:
    names = space.names
    changed: list[list[str] | None] = [
        [name for name, d in zip(names, diff, strict=True) if d] if known else None
        for diff, known in zip(nodes.changed.tolist(), nodes.known.tolist(), strict=True)
    ]
    return {
        "agent_id": [wire_id(n) for n in nodes.agent.tolist()],
        "relation": relation,
        "level": level,
        "birth_generation": nodes.birth_generation.tolist(),
        "branch": nodes.branch.tolist(),
        "fitness": nodes.fitness.tolist(),
        "memory_kb": nodes.memory_kb.tolist(),
        "speed_us": nodes.speed_us.tolist(),
        "made_by": [MADE_BY[m] for m in nodes.made_by.tolist()],
        "parent_a": [wire_id(p) if p >= 0 else None for p in nodes.parent_a.tolist()],
        "parent_b": [wire_id(p) if p >= 0 else None for p in nodes.parent_b.tolist()],
        "genes_changed": changed,
    }


def _edge_columns(nodes: AgentRecords, listed: set[int]) -> dict[str, list[Any]]:
    parent: list[str] = []
    child: list[str] = []
    kind: list[str] = []
    for number, a, b in zip(
        nodes.agent.tolist(), nodes.parent_a.tolist(), nodes.parent_b.tolist(), strict=True
    ):
        for p, k in ((a, "first_parent"), (b, "second_parent")):
            if p >= 0 and p in listed:
                parent.append(wire_id(p))
                child.append(wire_id(number))
                kind.append(k)
    return {"parent": parent, "child": child, "kind": kind}


def genome_diff(space: GeneSpace, a: AgentUpdate, b: AgentUpdate) -> GenomeDiff:
    """Gene-by-gene and code differences from ``a`` to ``b``."""
    genes = [
        {"gene": name, "a": a.genes[name], "b": b.genes[name]}
        for name in space.names
        if a.genes[name] != b.genes[name]
    ]
    code_a, code_b = (
        render_agent_code(
            space,
            space.encode(u.genes),
            agent_id=u.agent_id,
            name=u.name,
            generation=u.birth_generation,
        )
        for u in (a, b)
    )
    code = "".join(
        difflib.unified_diff(
            code_a.splitlines(keepends=True),
            code_b.splitlines(keepends=True),
            fromfile=a.agent_id,
            tofile=b.agent_id,
        )
    )
    return GenomeDiff(a.agent_id, b.agent_id, genes, code)


class LineageAccess:
    """The Engine's lineage requests: ``lineage``, ``diff`` and ``branch``."""

    problem: Problem
    space: GeneSpace
    params: Parameters
    generation: int
    branch: int
    run_id: int | None
    store: RunStore
    _lock: threading.RLock
    _run: RunControl
    _next_alert_id: int

    @abstractmethod
    def agent(self, agent_id: str | int) -> AgentUpdate: ...

    @abstractmethod
    def _restore(self, snapshot: Snapshot) -> None: ...

    @abstractmethod
    def _checked(self, params: Parameters, strategy: Any = None) -> Parameters: ...

    @abstractmethod
    def _record_side_events(
        self, logs: list[LogEntry], alerts: list[Any], generation: int | None = None
    ) -> None: ...

    @abstractmethod
    def _publish(self, event: Any) -> None: ...

    @property
    @abstractmethod
    def state(self) -> EngineState: ...

    def lineage(
        self, agent_id: str | int, depth: int | None = None, descendants: bool = False
    ) -> Lineage:
        """An agent's line of first parents (and second parents, and optionally descendants).

        Any stored agent: current, retired, or on an abandoned branch (a memory store only
        has the agents of the generations it keeps). See :mod:`tdevlab.engine.lineage`.

        Args:
            agent_id: ``agent-<number>`` or a number.
            depth: Steps to follow, 1 ..= :data:`MAX_DEPTH`; ``None``: all.
            descendants: Also list descendants (by first parent), at most :data:`MAX_NODES`.

        Raises:
            AgentNotFound: if the run has no such agent stored.
            InvalidParameters: for a depth out of range.
        """
        check_depth(depth)
        if self.run_id is None:
            raise AgentNotFound(
                f"no agent {shown(agent_id)} in this run: it has no generation yet",
                details={"agent_id": shown(agent_id)},
            )
        return build_lineage(self.store, self.run_id, self.space, agent_id, depth, descendants)

    def diff(self, agent_a: str | int, agent_b: str | int) -> GenomeDiff:
        """How ``agent_b`` differs from ``agent_a``: gene by gene, and as a code diff.

        Raises:
            AgentNotFound: for either agent (as :meth:`agent`).
        """
        return genome_diff(self.space, self.agent(agent_a), self.agent(agent_b))

    def branch_from(
        self, agent_id: str | int, parameters: Mapping[str, Any] | None = None
    ) -> RollbackResult:
        """Go back to the generation that made ``agent_id``, on its branch, and go on there.

        Exactly a rollback to that generation (population, parameters, random state,
        strategy state), from any branch: the current branch is kept as it is, and a new
        branch forks from the agent's. ``parameters``, if given, apply from the next
        generation (validated before anything changes). A running loop goes on from there
        after the generation in progress. Refused while a rollback or another branch is
        in progress.

        Returns:
            The generation and branch the run is now at, and its state.

        Raises:
            AgentNotFound: if the run has no such agent stored.
            InvalidParameters: for parameters that are not valid.
            InvalidState: while a rollback or branch is in progress (``details`` has the
                ``state`` and what is ``in_progress``).
            GenerationNotFound: if the agent's generation is no longer kept (memory store).
        """
        number = agent_number(agent_id)
        if parameters is not None and not isinstance(parameters, Mapping):
            raise InvalidParameters(f"parameters must be an object, got {shown(parameters)}")
        changes = dict(parameters or {})
        with self._run.moving("branch", self.state, exclusive=True), self._lock:
            found = None if self.run_id is None else self.store.agent_records(self.run_id, [number])
            if found is None or not len(found) or self.run_id is None:
                raise AgentNotFound(
                    f"no agent {shown(agent_id)} in this run", details={"agent_id": shown(agent_id)}
                )
            holder, generation = int(found.branch[0]), int(found.birth_generation[0])
            snapshot = self.store.load_snapshot(self.run_id, holder, generation)
            params = Parameters.validated(snapshot.state["parameters"])
            if changes:
                params = self._checked(params.replace(changes))
            if (holder, generation) == (self.branch, self.generation) and not changes:
                return RollbackResult(generation, self.branch, self.state)
            previous, left = self.branch, self.generation
            # The same fork as a rollback when the agent's generation is in this branch's
            # history: the new branch's parent is the current one (so lineages match).
            branches = {b.branch: b for b in self.store.branches(self.run_id)}
            line = _holder(branches, self.branch, generation) if generation <= left else None
            parent = self.branch if line == holder else holder
            self.branch = self.store.create_branch(self.run_id, parent, generation)
            self._restore(snapshot)
            if changes:
                with self._run.cond:
                    self.params = params
            # Announced as a rollback is (a log entry and a ``Rollback Performed`` alert),
            # so the run goes on exactly as after a rollback to that generation.
            entry, alert = rollback_events(
                generation, self.branch, (previous, generation + 1, left), self._next_alert_id
            )
            self._next_alert_id += 1
            entry = LogEntry(
                level=entry.level,
                message=f"Branched from {wire_id(number)} at generation {generation}",
                details={**entry.details, "agent_id": wire_id(number), "parent_branch": parent},
                generation=generation,
            )
            self._record_side_events([entry], [alert])
            state = self.state
            self._publish(ControlEvent("branch", state, state, generation, self.params.to_dict()))
            return RollbackResult(generation, self.branch, state)


def _holder(branches: dict[int, BranchInfo], branch: int, generation: int) -> int | None:
    """Which branch stores ``generation`` in ``branch``'s history (``None``: none)."""
    upper: int | None = None
    current: int | None = branch
    while current is not None:
        info = branches[current]
        if generation > info.fork_generation and (upper is None or generation <= upper):
            return current
        upper, current = info.fork_generation, info.parent_branch
    return None
