"""What :class:`~tdevlab.client.frames.Frames` holds, as a run dataset (``Frames.to_run``).

The layout is the one :func:`tdevlab.export_run` writes (generations, agents, population,
events and metadata), so :func:`tdevlab.load_run` reads either. What the wire does not carry
is derived here, as :meth:`Frames.to_run <tdevlab.client.frames.Frames.to_run>` documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from tdevlab.client.columns import _SEVERITIES, _gene_values
from tdevlab.engine.events import STATUS_NAMES, AgentUpdate, Alert, LogEntry
from tdevlab.engine.genes import Categorical, GeneSpace, Integer
from tdevlab.exceptions import InvalidParameters
from tdevlab.store.export import (
    _EVENT_DTYPES,
    _GENERATION_DTYPES,
    DATASET_FORMAT,
    DATASET_VERSION,
    RunDataset,
    _apply,
    _versions,
)
from tdevlab.store.rows import EVENT_COLUMNS, GENERATION_COLUMNS

_ENCODE = msgspec.json.Encoder().encode

#: One agent as the frames keep it: (first branch, packed numbers, object column values).
LatestAgent = tuple[int, bytes, tuple[Any, ...]]
#: The branch tree: branch -> (parent branch, fork generation).
Branches = Mapping[int, tuple[int | None, int]]


def run_dataset(
    *,
    evolution: pd.DataFrame,
    agents: pd.DataFrame,
    latest: Sequence[LatestAgent],
    events: Sequence[tuple[str, dict[str, Any]]],
    branch: int | None,
    branches: Branches,
    state: str | None,
    max_rows: dict[str, int | None],
    dropped: dict[str, int],
    metadata: dict[str, Any] | None,
) -> RunDataset:
    """The run dataset of the frames' tables (``Frames.to_run``).

    The server announces only notable agents, so ``population`` is empty (with its
    columns) and the metadata says ``"population_complete": False`` and ``"source":
    "client frames"``. ``generations.active`` marks the lineage of the latest branch,
    as learned from the evolution rows and rollback alerts.

    What the wire does not carry is derived: ``run_id`` is the metadata's, else the last
    one the evolution rows named, else -1; the events' ``seq`` numbers agent updates,
    logs and alerts in arrival order; an agent's ``status`` is the last one announced
    and ``feasible`` means it was not announced as violating.

    Args:
        evolution: ``Frames.evolution``.
        agents: ``Frames.agents``.
        latest: The latest entry of every agent, in the order of ``agents``.
        events: ``(kind, typed columns)`` of the agent_history, logs and alerts tables.
        branch: The latest branch seen (``None`` before any evolution row).
        branches: The branch tree learned from evolution rows and rollback alerts.
        state: The last run state announced on the control channel.
        max_rows: The frames' caps; dropped: rows they dropped (both go in the metadata).
        metadata: Merged into the dataset's metadata (``"run"`` key by key).

    Raises:
        InvalidParameters: if ``metadata["run"]`` is not a dict.
    """
    seen = evolution["run_id"].dropna()
    meta: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "format_version": DATASET_VERSION,
        "run": {
            "run_id": int(seen.iloc[-1]) if len(seen) else None,
            "problem": None,
            "seed": None,
            "created_at": None,
            "status": state,
            "active_branch": branch,
            "last_generation": _last_generation(evolution, branch),
        },
        "config": {},
        "gene_space": None,
        "branches": [
            {"branch": b, "parent_branch": parent, "fork_generation": fork}
            for b, (parent, fork) in sorted(branches.items())
        ],
        "frames": {"max_rows": max_rows, "dropped": dropped},
        "versions": _versions(),
    }
    for key, value in (metadata or {}).items():
        if key != "run":
            meta[key] = value
        elif isinstance(value, dict):
            meta["run"] = {**meta["run"], **value}
        else:
            raise InvalidParameters(f"metadata['run'] must be a dict, got {value!r}")
    meta.update(
        format=DATASET_FORMAT,
        format_version=DATASET_VERSION,
        population_complete=False,
        source="client frames",
    )
    run_id = meta["run"]["run_id"]
    run_id = run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else -1
    return RunDataset(
        generations=_generations_table(evolution, _lineage(branch, branches), run_id),
        agents=_agents_table(agents, latest, run_id, meta.get("gene_space")),
        population=_empty_population(),
        events=_events_table(events, run_id),
        metadata=meta,
    )


def _generations_table(
    evolution: pd.DataFrame, lineage: list[tuple[int, int, int | None]], run_id: int
) -> pd.DataFrame:
    g = evolution.reset_index()
    frame = pd.DataFrame({name: g[name] for name in GENERATION_COLUMNS})
    frame.insert(0, "run_id", g["run_id"].fillna(run_id).astype("int64"))
    branch = frame["branch"].to_numpy()
    generation = frame["generation"].to_numpy()
    active = np.zeros(len(frame), dtype=bool)
    for b, low, high in lineage:
        in_range = (branch == b) & (generation >= low)
        if high is not None:
            in_range &= generation <= high
        active |= in_range
    frame["active"] = active
    return _apply(frame, _GENERATION_DTYPES)


def _lineage(branch: int | None, branches: Branches) -> list[tuple[int, int, int | None]]:
    """(branch, first generation, last generation or None) back from the latest branch."""
    out: list[tuple[int, int, int | None]] = []
    upper: int | None = None
    current = branch
    while current is not None and current in branches:
        if any(b == current for b, _, _ in out):
            break  # a cycle can only come from inconsistent rollback details
        parent, fork = branches[current]
        out.append((current, fork + 1, upper))
        upper = fork
        current = parent
    return out


def _agents_table(
    agents: pd.DataFrame, latest: Sequence[LatestAgent], run_id: int, space: Any
) -> pd.DataFrame:
    first_branch = np.array([entry[0] for entry in latest], dtype=np.int64)
    numbers = [_agent_number(a) for a in agents.index]
    parents = agents["parents"].tolist()
    frame = pd.DataFrame(
        {
            "run_id": np.full(len(agents), run_id, dtype=np.int64),
            "agent_id": pd.array(list(agents.index), dtype="string"),
            "agent_number": np.array(numbers, dtype=np.int64),
            "branch": first_branch,
            "birth_generation": agents["birth_generation"].to_numpy(np.int64),
            "last_generation": agents["generation"].to_numpy(np.int64),
            "parent_a": pd.array([p[0] if p else None for p in parents], dtype="string"),
            "parent_b": pd.array([p[1] if len(p) > 1 else None for p in parents], dtype="string"),
        }
    )
    genes = [entry[2][5] for entry in latest]
    for name, column in _dataset_genes(genes, space).items():
        frame[name] = column
    frame["fitness"] = agents["fitness"].to_numpy(np.float64)
    frame["memory_kb"] = agents["memory_kb"].to_numpy(np.float64)
    frame["speed_us"] = agents["speed_us"].to_numpy(np.float64)
    # The wire carries no constraint violation: a violating status is the only sign.
    frame["feasible"] = (agents["status"] != "violating").to_numpy(bool)
    # A status the wire should not carry is missing (pandas will refuse to make it so itself).
    status = agents["status"].astype(object)
    known = list(STATUS_NAMES)
    frame["status"] = pd.Categorical(status.where(status.isin(known)), categories=known)
    return frame


def _events_table(sources: Sequence[tuple[str, dict[str, Any]]], run_id: int) -> pd.DataFrame:
    parts = [_event_rows(kind, columns) for kind, columns in sources]
    columns: dict[str, Any] = {}
    for name in EVENT_COLUMNS:
        if name in ("seq", "branch", "generation", "timestamp"):
            columns[name] = np.concatenate([part[name] for part in parts])
        else:
            columns[name] = [value for part in parts for value in part[name]]
    order = np.argsort(columns["seq"], kind="stable")
    events = pd.DataFrame(
        {
            "run_id": np.full(len(order), run_id, dtype=np.int64),
            **{
                name: np.asarray(values, dtype=object)[order]
                if isinstance(values, list)
                else values[order]
                for name, values in columns.items()
            },
        }
    )
    events["timestamp"] = pd.to_datetime(events["timestamp"], unit="ns", utc=True)
    events = _apply(events, _EVENT_DTYPES)
    events["kind"] = events["kind"].cat.set_categories(["agent_update", "log", "alert"])
    events["severity"] = events["severity"].cat.set_categories(list(_SEVERITIES))
    return events


def _dataset_genes(genes: list[dict[str, Any]], description: Any) -> dict[str, Any]:
    """Gene columns of the dataset's agents table, typed by the gene space if known."""
    out: dict[str, Any] = {}
    space = None
    if isinstance(description, list):
        try:
            space = GeneSpace.from_description(description)
        except (InvalidParameters, KeyError, TypeError, ValueError):
            space = None
    if space is not None:
        for gene in space.genes:
            values = [entry.get(gene.name) for entry in genes]
            if isinstance(gene, Categorical):
                out[gene.name] = _gene_values(values, gene.choices)
            elif isinstance(gene, Integer) and None not in values:
                out[gene.name] = np.array(values, dtype=np.int64)
            else:
                out[gene.name] = np.array(
                    [np.nan if v is None else v for v in values], dtype=np.float64
                )
        return out
    for name in dict.fromkeys(name for entry in genes for name in entry):
        values = [entry.get(name) for entry in genes]
        kinds = {type(v) for v in values}
        if kinds == {bool}:  # as the engine's datasets store categorical genes
            out[name] = pd.Categorical(values, categories=[False, True])
        else:
            out[name] = _gene_values(values, None)
    return out


def _event_rows(kind: str, columns: dict[str, Any]) -> dict[str, Any]:
    """The events-table columns of one source table (payloads as the store writes them)."""
    values = {name: _pylist(column) for name, column in columns.items() if name != "timestamp"}
    n = len(values["_order"])
    out: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS, [None] * n)
    out.update(
        seq=columns["_order"],
        branch=columns["branch"],
        generation=columns["generation"],
        kind=[kind] * n,
        timestamp=columns["timestamp"].asi8,
    )
    if kind == "agent_update":
        out["severity"] = ["info"] * n
        out["agent_id"] = values["agent_id"]
        out["message"] = [
            f"{name} is {status} ({reason})"
            for name, status, reason in zip(
                values["name"], values["status"], values["reason"], strict=True
            )
        ]
        fields: tuple[str, ...] = AgentUpdate.__struct_fields__
    elif kind == "log":
        out["severity"] = values["level"]
        out["message"] = values["message"]
        out["agent_id"] = [
            d.get("agent_id") if isinstance(d.get("agent_id"), str) else None
            for d in values["details"]
        ]
        fields = LogEntry.__struct_fields__
    else:
        for name in ("severity", "alert_id", "title", "message", "recommended_action"):
            out[name] = values[name]
        fields = Alert.__struct_fields__
    rows = zip(*(values[f] for f in fields), strict=True)
    out["payload"] = [_ENCODE(dict(zip(fields, row, strict=True))).decode() for row in rows]
    return out


def _pylist(column: Any) -> list[Any]:
    """A column's values as Python objects (``None`` for a missing string)."""
    if isinstance(column, np.ndarray | pd.Categorical):
        return list(column.tolist())
    return list(column.to_numpy(dtype=object, na_value=None).tolist())


def _empty_population() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": np.empty(0, dtype=np.int64),
            "branch": np.empty(0, dtype=np.int64),
            "generation": np.empty(0, dtype=np.int64),
            "agent_id": pd.array([], dtype="string"),
            "status": pd.Categorical([], categories=list(STATUS_NAMES)),
            "fitness": np.empty(0, dtype=np.float64),
            "memory_kb": np.empty(0, dtype=np.float64),
            "speed_us": np.empty(0, dtype=np.float64),
            "active": np.empty(0, dtype=bool),
        }
    )


def _last_generation(evolution: pd.DataFrame, branch: int | None) -> int | None:
    if branch is None:
        return None
    rows = evolution.index[evolution["branch"].to_numpy() == branch]
    return int(rows.max()) if len(rows) else None


def _agent_number(agent_id: str) -> int:
    head, _, number = agent_id.rpartition("-")
    return int(number) if head and number.isdigit() else -1
