"""The lineage view, without a Jupyter kernel.

The trace builders are tested as functions over real engine output; the view against a real
server and a real ``SyncClient``. A click is plotly's own dispatch of a point to the trace's
callbacks (``trace._dispatch_on_click``, what the widget's front end triggers), called in the
test thread as a subshell thread would; "Branch from here" is ``Button.click()``. Every wait
is bounded by ``TIMEOUT``; nothing asserts a time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from plotly.callbacks import Points

import tdevlab
from tdevlab.client import connect_sync
from tdevlab.engine.lineage import GenomeDiff
from tdevlab.notebook import LineageView
from tdevlab.notebook.lineage_data import (
    branch_color,
    branch_spans,
    branch_tree_traces,
    details_html,
    fitness_traces,
    lineage_summary,
    node_row,
    population_traces,
    tree_traces,
)
from tdevlab.server import EvolutionServer
from tests.conftest import SCALE, eventually_sync, timeout

TIMEOUT = timeout(60)


# -- the traces, from real engine output -----------------------------------------------------


@pytest.fixture(scope="module")
def forked_engine() -> tdevlab.Engine:
    """A run with a fork: generations 0..11, a rollback to 6, then 7..11 on branch 1."""
    engine = tdevlab.Engine(seed=5, population_size=16)
    list(engine.run(generations=12))
    engine.rollback(6)
    list(engine.run(generations=5))
    return engine


def evolution(rows: list[tuple[int, int, float, str]]) -> pd.DataFrame:
    """An evolution table as the frames keep it: (generation, branch, best, best agent)."""
    return pd.DataFrame(
        {
            "generation": [r[0] for r in rows],
            "branch": [r[1] for r in rows],
            "best_fitness": [r[2] for r in rows],
            "average_fitness": [r[2] / 2 for r in rows],
            "best_agent_id": [r[3] for r in rows],
        }
    ).set_index("generation")


FORKED = evolution(
    [(g, 0, g / 10, f"agent-{g}") for g in range(6)]
    + [(g, 1, g / 9, f"agent-{100 + g}") for g in range(3, 8)]
)


def test_fitness_traces_one_per_branch_joined_at_the_fork() -> None:
    """Each branch is a trace in its colour; the new one starts at its fork generation and
    carries each generation's best agent for a click."""
    traces = fitness_traces(FORKED)
    assert [t["name"] for t in traces] == ["branch 0 (left)", "branch 1"]
    assert traces[1]["x"] == [2, 3, 4, 5, 6, 7]
    assert traces[1]["customdata"][0] == "agent-2"  # the fork point, from branch 0
    assert traces[1]["customdata"][-1] == "agent-107"
    assert traces[1]["line"]["color"] == branch_color(1)


def test_branch_spans_and_their_tree() -> None:
    """A rollback is a fork: branch 1's parent is 0 at generation 2; the tree draws a bar per
    branch and one dotted link."""
    spans = branch_spans(FORKED)
    assert [(s.branch, s.parent, s.fork_generation) for s in spans] == [(0, None, None), (1, 0, 2)]
    assert (spans[1].first_generation, spans[1].last_generation) == (3, 7)
    assert spans[1].best_agent_id == "agent-107"
    assert spans[1].active
    traces = branch_tree_traces(spans)
    assert traces[0]["name"] == "forks"
    assert traces[0]["x"] == [2, 2, None]
    assert traces[0]["y"] == [0, 1, None]
    assert [t["x"] for t in traces[1:]] == [[0, 5], [2, 7]]


def test_population_traces_notable_or_whole() -> None:
    """Notable agents leave out the retired ones; a population reply replaces them."""
    agents = pd.DataFrame(
        {
            "status": ["elite", "retired", "violating"],
            "memory_kb": [1.0, 2.0, 3.0],
            "speed_us": [4.0, 5.0, 6.0],
        },
        index=pd.Index(["agent-1", "agent-2", "agent-3"], name="agent_id"),
    )
    traces = population_traces(agents)
    assert [t["name"] for t in traces] == ["elite (1)", "violating (1)"]
    assert [t["customdata"] for t in traces] == [["agent-1"], ["agent-3"]]
    whole = {"agents": [{"agent_id": f"agent-{i}", "status": "evolving", "memory_kb": i,
                         "speed_us": i} for i in range(5)]}  # fmt: skip
    traces = population_traces(agents, whole)
    assert [t["name"] for t in traces] == ["evolving (5)"]
    assert population_traces(None) == []


def test_tree_traces_from_a_real_lineage(forked_engine: tdevlab.Engine) -> None:
    """Every node is drawn once, in its branch's trace, at (birth generation, fitness); every
    first-parent edge is a line; the summary counts nodes and branches."""
    engine = forked_engine
    assert engine.population is not None
    best = f"agent-{int(engine.population.agent_id[0])}"
    data = engine.lineage(best, depth=50).to_dict()
    traces = tree_traces(data, selected=best)
    nodes = [t for t in traces if t["mode"] == "markers"]
    drawn = [agent for t in nodes for agent in t["customdata"]]
    assert sorted(drawn) == sorted(data["nodes"]["agent_id"])
    branches = sorted(set(data["nodes"]["branch"]))
    assert [t["name"] for t in nodes] == [f"branch {b}" for b in branches]
    row = node_row(data, best)
    assert row is not None
    trace = next(t for t in nodes if best in t["customdata"])
    i = trace["customdata"].index(best)
    assert (trace["x"][i], trace["y"][i]) == (row["birth_generation"], row["fitness"])
    assert trace["marker"]["size"][i] == 16  # the selected node stands out
    first = [t for t in traces if t["name"] == "first parent"]
    links = sum(k == "first_parent" for k in data["edges"]["kind"])
    assert len(first) == 1
    assert first[0]["x"].count(None) == links
    count = len(data["nodes"]["agent_id"])
    assert lineage_summary(data).startswith(f"Lineage of {best}: {count} nodes, ")


def test_details_show_genes_and_the_code_diff(forked_engine: tdevlab.Engine) -> None:
    """A node's card names it, marks its changed genes and shows the engine's diff."""
    engine = forked_engine
    assert engine.population is not None
    best = f"agent-{int(engine.population.agent_id[0])}"
    data = engine.lineage(best, depth=5).to_dict()
    row = node_row(data, best)
    assert row is not None
    assert row["parent_a"] is not None
    diff = engine.diff(row["parent_a"], best)
    text = details_html(row, engine.agent(best).to_dict(), diff)
    assert best in text
    assert f"code diff against {row['parent_a']}" in text
    for line in diff.code.splitlines()[:4]:
        assert line.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")[:20] in text
    assert "hover or click" in details_html(None)
    assert "boom" in details_html(row, error="boom")


# -- the view, with a real server and client ---------------------------------------------------


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded by TIMEOUT); return it."""
    return eventually_sync(predicate, TIMEOUT / SCALE, what)


def click(view: LineageView, figure: str, agent_id: str | None = None, hover: bool = False) -> str:
    """Click (or hover) a point of one of the view's plots, as the browser would."""

    def point() -> tuple[Any, int] | None:
        for trace in view.figures[figure].data:
            ids = list(trace.customdata or ())
            if ids and (agent_id is None or agent_id in ids):
                return trace, ids.index(agent_id) if agent_id else 0
        return None

    trace, i = wait_until(point, f"a point in the {figure} plot")
    points = Points(point_inds=[i], xs=[trace.x[i]], ys=[trace.y[i]], trace_name=trace.name)
    if hover:
        trace._dispatch_on_hover(points, None)
    else:
        trace._dispatch_on_click(points, None)
    return str(trace.customdata[i])


@pytest.fixture
def server() -> Iterator[EvolutionServer]:
    """A real server on a free loopback port, a small seeded engine, 20 generations/s."""
    server = EvolutionServer(
        tdevlab.Engine(seed=2, population_size=24),
        port=0,
        secret="x" * 32,
        generation_interval=0.05,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(server: EvolutionServer) -> Iterator[Any]:
    """A SyncClient subscribed to every channel, its run started."""
    client = connect_sync(server.url, token=server.token("ada", "operator"))
    client.subscribe()
    client.start()
    yield client
    client.close()


@pytest.fixture
def view(client: Any) -> Iterator[LineageView]:
    """A lineage view over the client, redrawing at most every 0.1 s."""
    view = LineageView(client, min_interval=0.1)
    yield view
    view.close()


def test_click_an_agent_shows_its_tree_and_a_node_its_diff(view: LineageView, client: Any) -> None:
    """A click in the population plot draws the agent's family tree (every node of the
    lineage reply); hovering a node shows its genes and the diff against its parent."""
    wait_until(lambda: (client.generation or 0) >= 8, "eight generations")

    def young() -> str | None:  # an agent shown, born after generation 2: it has ancestors
        shown = {a for t in view.figures["population"].data for a in t.customdata or ()}
        agents = client.frames.agents
        born = agents.index[agents["birth_generation"] >= 2]
        return next((a for a in born if a in shown), None)

    agent = click(view, "population", wait_until(young, "a young agent shown"))
    wait_until(lambda: view.lineage is not None, "the lineage reply")
    assert view.selected == agent
    assert view.lineage is not None
    count = len(view.lineage["nodes"]["agent_id"])
    assert f"Lineage of {agent}: {count} node" in view.summary_label.value
    wait_until(
        lambda: sum(len(t.x) for t in view.figures["tree"].data if t.mode == "markers") == count,
        "every node drawn",
    )
    assert agent in view.figures["tree"].layout.title.text
    assert not view.branch_button.disabled
    nodes = view.lineage["nodes"]
    ancestor = next(
        a
        for a, relation, parent in zip(
            nodes["agent_id"], nodes["relation"], nodes["parent_a"], strict=True
        )
        if relation == "ancestor" and parent is not None
    )
    parent = node_row(view.lineage, ancestor)["parent_a"]  # type: ignore[index]
    click(view, "tree", ancestor, hover=True)
    wait_until(lambda: f"code diff against {parent}" in view.details.value, "the node's diff")
    assert view.inspected == ancestor
    assert f"<b>{ancestor}</b>" in view.details.value


def test_fitness_plot_click_and_branch_from_here_forks_the_run(
    view: LineageView, client: Any
) -> None:
    """A point of the fitness plot selects that generation's best; "Branch from here" forks
    the run from it, and the fitness and branch plots then show two branches."""
    wait_until(lambda: (client.generation or 0) >= 6, "six generations")
    agent = click(view, "fitness")
    wait_until(lambda: view.lineage is not None and view.inspected == agent, "its lineage")
    view.branch_button.click()
    wait_until(lambda: f"branched from {agent}" in view.message_label.value, "the branch ack")
    wait_until(lambda: len(view.figures["fitness"].data) == 2, "two branches in the fitness plot")
    wait_until(lambda: "2 branches, 1 fork" in view.branches_label.value, "the fork in the tree")
    assert view.last_error is None


def test_whole_population_on_request(view: LineageView, client: Any) -> None:
    """The toggle draws every live agent (get_population), not only the notable ones."""
    wait_until(lambda: (client.generation or 0) >= 2, "three generations")
    view.population_toggle.value = True

    def drawn() -> int:
        return sum(len(t.x) for t in view.figures["population"].data)

    wait_until(lambda: drawn() == 24, "the whole population of 24")
    assert "whole population" in view.figures["population"].layout.title.text
    view.population_toggle.value = False
    wait_until(lambda: "notable agents" in view.figures["population"].layout.title.text, "back")


def test_unknown_agent_is_refused_in_the_view(view: LineageView) -> None:
    """A lineage the server refuses shows its error; nothing is drawn."""
    view.select("agent-999999").result(TIMEOUT)
    assert view.last_error is not None
    assert "AGENT_NOT_FOUND" in view.last_error
    assert view.lineage is None


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_redraws_are_throttled(client: Any) -> None:
    """While the throttle's clock stands still, new generations wait; they draw once it moves."""
    clock = FakeClock()
    view = LineageView(client, min_interval=0.05, clock=clock)
    try:
        wait_until(lambda: view.redraws["fitness"] == 1, "the first draw")
        held = client.generation
        ticks = view.ticks
        wait_until(lambda: client.generation >= held + 3 and view.ticks >= ticks + 3, "ticks")
        assert view.redraws["fitness"] == 1
        clock.now += 1
        wait_until(lambda: view.redraws["fitness"] == 2, "the redraw")
    finally:
        view.close()


def test_dashboard_add_lineage(client: Any) -> None:
    """dashboard.add_lineage() puts a view below the plots; closing the dashboard closes it."""
    dashboard = tdevlab.Dashboard(client, min_interval=0.1)
    view = dashboard.add_lineage()
    assert dashboard.widget.children[-1] is view.widget
    assert view.min_interval == 0.1
    dashboard.close()
    assert view.closed


def test_client_diff_is_the_engines(server: EvolutionServer, client: Any) -> None:
    """client.diff, built from get_agent and get_agent_code, equals engine.diff."""
    wait_until(lambda: (client.generation or 0) >= 4, "five generations")
    best = client.get_population()["agents"][0]["agent_id"]
    parent = client.get_lineage(best, 3)["nodes"]["parent_a"][0]
    diff = client.diff(parent, best)
    assert isinstance(diff, GenomeDiff)
    assert diff == server.engine.diff(parent, best)


def test_without_plotly_the_view_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    """Without plotly, LineageView fails up front naming the extra and the pip command."""
    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tdevlab\[lineage\]'"):
        LineageView(client)
