"""The notebooks in notebooks/, executed end to end by a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import timeout
from tests.kernel import execute as execute_notebook

# The module executes its notebook once (a module fixture): its tests stay on one xdist worker.
pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group(__name__)]

NOTEBOOK_DIR = Path(__file__).parents[2] / "notebooks"
NOTEBOOKS = sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """Execute a notebook once for the module, in a fresh python3 kernel and a temp dir."""
    cache: dict[str, Any] = {}

    def execute(name: str) -> Any:
        if name not in cache:
            workdir = tmp_path_factory.mktemp(Path(name).stem)
            cache[name] = execute_notebook(NOTEBOOK_DIR / name, workdir)
        return cache[name]

    return execute


def _text(cell: Any) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "".join(parts)


def _cell(notebook: Any, source_fragment: str) -> Any:
    """The one code cell whose source contains ``source_fragment``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and source_fragment in c.source]
    assert len(cells) == 1, source_fragment
    return cells[0]


def _search(pattern: str, text: str) -> re.Match[str]:
    """The first match of ``pattern`` in ``text`` (failing the test if there is none)."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"{pattern!r} not in {text!r}"
    return match


def test_there_are_notebooks() -> None:
    """notebooks/ holds the notebooks the tests below execute."""
    assert "03-your-own-problem.ipynb" in NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name: str, executed: Callable[[str], Any]) -> None:
    """Every code cell of the notebook runs, in order, and none outputs an error."""
    notebook = executed(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{cell.source[:80]!r}: {errors}"
        stderr = "".join(o.text for o in cell.outputs if o.get("name") == "stderr")
        assert "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_your_own_problem_notebook_evolves_plots_and_matches_dask(
    executed: Callable[[str], Any],
) -> None:
    """The custom-problem notebook fits within its limits, plots, and Dask gives the same run."""
    notebook = executed("03-your-own-problem.ipynb")

    summary = _text(_cell(notebook, "engine.run(generations=30)"))
    assert "generation 29: best fitness" in summary
    assert 0.9 < float(_search(r"best fitness \(R²\) ([0-9.]+)", summary).group(1)) <= 1.0
    memory, speed = _search(r"costs: ([0-9.]+) KB, ([0-9.]+) µs", summary).groups()
    assert float(memory) <= 0.08  # the notebook's memory_limit_kb
    assert float(speed) <= 2.0  # and speed_limit_us
    assert "status elite" in summary

    table = _text(_cell(notebook, "load_run(engine.export"))
    assert "30 generations" in table
    assert _search(r"^25\s+0\.9", table)  # every 5th generation shown, up to 25

    plot = _cell(notebook, "plt.subplots")
    assert any("image/png" in output.get("data", {}) for output in plot.outputs)

    assert "2 workers" in _text(_cell(notebook, "LocalCluster("))
    assert _text(_cell(notebook, "executor=client.get_executor()")).strip() == "identical: True"

    shown = _cell(notebook, "live.dashboard()").outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in shown)
    live = _text(_cell(notebook, "await live.start()"))
    assert int(_search(r"live run paused at generation (\d+)", live).group(1)) >= 20
    assert 0.5 < float(_search(r"best R² ([0-9.]+)", live).group(1)) <= 1.0


@pytest.mark.slow
def test_trade_offs_notebook_compares_the_three_strategies(
    executed: Callable[[str], Any],
) -> None:
    """The GA's best agent, the NSGA-II front and the MAP-Elites archive, each within the
    limits as the text says, compared in one table; the front followed live by the client."""
    notebook = executed("04-trade-offs.ipynb")

    runs = _text(_cell(notebook, "for name, strategy in strategies.items()"))
    for name in ("GA", "NSGA-II", "MAP-Elites"):
        assert _search(rf"^{name}\s+generation 39: best fitness", runs)

    ga = _text(_cell(notebook, "ga_best = engines"))
    memory, speed = _search(r"fitness [0-9.]+, ([0-9.]+) KB, ([0-9.]+) µs, status", ga).groups()
    assert float(memory) <= 6.5
    assert float(speed) <= 3.0

    front = _text(_cell(notebook, 'member_table(engines["NSGA-II"], "front")'))
    assert int(_search(r"(\d+) agents on the front, all within the limits: True", front)[1]) > 5
    archive = _text(_cell(notebook, 'member_table(engines["MAP-Elites"], "archive")'))
    elites, inside = _search(r"(\d+) elites in .* (\d+) within the limits", archive).groups()
    assert 0 < int(inside) < int(elites)  # the grid reaches beyond the limits

    for fragment in ("plt.subplots(1, 3", "budgets = np.linspace"):
        plot = _cell(notebook, fragment)
        assert any("image/png" in output.get("data", {}) for output in plot.outputs)

    table = _text(_cell(notebook, "comparison = pd.DataFrame"))
    best = {row[0]: float(row[1]) for row in (line.split() for line in table.splitlines()[2:5])}
    assert set(best) == {"GA", "NSGA-II", "MAP-Elites"}
    # The text says: the GA reaches the highest fitness, the other two a lower peak.
    assert best["GA"] >= max(best["NSGA-II"], best["MAP-Elites"]), best

    live = _text(_cell(notebook, 'client.start(strategy="nsga2")'))
    assert "strategy nsga2, stopped at generation" in live
    assert "followed it from agent updates since" in live
    assert "the engine's front" in live
    assert _search(r"get_front at generation \d+: \d+ agents", live)


@pytest.mark.slow
def test_which_optimizer_notebook_compares_steers_and_rolls_back(
    executed: Callable[[str], Any],
) -> None:
    """Four optimizers on two problems with 5 seeds each, compared in one table and plot;
    a live run steered (population doubled) and rolled back, its evaluations per lineage."""
    notebook = executed("05-which-optimizer.ipynb")
    labels = {"GA": "ga", "CMA-ES": "cmaes", "Optuna TPE": "optuna-tpe", "NGOpt": "nevergrad:NGOpt"}

    runs = _text(_cell(notebook, "for seed in SEEDS"))
    for problem in ("AgentDesign", "Rastrigin-10D"):
        for label in labels:
            pattern = (
                rf"^{problem}\s+{re.escape(label)}\s+best fitness of the 5 seeds:( [0-9.]+){{5}}$"
            )
            assert _search(pattern, runs)
    assert _search(r"^40 runs in [0-9.]+ s$", runs)

    summary = _text(_cell(notebook, "result = tdevlab.compare(STORE)"))
    assert f"<Comparison runs=40 strategies={list(labels.values())}" in summary
    assert "problems=['agent_design', 'rastrigin(dims=10)']" in summary
    ranks = _text(_cell(notebook, "result.ranks.round(2)"))
    for name in labels.values():  # a mean rank on each problem, over both, and 10 runs
        assert _search(rf"^{re.escape(name)}\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+\s+10$", ranks)
    # The text says: TPE ranks first on AgentDesign, NGOpt on Rastrigin-10D, CMA-ES last there.
    rows = {line.split()[0]: line.split()[1:] for line in ranks.splitlines()[2:]}
    by_problem = [{name: float(row[i]) for name, row in rows.items()} for i in (0, 1)]
    assert min(by_problem[0], key=by_problem[0].__getitem__) == "optuna-tpe", ranks
    assert min(by_problem[1], key=by_problem[1].__getitem__) == "nevergrad:NGOpt", ranks
    assert max(by_problem[1], key=by_problem[1].__getitem__) == "cmaes", ranks
    plot = _cell(notebook, 'result.plot("which-optimizer.png")')
    assert any("image/png" in output.get("data", {}) for output in plot.outputs)

    live = _text(_cell(notebook, "await client.start(strategy="))
    paused = int(_search(r"paused at generation (\d+); population_size now 24", live)[1])
    assert paused >= 4
    lineages = _text(_cell(notebook, "back = await client.rollback"))
    assert f"rolled back to generation {paused}, on branch 1" in lineages
    steered = json.loads(_search(r"new agents per generation, steered: (\[.*\])", lineages)[1])
    rolled = json.loads(_search(r"new agents per generation, rolled back: (\[.*\])", lineages)[1])
    per_generation = steered[1]  # before the change, and on the rolled-back branch throughout
    assert steered[0] == rolled[0] == 12  # generation 0: the whole population
    assert steered[1 : paused + 1] == [per_generation] * paused
    assert set(steered[paused + 1 :]) == {per_generation + 12}  # the population doubled
    assert len(steered) >= paused + 6
    assert set(rolled[1:]) == {per_generation}
    assert len(rolled) >= paused + 6

    view = _cell(notebook, "view = CompareView(STORE)").outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in view)


def test_which_optimizer_notebook_names_its_extras_when_one_is_missing() -> None:
    """Notebook 05's first cell fails, when an extra's module is missing, with the command
    that installs all three extras."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK_DIR / "05-which-optimizer.ipynb", as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "pip install 'tdevlab[cma,optuna,nevergrad]'" in first.source
    code = "import sys\nsys.modules['optuna'] = None  # as if not installed\n" + first.source
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout(120)
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: notebook 05 needs"), last
    assert "'optuna'" in last
    assert last.endswith("pip install 'tdevlab[cma,optuna,nevergrad]'"), last
