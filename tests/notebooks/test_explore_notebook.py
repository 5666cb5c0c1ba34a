"""notebooks/02-exploring-a-run.ipynb, executed by a real kernel, against data/sample-run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tdevlab
from tests.kernel import execute as execute_notebook

# The module executes its notebook once (a module fixture): its tests stay on one xdist worker.
pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group(__name__)]

ROOT = Path(__file__).parents[2]
NOTEBOOK = ROOT / "notebooks" / "02-exploring-a-run.ipynb"
SAMPLE_RUN = ROOT / "data" / "sample-run"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The notebook, executed once in a fresh python3 kernel whose cwd is a temp dir."""
    return execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def run() -> tdevlab.RunDataset:
    """The sample run, loaded directly."""
    return tdevlab.load_run(SAMPLE_RUN)


def _cell(notebook: Any, source_fragment: str) -> Any:
    """The one code cell whose source contains ``source_fragment``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and source_fragment in c.source]
    assert len(cells) == 1, source_fragment
    return cells[0]


def _printed(cell: Any) -> str:
    """What a code cell printed."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def _search(pattern: str, text: str) -> re.Match[str]:
    """The first match of ``pattern`` in ``text`` (failing the test if there is none)."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"{pattern!r} not in {text!r}"
    return match


def _has_image(cell: Any) -> bool:
    """Whether a code cell displayed a PNG figure."""
    return any("image/png" in o.get("data", {}) for o in cell.outputs)


def _best_lineage(run: tdevlab.RunDataset) -> list[str]:
    """The final best agent, then at each step its fitter parent, back to generation 0."""
    agents = run.agents.set_index("agent_id")
    agent = run.active_generations["best_agent_id"].iloc[-1]
    lineage = [agent]
    while not pd.isna(parent_a := agents.at[agent, "parent_a"]):
        parent_b = agents.at[agent, "parent_b"]
        fitter_b = not pd.isna(parent_b) and (
            agents.at[parent_b, "fitness"] > agents.at[parent_a, "fitness"]
        )
        agent = parent_b if fitter_b else parent_a
        lineage.append(agent)
    return lineage


def _fork(run: tdevlab.RunDataset) -> int:
    """The sample run's one fork: the last generation branch 1 shares with branch 0."""
    (branch,) = [b for b in run.metadata["branches"] if b["parent_branch"] is not None]
    return int(branch["fork_generation"])


@pytest.mark.slow
def test_notebook_loads_the_sample_run(notebook: Any, run: tdevlab.RunDataset) -> None:
    """The first cell finds data/ from a temp cwd and reports the run's size."""
    printed = _printed(_cell(notebook, "def find_data_dir"))
    assert (
        f"{len(run.generations)} generations on {len(run.metadata['branches'])} branches, "
        f"{len(run.agents)} agents, {len(run.events)} events"
    ) in printed
    assert len(run.metadata["branches"]) == 2


@pytest.mark.slow
def test_fitness_distribution(notebook: Any, run: tdevlab.RunDataset) -> None:
    """Section 1 prints the median fitness at both ends and the final best, and plots them."""
    fitness = run.population[run.population["active"]].groupby("generation")["fitness"]
    last = run.active_generations.index[-1]
    printed = _printed(_cell(notebook, "quantiles = fitness.quantile"))
    assert (
        f"median fitness: {fitness.median()[0]:.3f} at generation 0, "
        f"{fitness.median()[last]:.3f} at generation {last}"
    ) in printed
    best = run.active_generations["best_fitness"].iloc[-1]
    assert f"best fitness at generation {last}: {best:.4f}" in printed
    assert _has_image(_cell(notebook, "fig, (bands, heat)"))


@pytest.mark.slow
def test_best_lineage(notebook: Any, run: tdevlab.RunDataset) -> None:
    """Section 2 follows the final best agent's fitter parents back to generation 0."""
    lineage = _best_lineage(run)
    agents = run.agents.set_index("agent_id")
    births = agents.loc[lineage[::-1], "birth_generation"].tolist()
    assert births[0] == 0
    assert births == sorted(set(births))  # one ancestor alive per generation
    printed = _printed(_cell(notebook, "lineage = [best_id]"))
    assert f"best agent: {lineage[0]}, fitness {agents.at[lineage[0], 'fitness']:.4f}" in printed
    born_after_fork = sum(b > _fork(run) for b in births)
    assert (
        f"best lineage: {len(lineage)} agents, back to {lineage[-1]} in generation 0, "
        f"{born_after_fork} of them born after the rollback"
    ) in printed
    assert _has_image(_cell(notebook, "fig, axes = plt.subplots(3, 3"))


@pytest.mark.slow
def test_constraint_trade_off(notebook: Any, run: tdevlab.RunDataset) -> None:
    """Section 3 prints the limits, the feasible share and the best agent's costs, and plots."""
    parameters = run.metadata["config"]["parameters"]
    memory_limit, speed_limit = parameters["memory_limit_kb"], parameters["speed_limit_us"]
    seen = run.population[run.population["active"]].drop_duplicates("agent_id")
    feasible = (seen["memory_kb"] <= memory_limit) & (seen["speed_us"] <= speed_limit)
    printed = _printed(_cell(notebook, "feasible = (seen"))
    assert f"limits: memory_kb <= {memory_limit}, speed_us <= {speed_limit}" in printed
    assert f"{feasible.sum()} of {len(seen)} agents feasible" in printed
    best = run.agents.set_index("agent_id").loc[run.active_generations["best_agent_id"].iloc[-1]]
    memory = float(_search(r"best agent: ([0-9.]+) KB", printed).group(1))
    assert memory == pytest.approx(best["memory_kb"], abs=0.005)
    assert memory <= memory_limit
    assert _has_image(_cell(notebook, "fig, (scatter, share)"))


@pytest.mark.slow
def test_rollback_effect(notebook: Any, run: tdevlab.RunDataset) -> None:
    """Section 4 names the fork, compares each branch's final best, and plots both branches."""
    cell = _cell(notebook, "histories = {branch")
    printed = _printed(cell)
    assert f"branch 1 forks from branch 0 after generation {_fork(run)}" in printed
    for branch, rows in run.generations.groupby("branch"):
        final = rows.sort_values("generation").iloc[-1]
        assert (
            f"branch {branch}: final best fitness {final['best_fitness']:.4f} "
            f"at generation {final['generation']}"
        ) in printed
    table = cell.outputs[-1].data["text/plain"]
    rates = run.generations.groupby("branch")["mutation_rate"].last()
    assert rates[0] != rates[1]  # the resumed branch changed a parameter
    for branch, rate in rates.items():
        assert _search(rf"^{branch}\s+{re.escape(format(rate, 'g'))}\s", table)
    assert _has_image(_cell(notebook, "fig, (fit, div)"))


def test_sample_run_agent_ids_name_one_agent(run: tdevlab.RunDataset) -> None:
    """Every agent id in the sample run names one agent: its metrics agree on every row."""
    metrics = run.population.groupby("agent_id")[["fitness", "memory_kb", "speed_us"]].nunique()
    reused = metrics[(metrics > 1).any(axis=1)]
    assert reused.empty, f"{len(reused)} ids name several agents, e.g. {list(reused.index[:3])}"
