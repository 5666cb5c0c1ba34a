"""`tdevlab runs` and `tdevlab compare`, run as real subprocesses on a real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tdevlab
from tdevlab.comparison import COLUMNS, compare
from tests.test_cli import tdevlab as cli

#: Each test runs the CLI (a process importing pandas and matplotlib) or draws the PNG.
pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs 1-2: the GA with seeds 1 and 2; run 3: NSGA-II, seed 1; all on Sphere-3D."""
    db = tmp_path_factory.mktemp("cli") / "runs.db"
    for strategy, seed in (("ga", 1), ("ga", 2), ("nsga2", 1)):
        engine = tdevlab.Engine(
            tdevlab.make_problem("sphere", dims=3),
            strategy=strategy,
            seed=seed,
            store=db,
            population_size=10,
        )
        with engine:
            for _ in engine.run(generations=5):
                pass
    return db


def test_runs_lists_strategy_problem_seed_generations_and_best(store: Path) -> None:
    """One line per run: its strategy, problem, seed, generations and best fitness."""
    out = cli("runs", "--db", store, cwd=store.parent)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == ["run", "strategy", "problem", "seed", "generations", "last"]
    best = compare(store).final["best_so_far"]
    for line, (run, strategy, seed) in zip(
        lines[1:], (("1", "ga", "1"), ("2", "ga", "2"), ("3", "nsga2", "1")), strict=True
    ):
        fields = line.split()
        assert fields[:6] == [run, strategy, "sphere(dims=3)", seed, "5", "4"]
        assert fields[7] == f"{best[run]:.4f}"


def test_compare_writes_png_and_csv_and_prints_the_ranks(store: Path, tmp_path: Path) -> None:
    """compare --runs writes compare.png and compare.csv and prints the rank table."""
    out = cli("compare", "--db", store, "--runs", "1,3", "--out", tmp_path / "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    png, csv = tmp_path / "out" / "compare.png", tmp_path / "out" / "compare.csv"
    assert png.read_bytes().startswith(PNG)
    table = pd.read_csv(csv)
    assert list(table.columns) == list(COLUMNS)
    assert sorted(set(table["run"])) == [1, 3]
    expected = compare(store, run_ids=[1, 3]).frame
    np.testing.assert_allclose(table["best_so_far"], expected["best_so_far"])
    np.testing.assert_array_equal(table["evaluations"], expected["evaluations"])
    assert "mean_rank" in out.stdout
    assert "compare.png" in out.stdout
    ranks = [line.split() for line in out.stdout.splitlines() if line.startswith(("ga ", "nsga2"))]
    assert {row[0] for row in ranks} == {"ga", "nsga2"}


def test_compare_every_run_by_default(store: Path, tmp_path: Path) -> None:
    """Without --runs every run of the store is compared."""
    out = cli("compare", "--db", store, "--out", tmp_path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(set(pd.read_csv(tmp_path / "compare.csv")["run"])) == [1, 2, 3]


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ("1,9", "no run 9 in"),
        ("1,x", "--runs takes comma-separated run ids, got '1,x'"),
        ("", "needs at least one run"),
    ],
)
def test_compare_refuses_bad_runs(store: Path, tmp_path: Path, runs: str, message: str) -> None:
    """Unknown or malformed run ids: one error line naming them, exit status 2, no files."""
    out = cli("compare", "--db", store, "--runs", runs, "--out", tmp_path / "o", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("tdevlab: error: ")
    assert message in out.stderr
    assert not (tmp_path / "o").exists()


def test_compare_without_a_store(tmp_path: Path) -> None:
    """A missing store is named."""
    out = cli("compare", "--db", tmp_path / "no.db", "--out", tmp_path, cwd=tmp_path)
    assert out.returncode == 2
    assert "no run store at" in out.stderr
