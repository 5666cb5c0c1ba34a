"""A live ipywidgets dashboard for a tdevlab client, and the plots it draws.

.. code-block:: python

    client = await tdevlab.connect(url, token=token)   # or tdevlab.connect_sync(...)
    dashboard = tdevlab.Dashboard(client)
    dashboard                                          # last in the cell: displays it

Layout (one ``VBox``, :attr:`Dashboard.widget`)::

    Run running   Generation 42   Best Agent_x (agent-7) fitness 0.8123   Connection open
    ✓ start: run running                                           <- replies and errors
    [Start] [Pause] [Resume] [Stop]
    population_size [100]  mutation_rate [0.15]  [Apply]
    strategy [NSGA-II v] [{"objectives": [...]}]        <- before Start, sent with it
    generation [27] [Rollback]  suggested by "Fitness Regression Detected" (generation 31)
    | fitness per generation (branches) | feasible share                 |
    | known live agents: memory vs speed| alerts feed / log feed         |
    | Pareto front: 3 projections, hypervolume | or the MAP-Elites grid  |  <- NSGA-II/MAP-Elites
    | cpu | memory | requests/s | latency                                |

Modules: ``state`` (pure logic: enabled controls, redraw throttle, commands, alert prefill,
the strategy choice), ``plots`` (matplotlib ``Figure`` objects, PNG rendering),
``tradeoffs`` (the front and archive panel), ``report`` (the snapshot), ``feeds`` (alert and
log HTML), ``texts`` (status words), ``layout`` (the widgets), ``dashboard`` (commands,
client events and the redraw task), ``extras`` (:func:`require`: a notebook's optional extra,
checked up front), ``compare_view`` and ``compare_plots`` (the runs of a store compared:
``dashboard.add_compare("runs.db")`` adds the view below the plots), ``lineage_view`` and
``lineage_data`` (:class:`LineageView`, clickable plotly plots of an agent's family tree, its
code diffs and "Branch from here": ``dashboard.add_lineage()`` adds it below the plots).
"""

from __future__ import annotations

from tdevlab.notebook.compare_view import CompareView
from tdevlab.notebook.dashboard import Dashboard, DashboardClient, FramesLike
from tdevlab.notebook.extras import require
from tdevlab.notebook.lineage_view import LineageView
from tdevlab.notebook.plots import (
    ViewData,
    render_feasible,
    render_fitness,
    render_metrics,
    render_population,
)
from tdevlab.notebook.report import render_snapshot
from tdevlab.notebook.state import (
    CONTROLS,
    STRATEGY_CHOICES,
    Command,
    RedrawThrottle,
    command_for,
    enabled_controls,
    rollback_recommendation,
)
from tdevlab.notebook.tradeoffs import render_members

__all__ = [
    "CONTROLS",
    "STRATEGY_CHOICES",
    "Command",
    "CompareView",
    "Dashboard",
    "DashboardClient",
    "FramesLike",
    "LineageView",
    "RedrawThrottle",
    "ViewData",
    "command_for",
    "enabled_controls",
    "render_feasible",
    "render_fitness",
    "render_members",
    "render_metrics",
    "render_population",
    "render_snapshot",
    "require",
    "rollback_recommendation",
]
