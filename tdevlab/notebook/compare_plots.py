"""Plots of a run comparison (:mod:`tdevlab.comparison`): matplotlib ``Figure`` objects.

No pyplot, as in :mod:`tdevlab.notebook.plots`: each function makes its own ``Figure``.

- :func:`best_so_far_figure`: best-so-far against evaluations, one panel per problem. The
  runs of a strategy (its seeds) are put on one grid, the union of their evaluation counts;
  a run's value at a count is its best-so-far at its last generation within that count
  (a step), and nothing beyond its own last generation. The line is the median over the
  runs that reach the count, the band their min..max.
- :func:`final_figure`: the final best-so-far of every run, a box and the points per
  strategy, one panel per problem.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "best_so_far_figure",
    "compare_figure",
    "final_figure",
    "plot_best_so_far",
    "plot_final",
    "render_best_so_far",
    "save_png",
    "strategy_band",
]

_DPI = 80
_PANEL = (5.6, 3.6)
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def strategy_band(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The grid, median, min and max of the best-so-far of ``runs`` (rows of one strategy
    and problem of ``Comparison.frame``), as the module docstring says.

    Returns:
        ``(evaluations, median, low, high)``, equal lengths.
    """
    curves = [
        (g["evaluations"].to_numpy(dtype=np.float64), g["best_so_far"].to_numpy(np.float64))
        for _, g in runs.groupby("run", sort=False)
    ]
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    values = np.full((len(curves), grid.size), np.nan)
    for i, (x, y) in enumerate(curves):
        at = np.searchsorted(x, grid, side="right") - 1
        inside = (at >= 0) & (grid <= x[-1])
        values[i, inside] = y[at[inside]]
    reached = ~np.isnan(values).all(axis=0)
    grid, values = grid[reached], values[:, reached]
    return (
        grid,
        np.nanmedian(values, axis=0),
        np.nanmin(values, axis=0),
        np.nanmax(values, axis=0),
    )


def plot_best_so_far(ax: Axes, frame: pd.DataFrame, problem: str) -> None:
    """Fill ``ax`` with the best-so-far curves of ``problem``'s runs, per strategy."""
    rows = frame[frame["problem"] == problem]
    for i, (strategy, runs) in enumerate(rows.groupby("strategy", sort=False)):
        grid, median, low, high = strategy_band(runs)
        color = _COLORS[i % len(_COLORS)]
        seeds = runs["run"].nunique()
        ax.fill_between(grid, low, high, step="post", alpha=0.2, color=color, linewidth=0)
        ax.step(grid, median, where="post", color=color, label=f"{strategy} ({seeds} runs)")
    ax.set_title(f"{problem}: best so far", fontsize=10)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best fitness so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_final(ax: Axes, final: pd.DataFrame, problem: str) -> None:
    """Fill ``ax`` with the final best-so-far of ``problem``'s runs: box and points."""
    rows = final[final["problem"] == problem]
    groups = [
        (str(s), g["best_so_far"].to_numpy()) for s, g in rows.groupby("strategy", sort=False)
    ]
    positions = np.arange(1, len(groups) + 1)
    ax.boxplot([v for _, v in groups], positions=positions, widths=0.5, showfliers=False)
    for i, (position, (_, values)) in enumerate(zip(positions, groups, strict=True)):
        # Points spread evenly across the box (no random jitter: the figure is reproducible).
        offsets = np.linspace(-0.15, 0.15, values.size) if values.size > 1 else np.zeros(1)
        ax.scatter(position + offsets, values, s=14, color=_COLORS[i % len(_COLORS)], zorder=3)
    ax.set_xticks(positions, [name for name, _ in groups], rotation=20, fontsize=8)
    ax.set_title(f"{problem}: final best so far", fontsize=10)
    ax.set_ylabel("best fitness")
    ax.grid(alpha=0.3, axis="y")


def _figure(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(_PANEL[0] * columns, _PANEL[1] * rows), dpi=_DPI)
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    return fig, axes


def _problems(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["problem"].astype(str)))


def best_so_far_figure(frame: pd.DataFrame) -> Figure:
    """A new figure: :func:`plot_best_so_far` for each problem of ``frame``."""
    problems = _problems(frame)
    fig, axes = _figure(1, len(problems))
    for ax, problem in zip(axes[0], problems, strict=True):
        plot_best_so_far(ax, frame, problem)
    fig.tight_layout()
    return fig


def final_figure(final: pd.DataFrame) -> Figure:
    """A new figure: :func:`plot_final` for each problem of ``final``."""
    problems = _problems(final)
    fig, axes = _figure(1, len(problems))
    for ax, problem in zip(axes[0], problems, strict=True):
        plot_final(ax, final, problem)
    fig.tight_layout()
    return fig


def compare_figure(frame: pd.DataFrame, final: pd.DataFrame) -> Figure:
    """A new figure: the best-so-far curves above, the final distributions below."""
    problems = _problems(frame)
    fig, axes = _figure(2, len(problems))
    for column, problem in enumerate(problems):
        plot_best_so_far(axes[0, column], frame, problem)
        plot_final(axes[1, column], final, problem)
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` as PNG at ``path`` when one is given; return it."""
    if path is not None:
        fig.savefig(Path(path), format="png")
    return fig


def render_best_so_far(frame: pd.DataFrame) -> bytes:
    """The best-so-far figure as PNG bytes (the compare view's image)."""
    buffer = io.BytesIO()
    best_so_far_figure(frame).savefig(buffer, format="png")
    return buffer.getvalue()
