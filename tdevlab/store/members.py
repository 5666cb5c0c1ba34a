"""A run's front or archive per generation, as a dataset table (``front`` / ``archive``).

Rebuilt at export from what the store already keeps: each generation's snapshot holds the
population, the parameters and the strategy's state, and the run's config names the
strategy and its settings, so the strategy recomputes its member set exactly as it
announced it live. Runs whose strategy keeps no set (the GA) have no such table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tdevlab.engine.genes import GeneSpace
from tdevlab.engine.params import Parameters
from tdevlab.engine.storage import RunStore
from tdevlab.engine.strategy import make_strategy
from tdevlab.exceptions import GenerationNotFound, InvalidParameters

__all__ = ["MEMBER_TABLES", "member_table"]

#: The member tables a dataset may have, by the strategy's kind of set.
MEMBER_TABLES: tuple[str, ...] = ("front", "archive")


def member_table(
    store: RunStore,
    run_id: int,
    gen_rows: list[dict[str, Any]],
    config: dict[str, Any],
    space: GeneSpace,
) -> tuple[str, pd.DataFrame] | None:
    """``(kind, table)``: one row per member agent and stored generation, or ``None``.

    Columns: ``run_id``, ``branch``, ``generation``, ``agent_id``, ``fitness``,
    ``memory_kb``, ``speed_us``, then the set's own: ``objective_<name>`` (a front), or
    ``descriptor_<name>`` and ``cell_<name>`` (an archive).
    """
    stored = config.get("strategy")
    if not stored:
        return None
    try:
        strategy = make_strategy(stored["name"], stored.get("config"))
    except InvalidParameters:  # a custom strategy: its rows are not ours to rebuild
        return None
    table_of = getattr(strategy, "member_table", None)
    if table_of is None:
        return None
    rows: list[dict[str, Any]] = []
    kind = None
    for row in gen_rows:
        try:
            snap = store.load_snapshot(run_id, row["branch"], row["generation"])
        except GenerationNotFound:
            continue  # a memory store keeps only the newest snapshots
        pop = snap.population
        params = Parameters.validated(snap.state["parameters"])
        table = table_of(snap.state.get("strategy") or {}, space, pop, params)
        kind = table["kind"]
        names = table.get("objectives") or table.get("descriptors") or []
        labels = [str(n).rpartition(":")[2] for n in names]
        extra = table["columns"]
        for i, r in enumerate(np.asarray(table["rows"]).tolist()):
            entry: dict[str, Any] = {
                "run_id": run_id,
                "branch": row["branch"],
                "generation": row["generation"],
                "agent_id": f"agent-{int(pop.agent_id[r])}",
                "fitness": float(pop.fitness[r]),
                "memory_kb": float(pop.memory_kb[r]),
                "speed_us": float(pop.speed_us[r]),
            }
            if "objectives" in extra:
                entry.update(
                    zip((f"objective_{n}" for n in labels), extra["objectives"][i], strict=True)
                )
            if "descriptors" in extra:
                entry.update(
                    zip((f"descriptor_{n}" for n in labels), extra["descriptors"][i], strict=True)
                )
                entry.update(zip((f"cell_{n}" for n in labels), extra["cell"][i], strict=True))
            rows.append(entry)
    if kind is None:
        kind = "front" if "objectives" in getattr(strategy, "config", {}) else "archive"
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "branch", "generation", "agent_id"])
    frame = frame.astype({"run_id": "int64", "branch": "int64", "generation": "int64",
                          "agent_id": "string"})  # fmt: skip
    return kind, frame
