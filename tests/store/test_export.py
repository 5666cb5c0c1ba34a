"""Run datasets: export -> load keeps every value and dtype; the shipped sample loads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tdevlab import AgentDesign, DatasetError, Engine, load_run
from tdevlab.store.export import build_dataset, export_run

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def branched_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A stored AgentDesign run with a rollback (two branches)."""
    db = tmp_path_factory.mktemp("store") / "runs.db"
    with Engine(AgentDesign(), seed=5, population_size=40, store=db) as engine:
        list(engine.run(generations=20))
        engine.rollback(12)
        list(engine.run(generations=6))
        return db, engine.run_id or 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_preserves_values_and_dtypes(
    branched_run: tuple[Path, int], tmp_path: Path, fmt: str
) -> None:
    """Every table read back equals what was exported: values bit for bit, dtypes identical."""
    db, run_id = branched_run
    out = export_run(db, run_id, tmp_path / "ds", format=fmt)
    loaded = load_run(out)
    from tdevlab import SQLiteStore

    with SQLiteStore(db) as store:
        reference = build_dataset(store, run_id)
    for name, frame in reference.tables().items():
        pd.testing.assert_frame_equal(frame, loaded.tables()[name], check_exact=True)
    assert loaded.metadata["run"]["seed"] == "5"
    assert loaded.metadata["versions"]["tdevlab"]


def test_dataset_content(branched_run: tuple[Path, int], tmp_path: Path) -> None:
    """Tables hold what a researcher needs: branches, active lineage, genes, statuses, events."""
    db, run_id = branched_run
    ds = load_run(export_run(db, run_id, tmp_path / "ds"))
    g = ds.generations
    assert set(g["branch"]) == {0, 1}
    assert len(g[g["branch"] == 0]) == 20
    active = ds.active_generations
    assert list(active.index) == list(range(19))
    assert (active.loc[13:, "branch"] == 1).all()
    assert (active.loc[:12, "branch"] == 0).all()
    assert str(g["timestamp"].dtype) == "datetime64[ns, UTC]"

    agents = ds.agents
    assert agents["agent_id"].is_unique
    assert str(agents["architecture"].dtype) == "category"
    assert list(agents["retrieval"].cat.categories) == [False, True]
    assert agents["context_window"].dtype == "int64"
    assert set(agents["status"].unique()) <= {"evolving", "elite", "violating", "retired"}
    assert (agents["status"] == "retired").any()

    pop = ds.population
    sizes = pop.groupby(["branch", "generation"]).size()
    assert (sizes == 40).all()
    assert pop[pop["active"]].groupby("generation").size().index.tolist() == list(range(19))

    kinds = set(ds.events["kind"].astype(str))
    assert {"agent_update", "log", "alert"} <= kinds
    rollback = ds.alerts[ds.alerts["title"] == "Rollback Performed"]
    assert len(rollback) == 1
    payload = json.loads(rollback["payload"].iloc[0])
    assert payload["details"]["generation"] == 12


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_metadata_json_has_config_seed_versions_and_schema(tmp_path: Path, fmt: str) -> None:
    """metadata.json records the engine's parameters, seed, versions and each table's schema."""
    engine = Engine(
        AgentDesign(), seed=31, population_size=12, mutation_rate=0.3, crossover_rate=0.6
    )
    list(engine.run(generations=3))
    out = engine.export(tmp_path / "ds", format=fmt)
    metadata = json.loads((out / "metadata.json").read_text())
    assert {"config", "run", "versions", "tables", "gene_space"} <= set(metadata)
    assert metadata["config"]["parameters"] == engine.params.to_dict()
    assert metadata["config"]["parameters"]["mutation_rate"] == 0.3
    assert metadata["config"]["gene_space"] == engine.space.describe()
    assert metadata["run"]["seed"] == "31"
    assert metadata["run"]["problem"] == "agent_design"
    assert {"tdevlab", "python", "numpy", "pandas", "pyarrow"} <= set(metadata["versions"])
    from tdevlab import __version__

    assert metadata["versions"]["tdevlab"] == __version__
    loaded = load_run(out)
    for name, frame in loaded.tables().items():
        table = metadata["tables"][name]
        assert table["file"] == f"{name}.{fmt}"
        assert table["rows"] == len(frame)
        assert {c: spec["dtype"] for c, spec in table["columns"].items()} == {
            str(c): str(t) for c, t in frame.dtypes.items()
        }
    assert metadata["tables"]["generations"]["columns"]["mutations_applied"]["dtype"] == "int64"


def test_in_memory_run_exports_too(tmp_path: Path) -> None:
    """An engine without a store exports from memory, the same layout."""
    engine = Engine(seed=1, population_size=10)
    list(engine.run(generations=4))
    ds = load_run(engine.export(tmp_path / "mem"))
    assert len(ds.generations) == 4
    assert ds.metadata["population_complete"] is True


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    """Missing metadata, a foreign format, or a missing table raise DatasetError."""
    with pytest.raises(DatasetError, match="no metadata.json"):
        load_run(tmp_path)
    (tmp_path / "metadata.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="not 'tdevlab-run'"):
        load_run(tmp_path)
    engine = Engine(seed=1, population_size=10)
    engine.step()
    out = engine.export(tmp_path / "ds")
    (out / "agents.parquet").unlink()
    with pytest.raises(DatasetError, match="agents.parquet"):
        load_run(out)


def test_shipped_sample_dataset_loads() -> None:
    """data/sample-run (made by the CLI, see data/README.md) loads with its documented columns."""
    ds = load_run(DATA / "sample-run")
    readme = (DATA / "README.md").read_text()
    for name, frame in ds.tables().items():
        assert len(frame) > 0, name
        for column in frame.columns:
            assert f"`{column}`" in readme, (name, column)
    assert set(ds.generations["branch"]) == {0, 1}
