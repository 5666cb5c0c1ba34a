"""Lineage offline: an exported run's ``agents`` table answers what the store's agent rows do.

A dataset's ``agents`` table holds every stored agent once, with its branch, birth
generation, both parents, metrics and genes: everything :func:`build_lineage` needs, so
``load_run(path).lineage("agent-42")`` gives what ``engine.lineage`` gave on the run's
store (a dataset exported from a memory store covers the generations it kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tdevlab.engine.genes import Categorical, GeneSpace
from tdevlab.engine.lineage import Lineage, RecordsIndex, build_lineage
from tdevlab.engine.storage import MADE_BY, AgentRecords, made_by_codes

if TYPE_CHECKING:
    from tdevlab.store.export import RunDataset

__all__ = ["dataset_lineage", "lineage_frames"]


@dataclass(frozen=True)
class _Rows:
    """A dataset's agents behind the store calls :func:`build_lineage` makes."""

    index: RecordsIndex
    space: GeneSpace

    def agent_records(self, run_id: int, agents: list[int]) -> AgentRecords:
        return self.index.agent_records(agents)

    def first_parent_line(self, run_id: int, agent: int, depth: int) -> AgentRecords:
        return self.index.first_parent_line(agent, depth)

    def descendants(
        self, run_id: int, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]:
        return self.index.descendants(agent, depth, limit)


def dataset_lineage(
    dataset: RunDataset, agent_id: str | int, depth: int | None, descendants: bool
) -> Lineage:
    """The lineage of ``agent_id`` from ``dataset``'s agents (see ``Engine.lineage``)."""
    rows: _Rows | None = dataset.lineage_rows
    if rows is None:
        rows = dataset.lineage_rows = _rows(dataset)
    run_id = int(dataset.metadata.get("run", {}).get("run_id") or 0)
    return build_lineage(rows, run_id, rows.space, agent_id, depth, descendants)


def _rows(dataset: RunDataset) -> _Rows:
    space = GeneSpace.from_description(dataset.metadata["gene_space"])
    agents = dataset.agents
    genes = np.empty((len(agents), len(space)))
    for i, gene in enumerate(space.genes):
        column = agents[gene.name]
        if isinstance(gene, Categorical):
            genes[:, i] = pd.Categorical(column, categories=list(gene.choices)).codes
        else:
            genes[:, i] = column.to_numpy(np.float64)
    birth = agents["birth_generation"].to_numpy(np.int64)
    parent_a, parent_b = _numbers(agents["parent_a"]), _numbers(agents["parent_b"])
    numbers = agents["agent_number"].to_numpy(np.int64)
    # The genes changed from each first parent, where the dataset has it.
    order = np.argsort(numbers)
    at = order[np.minimum(np.searchsorted(numbers, parent_a, sorter=order), order.size - 1)]
    known = (parent_a >= 0) & (numbers[at] == parent_a) if numbers.size else parent_a >= 0
    records = AgentRecords(
        agent=numbers,
        branch=agents["branch"].to_numpy(np.int64),
        birth_generation=birth,
        parent_a=parent_a,
        parent_b=parent_b,
        fitness=agents["fitness"].to_numpy(np.float64),
        memory_kb=agents["memory_kb"].to_numpy(np.float64),
        speed_us=agents["speed_us"].to_numpy(np.float64),
        made_by=made_by_codes(parent_a, parent_b, birth),
        changed=(genes != genes[at]) & known[:, None] if numbers.size else genes != genes,
        known=known,
    )
    return _Rows(RecordsIndex(records), space)


def _numbers(ids: pd.Series) -> np.ndarray:
    """``agent-<n>`` ids as numbers (-1 where missing)."""
    text = ids.astype("string").str.removeprefix("agent-")
    numbers: np.ndarray = pd.to_numeric(text, errors="coerce").fillna(-1).to_numpy(np.int64)
    return numbers


def lineage_frames(lineage: Lineage | dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A lineage's ``nodes`` and ``edges`` as DataFrames, with dtypes.

    Args:
        lineage: From ``Engine.lineage``, ``RunDataset.lineage``, or the data of a
            ``lineage`` message (``client.get_lineage``).

    Returns:
        (nodes, edges): ids and parents as nullable strings, ``relation``, ``made_by``
        and ``kind`` as categories, ``genes_changed`` as lists (``None`` where unknown).
    """
    data = lineage.to_dict() if isinstance(lineage, Lineage) else lineage
    nodes = pd.DataFrame(data["nodes"])
    for column in ("agent_id", "parent_a", "parent_b"):
        nodes[column] = nodes[column].astype("string")
    for column, categories in (
        ("relation", ["self", "ancestor", "second_parent", "descendant"]),
        ("made_by", list(MADE_BY)),
    ):
        nodes[column] = pd.Categorical(nodes[column], categories=categories)
    for column in ("level", "birth_generation", "branch"):
        nodes[column] = nodes[column].astype("int64")
    edges = pd.DataFrame(data["edges"], columns=["parent", "child", "kind"])
    edges[["parent", "child"]] = edges[["parent", "child"]].astype("string")
    edges["kind"] = pd.Categorical(edges["kind"], categories=["first_parent", "second_parent"])
    return nodes, edges
