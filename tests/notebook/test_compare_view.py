"""The compare view of a store's runs, as widgets without a kernel (clicked in the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tdevlab
from tdevlab.notebook import CompareView
from tdevlab.notebook.layout import DashboardWidgets

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a GA run and an NSGA-II run of each of two seeds on Sphere-3D."""
    db = tmp_path_factory.mktemp("view") / "runs.db"
    for strategy in ("ga", "nsga2"):
        for seed in (1, 2):
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


def test_lists_the_runs_of_the_store(store: Path) -> None:
    """The selection offers every run, labelled with strategy, problem, seed and best."""
    view = CompareView(store)
    labels = [label for label, _ in view.runs_input.options]
    assert [value for _, value in view.runs_input.options] == [1, 2, 3, 4]
    assert labels[0].startswith("run 1 · ga · sphere(dims=3) · seed 1 · 5 generations · best ")
    assert labels[2].startswith("run 3 · nsga2 ·")
    assert "4 runs in runs.db" in view.message.value
    assert bytes(view.image.value) == b""


def test_compare_button_shows_the_plot_and_rank_table(store: Path) -> None:
    """Selecting runs and clicking Compare draws their best-so-far and their ranks."""
    view = CompareView(store)
    view.runs_input.value = (1, 3, 4)
    view.compare_button.click()
    assert "3 runs compared" in view.message.value
    assert bytes(view.image.value).startswith(PNG)
    assert view.result is not None
    assert list(view.result.final.index) == ["1", "3", "4"]
    assert "Mean rank per strategy" in view.table.value
    for text in ("ga", "nsga2", "mean_rank", "best_so_far"):
        assert text in view.table.value
    # Nothing selected: every run.
    view.runs_input.value = ()
    view.compare_button.click()
    assert list(view.result.final.index) == ["1", "2", "3", "4"]


def test_refresh_sees_new_runs_and_keeps_the_selection(store: Path, tmp_path: Path) -> None:
    """Refresh reads runs added meanwhile; the selected runs stay selected."""
    db = tmp_path / "runs.db"
    db.write_bytes(store.read_bytes())
    view = CompareView(db)
    view.runs_input.value = (2,)
    engine = tdevlab.Engine(tdevlab.make_problem("sphere", dims=3), seed=9, store=db)
    with engine:
        engine.step()
    view.refresh_button.click()
    assert [value for _, value in view.runs_input.options] == [1, 2, 3, 4, 5]
    assert view.runs_input.value == (2,)


def test_errors_are_shown_not_raised(tmp_path: Path) -> None:
    """A missing store or a run that vanished is said in the message line."""
    view = CompareView(tmp_path / "missing.db")
    assert "no run store at" in view.message.value
    assert "✗" in view.message.value
    view.compare_button.click()  # nothing raised into the kernel
    assert "no run store" in view.message.value or "neither" in view.message.value


def test_a_dashboard_adds_the_view_below_its_plots(store: Path) -> None:
    """add_compare puts a compare view of the store at the end of the dashboard's widget."""
    widgets: Any = DashboardWidgets({})
    before = len(widgets.widget.children)
    view = widgets.add_compare(store)
    assert isinstance(view, CompareView)
    assert widgets.widget.children[-1] is view.widget
    assert len(widgets.widget.children) == before + 1
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()
