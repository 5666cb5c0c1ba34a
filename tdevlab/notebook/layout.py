"""The dashboard's widgets and their layout (no behaviour: see ``dashboard``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from tdevlab.engine.params import Parameters
from tdevlab.notebook.state import STRATEGY_CHOICES

if TYPE_CHECKING:
    from tdevlab.notebook.compare_view import CompareView
    from tdevlab.notebook.lineage_view import LineageView

__all__ = ["PLOTS", "DashboardWidgets"]

#: The plots, each an Image widget: fitness, feasible share, population, metrics strip, and
#: the strategy's front or archive (shown only for a run that keeps one).
PLOTS: tuple[str, ...] = ("fitness", "feasible", "population", "metrics", "members")

_DEFAULTS = Parameters()


class DashboardWidgets:
    """Every widget of the dashboard, laid out in :attr:`widget` (a ``VBox``).

    Buttons start disabled; a click calls :meth:`_click` with the control's name.

    Args:
        parameters: The engine's known parameters (initial values of the inputs).
    """

    def __init__(self, parameters: Mapping[str, Any]) -> None:
        w = widgets
        self.state_label = w.HTML()
        self.generation_label = w.HTML()
        self.best_label = w.HTML()
        self.connection_label = w.HTML()
        status = w.HBox(
            [self.state_label, self.generation_label, self.best_label, self.connection_label],
            layout=w.Layout(justify_content="space-between", width="100%"),
        )
        self.message_label = w.HTML()

        def button(description: str, style: str, icon: str, tooltip: str) -> Any:
            return w.Button(
                description=description,
                button_style=style,
                icon=icon,
                tooltip=tooltip,
                disabled=True,
                layout=w.Layout(width="96px"),
            )

        self.start_button = button("Start", "success", "play", "Start a run with the inputs")
        self.pause_button = button("Pause", "warning", "pause", "Pause after this generation")
        self.resume_button = button("Resume", "info", "play", "Resume the paused run")
        self.stop_button = button("Stop", "danger", "stop", "Stop the run")
        self.apply_button = button("Apply", "", "check", "Apply the parameters to the run")
        self.rollback_button = button("Rollback", "warning", "undo", "Roll back to generation")
        self.buttons: dict[str, Any] = {
            "start": self.start_button,
            "pause": self.pause_button,
            "resume": self.resume_button,
            "stop": self.stop_button,
            "apply": self.apply_button,
            "rollback": self.rollback_button,
        }
        for name, widget in self.buttons.items():
            widget.on_click(lambda _button, control=name: self._click(control))

        narrow = {"description_width": "initial"}
        self.population_input = w.BoundedIntText(
            value=int(parameters.get("population_size", _DEFAULTS.population_size)),
            min=2,
            max=1_000_000,
            description="population_size",
            style=narrow,
            layout=w.Layout(width="190px"),
        )
        self.mutation_input = w.BoundedFloatText(
            value=float(parameters.get("mutation_rate", _DEFAULTS.mutation_rate)),
            min=0.0,
            max=1.0,
            step=0.01,
            description="mutation_rate",
            style=narrow,
            layout=w.Layout(width="180px"),
        )
        self.parameter_inputs: dict[str, Any] = {
            "population_size": self.population_input,
            "mutation_rate": self.mutation_input,
        }
        self.strategy_input = w.Dropdown(
            options=list(STRATEGY_CHOICES),
            value=None,
            description="strategy",
            disabled=True,
            style=narrow,
            layout=w.Layout(width="220px"),
        )
        self.strategy_settings = w.Text(
            value="",
            placeholder='settings, e.g. {"bins": [20, 20]}',
            disabled=True,
            layout=w.Layout(width="260px"),
        )
        self.rollback_input = w.IntText(
            value=0, description="generation", style=narrow, layout=w.Layout(width="150px")
        )
        self.rollback_hint = w.HTML()
        row = {"align_items": "center", "flex_flow": "row wrap"}
        controls = w.VBox(
            [
                w.HBox(
                    [self.start_button, self.pause_button, self.resume_button, self.stop_button],
                    layout=w.Layout(**row),
                ),
                w.HBox(
                    [self.population_input, self.mutation_input, self.apply_button],
                    layout=w.Layout(**row),
                ),
                w.HBox([self.strategy_input, self.strategy_settings], layout=w.Layout(**row)),
                w.HBox(
                    [self.rollback_input, self.rollback_button, self.rollback_hint],
                    layout=w.Layout(**row),
                ),
            ]
        )

        def image(width: str) -> Any:
            return w.Image(format="png", layout=w.Layout(width=width, height="auto"))

        self.images: dict[str, Any] = {
            "fitness": image("50%"),
            "feasible": image("50%"),
            "population": image("50%"),
            "metrics": image("100%"),
            "members": image("100%"),
        }
        self.members_label = w.HTML()
        # Hidden until the run shows it keeps a front or an archive.
        self.members_panel = w.VBox(
            [self.members_label, self.images["members"]], layout=w.Layout(display="none")
        )
        self.alerts_feed = w.HTML(layout=w.Layout(max_height="260px", overflow="auto"))
        self.logs_feed = w.HTML(layout=w.Layout(max_height="200px", overflow="auto"))
        feeds = w.VBox(
            [w.HTML("<b>Alerts</b>"), self.alerts_feed, w.HTML("<b>Log</b>"), self.logs_feed],
            layout=w.Layout(width="50%", padding="0 0 0 8px"),
        )
        self.widget = w.VBox(
            [
                status,
                self.message_label,
                controls,
                w.HBox([self.images["fitness"], self.images["feasible"]]),
                # Top-aligned: a stretched row would distort the plot to the feeds' height.
                w.HBox(
                    [self.images["population"], feeds], layout=w.Layout(align_items="flex-start")
                ),
                self.members_panel,
                self.images["metrics"],
            ],
            layout=w.Layout(width="100%"),
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # A bare `dashboard` at the end of a cell shows the widget (IPython display protocol).
        return self.widget._repr_mimebundle_(**kwargs)

    def add_compare(self, store: str | Path) -> CompareView:
        """Add a compare view of the runs in ``store`` below the plots, and return it."""
        from tdevlab.notebook.compare_view import CompareView

        view = CompareView(store)
        self.widget.children = (*self.widget.children, view.widget)
        return view

    def add_lineage(self, **options: Any) -> LineageView:
        """Add a :class:`~tdevlab.notebook.lineage_view.LineageView` of this dashboard's client
        below the plots, and return it; closing the dashboard closes it.

        Args:
            options: As :class:`~tdevlab.notebook.lineage_view.LineageView` takes them; its
                ``min_interval`` is the dashboard's unless given.

        Raises:
            ModuleNotFoundError: plotly is not installed (``pip install 'tdevlab[lineage]'``).
        """
        from tdevlab.notebook.lineage_view import LineageView

        client: Any = getattr(self, "client")  # noqa: B009 - set by the Dashboard
        options.setdefault("min_interval", getattr(self, "min_interval", 0.5))
        view = LineageView(client, **options)
        self.widget.children = (*self.widget.children, view.widget)
        closers = getattr(self, "_unsubscribe", None)
        if isinstance(closers, list):  # the dashboard's close() calls each of them
            closers.append(view.close)
        return view

    def _click(self, control: str) -> None:
        """Handle a click on a control's button (the dashboard overrides it)."""
