"""The population as parallel arrays, and the snapshot that restores a generation exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tdevlab.engine.genes import FloatArray

__all__ = ["Population", "Snapshot"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Population:
    """One generation's agents, one array entry per agent, best first.

    Arrays are never modified after construction: each generation builds new ones, so a
    population can be kept as a snapshot without copying.

    Attributes:
        genes: ``(n, genes)`` matrix (categorical genes as choice indices).
        fitness, memory_kb, speed_us: The evaluated metrics.
        violation: Total relative excess over the constraints (0 when feasible).
        agent_id: Numeric ids (``agent-<id>`` on the wire), unique within a run.
        parent_a, parent_b: Parent ids (-1 when none: initial agents, or a copy).
        birth_generation: The generation each agent was created in.
        status: Status codes (see ``events.STATUS_NAMES``).
    """

    genes: FloatArray
    fitness: FloatArray
    memory_kb: FloatArray
    speed_us: FloatArray
    violation: FloatArray
    agent_id: IntArray
    parent_a: IntArray
    parent_b: IntArray
    birth_generation: IntArray
    status: npt.NDArray[np.int8]

    COLUMNS = (
        "genes",
        "fitness",
        "memory_kb",
        "speed_us",
        "violation",
        "agent_id",
        "parent_a",
        "parent_b",
        "birth_generation",
        "status",
    )

    def __len__(self) -> int:
        return int(self.fitness.size)

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the columns by name."""
        return {name: getattr(self, name) for name in self.COLUMNS}

    def row_of(self, agent_id: int) -> int | None:
        """Return the row of an agent id, or ``None`` when it is not in this population."""
        rows = np.flatnonzero(self.agent_id == agent_id)
        return int(rows[0]) if rows.size else None


@dataclass(frozen=True)
class Snapshot:
    """What rollback restores: a generation's population and the engine state after it.

    ``state`` holds JSON-ready engine state: parameters, counters, the alert detector,
    and ``rng`` (the bit generator state that will produce the next generation).

    ``source``, when known, says where each row came from: ``source[i]`` is the row of the
    previous generation's population (the one this generation was made from) that row
    ``i`` was taken from, with every column but ``violation`` and ``status`` unchanged;
    -1 for a new agent. A memory store keeps such a generation as its changes.
    """

    generation: int
    branch: int
    population: Population
    state: dict[str, Any] = field(default_factory=dict)
    source: IntArray | None = field(default=None, compare=False, repr=False)
