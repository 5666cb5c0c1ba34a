"""Runs compared: one long table, a rank table and plots, from datasets, clients or a store.

.. code-block:: python

    result = tdevlab.compare("runs.db")                     # every run of a store
    result = tdevlab.compare("runs.db", run_ids=[1, 2, 3])
    result = tdevlab.compare([load_run("data/a"), load_run("data/b"), client])
    result.frame        # one row per (run, generation) of the lineage each run ended on
    result.ranks        # mean rank per strategy and problem
    result.plot("compare.png")

What is counted, and how:

- **The lineage a run ended on.** A run with rollbacks is a tree of branches; a run's rows
  are the generations of the lineage it continued on (``generations.active``), in
  generation order. Abandoned branches are left out, their evaluations too: a run is
  compared as if it had gone straight to where it ended.
- **Evaluations** are the agents that entered the run, counted up along that lineage: per
  generation ``agents_evolved`` (the offspring the strategy proposed, each evaluated once;
  the whole initial population at generation 0) plus the uploaded agents that joined it
  (each evaluated once, when it was uploaded; it takes the place of one offspring). The
  store does not record the uploads per generation, so they are derived: from a SQLite
  store exactly, from each generation's range of new agent ids (uploads are numbered before
  the offspring; see ``SQLiteStore.new_id_ranges``); from a client's frames, from the
  ``agent_update`` events whose reason is ``uploaded``; from an exported dataset, from the
  agents born in the generation whose ids come before its offspring's (exact when the
  strategy keeps its newest offspring, as the GA does; otherwise an upload no population
  kept is not seen). Uploads the engine refused are not counted.
- **best_so_far** is the cumulative maximum of the per-generation ``best_fitness`` along
  the lineage (fitness is higher-is-better in every problem).

pandas is imported here; matplotlib only by the plot methods
(:mod:`tdevlab.notebook.compare_plots`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tdevlab.exceptions import DatasetError, InvalidParameters, RunNotFound
from tdevlab.store.base import lineage_of
from tdevlab.store.export import RunDataset, load_run
from tdevlab.store.rows import GENERATION_COLUMNS
from tdevlab.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["COLUMNS", "Comparison", "compare", "describe_runs"]

#: The columns of :attr:`Comparison.frame`, in order.
COLUMNS: tuple[str, ...] = (
    "run",
    "strategy",
    "seed",
    "problem",
    "generation",
    "evaluations",
    "best_fitness",
    "best_so_far",
    "average_fitness",
    "feasible_share",
)
_NEEDED = ("generation", "branch", "active", "best_fitness", "agents_evolved")


@dataclass
class Comparison:
    """Several runs side by side (what :func:`compare` returns).

    Attributes:
        frame: One row per (run, generation) of the lineage each run ended on, with the
            columns of :data:`COLUMNS`; ``run`` is a label unique among the runs.
        final: One row per run (index ``run``): strategy, seed, problem, generations,
            evaluations and ``best_so_far`` at its last generation, and ``rank`` among the
            runs of its problem (1 = highest best-so-far; ties share the lower rank).
        ranks: Mean rank per strategy (index) on each problem (columns), with
            ``mean_rank`` over the problems and ``runs`` counted; best first.
    """

    frame: pd.DataFrame
    final: pd.DataFrame = field(init=False)
    ranks: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.final = _final(self.frame)
        self.ranks = _ranks(self.final)

    @property
    def strategies(self) -> list[str]:
        """The strategies compared, in order of first appearance."""
        return list(dict.fromkeys(self.frame["strategy"]))

    @property
    def problems(self) -> list[str]:
        """The problems compared, in order of first appearance."""
        return list(dict.fromkeys(self.frame["problem"]))

    def plot_best_so_far(self, path: str | Path | None = None) -> Figure:
        """Best-so-far against evaluations, one panel per problem: per strategy the median
        over its runs (seeds) as a line and their min..max as a band.

        Args:
            path: Where to save it as PNG (optional).
        """
        from tdevlab.notebook.compare_plots import best_so_far_figure, save_png

        return save_png(best_so_far_figure(self.frame), path)

    def plot_final(self, path: str | Path | None = None) -> Figure:
        """The final best-so-far of every run: a box and the points per strategy, one panel
        per problem.

        Args:
            path: Where to save it as PNG (optional).
        """
        from tdevlab.notebook.compare_plots import final_figure, save_png

        return save_png(final_figure(self.final), path)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Both plots in one figure: best-so-far curves above, final distributions below.

        Args:
            path: Where to save it as PNG (optional).
        """
        from tdevlab.notebook.compare_plots import compare_figure, save_png

        return save_png(compare_figure(self.frame, self.final), path)

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``compare.png`` (:meth:`plot`) and ``compare.csv`` (:attr:`frame`).

        Returns:
            The two paths.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        png, csv = out / "compare.png", out / "compare.csv"
        self.plot(png)
        self.frame.to_csv(csv, index=False)
        return png, csv

    def __repr__(self) -> str:
        return (
            f"<Comparison runs={len(self.final)} strategies={self.strategies} "
            f"problems={self.problems}>"
        )


def compare(runs: Any, *, run_ids: Iterable[int] | None = None) -> Comparison:
    """Compare runs: one long table, a rank table and plots (see the module docstring).

    Args:
        runs: A SQLite store (its path or a ``SQLiteStore``), whose runs ``run_ids`` are
            compared (by default every run with at least one generation); or one or
            several of: a ``RunDataset`` (``load_run``, ``Frames.to_run``), a dataset
            directory, a client with ``frames`` (``Client``, ``SyncClient``: what its
            frames hold; its problem and seed are unknown unless given as
            ``client.frames.to_run({"run": {...}})``).
        run_ids: With a store: which runs, in order.

    Returns:
        The comparison.

    Raises:
        InvalidParameters: for no runs, an item of another kind, or ``run_ids`` without a
            store.
        RunNotFound: for a run id the store does not hold (named, with the ones it holds).
        DatasetError: for a path that is neither a store nor a dataset, or a run without
            any ``best_fitness`` (named).
    """
    if isinstance(runs, SQLiteStore):
        return Comparison(_frame(_from_store(runs, run_ids)))
    if isinstance(runs, str | Path) and Path(runs).is_file():
        with SQLiteStore(runs) as store:
            return Comparison(_frame(_from_store(store, run_ids)))
    if run_ids is not None:
        raise InvalidParameters("run_ids needs a store (a SQLite file) as runs")
    items = [runs] if _single(runs) else list(runs)
    if not items:
        raise InvalidParameters("compare() needs at least one run, got none")
    return Comparison(_frame([_from_item(item, i) for i, item in enumerate(items)]))


def describe_runs(store: SQLiteStore | str | Path) -> pd.DataFrame:
    """The runs of a store, one row each (index ``run_id``): strategy, problem, seed,
    generations (of the lineage it ended on), last generation, branches and best fitness.

    Raises:
        DatasetError: if ``store`` is a path and no such file exists.
    """
    if not isinstance(store, SQLiteStore):
        if not Path(store).is_file():
            raise DatasetError(f"no run store at {store}")
        with SQLiteStore(store) as opened:
            return describe_runs(opened)
    rows = []
    for info in store.runs():
        generations = store.generation_rows(info.run_id)
        lineage = _on_lineage(store, info.run_id, info.active_branch, generations)
        best = [r["best_fitness"] for r in lineage if r["best_fitness"] is not None]
        rows.append(
            {
                "run_id": info.run_id,
                "strategy": _strategy_label(info.config),
                "problem": _problem_label(info.problem, info.config),
                "seed": info.seed,
                "generations": len(lineage),
                "last_generation": info.last_generation,
                "branches": len(store.branches(info.run_id)),
                "best_fitness": max(best) if best else float("nan"),
            }
        )
    columns = ["run_id", "strategy", "problem", "seed", "generations", "last_generation"]
    frame = pd.DataFrame(rows, columns=[*columns, "branches", "best_fitness"])
    return frame.set_index("run_id")


# -- sources --------------------------------------------------------------------------------


@dataclass
class _Run:
    """One run's pieces before the table is built."""

    generations: pd.DataFrame  # the dataset's generations table (``active`` marks the lineage)
    metadata: dict[str, Any]  # at least "run" (run_id, problem, seed) and "config"
    uploads: Mapping[tuple[int, int], int]
    where: str  # how error messages name the run
    path: Path | None = None
    strategy: str | None = None

    @classmethod
    def of(cls, dataset: RunDataset, where: str, strategy: str | None = None) -> _Run:
        uploads = _dataset_uploads(dataset)
        return cls(dataset.generations, dataset.metadata, uploads, where, dataset.path, strategy)


def _single(runs: Any) -> bool:
    return isinstance(runs, RunDataset | str | Path) or hasattr(runs, "frames")


def _from_store(store: SQLiteStore, run_ids: Iterable[int] | None) -> list[_Run]:
    known = [info.run_id for info in store.runs()]
    if run_ids is None:  # every run that has a generation (a run made but never stepped has none)
        wanted = [r for r in known if store.count_generations(r)]
    else:
        wanted = [_run_id(r) for r in run_ids]
    if not wanted:
        raise InvalidParameters(
            f"compare() needs at least one run; {store.path} holds none"
            if run_ids is None
            else "compare() needs at least one run, got no run ids"
        )
    missing = [r for r in wanted if r not in known]
    if missing:
        raise RunNotFound(
            f"no run {', '.join(map(str, missing))} in {store.path}; its runs are {known}",
            details={"run_id": missing[0]},
        )
    out = []
    for run_id in wanted:
        # Only the generation rows: no snapshot is read.
        info = store.run_info(run_id)
        rows = store.generation_rows(run_id)
        on_lineage = {
            (r["branch"], r["generation"])
            for r in _on_lineage(store, run_id, info.active_branch, rows)
        }
        generations = pd.DataFrame(rows, columns=list(GENERATION_COLUMNS))
        generations["active"] = [(r["branch"], r["generation"]) in on_lineage for r in rows]
        # A generation's id range holds its offspring and the uploads that joined it.
        evolved = {(r["branch"], r["generation"]): r["agents_evolved"] for r in rows}
        uploads = {
            key: high - low + 1 - evolved[key]
            for key, (low, high) in store.new_id_ranges(run_id).items()
        }
        metadata = {
            "run": {"run_id": run_id, "problem": info.problem, "seed": str(info.seed)},
            "config": info.config,
        }
        out.append(_Run(generations, metadata, uploads, f"run {run_id} of {store.path}"))
    return out


def _run_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidParameters(f"run ids are integers, got {value!r}")
    return int(value)


def _from_item(item: Any, index: int) -> _Run:
    if isinstance(item, RunDataset):
        where = f"dataset {item.path}" if item.path is not None else f"dataset #{index + 1}"
        return _Run.of(item, where)
    if isinstance(item, str | Path):
        path = Path(item)
        if not path.exists():
            raise DatasetError(f"{path} is neither a run store nor a dataset directory")
        return _Run.of(load_run(path), f"dataset {path}")
    frames = getattr(item, "frames", None)
    if frames is not None and hasattr(frames, "to_run"):
        return _Run.of(frames.to_run(), f"client #{index + 1}", getattr(item, "strategy", None))
    raise InvalidParameters(
        f"compare() takes run datasets, dataset directories, clients or a store; item "
        f"{index + 1} is a {type(item).__name__}"
    )


def _dataset_uploads(dataset: RunDataset) -> dict[tuple[int, int], int]:
    """Uploads per (branch, generation) as far as a dataset shows them (see the docstring)."""
    counts: dict[tuple[int, int], int] = {}
    events = dataset.events
    if len(events) and "payload" in events:
        notes = events[
            (events["kind"] == "agent_update")
            & events["payload"].str.contains('"uploaded"', regex=False).fillna(False)
        ]
        for branch, payload in zip(notes["branch"], notes["payload"], strict=True):
            data = json.loads(payload)
            if data.get("reason") == "uploaded":
                key = (int(branch), int(data["generation"]))
                counts[key] = counts.get(key, 0) + 1
    agents, gens = dataset.agents, dataset.generations
    if not len(agents) or not {"agent_number", "birth_generation", "branch"} <= set(agents):
        return counts
    evolved = {
        (int(b), int(g)): int(k)
        for b, g, k in gens[["branch", "generation", "agents_evolved"]].itertuples(index=False)
    }
    born = agents.groupby(["branch", "birth_generation"])["agent_number"]
    for (branch, generation), numbers in born:
        key = (int(branch), int(generation))
        if generation == 0 or key not in evolved:
            continue
        # Offspring ids are one block of agents_evolved ids; uploads come before it.
        first_offspring = int(numbers.max()) - evolved[key] + 1
        seen = int((numbers < first_offspring).sum())
        counts[key] = max(counts.get(key, 0), seen)
    return counts


def _on_lineage(
    store: SQLiteStore, run_id: int, branch: int, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The generation rows of ``branch``'s lineage."""
    branches = {b.branch: b for b in store.branches(run_id)}
    lineage = lineage_of(branches, branch)
    return [
        r
        for r in rows
        if any(
            r["branch"] == b and r["generation"] >= lo and (hi is None or r["generation"] <= hi)
            for b, lo, hi in lineage
        )
    ]


# -- the tables ----------------------------------------------------------------------------


def _frame(runs: Sequence[_Run]) -> pd.DataFrame:
    labels = _labels(runs)
    parts = [_run_rows(run, label) for run, label in zip(runs, labels, strict=True)]
    frame = pd.concat(parts, ignore_index=True)
    return frame[list(COLUMNS)]


def _labels(runs: Sequence[_Run]) -> list[str]:
    """Each run's label: its run id, made unique by its dataset's name or its position."""
    base = [str(run.metadata.get("run", {}).get("run_id")) for run in runs]
    labels = []
    for i, (label, run) in enumerate(zip(base, runs, strict=True)):
        if base.count(label) > 1:
            path = run.path
            label = f"{label} ({path.name})" if path is not None else f"{label} (#{i + 1})"
        labels.append(label)
    return [
        label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)
    ]


def _run_rows(run: _Run, label: str) -> pd.DataFrame:
    g = run.generations
    missing = [c for c in _NEEDED if c not in g]
    if missing:
        raise DatasetError(f"{run.where} has no {', '.join(missing)} column in its generations")
    lineage = g[g["active"].astype(bool)].sort_values("generation", kind="stable")
    lineage = lineage.drop_duplicates("generation", keep="last")
    best = lineage["best_fitness"].astype("float64")
    if not len(lineage) or best.isna().all():
        raise DatasetError(
            f"{run.where} has no fitness to compare: no generation with a best_fitness "
            "on the lineage it ended on"
        )
    keys = zip(lineage["branch"].astype(int), lineage["generation"].astype(int), strict=True)
    uploads = np.array([run.uploads.get(key, 0) for key in keys], dtype=np.int64)
    per_generation = lineage["agents_evolved"].to_numpy(dtype=np.int64) + uploads
    meta = run.metadata
    info = meta.get("run", {}) or {}
    config = meta.get("config", {}) or {}
    strategy = run.strategy or (_strategy_label(config) if config else "unknown")
    feasible = (
        lineage["feasible_fraction"].astype("float64")
        if "feasible_fraction" in lineage
        else pd.Series(np.nan, index=lineage.index)
    )
    average = (
        lineage["average_fitness"].astype("float64")
        if "average_fitness" in lineage
        else pd.Series(np.nan, index=lineage.index)
    )
    n = len(lineage)
    return pd.DataFrame(
        {
            "run": pd.Series([label] * n, dtype="string"),
            "strategy": pd.Series([strategy] * n, dtype="string"),
            "seed": pd.Series([_seed(info.get("seed"))] * n, dtype="object"),
            "problem": pd.Series([_problem_label(info.get("problem"), config)] * n, dtype="string"),
            "generation": lineage["generation"].to_numpy(dtype=np.int64),
            "evaluations": np.cumsum(per_generation),
            "best_fitness": best.to_numpy(),
            "best_so_far": best.cummax().to_numpy(),
            "average_fitness": average.to_numpy(),
            "feasible_share": feasible.to_numpy(),
        }
    )


def _seed(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _strategy_label(config: Mapping[str, Any]) -> str:
    """The strategy a run recorded (runs made before strategies were recorded: the GA)."""
    spec = config.get("strategy") or {"name": "ga"}
    return str(spec.get("name", "ga"))


def _problem_label(problem: Any, config: Mapping[str, Any]) -> str:
    """The problem's name, with its settings when it has any: ``rastrigin(dims=10)``."""
    name = "unknown" if problem is None else str(problem)
    settings = config.get("problem_config") or {}
    if not settings:
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in sorted(settings.items()))})"


def _final(frame: pd.DataFrame) -> pd.DataFrame:
    last = frame.groupby("run", sort=False).tail(1).set_index("run")
    counts = frame.groupby("run", sort=False).size()
    final = pd.DataFrame(
        {
            "strategy": last["strategy"],
            "seed": last["seed"],
            "problem": last["problem"],
            "generations": counts.reindex(last.index).to_numpy(dtype=np.int64),
            "evaluations": last["evaluations"],
            "best_so_far": last["best_so_far"],
        },
        index=last.index,
    )
    final["rank"] = (
        final.groupby("problem")["best_so_far"].rank(ascending=False, method="min").astype(int)
    )
    return final


def _ranks(final: pd.DataFrame) -> pd.DataFrame:
    table = final.pivot_table(
        index="strategy", columns="problem", values="rank", aggfunc="mean", sort=False
    )
    table.columns = [str(c) for c in table.columns]
    table["mean_rank"] = table.mean(axis=1)
    table["runs"] = final.groupby("strategy").size().reindex(table.index).astype(int)
    table.index = table.index.astype(str)
    table.index.name = "strategy"
    return table.sort_values("mean_rank", kind="stable")
