"""The dashboard's snapshot: one figure with the status, every plot and the latest alerts."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from tdevlab.notebook.feeds import alert_lines
from tdevlab.notebook.plots import (
    METRICS,
    ViewData,
    figure_png,
    plot_feasible,
    plot_fitness,
    plot_metrics,
    plot_population,
)
from tdevlab.notebook.tradeoffs import plot_archive, plot_front

__all__ = ["render_snapshot", "snapshot_figure"]


def _limit(parameters: Mapping[str, Any], name: str) -> float | None:
    value = parameters.get(name)
    return float(value) if isinstance(value, int | float) else None


def snapshot_figure(view: ViewData) -> Figure:
    """Return one figure with the status text, every plot and the latest alerts (a report);
    with the front or the archive too when the view shows one."""
    members = view.member_kind in ("front", "archive")
    heights = [0.28, 1, 1, *([1] if members else []), 0.6]
    figure = Figure(figsize=(12.8, 11 + 3 * members), dpi=100, layout="constrained")
    grid = figure.add_gridspec(len(heights), 4, height_ratios=heights)
    limits = {
        "memory_limit_kb": _limit(view.parameters, "memory_limit_kb"),
        "speed_limit_us": _limit(view.parameters, "speed_limit_us"),
    }
    header = figure.add_subplot(grid[0, :])
    header.axis("off")
    header.text(0, 0.75, view.status or "tdevlab dashboard", fontsize="large", va="center")
    if view.message:
        header.text(0, 0.2, view.message, fontsize="medium", va="center", color="0.3")
    plot_fitness(figure.add_subplot(grid[1, :2]), view.evolution)
    plot_feasible(figure.add_subplot(grid[1, 2:]), view.evolution)
    plot_population(figure.add_subplot(grid[2, :2]), view.agents, **limits)
    feed = figure.add_subplot(grid[2, 2:])
    feed.axis("off")
    feed.set_title("Latest alerts", loc="left")
    lines = alert_lines(view.alerts, limit=8) or ["no alerts"]
    wrapped = [textwrap.fill(line, 80, subsequent_indent="  ") for line in lines]
    feed.text(0, 1, "\n".join(wrapped), va="top", fontsize="small", family="monospace")
    if view.member_kind == "front":
        axes = [figure.add_subplot(grid[3, i]) for i in range(4)]
        plot_front(axes, view.front, view.evolution, **limits)
    elif view.member_kind == "archive":
        axes = [figure.add_subplot(grid[3, :3]), figure.add_subplot(grid[3, 3])]
        plot_archive(axes, view.archive, view.evolution, **limits)
    last = len(heights) - 1
    plot_metrics([figure.add_subplot(grid[last, i]) for i in range(len(METRICS))], view.metrics)
    return figure


def render_snapshot(view: ViewData) -> bytes:
    """Return :func:`snapshot_figure` as PNG bytes."""
    return figure_png(snapshot_figure(view))
