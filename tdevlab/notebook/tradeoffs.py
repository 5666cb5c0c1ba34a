"""The trade-off panel: the NSGA-II front in 2-D projections, the MAP-Elites archive as a heatmap.

Drawn from ``frames.front`` / ``frames.archive`` (their ``attrs`` name the objectives, or the
descriptors with their bins and ranges) and ``frames.evolution`` (the strategy's measures per
generation). The feasible region, ``memory_kb <= memory_limit_kb`` and ``speed_us <=
speed_limit_us``, is shaded in every projection that has one of those on an axis; in the
heatmap its corner is outlined. As in :mod:`tdevlab.notebook.plots`: ``Figure`` objects only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tdevlab.client.members import set_columns
from tdevlab.notebook.plots import figure_png, lineage_segments

__all__ = [
    "KIND_TITLES",
    "member_summary",
    "members_figure",
    "plot_archive",
    "plot_front",
    "projections",
    "render_members",
]

#: The panel's title per member set.
KIND_TITLES = {"front": "Pareto front", "archive": "MAP-Elites archive"}
_DEFAULT_OBJECTIVES = ("fitness", "memory_kb", "speed_us")
_DEFAULT_DESCRIPTORS = ("memory_kb", "speed_us")
_LABELS = {"fitness": "fitness", "memory_kb": "memory (KB)", "speed_us": "speed (µs)"}
_FEASIBLE = "tab:green"
_SIZE = (12.8, 3.2)
_DPI = 80


def _limits_of(memory_limit_kb: float | None, speed_limit_us: float | None) -> dict[str, float]:
    limits = {"memory_kb": memory_limit_kb, "speed_us": speed_limit_us}
    return {k: float(v) for k, v in limits.items() if v is not None and math.isfinite(v)}


def _label(column: str) -> str:
    return _LABELS.get(column, column.removeprefix("gene_"))


def _waiting(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def projections(columns: Sequence[str], most: int = 3) -> list[tuple[str, str]]:
    """The (x, y) pairs of objective columns to draw, at most ``most``: fitness on y when
    it is one of the pair, so each projection reads "what it costs" against "how good"."""
    pairs = []
    for i, a in enumerate(columns):
        for b in columns[i + 1 :]:
            pairs.append((b, a) if a == "fitness" else (a, b))
    return pairs[:most]


def _shade(ax: Axes, x: str, y: str, limits: Mapping[str, float]) -> None:
    """Shade the feasible part of a projection and draw the limits on its axes."""
    if x not in limits and y not in limits:
        return
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    if x in limits:
        ax.axvline(limits[x], color="tab:red", ls="--", lw=1)
        x1 = max(x1, limits[x] * 1.05)
    if y in limits:
        ax.axhline(limits[y], color="tab:red", ls="--", lw=1)
        y1 = max(y1, limits[y] * 1.05)
    right, top = min(limits.get(x, x1), x1), min(limits.get(y, y1), y1)
    ax.add_patch(
        Rectangle((x0, y0), right - x0, top - y0, color=_FEASIBLE, alpha=0.1, lw=0, zorder=0)
    )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _active_rows(evolution: Any, columns: Sequence[str]) -> Any:
    """The active lineage's rows that have the columns, by generation (or None)."""
    if evolution is None or len(evolution) == 0 or any(c not in evolution for c in columns):
        return None
    active = [s for s in lineage_segments(evolution) if s.active]
    return active[0].rows if active else None


def plot_front(
    axes: Sequence[Axes],
    front: Any,
    evolution: Any = None,
    *,
    memory_limit_kb: float | None = None,
    speed_limit_us: float | None = None,
) -> None:
    """Draw the front's projections on ``axes[:-1]`` and its hypervolume on ``axes[-1]``.

    Each projection is a scatter labelled ``front (N)``, coloured by fitness, with the
    feasible region shaded where an axis is memory_kb or speed_us.
    """
    limits = _limits_of(memory_limit_kb, speed_limit_us)
    named = set_columns((front.attrs if front is not None else {}).get("objectives", []))
    columns = named or list(_DEFAULT_OBJECTIVES)
    *views, trend = axes
    pairs = projections(columns, most=len(views))
    empty = front is None or len(front) == 0
    fitness = None if empty or "fitness" not in front else front["fitness"].to_numpy()
    for ax, (x, y) in zip(views, pairs, strict=False):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="small")
        ax.set_xlabel(_label(x), fontsize="small")
        ax.set_ylabel(_label(y), fontsize="small")
        if empty or x not in front or y not in front:
            _waiting(ax, "waiting for the front")
        else:
            ax.scatter(
                front[x], front[y], s=16, c=fitness, cmap="viridis", label=f"front ({len(front)})"
            )
        _shade(ax, x, y, limits)
    for ax in views[len(pairs) :]:
        ax.axis("off")
    if views:
        views[0].set_title(f"Pareto front ({0 if empty else len(front)} agents)", fontsize="medium")
    _plot_measures(trend, evolution, ("hypervolume", "front_size"), ("hypervolume", "front size"))


def plot_archive(
    axes: Sequence[Axes],
    archive: Any,
    evolution: Any = None,
    *,
    memory_limit_kb: float | None = None,
    speed_limit_us: float | None = None,
) -> None:
    """Draw the archive's grid on ``axes[0]`` (colour: each cell's elite's fitness) and
    its coverage and QD score on ``axes[1]``.

    With more than two descriptors the grid shows the first two (the best elite of each
    pair of cells). The grid's image is ``axes[0].images[0]``, its array ``(bins_y, bins_x)``.
    """
    ax, trend = axes[0], axes[1]
    attrs = archive.attrs if archive is not None else {}
    columns = set_columns(attrs.get("descriptors", [])) or list(_DEFAULT_DESCRIPTORS)
    bins, ranges = attrs.get("bins"), attrs.get("ranges")
    ax.tick_params(labelsize="small")
    ax.set_xlabel(_label(columns[0]), fontsize="small")
    ax.set_ylabel(_label(columns[1]) if len(columns) > 1 else "", fontsize="small")
    cells = [f"cell_{c}" for c in columns[:2]]
    if archive is None or len(archive) == 0 or not bins or not ranges or len(columns) < 2:
        ax.set_title("MAP-Elites archive", fontsize="medium")
        _waiting(ax, "waiting for the archive")
    else:
        grid = np.full((bins[1], bins[0]), np.nan)
        placed = archive.dropna(subset=cells)
        xs = placed[cells[0]].to_numpy(dtype=np.int64)
        ys = placed[cells[1]].to_numpy(dtype=np.int64)
        np.fmax.at(grid, (ys, xs), placed["fitness"].to_numpy(dtype=np.float64))
        (x0, x1), (y0, y1) = ranges[0], ranges[1]
        image = ax.imshow(
            grid, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="viridis"
        )
        ax.figure.colorbar(image, ax=ax, label="fitness", pad=0.01)
        covered = int(np.isfinite(grid).sum())
        ax.set_title(
            f"MAP-Elites archive ({len(archive)} elites, {covered}/{grid.size} cells)",
            fontsize="medium",
        )
        limits = _limits_of(memory_limit_kb, speed_limit_us)
        right, top = limits.get(columns[0], x1), limits.get(columns[1], y1)
        if columns[0] in limits or columns[1] in limits:
            ax.add_patch(
                Rectangle(
                    (x0, y0), right - x0, top - y0, fill=False, ec="tab:red", ls="--", lw=1.2,
                    label="feasible",
                )
            )  # fmt: skip
    _plot_measures(trend, evolution, ("qd_score", "archive_coverage"), ("QD score", "coverage %"))


def _plot_measures(
    ax: Axes, evolution: Any, columns: tuple[str, str], labels: tuple[str, str]
) -> None:
    """The strategy's two measures per generation of the active lineage (second on a twin)."""
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize="small")
    ax.set_xlabel("generation", fontsize="small")
    rows = _active_rows(evolution, columns)
    if rows is None or rows[columns[0]].isna().all():
        ax.set_title(labels[0], fontsize="medium")
        _waiting(ax, "no generations yet")
        return
    first, second = rows[columns[0]], rows[columns[1]]
    if columns[1] == "archive_coverage":
        second = second * 100  # a share, shown in percent
    ax.plot(rows["generation"], first, color="tab:blue", label=labels[0])
    ax.set_ylabel(labels[0], fontsize="small", color="tab:blue")
    twin = ax.twinx()
    twin.tick_params(labelsize="small")
    twin.plot(rows["generation"], second, color="tab:orange", ls="--", label=labels[1])
    twin.set_ylabel(labels[1], fontsize="small", color="tab:orange")
    ax.set_title(
        f"{labels[0]} {first.iloc[-1]:.4g} · {labels[1]} {second.iloc[-1]:.4g}", fontsize="medium"
    )


def members_figure(
    kind: str,
    members: Any,
    evolution: Any = None,
    *,
    memory_limit_kb: float | None = None,
    speed_limit_us: float | None = None,
) -> Figure:
    """A new figure with the front (three projections and the hypervolume) or the archive
    (its grid, twice as wide, and coverage with QD score).

    Raises:
        ValueError: for a kind other than ``"front"`` / ``"archive"``.
    """
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    limits = {"memory_limit_kb": memory_limit_kb, "speed_limit_us": speed_limit_us}
    if kind == "front":
        figure.subplots_adjust(left=0.05, right=0.95, bottom=0.17, top=0.88, wspace=0.32)
        plot_front(figure.subplots(1, 4), members, evolution, **limits)
    elif kind == "archive":
        figure.subplots_adjust(left=0.05, right=0.94, bottom=0.17, top=0.88, wspace=0.3)
        grid = figure.add_gridspec(1, 3)
        axes = [figure.add_subplot(grid[0, :2]), figure.add_subplot(grid[0, 2])]
        plot_archive(axes, members, evolution, **limits)
    else:
        raise ValueError(f"kind {kind!r} must be 'front' or 'archive'")
    return figure


def render_members(
    kind: str,
    members: Any,
    evolution: Any = None,
    *,
    memory_limit_kb: float | None = None,
    speed_limit_us: float | None = None,
) -> bytes:
    """Return :func:`members_figure` as PNG bytes."""
    figure = members_figure(
        kind, members, evolution, memory_limit_kb=memory_limit_kb, speed_limit_us=speed_limit_us
    )
    return figure_png(figure)


def member_summary(kind: str, members: Any, evolution: Any = None) -> str:
    """One line on the set: its size, the latest generation and the strategy's measures,
    e.g. ``Pareto front · 12 agents · generation 30 · hypervolume 0.8123``."""
    size = 0 if members is None else len(members)
    parts = [KIND_TITLES.get(kind, kind), f"{size} {'agents' if kind == 'front' else 'elites'}"]
    if evolution is not None and len(evolution):
        last = evolution.iloc[-1]
        generation = evolution.index[-1] if "generation" not in evolution else last["generation"]
        parts.append(f"generation {int(generation)}")
        measures = (
            (("hypervolume", "hypervolume", "{:.4g}"),)
            if kind == "front"
            else (("archive_coverage", "coverage", "{:.0%}"), ("qd_score", "QD score", "{:.4g}"))
        )
        for column, label, form in measures:
            value = last.get(column)
            if isinstance(value, float) and math.isfinite(value):
                parts.append(f"{label} {form.format(value)}")
    return " · ".join(parts)
