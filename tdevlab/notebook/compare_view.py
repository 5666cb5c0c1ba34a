"""The compare view: pick runs of a store, see their best-so-far plot and rank table.

.. code-block:: python

    view = tdevlab.notebook.CompareView("runs.db")   # or dashboard.add_compare("runs.db")
    view                                             # last in a cell: displays it

Layout (one ``VBox``, :attr:`CompareView.widget`)::

    [run 1 · ga · agent_design · seed 7 · best 0.74   ]   [Compare] [Refresh]
    [run 2 · cmaes · agent_design · seed 7 · best 0.71]
    ✓ 2 runs compared                                    <- or what was wrong
    | best so far vs evaluations (median, min..max per strategy) |
    rank table (mean rank per strategy) and the runs' final best so far

The store is read when the view is made, on :meth:`refresh`, and on each comparison; it
can be written by a running engine meanwhile (SQLite, WAL).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from tdevlab.comparison import Comparison, compare, describe_runs
from tdevlab.exceptions import TdevlabError
from tdevlab.notebook.compare_plots import render_best_so_far

__all__ = ["CompareView"]


class CompareView:
    """Select runs of a SQLite store and compare them (see the module docstring).

    Args:
        store: The SQLite run store's path.

    Attributes:
        widget: The root ``ipywidgets.VBox``.
        runs_input: The ``SelectMultiple`` of the store's runs (values: run ids).
        compare_button: Compares the selected runs (all of them when none is selected).
        refresh_button: Reads the store's runs again.
        image: The best-so-far plot (PNG).
        table: The rank table and the final best-so-far of each run (HTML).
        message: What the last action did, or what was wrong.
        result: The last :class:`~tdevlab.comparison.Comparison` (``None`` before one).
    """

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.result: Comparison | None = None
        w = widgets
        self.runs_input = w.SelectMultiple(
            options=[], rows=8, description="runs", layout=w.Layout(width="520px")
        )
        self.compare_button = w.Button(
            description="Compare", button_style="primary", icon="bar-chart"
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.compare_button.on_click(lambda _button: self._guard(self.compare))
        self.refresh_button.on_click(lambda _button: self._guard(self.refresh))
        self.message = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(width="100%", height="auto"))
        self.table = w.HTML()
        self.widget = w.VBox(
            [
                w.HBox(
                    [self.runs_input, w.VBox([self.compare_button, self.refresh_button])],
                    layout=w.Layout(align_items="flex-start"),
                ),
                self.message,
                self.image,
                self.table,
            ],
            layout=w.Layout(width="100%"),
        )
        self._guard(self.refresh)

    def refresh(self) -> None:
        """Read the store's runs into the selection (the selected ones stay selected)."""
        runs = describe_runs(self.store)
        selected = set(self.runs_input.value)
        self.runs_input.options = [
            (
                f"run {run_id} · {row['strategy']} · {row['problem']} · seed {row['seed']} · "
                f"{row['generations']} generations · best {row['best_fitness']:.4g}",
                int(run_id),
            )
            for run_id, row in runs.iterrows()
        ]
        self.runs_input.value = tuple(r for r in runs.index if r in selected)
        self._say(f"{len(runs)} runs in {html.escape(self.store.name)}")

    def compare(self, run_ids: Iterable[int] | None = None) -> Comparison:
        """Compare ``run_ids`` (default: the selected runs, or all when none is selected);
        show the plot and the tables.

        Raises:
            TdevlabError: as :func:`tdevlab.compare` (a click shows it in :attr:`message`).
        """
        if run_ids is not None:
            self.runs_input.value = tuple(int(r) for r in run_ids)
        wanted = list(self.runs_input.value) or None
        result = compare(self.store, run_ids=wanted)
        self.result = result
        self.image.value = render_best_so_far(result.frame)
        final = result.final[["strategy", "seed", "problem", "evaluations", "best_so_far", "rank"]]
        self.table.value = (
            "<b>Mean rank per strategy</b> (1 = best on a problem)"
            + result.ranks.to_html(float_format=lambda v: f"{v:.2f}", border=0)
            + "<b>Runs</b>"
            + final.to_html(float_format=lambda v: f"{v:.4g}", border=0)
        )
        self._say(f"{len(result.final)} runs compared")
        return result

    def _guard(self, action: Any) -> None:
        """Run a button's action; a tdevlab error is shown, never raised into the kernel."""
        try:
            action()
        except TdevlabError as exc:
            self._say(str(exc), error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        color, mark = ("#b00020", "✗") if error else ("#1b5e20", "✓")
        self.message.value = f'<span style="color:{color}">{mark} {html.escape(text)}</span>'

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
