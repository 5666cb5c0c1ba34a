"""The lineage view's data: plotly traces as plain dicts, and the texts around them.

No widgets and no plotly here: every function turns the client's tables (``frames.evolution``,
``frames.agents``, a ``get_population`` or ``get_lineage`` reply) into trace dicts
(``{"type": "scatter", "x": [...], "y": [...], "customdata": [...], ...}``) that
:class:`~tdevlab.notebook.lineage_view.LineageView` hands to plotly's ``FigureWidget``.
A trace whose points can be clicked carries agent ids in ``customdata``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tdevlab.notebook.plots import STATUS_COLORS, lineage_segments

__all__ = [
    "BRANCH_COLORS",
    "BranchSpan",
    "branch_color",
    "branch_spans",
    "branch_tree_traces",
    "details_html",
    "fitness_traces",
    "lineage_summary",
    "population_traces",
    "tree_traces",
]

#: Branch colours (plotly's default sequence): branch ``b`` is ``BRANCH_COLORS[b % 10]``.
BRANCH_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_STATUS_HEX = {"tab:green": "#2ca02c", "tab:blue": "#1f77b4", "tab:red": "#d62728"}


def branch_color(branch: int) -> str:
    """The colour of a branch in every lineage plot."""
    return BRANCH_COLORS[int(branch) % len(BRANCH_COLORS)]


def _rows(table: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as dicts, its index (``agent_id``) included."""
    if table is None or len(table) == 0:
        return []
    frame = table.reset_index() if "agent_id" not in table.columns else table
    records: list[dict[str, Any]] = frame.to_dict("records")
    return records


def population_traces(
    agents: Any = None, population: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Memory against speed, one trace per status, agent ids in ``customdata``.

    Args:
        agents: ``frames.agents`` (the notable agents the client knows); retired ones are
            left out.
        population: A ``get_population`` reply's data; when given, its agents are drawn
            instead (the whole live population).
    """
    if population is not None:
        rows = list(population.get("agents") or [])
    else:
        rows = [r for r in _rows(agents) if r.get("status") != "retired"]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_status.setdefault(str(row.get("status") or "evolving"), []).append(row)
    return [
        {
            "type": "scatter",
            "mode": "markers",
            "name": f"{status} ({len(members)})",
            "x": [r["memory_kb"] for r in members],
            "y": [r["speed_us"] for r in members],
            "customdata": [str(r["agent_id"]) for r in members],
            "marker": {
                "size": 9,
                "color": _STATUS_HEX.get(STATUS_COLORS.get(status, ""), "#666666"),
            },
            "hovertemplate": "%{customdata}<br>memory %{x:.1f} KB<br>speed %{y:.1f} µs"
            "<extra></extra>",
        }
        for status, members in sorted(by_status.items())
    ]


def fitness_traces(evolution: Any) -> list[dict[str, Any]]:
    """Best fitness per generation, one trace per branch (joined at its fork), best agent
    ids in ``customdata`` (a click asks for that agent's lineage)."""
    traces = []
    for segment in lineage_segments(evolution):
        rows = segment.rows
        ids = rows["best_agent_id"] if "best_agent_id" in rows.columns else [None] * len(rows)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"branch {segment.branch}" + ("" if segment.active else " (left)"),
                "x": [int(g) for g in rows["generation"]],
                "y": [float(f) for f in rows["best_fitness"]],
                "customdata": [None if i is None else str(i) for i in ids],
                "line": {"color": branch_color(segment.branch), "width": 2},
                "marker": {"size": 5},
                "hovertemplate": "generation %{x}<br>best %{y:.4f}<br>%{customdata}<extra></extra>",
            }
        )
    return traces


@dataclass(frozen=True)
class BranchSpan:
    """One branch of the run: the generations it holds and where it forked."""

    branch: int
    parent: int | None
    fork_generation: int | None
    first_generation: int
    last_generation: int
    best_agent_id: str | None
    active: bool


def branch_spans(evolution: Any) -> list[BranchSpan]:
    """The run's branches (rollbacks and branches as forks) from the evolution rows."""
    spans = []
    for segment in lineage_segments(evolution):
        rows = segment.rows
        forked = segment.fork_generation is not None
        own = rows.iloc[1:] if forked else rows
        if not len(own):
            continue
        best = own["best_agent_id"].iloc[-1] if "best_agent_id" in own.columns else None
        spans.append(
            BranchSpan(
                branch=segment.branch,
                parent=int(rows["branch"].iloc[0]) if forked and "branch" in rows else None,
                fork_generation=segment.fork_generation,
                first_generation=int(own["generation"].iloc[0]),
                last_generation=int(own["generation"].iloc[-1]),
                best_agent_id=None if best is None else str(best),
                active=segment.active,
            )
        )
    return spans


def branch_tree_traces(spans: Sequence[BranchSpan]) -> list[dict[str, Any]]:
    """The branch tree: a bar per branch over its generations (y = branch), a dotted link
    from its parent at the fork; the end of a bar carries the branch's latest best agent."""
    traces: list[dict[str, Any]] = []
    links_x: list[Any] = []
    links_y: list[Any] = []
    for span in spans:
        start = span.first_generation if span.fork_generation is None else span.fork_generation
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"branch {span.branch}" + (" (active)" if span.active else ""),
                "x": [start, span.last_generation],
                "y": [span.branch, span.branch],
                "customdata": [span.best_agent_id, span.best_agent_id],
                "line": {"color": branch_color(span.branch), "width": 6 if span.active else 3},
                "marker": {"size": 8},
                "showlegend": False,
                "hovertemplate": f"branch {span.branch}: generations {start}"
                f"–{span.last_generation}<br>best %{{customdata}}<extra></extra>",
            }
        )
        if span.parent is not None and span.fork_generation is not None:
            links_x += [span.fork_generation, span.fork_generation, None]
            links_y += [span.parent, span.branch, None]
    if links_x:
        traces.insert(
            0,
            {
                "type": "scatter",
                "mode": "lines",
                "name": "forks",
                "x": links_x,
                "y": links_y,
                "line": {"color": "#888888", "dash": "dot", "width": 1},
                "hoverinfo": "skip",
                "showlegend": False,
            },
        )
    return traces


def tree_traces(lineage: Mapping[str, Any], selected: str | None = None) -> list[dict[str, Any]]:
    """An agent's family tree: generations on x, fitness on y, one trace of nodes per branch
    (agent ids in ``customdata``), parent links as lines, the agent asked about ringed.

    Args:
        lineage: A ``get_lineage`` reply's data (``nodes`` and ``edges`` as columns).
        selected: The node being inspected (drawn larger), if any.
    """
    nodes = lineage.get("nodes") or {}
    ids: list[str] = list(nodes.get("agent_id") or [])
    where = {
        agent: (int(g), float(f))
        for agent, g, f in zip(ids, nodes["birth_generation"], nodes["fitness"], strict=True)
    }
    edges = lineage.get("edges") or {}
    traces: list[dict[str, Any]] = []
    for kind, dash in (("first_parent", "solid"), ("second_parent", "dot")):
        xs: list[Any] = []
        ys: list[Any] = []
        for parent, child, k in zip(
            edges.get("parent") or [],
            edges.get("child") or [],
            edges.get("kind") or [],
            strict=True,
        ):
            if k == kind and parent in where and child in where:
                xs += [where[parent][0], where[child][0], None]
                ys += [where[parent][1], where[child][1], None]
        if xs:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": kind.replace("_", " "),
                    "x": xs,
                    "y": ys,
                    "line": {"color": "#999999", "dash": dash, "width": 1},
                    "hoverinfo": "skip",
                    "showlegend": False,
                }
            )
    for branch in sorted(set(nodes.get("branch") or [])):
        at = [i for i, b in enumerate(nodes["branch"]) if b == branch]
        color = branch_color(branch)
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"branch {branch}",
                "x": [nodes["birth_generation"][i] for i in at],
                "y": [nodes["fitness"][i] for i in at],
                "customdata": [ids[i] for i in at],
                "text": [nodes["made_by"][i] for i in at],
                "marker": {
                    "size": [16 if ids[i] == selected else 10 for i in at],
                    "color": color,
                    "symbol": [_symbol(nodes["relation"][i]) for i in at],
                    "line": {
                        "width": [
                            3 if ids[i] in (selected, lineage.get("agent_id")) else 1 for i in at
                        ],
                        "color": "#111111",
                    },
                },
                "hovertemplate": "%{customdata} (%{text})<br>generation %{x}<br>"
                "fitness %{y:.4f}<extra></extra>",
            }
        )
    return traces


def _symbol(relation: str) -> str:
    return {"self": "star", "second_parent": "diamond", "descendant": "triangle-up"}.get(
        relation, "circle"
    )


def lineage_summary(lineage: Mapping[str, Any]) -> str:
    """'Lineage of agent-7: 12 nodes, 2 branches (generations 0–40)' (plain text)."""
    nodes = lineage.get("nodes") or {}
    count = len(nodes.get("agent_id") or [])
    branches = len(set(nodes.get("branch") or []))
    generations = nodes.get("birth_generation") or []
    span = f" (generations {min(generations)}–{max(generations)})" if generations else ""
    return (
        f"Lineage of {lineage.get('agent_id')}: {count} node{'s' * (count != 1)}, "
        f"{branches} branch{'es' * (branches != 1)}{span}"
    )


def node_row(lineage: Mapping[str, Any], agent_id: str) -> dict[str, Any] | None:
    """One node of a lineage reply as a dict of its columns (``None``: not in it)."""
    nodes = lineage.get("nodes") or {}
    ids = list(nodes.get("agent_id") or [])
    if agent_id not in ids:
        return None
    i = ids.index(agent_id)
    return {name: column[i] for name, column in nodes.items()}


def details_html(
    node: Mapping[str, Any] | None,
    agent: Mapping[str, Any] | None = None,
    diff: Any = None,
    error: str | None = None,
) -> str:
    """A node's card: where it sits, its genes (changed ones marked) and the code diff.

    Args:
        node: The node's lineage columns (:func:`node_row`).
        agent: Its ``get_agent`` data (for the genes), once known.
        diff: A :class:`~tdevlab.engine.lineage.GenomeDiff` against its first parent.
        error: Why genes or diff could not be fetched.
    """
    if node is None:
        return "<i>hover or click a node of the tree: its genes and its diff appear here</i>"
    e = html.escape
    parent = node.get("parent_a")
    head = (
        f"<b>{e(str(node['agent_id']))}</b> · branch {node.get('branch')} · generation "
        f"{node.get('birth_generation')} · fitness {float(node.get('fitness', 0.0)):.4f}"
        f" · {e(str(node.get('made_by')))}" + (f" from {e(str(parent))}" if parent else "")
    )
    parts = [f"<div>{head}</div>"]
    changed = set(node.get("genes_changed") or [])
    genes = (agent or {}).get("genes")
    if isinstance(genes, Mapping):
        marked = " style='color:#b45309'"
        cells = "".join(
            f"<tr><td>{e(str(name))}</td><td{marked if name in changed else ''}>"
            f"{e(_short(value))}</td></tr>"
            for name, value in genes.items()
        )
        parts.append(f"<table style='font-size:12px'>{cells}</table>")
    elif changed:
        parts.append(f"<div>genes changed: {e(', '.join(sorted(changed)))}</div>")
    if diff is not None:
        lines = [_diff_line(line) for line in str(diff.code).splitlines()]
        text = "\n".join(lines) if lines else "(same code as its parent)"
        parts.append(
            f"<div><b>code diff against {e(str(diff.agent_a))}</b></div>"
            "<pre style='font-size:11px;max-height:320px;overflow:auto;margin:0'>"
            f"{text}</pre>"
        )
    if error:
        parts.append(f"<div style='color:#dc2626'>{e(error)}</div>")
    return "".join(parts)


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _diff_line(line: str) -> str:
    color = {"+": "#15803d", "-": "#b91c1c", "@": "#6b7280"}.get(line[:1])
    text = html.escape(line)
    return f"<span style='color:{color}'>{text}</span>" if color else text
