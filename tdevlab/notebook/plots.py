"""The dashboard's plots: matplotlib ``Figure`` objects drawn from the client's DataFrames.

No pyplot: every function makes or fills its own ``Figure`` (Agg, via ``savefig``), so plots
can be drawn on any thread, in a kernel or not, without touching global state. Each plot has
a ``plot_*`` function that fills given axes, a ``*_figure`` function that returns a new
figure (tests read its line data), and a ``render_*`` function that returns PNG bytes.

The ``render_*`` functions take the DataFrames of :class:`tdevlab.client.frames.Frames`
(``frames.evolution``, ``frames.agents``, ``frames.metrics``) or the ``Frames`` object itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "METRICS",
    "Segment",
    "ViewData",
    "feasible_figure",
    "figure_png",
    "fitness_figure",
    "lineage_segments",
    "metrics_figure",
    "plot_feasible",
    "plot_fitness",
    "plot_metrics",
    "plot_population",
    "population_figure",
    "render_feasible",
    "render_fitness",
    "render_metrics",
    "render_population",
]

#: The metrics strip: (column of ``frames.metrics``, title, unit).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("cpu_usage", "CPU", "%"),
    ("memory_usage", "Memory", "%"),
    ("requests_per_second", "Requests/s", ""),
    ("average_latency_ms", "Latency", " ms"),
)

#: Marker colours of agent statuses in the population plot.
STATUS_COLORS: dict[str, str] = {
    "elite": "tab:green",
    "evolving": "tab:blue",
    "violating": "tab:red",
}

_DPI = 80
_PLOT_SIZE = (6.4, 3.2)
_STRIP_SIZE = (12.8, 2.2)
_ACTIVE = ("tab:blue", "tab:orange")  # best, average of the active branch
_ABANDONED = "0.6"


@dataclass
class ViewData:
    """What the dashboard shows at one moment (the input of ``report.snapshot_figure``).

    ``member_kind`` says which member set the view shows (``"front"``, ``"archive"`` or
    ``None``).
    """

    evolution: Any = None
    agents: Any = None
    metrics: Any = None
    alerts: Any = None
    logs: Any = None
    front: Any = None
    archive: Any = None
    member_kind: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    status: str = ""
    message: str = ""


@dataclass
class Segment:
    """The generations of one branch, starting with its fork point in the parent lineage."""

    branch: int
    rows: Any  # DataFrame with a ``generation`` column, sorted by generation
    active: bool
    fork_generation: int | None


def _table(source: Any, name: str) -> Any:
    """``source`` if it is a DataFrame (or None), else ``source.<name>`` (a Frames object)."""
    if source is None or isinstance(source, pd.DataFrame):
        return source
    return getattr(source, name)


def _empty(df: Any, *columns: str) -> bool:
    return df is None or len(df) == 0 or any(c not in df.columns for c in columns)


def _ordered_generations(evolution: Any) -> Any:
    """Rows in arrival order (``seq`` if present), with ``generation`` as a column."""
    df = evolution
    if "generation" not in df.columns:
        df = df.reset_index()
    if "seq" in df.columns:
        df = df.sort_values("seq", kind="stable")
    return df.reset_index(drop=True)


def lineage_segments(evolution: Any) -> list[Segment]:
    """Split the generations into branches, each joined to the generation it forked from.

    A rollback to generation ``g`` makes a new branch that continues at ``g + 1``; its
    segment starts with the latest row of generation ``g`` received before it, so the plot
    shows the branch leaving the old lineage.

    Args:
        evolution: ``frames.evolution`` (index or column ``generation``; ``branch`` and
            ``seq`` columns used when present).

    Returns:
        One segment per branch, in order of appearance; the last row's branch is active.
    """
    evolution = _table(evolution, "evolution")
    if evolution is None or len(evolution) == 0:
        return []
    df = _ordered_generations(evolution)
    if "branch" not in df.columns:
        df = df.assign(branch=0)
    active = df["branch"].iloc[-1]
    segments = []
    for branch, rows in df.groupby("branch", sort=False):
        start = rows.index[0]
        first_generation = rows["generation"].iloc[0]
        earlier = df.iloc[:start]
        fork = earlier[
            (earlier["generation"] == first_generation - 1) & (earlier["branch"] != branch)
        ]
        fork_generation = None
        if len(fork):
            rows = pd.concat([fork.iloc[[-1]], rows])
            fork_generation = int(first_generation - 1)
        rows = rows.drop_duplicates("generation", keep="last").sort_values("generation")
        segments.append(Segment(int(branch), rows, bool(branch == active), fork_generation))
    return segments


def _waiting(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def plot_fitness(ax: Axes, evolution: Any) -> None:
    """Draw best and average fitness per generation; abandoned branches in grey.

    Lines of the active branch are labelled ``best`` and ``average``; lines of other
    branches ``_best (branch N)`` and ``_average (branch N)`` (hidden from the legend).
    """
    evolution = _table(evolution, "evolution")
    ax.set_title("Fitness per generation")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.grid(alpha=0.3)
    if _empty(evolution, "best_fitness", "average_fitness"):
        _waiting(ax, "waiting for generations")
        return
    segments = lineage_segments(evolution)
    # Abandoned branches first, so the active lineage is drawn on top.
    for segment in sorted(segments, key=lambda s: s.active):
        g = segment.rows["generation"]
        if segment.active:
            ax.plot(g, segment.rows["best_fitness"], color=_ACTIVE[0], label="best")
            ax.plot(g, segment.rows["average_fitness"], color=_ACTIVE[1], ls="--", label="average")
        else:
            tag = f"(branch {segment.branch})"
            ax.plot(g, segment.rows["best_fitness"], color=_ABANDONED, label=f"_best {tag}")
            ax.plot(
                g,
                segment.rows["average_fitness"],
                color=_ABANDONED,
                ls="--",
                label=f"_average {tag}",
            )
        if segment.fork_generation is not None:
            ax.axvline(segment.fork_generation, color="0.4", ls=":", lw=0.8)
    handles, _labels = ax.get_legend_handles_labels()
    if len(segments) > 1:
        rollbacks = len(segments) - 1
        ax.set_title(f"Fitness per generation ({rollbacks} rollback{'s' * (rollbacks > 1)})")
        handles.append(Line2D([], [], color=_ABANDONED, label="abandoned branch"))
    ax.legend(handles=handles, loc="lower right", fontsize="small")


def plot_feasible(ax: Axes, evolution: Any) -> None:
    """Draw the share of feasible agents per generation (percent), branches as in fitness."""
    evolution = _table(evolution, "evolution")
    ax.set_title("Feasible share")
    ax.set_xlabel("generation")
    ax.set_ylabel("feasible agents (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if _empty(evolution, "feasible_fraction"):
        _waiting(ax, "waiting for generations")
        return
    for segment in sorted(lineage_segments(evolution), key=lambda s: s.active):
        share = segment.rows["feasible_fraction"] * 100
        if segment.active:
            ax.plot(segment.rows["generation"], share, color="tab:green", label="feasible")
        else:
            label = f"_feasible (branch {segment.branch})"
            ax.plot(segment.rows["generation"], share, color=_ABANDONED, label=label)


def plot_population(
    ax: Axes,
    agents: Any,
    *,
    memory_limit_kb: float | None = None,
    speed_limit_us: float | None = None,
) -> None:
    """Scatter memory_kb against speed_us of the agents alive, with the constraint limits.

    The server streams only notable agents (entering or leaving the elite, a new best, a
    violating agent), so this is the agents the client knows that are not ``retired``, not
    the whole population. One scatter per status, labelled ``"<status> (<count>)"``.
    """
    agents = _table(agents, "agents")
    ax.set_title("Known live agents (notable only): memory vs speed", fontsize="medium")
    ax.set_xlabel("memory (KB)")
    ax.set_ylabel("speed (µs)")
    ax.grid(alpha=0.3)
    if memory_limit_kb is not None:
        ax.axvline(memory_limit_kb, color="tab:red", ls="--", lw=1, label="memory limit")
    if speed_limit_us is not None:
        ax.axhline(speed_limit_us, color="tab:purple", ls="--", lw=1, label="speed limit")
    if _empty(agents, "memory_kb", "speed_us"):
        _waiting(ax, "waiting for agents")
    else:
        alive = agents
        if "status" in agents.columns:
            alive = agents[agents["status"] != "retired"]
        else:
            alive = agents.assign(status="evolving")
        for status, rows in alive.groupby("status", sort=True):
            ax.scatter(
                rows["memory_kb"],
                rows["speed_us"],
                s=18,
                color=STATUS_COLORS.get(str(status), "0.4"),
                label=f"{status} ({len(rows)})",
            )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")


def plot_metrics(axes: Sequence[Axes], metrics: Any, *, window: int = 120) -> None:
    """Draw the last ``window`` samples of cpu, memory, requests/s and latency, one per axes.

    The x axis is seconds before the latest sample; each title shows the latest value.
    """
    metrics = _table(metrics, "metrics")
    for ax, (column, title, unit) in zip(axes, METRICS, strict=True):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="small")
        if _empty(metrics, column):
            ax.set_title(title, fontsize="medium")
            _waiting(ax, "no samples")
            continue
        tail = metrics.tail(window)
        values = tail[column].astype(float)
        x = _seconds_before_last(tail.index)
        ax.plot(x, values, color="tab:blue")
        last = values.iloc[-1]
        shown = f"{last:.1f}{unit}" if math.isfinite(last) else "n/a"
        ax.set_title(f"{title} {shown}", fontsize="medium")
        ax.set_xlabel("seconds ago", fontsize="small")


def _seconds_before_last(index: Any) -> Any:
    """Seconds before the last sample for a DatetimeIndex; sample numbers otherwise."""
    if isinstance(index, pd.DatetimeIndex) and len(index):
        return (index - index[-1]).total_seconds()
    return list(range(1 - len(index), 1))


# Fixed margins: a layout engine ("constrained") doubles the cost of a live redraw.
_PLOT_MARGINS = {"left": 0.12, "right": 0.98, "bottom": 0.16, "top": 0.9}
_STRIP_MARGINS = {"left": 0.04, "right": 0.99, "bottom": 0.22, "top": 0.85, "wspace": 0.25}


def _figure(
    size: tuple[float, float] = _PLOT_SIZE, margins: Mapping[str, float] = _PLOT_MARGINS
) -> Figure:
    figure = Figure(figsize=size, dpi=_DPI)
    figure.subplots_adjust(**margins)
    return figure


def fitness_figure(evolution: Any) -> Figure:
    """Return a new figure with :func:`plot_fitness`."""
    figure = _figure()
    plot_fitness(figure.add_subplot(), evolution)
    return figure


def feasible_figure(evolution: Any) -> Figure:
    """Return a new figure with :func:`plot_feasible`."""
    figure = _figure()
    plot_feasible(figure.add_subplot(), evolution)
    return figure


def population_figure(
    agents: Any, *, memory_limit_kb: float | None = None, speed_limit_us: float | None = None
) -> Figure:
    """Return a new figure with :func:`plot_population`."""
    figure = _figure()
    plot_population(
        figure.add_subplot(), agents, memory_limit_kb=memory_limit_kb, speed_limit_us=speed_limit_us
    )
    return figure


def metrics_figure(metrics: Any, *, window: int = 120) -> Figure:
    """Return a new figure with the metrics strip (:func:`plot_metrics`)."""
    figure = _figure(_STRIP_SIZE, _STRIP_MARGINS)
    plot_metrics(figure.subplots(1, len(METRICS)), metrics, window=window)
    return figure


def figure_png(figure: Figure) -> bytes:
    """Return the figure as PNG bytes (Agg, no pyplot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def render_fitness(evolution: Any) -> bytes:
    """Return :func:`fitness_figure` as PNG bytes."""
    return figure_png(fitness_figure(evolution))


def render_feasible(evolution: Any) -> bytes:
    """Return :func:`feasible_figure` as PNG bytes."""
    return figure_png(feasible_figure(evolution))


def render_population(
    agents: Any, *, memory_limit_kb: float | None = None, speed_limit_us: float | None = None
) -> bytes:
    """Return :func:`population_figure` as PNG bytes."""
    return figure_png(
        population_figure(agents, memory_limit_kb=memory_limit_kb, speed_limit_us=speed_limit_us)
    )


def render_metrics(metrics: Any, *, window: int = 120) -> bytes:
    """Return :func:`metrics_figure` as PNG bytes."""
    return figure_png(metrics_figure(metrics, window=window))
