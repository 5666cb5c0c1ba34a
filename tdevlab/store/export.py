"""Run datasets: a stored run written as tables (Parquet or CSV) and read back with dtypes.

A dataset is a directory::

    metadata.json      run config, seed, gene space, branches, versions, and each table's schema
    generations.*      one row per generation of every branch (the evolution update fields)
    agents.*           one row per agent ever created: lineage, genes, metrics, last status
    population.*       one row per (branch, generation, agent): who was alive, with metrics
    events.*           agent updates, logs and alerts in order, with their JSON payload

``active`` in ``generations`` and ``population`` marks the rows of the lineage the run
continued on; rows of abandoned branches (after a rollback) have ``active == False``.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tdevlab.engine.events import STATUS_NAMES
from tdevlab.engine.genes import Categorical, GeneSpace, Integer
from tdevlab.engine.lineage import Lineage
from tdevlab.exceptions import DatasetError, GenerationNotFound, InvalidParameters
from tdevlab.store.base import RunStore, lineage_of
from tdevlab.store.members import MEMBER_TABLES, member_table
from tdevlab.store.rows import EVENT_COLUMNS, GENERATION_COLUMNS

__all__ = ["DATASET_FORMAT", "RunDataset", "export_run", "load_run", "write_dataset"]

DATASET_FORMAT = "tdevlab-run"
DATASET_VERSION = 1
TABLES = ("generations", "agents", "population", "events")
_UTC = "datetime64[ns, UTC]"

_GENERATION_DTYPES: dict[str, str] = {
    "run_id": "int64",
    "branch": "int64",
    "generation": "int64",
    "agents_evolved": "int64",
    "mutations_applied": "int64",
    "crossovers": "int64",
    "population_size": "int64",
    "best_agent_id": "string",
    "best_agent_name": "string",
    "timestamp": _UTC,
    "active": "bool",
    # A strategy's measures: NaN where it has none (the GA) or for runs made before them.
    "front_size": "float64",
    "hypervolume": "float64",
    "archive_coverage": "float64",
    "qd_score": "float64",
}
_EVENT_DTYPES: dict[str, str] = {
    "run_id": "int64",
    "seq": "int64",
    "branch": "int64",
    "generation": "int64",
    "kind": "category",
    "timestamp": _UTC,
    "severity": "category",
    "agent_id": "string",
    "alert_id": "string",
    "title": "string",
    "message": "string",
    "recommended_action": "string",
    "payload": "string",
}
_STATUS_CATEGORIES = list(STATUS_NAMES)
_PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3


@dataclass
class RunDataset:
    """A run dataset in pandas: ``generations``, ``agents``, ``population``, ``events``.

    ``metadata`` is the parsed ``metadata.json``; ``path`` the directory it came from.
    """

    generations: pd.DataFrame
    agents: pd.DataFrame
    population: pd.DataFrame
    events: pd.DataFrame
    metadata: dict[str, Any]
    path: Path | None = None
    #: NSGA-II runs: the front of every stored generation (see ``store/members.py``).
    front: pd.DataFrame | None = None
    #: MAP-Elites runs: the archive of every stored generation.
    archive: pd.DataFrame | None = None
    #: The agents as lineage reads them, made by the first :meth:`lineage`.
    lineage_rows: Any = field(default=None, init=False, repr=False, compare=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the tables by name: the four of every run, and ``front`` or ``archive``."""
        out = {name: getattr(self, name) for name in TABLES}
        for name in MEMBER_TABLES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def lineage(
        self, agent_id: str | int, depth: int | None = None, descendants: bool = False
    ) -> Lineage:
        """An agent's lineage, rebuilt from the ``agents`` table (as ``Engine.lineage``).

        Raises:
            AgentNotFound: if the dataset has no such agent.
            InvalidParameters: for a depth out of range.
        """
        from tdevlab.store.dataset_lineage import dataset_lineage

        return dataset_lineage(self, agent_id, depth, descendants)

    @property
    def active_generations(self) -> pd.DataFrame:
        """The generations of the lineage the run continued on, indexed by generation."""
        g = self.generations
        return g[g["active"]].set_index("generation").sort_index()

    @property
    def alerts(self) -> pd.DataFrame:
        """The alert events."""
        return self.events[self.events["kind"] == "alert"]

    def __repr__(self) -> str:
        run = self.metadata.get("run", {})
        return (
            f"<RunDataset run={run.get('run_id')} problem={run.get('problem')} "
            f"generations={len(self.generations)} agents={len(self.agents)} "
            f"events={len(self.events)}>"
        )


def build_dataset(store: RunStore, run_id: int, space: GeneSpace | None = None) -> RunDataset:
    """Read a stored run into a :class:`RunDataset` (in memory, nothing written).

    Args:
        store: The store holding the run.
        run_id: Which run.
        space: The gene space (default: the one recorded with the run).
    """
    info = store.run_info(run_id)
    space = space or GeneSpace.from_description(info.config["gene_space"])
    branches = {b.branch: b for b in store.branches(run_id)}
    lineage = lineage_of(branches, info.active_branch)
    gen_rows = store.generation_rows(run_id)
    active = {
        (r["branch"], r["generation"])
        for r in gen_rows
        if _in_lineage(lineage, r["branch"], r["generation"])
    }
    generations = pd.DataFrame(gen_rows, columns=list(GENERATION_COLUMNS))
    generations.insert(0, "run_id", run_id)
    generations["active"] = [(r["branch"], r["generation"]) in active for r in gen_rows]
    generations["timestamp"] = pd.to_datetime(generations["timestamp"], unit="s", utc=True)
    generations = _apply(generations, _GENERATION_DTYPES)

    population, agents, complete = _population_and_agents(store, run_id, gen_rows, active, space)

    events = pd.DataFrame(store.event_rows(run_id), columns=list(EVENT_COLUMNS))
    events.insert(0, "run_id", run_id)
    events["timestamp"] = pd.to_datetime(events["timestamp"], unit="s", utc=True)
    events = _apply(events, _EVENT_DTYPES)
    events["kind"] = events["kind"].cat.set_categories(["agent_update", "log", "alert"])
    events["severity"] = events["severity"].cat.set_categories(
        ["info", "warning", "error", "critical"]
    )

    metadata = {
        "format": DATASET_FORMAT,
        "format_version": DATASET_VERSION,
        "run": {
            "run_id": info.run_id,
            "problem": info.problem,
            "seed": str(info.seed),
            "created_at": info.created_at,
            "status": info.status,
            "active_branch": info.active_branch,
            "last_generation": info.last_generation,
        },
        "config": info.config,
        "gene_space": space.describe(),
        "branches": [
            {
                "branch": b.branch,
                "parent_branch": b.parent_branch,
                "fork_generation": b.fork_generation,
            }
            for b in branches.values()
        ],
        "population_complete": complete,
        "versions": _versions(),
    }
    dataset = RunDataset(generations, agents, population, events, metadata)
    members = member_table(store, run_id, gen_rows, info.config, space)
    if members is not None:
        setattr(dataset, members[0], members[1])
    return dataset


def _population_and_agents(
    store: RunStore,
    run_id: int,
    gen_rows: list[dict[str, Any]],
    active: set[tuple[int, int]],
    space: GeneSpace,
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "branch",
            "generation",
            "agent_number",
            "status",
            "fitness",
            "memory_kb",
            "speed_us",
            "violation",
            "birth_generation",
            "parent_a",
            "parent_b",
            "genes",
        )
    }
    complete = True
    for row in gen_rows:
        try:
            snap = store.load_snapshot(run_id, row["branch"], row["generation"])
        except GenerationNotFound:
            complete = False  # a memory store keeps only the newest snapshots
            continue
        pop = snap.population
        n = len(pop)
        parts["branch"].append(np.full(n, row["branch"], dtype=np.int64))
        parts["generation"].append(np.full(n, row["generation"], dtype=np.int64))
        parts["agent_number"].append(pop.agent_id)
        for name in (
            "status",
            "fitness",
            "memory_kb",
            "speed_us",
            "violation",
            "birth_generation",
            "parent_a",
            "parent_b",
            "genes",
        ):
            parts[name].append(getattr(pop, name))
    if parts["genes"]:
        cols = {k: np.concatenate(v) for k, v in parts.items()}
    else:
        cols = {k: np.empty(0) for k in parts}
        cols["genes"] = np.empty((0, len(space)))

    full = pd.DataFrame(
        {
            "branch": cols["branch"].astype(np.int64),
            "generation": cols["generation"].astype(np.int64),
            "agent_id": _agent_ids(cols["agent_number"]),
            "status": pd.Categorical.from_codes(
                cols["status"].astype(np.int8), categories=_STATUS_CATEGORIES
            ),
            "fitness": cols["fitness"].astype(np.float64),
            "memory_kb": cols["memory_kb"].astype(np.float64),
            "speed_us": cols["speed_us"].astype(np.float64),
        }
    )
    full.insert(0, "run_id", np.int64(run_id))
    is_active = np.zeros(len(full), dtype=bool)
    for b, g in active:
        is_active |= (cols["branch"] == b) & (cols["generation"] == g)
    full["active"] = is_active
    population = full.sort_values(
        ["branch", "generation", "fitness"], ascending=[True, True, False], kind="stable"
    ).reset_index(drop=True)

    # Agents: first appearance gives lineage, genes and metrics (they never change);
    # the last appearance gives the last status and generation.
    numbers = cols["agent_number"].astype(np.int64)
    order = np.lexsort((cols["generation"], numbers))
    numbers_sorted = numbers[order]
    first = order[np.r_[True, numbers_sorted[1:] != numbers_sorted[:-1]]] if numbers.size else order
    last = order[np.r_[numbers_sorted[1:] != numbers_sorted[:-1], True]] if numbers.size else order
    genes = cols["genes"][first]
    agents = pd.DataFrame(
        {
            "agent_id": _agent_ids(numbers[first]),
            "agent_number": numbers[first],
            "branch": cols["branch"][first].astype(np.int64),
            "birth_generation": cols["birth_generation"][first].astype(np.int64),
            "last_generation": cols["generation"][last].astype(np.int64),
            "parent_a": _agent_ids(cols["parent_a"][first].astype(np.int64)),
            "parent_b": _agent_ids(cols["parent_b"][first].astype(np.int64)),
        }
    )
    agents.insert(0, "run_id", np.int64(run_id))
    for i, gene in enumerate(space.genes):
        agents[gene.name] = _gene_column(gene, genes[:, i])
    agents["fitness"] = cols["fitness"][first].astype(np.float64)
    agents["memory_kb"] = cols["memory_kb"][first].astype(np.float64)
    agents["speed_us"] = cols["speed_us"][first].astype(np.float64)
    agents["feasible"] = cols["violation"][first] == 0
    last_status = cols["status"][last].astype(np.int8)
    last_gen = cols["generation"][last]
    # Agents missing from their branch's final generation have retired.
    final_of_branch: dict[int, int] = {}
    for r in gen_rows:
        final_of_branch[r["branch"]] = max(final_of_branch.get(r["branch"], -1), r["generation"])
    still_alive = np.array(
        [
            g == final_of_branch.get(int(b), -1)
            for b, g in zip(cols["branch"][last], last_gen, strict=True)
        ],
        dtype=bool,
    )
    codes = np.where(still_alive, last_status, STATUS_NAMES.index("retired")).astype(np.int8)
    agents["status"] = pd.Categorical.from_codes(codes, categories=_STATUS_CATEGORIES)
    return population, agents, complete


def _in_lineage(lineage: list[tuple[int, int, int | None]], branch: int, generation: int) -> bool:
    return any(
        branch == b and generation >= lo and (hi is None or generation <= hi)
        for b, lo, hi in lineage
    )


def _agent_ids(numbers: np.ndarray) -> pd.Series:
    ids = pd.Series(["agent-" + str(int(n)) if n >= 0 else None for n in numbers], dtype="string")
    return ids


def _gene_column(gene: Any, values: np.ndarray) -> Any:
    if isinstance(gene, Categorical):
        return pd.Categorical.from_codes(values.astype(np.int64), categories=list(gene.choices))
    if isinstance(gene, Integer):
        return values.astype(np.int64)
    return values.astype(np.float64)


def _apply(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    for column, dtype in dtypes.items():
        if column in frame and str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _versions() -> dict[str, str]:
    import msgspec
    import pyarrow

    from tdevlab import __version__

    return {
        "tdevlab": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "msgspec": msgspec.__version__,
    }


def _schema(frame: pd.DataFrame) -> dict[str, Any]:
    columns = {}
    for name, dtype in frame.dtypes.items():
        entry: dict[str, Any] = {"dtype": str(dtype)}
        if isinstance(dtype, pd.CategoricalDtype):
            entry["categories"] = list(dtype.categories)
        columns[str(name)] = entry
    return columns


def export_run(
    store: RunStore | str | Path,
    run_id: int,
    path: str | Path,
    *,
    format: str = "parquet",
    problem: Any = None,
) -> Path:
    """Write a stored run as a dataset directory.

    Args:
        store: A run store or the path of a SQLite store.
        run_id: Which run.
        path: The directory to write (created; existing table files are replaced).
        format: ``"parquet"`` (default) or ``"csv"``.
        problem: The run's problem, for its gene space (default: as recorded with the run).

    Returns:
        The dataset directory.

    Raises:
        InvalidParameters: for an unknown format.
        RunNotFound: if the run is not in the store.
    """
    if format not in ("parquet", "csv"):
        raise InvalidParameters(f"format={format!r} must be 'parquet' or 'csv'")
    if isinstance(store, str | Path):
        from tdevlab.store.sqlite import SQLiteStore

        with SQLiteStore(store) as opened:
            return export_run(opened, run_id, path, format=format, problem=problem)
    space = problem.gene_space if problem is not None else None
    return write_dataset(build_dataset(store, run_id, space), path, format=format)


def write_dataset(dataset: RunDataset, path: str | Path, *, format: str = "parquet") -> Path:
    """Write a :class:`RunDataset` as a dataset directory that :func:`load_run` reads back.

    ``metadata.json`` gets the dataset's metadata plus each table's file, row count and
    schema (dtypes and categories) and the export time.

    Args:
        dataset: The tables and metadata (from :func:`build_dataset` or a client's frames).
        path: The directory to write (created; existing table files are replaced).
        format: ``"parquet"`` (default) or ``"csv"``.

    Returns:
        The dataset directory.

    Raises:
        InvalidParameters: for an unknown format.
    """
    if format not in ("parquet", "csv"):
        raise InvalidParameters(f"format={format!r} must be 'parquet' or 'csv'")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Any] = {}
    for name, frame in dataset.tables().items():
        file = f"{name}.{format}"
        if format == "parquet":
            frame.to_parquet(out / file, index=False, engine="pyarrow")
        else:
            frame.to_csv(out / file, index=False)
        tables[name] = {"file": file, "rows": len(frame), "columns": _schema(frame)}
    metadata = dict(dataset.metadata)
    metadata["tables"] = tables
    metadata["exported_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    return out


def load_run(path: str | Path) -> RunDataset:
    """Read a dataset directory written by :func:`export_run` (or a client's ``frames``).

    Dtypes are restored from ``metadata.json``: timestamps as UTC datetimes, categorical
    columns with their categories (including bool and int choices), nullable strings.

    Raises:
        DatasetError: if the directory, its metadata or a table is missing or unreadable.
    """
    root = Path(path)
    meta_file = root / "metadata.json"
    if not meta_file.is_file():
        raise DatasetError(f"{root} is not a tdevlab run dataset: no metadata.json")
    try:
        metadata = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_file} is not valid JSON: {exc}") from exc
    if metadata.get("format") != DATASET_FORMAT:
        raise DatasetError(
            f"{meta_file} describes {metadata.get('format')!r}, not {DATASET_FORMAT!r}"
        )
    frames = {}
    for name in TABLES:
        spec = metadata.get("tables", {}).get(name)
        if spec is None:
            raise DatasetError(f"{meta_file} lists no {name!r} table")
        file = root / spec["file"]
        if not file.is_file():
            raise DatasetError(f"dataset table {file} is missing")
        try:
            frames[name] = _read_table(file, spec["columns"])
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"cannot read {file}: {exc}") from exc
    for name in MEMBER_TABLES:  # optional: only runs whose strategy keeps a set
        spec = metadata.get("tables", {}).get(name)
        if spec is not None:
            try:
                frames[name] = _read_table(root / spec["file"], spec["columns"])
            except (OSError, ValueError, KeyError) as exc:
                raise DatasetError(f"cannot read {root / spec['file']}: {exc}") from exc
    return RunDataset(**frames, metadata=metadata, path=root)


def _read_table(file: Path, columns: dict[str, Any]) -> pd.DataFrame:
    if file.suffix == ".parquet":
        frame = pd.read_parquet(file, engine="pyarrow")
    else:
        frame = pd.read_csv(
            file,
            dtype={c: "string" for c, s in columns.items() if s["dtype"] in ("string", "category")},
            keep_default_na=True,
            # pandas 3 parses floats round-trip by default and deprecates the option.
            **({} if _PANDAS_3 else {"float_precision": "round_trip"}),
        )
    missing = [c for c in columns if c not in frame]
    if missing:
        raise DatasetError(f"{file} lacks columns {missing}")
    for column, spec in columns.items():
        dtype = spec["dtype"]
        series = frame[column]
        if dtype == "category":
            categories = spec["categories"]
            # CSV gives text; map it back to the original category values (bool, int, str).
            # Parquet gives bool categories back as plain bools.
            by_text = {str(c): c for c in categories}
            if not isinstance(series.dtype, pd.CategoricalDtype):
                series = series.map(functools.partial(_from_text, by_text))
            frame[column] = pd.Categorical(series, categories=categories)
        elif dtype.startswith("datetime64"):
            frame[column] = pd.to_datetime(series, utc=True).astype(dtype)
        elif str(series.dtype) != dtype:
            frame[column] = series.astype(dtype)
    return frame[list(columns)]


def _from_text(by_text: dict[str, Any], value: Any) -> Any:
    return by_text.get(value, value) if isinstance(value, str) else value
