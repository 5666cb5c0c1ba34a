"""tdevlab.compare: runs of a real SQLite store, the shipped dataset and a live client."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tdevlab
from tdevlab import Engine, SQLiteStore, export_run, load_run, make_problem
from tdevlab.comparison import COLUMNS, Comparison, compare, describe_runs
from tdevlab.engine.strategy import make_strategy
from tdevlab.exceptions import DatasetError, InvalidParameters, RunNotFound
from tdevlab.notebook.compare_plots import best_so_far_figure, final_figure, strategy_band
from tdevlab.store.base import lineage_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample-run"
PNG = b"\x89PNG\r\n\x1a\n"
POPULATION = 12
ELITES = 2  # the GA's default elite_count: its offspring per generation are POPULATION - 2
STRATEGIES = ("ga", "nsga2", "map-elites")
SEEDS = (1, 2)
UPLOAD = {"x0": 0.0, "x1": 0.1, "x2": 0.0}
TIMEOUT = 20.0  # seconds; every wait for the live run is bounded by it


def _make_runs(db: Path) -> None:
    """Two seeds of each strategy on Sphere-3D; the first GA run rolled back and given an
    upload: 6 generations on branch 0, back to 3, one agent uploaded, 3 more on branch 1."""
    for strategy in STRATEGIES:
        for seed in SEEDS:
            engine = Engine(
                make_problem("sphere", dims=3),
                strategy=make_strategy(strategy),
                seed=seed,
                store=db,
                population_size=POPULATION,
            )
            with engine:
                for _ in engine.run(generations=7):
                    pass
                if (strategy, seed) == ("ga", 1):
                    engine.rollback(3)
                    engine.add_agent(UPLOAD)
                    for _ in engine.run(generations=3):
                        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store with six small runs (see ``_make_runs``); run 1 is the rolled-back GA."""
    db = tmp_path_factory.mktemp("compare") / "runs.db"
    _make_runs(db)
    return db


@pytest.fixture(scope="module")
def result(store: Path) -> Comparison:
    """The comparison of every run of the store."""
    return compare(store)


def _lineage_rows(db: Path, run_id: int) -> list[dict[str, Any]]:
    """The stored generation rows of the lineage the run ended on, in generation order."""
    with SQLiteStore(db) as s:
        info = s.run_info(run_id)
        spans = lineage_of({b.branch: b for b in s.branches(run_id)}, info.active_branch)
        rows = [
            r
            for r in s.generation_rows(run_id)
            if any(
                r["branch"] == b and r["generation"] >= lo and (hi is None or r["generation"] <= hi)
                for b, lo, hi in spans
            )
        ]
    return sorted(rows, key=lambda r: r["generation"])


def test_frame_has_one_row_per_generation_of_each_run(result: Comparison) -> None:
    """The long frame has the documented columns and every run's generations 0..last."""
    assert tuple(result.frame.columns) == COLUMNS
    assert list(result.final.index) == [str(i) for i in range(1, 7)]
    for run, rows in result.frame.groupby("run"):
        assert list(rows["generation"]) == list(range(7)), run
    assert result.strategies == list(STRATEGIES)
    assert result.problems == ["sphere(dims=3)"]
    assert sorted(result.frame["seed"].unique()) == list(SEEDS)


def test_best_so_far_is_the_cumulative_max_of_the_stored_best(
    store: Path, result: Comparison
) -> None:
    """best_fitness is each stored generation's, best_so_far its running maximum."""
    for run_id in range(1, 7):
        stored = np.array([r["best_fitness"] for r in _lineage_rows(store, run_id)])
        rows = result.frame[result.frame["run"] == str(run_id)]
        np.testing.assert_array_equal(rows["best_fitness"], stored)
        np.testing.assert_array_equal(rows["best_so_far"], np.maximum.accumulate(stored))
        average = [r["average_fitness"] for r in _lineage_rows(store, run_id)]
        np.testing.assert_array_equal(rows["average_fitness"], average)
        feasible = [r["feasible_fraction"] for r in _lineage_rows(store, run_id)]
        np.testing.assert_array_equal(rows["feasible_share"], feasible)


def test_evaluations_add_up(store: Path, result: Comparison) -> None:
    """Evaluations count the offspring of each generation of the lineage, plus uploads."""
    for run_id in range(2, 7):
        evolved = [r["agents_evolved"] for r in _lineage_rows(store, run_id)]
        rows = result.frame[result.frame["run"] == str(run_id)]
        np.testing.assert_array_equal(rows["evaluations"], np.cumsum(evolved))
    final = result.final["evaluations"]
    assert final["2"] == POPULATION + 6 * (POPULATION - ELITES)  # the GA keeps 2 elites
    assert final["3"] == final["5"] == 7 * POPULATION  # NSGA-II, MAP-Elites: whole batches


def test_a_rolled_back_run_is_its_final_lineage_with_the_upload_counted_once(
    store: Path, result: Comparison
) -> None:
    """Run 1: generations 0..3 of branch 0, then 4..6 of branch 1; the abandoned 4..6 of
    branch 0 are not counted; the agent uploaded before generation 4 is counted once."""
    rows = result.frame[result.frame["run"] == "1"].set_index("generation")
    stored = _lineage_rows(store, 1)
    assert [(r["branch"], r["generation"]) for r in stored] == [
        *((0, g) for g in range(4)),
        *((1, g) for g in range(4, 7)),
    ]
    offspring = POPULATION - ELITES
    expected = [POPULATION + offspring * g for g in range(4)]
    expected += [POPULATION + offspring * g + 1 for g in range(4, 7)]  # + the upload
    assert list(rows["evaluations"]) == expected
    with SQLiteStore(store) as s:
        (low, high) = s.new_id_ranges(1)[(1, 4)]
    assert high - low + 1 == offspring + 1


def test_an_exported_dataset_compares_like_its_store(store: Path, tmp_path: Path) -> None:
    """The dataset of a run gives the store's rows, the upload included (the GA keeps it)."""
    path = export_run(store, 1, tmp_path / "run-1")
    from_dataset = compare([load_run(path)]).frame
    from_store = compare(store, run_ids=[1]).frame
    pd.testing.assert_frame_equal(from_dataset, from_store)
    assert compare(path).frame.equals(from_dataset)  # a directory works as well


def test_shipped_sample_run(tmp_path: Path) -> None:
    """data/sample-run: its final lineage (0..25 of branch 0, 26..45 of branch 1), the
    evaluations of a population of 60 with 2 elites, best-so-far from its table."""
    run = load_run(SAMPLE)
    result = tdevlab.compare([run])
    rows = result.frame
    active = run.active_generations
    assert list(rows["generation"]) == list(range(46))
    np.testing.assert_array_equal(rows["best_so_far"], active["best_fitness"].cummax())
    expected = np.cumsum(active["agents_evolved"].to_numpy())
    np.testing.assert_array_equal(rows["evaluations"], expected)
    assert rows["evaluations"].iloc[-1] == 60 + 45 * 58
    assert set(rows["strategy"]) == {"ga"}
    assert set(rows["problem"]) == {"agent_design"}
    assert set(rows["seed"]) == {7}
    assert result.final.loc["1", "rank"] == 1
    png, csv = result.save(tmp_path)
    assert png.read_bytes().startswith(PNG)
    back = pd.read_csv(csv)
    assert list(back.columns) == list(COLUMNS)
    np.testing.assert_allclose(back["best_so_far"], rows["best_so_far"])


def test_same_dataset_twice_gets_distinct_labels() -> None:
    """Runs with the same id (here the same dataset twice) are told apart in ``run``."""
    result = compare([SAMPLE, load_run(SAMPLE)])
    assert result.frame["run"].nunique() == 2
    assert list(result.final["rank"]) == [1, 1]  # a tie shares the rank


def test_rank_table(result: Comparison) -> None:
    """Ranks go by final best-so-far within a problem; strategies by their mean rank."""
    final = result.final
    order = final.sort_values("best_so_far", ascending=False)
    assert list(order["rank"]) == list(range(1, 7))
    for strategy in STRATEGIES:
        mean = final.loc[final["strategy"] == strategy, "rank"].mean()
        assert result.ranks.loc[strategy, "sphere(dims=3)"] == mean
        assert result.ranks.loc[strategy, "mean_rank"] == mean
        assert result.ranks.loc[strategy, "runs"] == 2
    assert list(result.ranks["mean_rank"]) == sorted(result.ranks["mean_rank"])


def test_best_so_far_plot_is_median_and_band_over_seeds(result: Comparison) -> None:
    """Each strategy's line is the median of its runs' best-so-far, its band min..max."""
    fig = best_so_far_figure(result.frame)
    (ax,) = fig.axes
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert set(lines) == set(STRATEGIES)
    for strategy in STRATEGIES:
        runs = result.frame[result.frame["strategy"] == strategy]
        grid, median, low, high = strategy_band(runs)
        np.testing.assert_array_equal(lines[strategy].get_xdata(), grid)
        np.testing.assert_array_equal(lines[strategy].get_ydata(), median)
        # Where every run has arrived (the shortest run's end), all of them count.
        ends = runs.groupby("run")["evaluations"].last()
        at = int(np.searchsorted(grid, ends.min()))
        at_end = runs[runs["evaluations"] <= ends.min()].groupby("run")["best_so_far"].last()
        assert high[at] == at_end.max()
        assert low[at] == at_end.min()
        assert median[at] == at_end.median()
    assert "2 runs" in lines["ga"].get_label()


def test_band_steps_and_stops_at_each_runs_end() -> None:
    """A run's value holds between its evaluation counts and ends at its last one."""
    runs = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b", "b"],
            "evaluations": [10, 20, 10, 15, 30],
            "best_so_far": [0.1, 0.5, 0.2, 0.3, 0.9],
        }
    )
    grid, median, low, high = strategy_band(runs)
    assert list(grid) == [10, 15, 20, 30]
    np.testing.assert_allclose(low, [0.1, 0.1, 0.3, 0.9])
    np.testing.assert_allclose(high, [0.2, 0.3, 0.5, 0.9])
    np.testing.assert_allclose(median, [0.15, 0.2, 0.4, 0.9])


def test_final_plot_has_a_box_and_points_per_strategy(result: Comparison, tmp_path: Path) -> None:
    """The final distribution shows each strategy's runs; plot() writes one PNG of both."""
    fig = final_figure(result.final)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(STRATEGIES)
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    np.testing.assert_allclose(np.sort(points), np.sort(result.final["best_so_far"]))
    result.plot(tmp_path / "both.png")
    result.plot_best_so_far(tmp_path / "curves.png")
    result.plot_final(tmp_path / "final.png")
    for name in ("both", "curves", "final"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)


def test_describe_runs(store: Path) -> None:
    """The store's runs with strategy, problem, seed, lineage length and best fitness."""
    table = describe_runs(store)
    assert list(table.index) == list(range(1, 7))
    assert list(table["strategy"]) == [s for s in STRATEGIES for _ in SEEDS]
    assert list(table["seed"]) == list(SEEDS) * 3
    assert list(table["generations"]) == [7] * 6
    assert table.loc[1, "branches"] == 2
    best = compare(store).final["best_so_far"].to_numpy()
    np.testing.assert_array_equal(table["best_fitness"].to_numpy(), best)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda db: compare([]), InvalidParameters, "at least one run"),
        (lambda db: compare(db, run_ids=[2, 99]), RunNotFound, "no run 99"),
        (lambda db: compare(db, run_ids=["1"]), InvalidParameters, "run ids are integers"),
        (lambda db: compare([SAMPLE], run_ids=[1]), InvalidParameters, "run_ids needs a store"),
        (lambda db: compare([42]), InvalidParameters, "item 1 is a int"),
        (lambda db: compare([db.parent / "nope"]), DatasetError, "neither a run store"),
        (lambda db: describe_runs(db.parent / "nope.db"), DatasetError, "no run store"),
    ],
)
def test_bad_input_is_refused_by_name(
    store: Path, call: Callable[[Path], Any], error: type[Exception], words: str
) -> None:
    """Empty lists, unknown run ids, wrong kinds and missing paths: errors naming them."""
    with pytest.raises(error, match=words):
        call(store)


def test_unknown_run_error_lists_the_known_ones(store: Path) -> None:
    """The error for an unknown run names the runs the store has."""
    with pytest.raises(RunNotFound, match=r"its runs are \[1, 2, 3, 4, 5, 6\]"):
        compare(store, run_ids=[7])


def test_a_run_without_generations(store: Path, tmp_path: Path) -> None:
    """A run never stepped is left out of "every run", and named when asked for."""
    db = tmp_path / "runs.db"
    db.write_bytes(store.read_bytes())
    engine = Engine(make_problem("sphere", dims=3), seed=3, store=db)
    run_id = engine.ensure_run()
    engine.close()
    assert list(compare(db).final.index) == [str(i) for i in range(1, 7)]
    with pytest.raises(DatasetError, match=f"run {run_id} of .* has no fitness to compare"):
        compare(db, run_ids=[1, run_id])


def test_a_dataset_without_fitness_is_named(tmp_path: Path) -> None:
    """A dataset whose generations have no best_fitness (or none at all) is refused."""
    run = load_run(SAMPLE)
    run.generations["best_fitness"] = np.nan
    with pytest.raises(DatasetError, match=r"dataset .*sample-run has no fitness to compare"):
        compare([run])
    run.generations = run.generations.drop(columns="best_fitness")
    with pytest.raises(DatasetError, match="has no best_fitness column"):
        compare([run])
    empty = load_run(SAMPLE)
    empty.generations = empty.generations.iloc[:0]
    with pytest.raises(DatasetError, match="no fitness to compare"):
        compare([SAMPLE, empty])


def test_import_tdevlab_does_not_load_the_comparison() -> None:
    """tdevlab.compare is lazy: it is an attribute, imported with pandas on first use."""
    assert tdevlab.compare is compare
    assert tdevlab.Comparison is Comparison


# -- a live client ---------------------------------------------------------------------------


def _wait(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_live_client_compares_like_the_store(tmp_path: Path) -> None:
    """A client's frames give the store's rows: a run paused, rolled back, given an
    upload and resumed, followed live; its upload counted from the client's events."""
    from tdevlab.client import connect_sync
    from tdevlab.server import EvolutionServer

    db = tmp_path / "runs.db"
    engine = Engine(make_problem("sphere", dims=3), seed=5, population_size=POPULATION, store=db)
    server = EvolutionServer(engine, port=0, secret="x" * 32, generation_interval=0.02)
    server.start()
    try:
        client = connect_sync(server.url, token=server.token("ada", "operator"))
        try:
            client.subscribe()
            client.start()
            _wait(lambda: (client.generation or 0) >= 5, "generation 5")
            client.pause()
            _wait(lambda: client.run_state == "paused", "paused")
            client.rollback(3)
            engine.add_agent(UPLOAD)
            client.resume()
            _wait(lambda: engine.branch == 1 and engine.generation >= 6, "generation 6")
            client.stop()
            _wait(lambda: client.run_state == "stopped", "stopped")
            last = engine.generation
            _wait(
                lambda: (client.frames.evolution["branch"] == 1).sum() == last - 3,
                "every generation in the frames",
            )
            _wait(
                lambda: "uploaded" in set(client.frames.agent_history["reason"]),
                "the upload in the frames",
            )
            live = compare([client])
        finally:
            client.close()
    finally:
        server.stop()
    stored = compare(db)
    assert set(live.frame["strategy"]) == {"ga"}
    columns = ["generation", "evaluations", "best_fitness", "best_so_far", "feasible_share"]
    pd.testing.assert_frame_equal(live.frame[columns], stored.frame[columns])
    evaluations = stored.frame.set_index("generation")["evaluations"]
    assert evaluations[4] - evaluations[3] == POPULATION - ELITES + 1
