"""The dashboard's strategy choice and its front / archive panel, without a Jupyter kernel.

The choice's logic and the panel's figures are tested as functions; the widgets against a
real server and a real ``SyncClient`` (buttons clicked with ``Button.click()``, the dropdown
set as a browser sets it). Every wait is bounded by ``TIMEOUT``; nothing asserts a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

import tdevlab
from tdevlab.client import connect_sync
from tdevlab.notebook import Dashboard
from tdevlab.notebook.plots import ViewData
from tdevlab.notebook.report import render_snapshot
from tdevlab.notebook.state import (
    STRATEGY_CHOICES,
    Command,
    command_for,
    member_kind,
    strategy_choosable,
    strategy_spec,
)
from tdevlab.notebook.tradeoffs import (
    member_summary,
    members_figure,
    projections,
    render_members,
)
from tdevlab.server import EvolutionServer
from tests.conftest import SCALE, eventually_sync, timeout

PNG = b"\x89PNG\r\n\x1a\n"
TIMEOUT = timeout(60)  # every wait below is bounded by it (plots render in each wait)
LIMITS = {"memory_limit_kb": 6.5, "speed_limit_us": 3.0}


# -- the strategy choice -------------------------------------------------------------------


def test_the_strategy_is_choosable_only_before_the_first_generation() -> None:
    """Open, Start enabled and no generation yet: then, and only then."""
    assert strategy_choosable("open", "idle")
    assert strategy_choosable("open", None)
    assert not strategy_choosable("open", "idle", generation=0)
    assert not strategy_choosable("open", "stopped", generation=12)
    assert not strategy_choosable("open", "running")
    assert not strategy_choosable("reconnecting", "idle")


def test_strategy_spec_names_or_settings() -> None:
    """A name alone, or {name, **settings} from JSON; bad settings are refused by name."""
    assert strategy_spec(None) is None
    assert strategy_spec("nsga2", "  ") == "nsga2"
    assert strategy_spec("map-elites", '{"bins": [10, 8]}') == {
        "name": "map-elites",
        "bins": [10, 8],
    }
    with pytest.raises(ValueError, match="not JSON"):
        strategy_spec("nsga2", "{objectives:")
    with pytest.raises(ValueError, match="JSON object"):
        strategy_spec("nsga2", "[1, 2]")
    with pytest.raises(ValueError, match="choose a strategy"):
        strategy_spec(None, '{"bins": [5, 5]}')


def test_start_sends_the_strategy_with_the_inputs() -> None:
    """Start carries the chosen strategy beside the changed parameters."""
    command = command_for(
        "start",
        parameters={"population_size": 40, "mutation_rate": 0.1},
        known_parameters={"population_size": 40, "mutation_rate": 0.2},
        rollback_generation=0,
        strategy="nsga2",
    )
    assert command == Command("start", kwargs={"mutation_rate": 0.1, "strategy": "nsga2"})


def test_member_kind_follows_the_strategy_then_the_frames() -> None:
    """NSGA-II shows the front, MAP-Elites the archive, the GA nothing; unknown: what the
    frames saw."""
    none = {"front": False, "archive": False}
    assert member_kind("nsga2", none) == "front"
    assert member_kind("map-elites", none) == "archive"
    assert member_kind("ga", {"front": True, "archive": False}) is None
    assert member_kind(None, {"front": False, "archive": True}) == "archive"
    assert member_kind(None, none) is None
    assert [name for _, name in STRATEGY_CHOICES] == [None, "ga", "nsga2", "map-elites"]


# -- the panel's figures -------------------------------------------------------------------


def front_frame() -> pd.DataFrame:
    """frames.front of a small three-objective front."""
    frame = pd.DataFrame(
        {
            "name": ["A", "B", "C"],
            "fitness": [0.2, 0.5, 0.7],
            "memory_kb": [1.0, 3.0, 6.0],
            "speed_us": [0.5, 1.0, 2.5],
            "birth_generation": [0, 1, 2],
        },
        index=pd.Index(["agent-1", "agent-2", "agent-3"], name="agent_id"),
    )
    frame.attrs.update(
        kind="front", objectives=["max:fitness", "min:memory_kb", "min:speed_us"], generation=3
    )
    return frame


def archive_frame() -> pd.DataFrame:
    """frames.archive of three elites on a 4 x 3 grid over [0, 8] x [0, 3]."""
    frame = pd.DataFrame(
        {
            "name": ["A", "B", "C"],
            "fitness": [0.2, 0.5, 0.7],
            "memory_kb": [1.0, 3.0, 7.5],
            "speed_us": [0.5, 1.5, 2.5],
            "birth_generation": [0, 1, 2],
            "cell_memory_kb": pd.array([0, 1, 3], dtype="Int64"),
            "cell_speed_us": pd.array([0, 1, 2], dtype="Int64"),
        },
        index=pd.Index(["agent-1", "agent-2", "agent-3"], name="agent_id"),
    )
    frame.attrs.update(
        kind="archive", descriptors=["memory_kb", "speed_us"], bins=[4, 3], ranges=[[0, 8], [0, 3]]
    )
    return frame


def measures() -> pd.DataFrame:
    """frames.evolution with the strategies' measures (one branch)."""
    return pd.DataFrame(
        {
            "branch": [0, 0, 0],
            "seq": [1, 2, 3],
            "hypervolume": [1.0, 1.5, 2.0],
            "front_size": [2.0, 3.0, 3.0],
            "archive_coverage": [0.1, 0.2, 0.25],
            "qd_score": [0.5, 1.0, 1.4],
        },
        index=pd.Index([0, 1, 2], name="generation"),
    )


def test_projections_put_fitness_on_y() -> None:
    """Each pair of objectives once, fitness against each cost, then the costs together."""
    assert projections(["fitness", "memory_kb", "speed_us"]) == [
        ("memory_kb", "fitness"),
        ("speed_us", "fitness"),
        ("memory_kb", "speed_us"),
    ]
    assert projections(["memory_kb", "speed_us"]) == [("memory_kb", "speed_us")]


def test_front_figure_projects_the_front_and_shades_the_feasible_region() -> None:
    """Three scatters of the members; each shaded up to the limits on its axes."""
    figure = members_figure("front", front_frame(), measures(), **LIMITS)
    views = figure.axes[:3]
    offsets = [
        next(c for c in ax.collections if isinstance(c, PathCollection)).get_offsets().tolist()
        for ax in views
    ]
    assert offsets[0] == [[1.0, 0.2], [3.0, 0.5], [6.0, 0.7]]  # memory vs fitness
    assert offsets[1] == [[0.5, 0.2], [1.0, 0.5], [2.5, 0.7]]  # speed vs fitness
    assert offsets[2] == [[1.0, 0.5], [3.0, 1.0], [6.0, 2.5]]  # memory vs speed
    shaded = [next(p for p in ax.patches if isinstance(p, Rectangle)) for ax in views]
    assert shaded[0].get_x() + shaded[0].get_width() == pytest.approx(6.5)
    assert shaded[1].get_x() + shaded[1].get_width() == pytest.approx(3.0)
    corner = shaded[2]
    assert corner.get_x() + corner.get_width() == pytest.approx(6.5)
    assert corner.get_y() + corner.get_height() == pytest.approx(3.0)
    assert views[0].get_title() == "Pareto front (3 agents)"
    assert figure.axes[3].get_lines()[0].get_ydata().tolist() == [1.0, 1.5, 2.0]


def test_archive_figure_is_a_fitness_grid_with_the_feasible_corner() -> None:
    """Each elite's fitness in its cell, empty cells blank; the limits outlined."""
    figure = members_figure("archive", archive_frame(), measures(), **LIMITS)
    grid = np.asarray(figure.axes[0].images[0].get_array())
    assert grid.shape == (3, 4)
    assert (grid[0, 0], grid[1, 1], grid[2, 3]) == (0.2, 0.5, 0.7)
    assert np.isnan(grid).sum() == 12 - 3
    outline = next(p for p in figure.axes[0].patches if isinstance(p, Rectangle))
    assert (outline.get_width(), outline.get_height()) == (6.5, 3.0)
    assert "3 elites, 3/12 cells" in figure.axes[0].get_title()


def test_member_summary_names_size_generation_and_measures() -> None:
    """The panel's line: the set, its size, the latest generation and measures."""
    assert member_summary("front", front_frame(), measures()) == (
        "Pareto front · 3 agents · generation 2 · hypervolume 2"
    )
    assert member_summary("archive", archive_frame(), measures()) == (
        "MAP-Elites archive · 3 elites · generation 2 · coverage 25% · QD score 1.4"
    )
    assert member_summary("front", None) == "Pareto front · 0 agents"


@pytest.mark.slow
@pytest.mark.parametrize(
    "render",
    [
        lambda: render_members("front", front_frame(), measures(), **LIMITS),
        lambda: render_members("archive", archive_frame(), measures(), **LIMITS),
        lambda: render_members("front", None),
        lambda: render_members("archive", pd.DataFrame()),
        lambda: render_snapshot(ViewData(front=front_frame(), member_kind="front")),
        lambda: render_snapshot(ViewData(archive=archive_frame(), member_kind="archive")),
    ],
)
def test_member_renderers_return_png(render: Callable[[], bytes]) -> None:
    """The panel renders with data or while waiting, alone and in the snapshot."""
    assert render().startswith(PNG)


def test_an_unknown_kind_is_refused() -> None:
    """Only the front and the archive have a panel."""
    with pytest.raises(ValueError, match="'front' or 'archive'"):
        members_figure("population", None)


# -- the widgets against a real server ------------------------------------------------------


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (bounded by TIMEOUT); return it."""
    return eventually_sync(condition, TIMEOUT / SCALE, what)


@pytest.fixture
def client() -> Iterator[Any]:
    """A SyncClient of a fresh server (idle, no generation yet) subscribed to everything."""
    server = EvolutionServer(
        tdevlab.Engine(seed=2, population_size=24),
        port=0,
        secret="x" * 32,
        generation_interval=0.02,
    )
    server.start()
    client = connect_sync(server.url, token=server.token("ada", "operator"))
    client.subscribe()
    yield client
    client.close()
    server.stop()


@pytest.fixture
def dashboard(client: Any) -> Iterator[Dashboard]:
    """A dashboard over the client, redrawing at most every 0.1 s."""
    dashboard = Dashboard(client, min_interval=0.1)
    yield dashboard
    dashboard.close()


def start_with(dashboard: Dashboard, client: Any, strategy: str | None, settings: str = "") -> None:
    """Choose the strategy as a user does, click Start, wait for the run to go."""
    wait_until(lambda: not dashboard.strategy_input.disabled, "the strategy choice enabled")
    dashboard.strategy_input.value = strategy
    dashboard.strategy_settings.value = settings
    dashboard.start_button.click()
    wait_until(lambda: client.run_state == "running", "run_state running")


@pytest.mark.slow
def test_nsga2_chosen_before_start_shows_the_live_front(dashboard: Dashboard, client: Any) -> None:
    """Choosing NSGA-II sends it with Start; the front panel appears and follows the run;
    the choice is then fixed, showing the run's strategy."""
    assert dashboard.members_panel.layout.display == "none"
    start_with(dashboard, client, "nsga2")
    assert dashboard.sent[-1].kwargs["strategy"] == "nsga2"
    wait_until(lambda: client.strategy == "nsga2", "the ack's strategy")
    wait_until(lambda: dashboard.members_panel.layout.display == "", "the panel shown")
    wait_until(lambda: "Pareto front" in dashboard.members_label.value, "the front's line")
    wait_until(lambda: bytes(dashboard.images["members"].value).startswith(PNG), "a front plot")
    first = (dashboard.plot_redraws["members"], dashboard.members_label.value)
    wait_until(lambda: dashboard.plot_redraws["members"] > first[0], "the front redrawn")
    wait_until(lambda: dashboard.members_label.value != first[1], "the front's line updated")
    wait_until(lambda: dashboard.strategy_input.disabled, "the choice fixed")
    assert dashboard.strategy_input.value == "nsga2"
    assert dashboard.strategy_settings.disabled
    view = dashboard.view()
    assert view.member_kind == "front"
    assert len(view.front) > 0


@pytest.mark.slow
def test_map_elites_with_settings_shows_the_archive(dashboard: Dashboard, client: Any) -> None:
    """MAP-Elites with JSON settings: the archive panel, on the chosen grid."""
    start_with(dashboard, client, "map-elites", '{"bins": [10, 6]}')
    assert dashboard.sent[-1].kwargs["strategy"] == {"name": "map-elites", "bins": [10, 6]}
    wait_until(lambda: "MAP-Elites archive" in dashboard.members_label.value, "the archive line")
    wait_until(lambda: dashboard.view().archive.attrs.get("bins") == [10, 6], "the grid")
    wait_until(lambda: bytes(dashboard.images["members"].value).startswith(PNG), "a grid plot")


def test_bad_settings_are_shown_and_nothing_is_sent(dashboard: Dashboard, client: Any) -> None:
    """Settings that are not a JSON object: the reason shows; no command goes out."""
    wait_until(lambda: not dashboard.strategy_input.disabled, "the strategy choice enabled")
    dashboard.strategy_input.value = "map-elites"
    dashboard.strategy_settings.value = "bins=10"
    dashboard.start_button.click()
    wait_until(lambda: "not JSON" in (dashboard.last_error or ""), "the refusal shown")
    assert dashboard.sent == []
    assert client.run_state == "idle"


def test_a_ga_run_shows_no_panel(dashboard: Dashboard, client: Any) -> None:
    """Under the GA (the server's own here) the panel stays hidden, the choice shows GA."""
    start_with(dashboard, client, None)
    assert "strategy" not in dashboard.sent[-1].kwargs
    wait_until(lambda: (client.generation or 0) >= 3, "a few generations")
    wait_until(lambda: dashboard.strategy_input.value == "ga", "the run's strategy shown")
    assert dashboard.members_panel.layout.display == "none"
    assert dashboard.plot_redraws["members"] == 0
