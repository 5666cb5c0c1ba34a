"""The notebook dashboard, without a Jupyter kernel.

The pure logic (enabled controls, redraw throttle, commands, alert prefill, plots, feeds) is
tested as functions; the widgets against a real server and a real ``SyncClient``: buttons are
clicked with ``Button.click()``, which calls the handlers in the test thread, as a subshell
thread does in a real kernel. Every wait is bounded by ``TIMEOUT``; nothing asserts a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from matplotlib.collections import PathCollection

import tdevlab
from tdevlab.client import connect_sync
from tdevlab.notebook import Dashboard
from tdevlab.notebook.feeds import alert_lines, alerts_html, latest_records, logs_html
from tdevlab.notebook.plots import (
    ViewData,
    fitness_figure,
    lineage_segments,
    metrics_figure,
    population_figure,
    render_feasible,
    render_fitness,
    render_metrics,
    render_population,
)
from tdevlab.notebook.report import render_snapshot
from tdevlab.notebook.state import (
    CONTROLS,
    Command,
    RedrawThrottle,
    changed_parameters,
    command_for,
    enabled_controls,
    rollback_recommendation,
)
from tdevlab.server import EvolutionServer
from tests.conftest import SCALE, eventually_sync, timeout

PNG = b"\x89PNG\r\n\x1a\n"
TIMEOUT = timeout(60)  # every wait below is bounded by it (plots render in each wait)

REGRESSION = {
    "type": "alert",
    "severity": "warning",
    "timestamp": "2026-01-01T10:00:00Z",
    "data": {
        "alert_id": "alert-1",
        "kind": "fitness_regression",
        "title": "Fitness Regression Detected",
        "message": "Generation 31 fitness dropped by 10%",
        "details": {
            "previous_fitness": 0.419,
            "current_fitness": 0.376,
            "drop": 0.103,
            "affected_agents": [],
            "rollback_generation": 27,
        },
        "recommended_action": "rollback",
        "generation": 31,
    },
}


# -- enabled controls ----------------------------------------------------------------------

EXPECTED_ENABLED = {
    "idle": {"start", "rollback"},
    "running": {"pause", "stop", "apply", "rollback"},
    "paused": {"resume", "stop", "apply", "rollback"},
    "stopped": {"start", "rollback"},
    "failed": {"start", "rollback"},
    None: {"start"},
}


@pytest.mark.parametrize("run_state", list(EXPECTED_ENABLED))
def test_enabled_controls_when_open(run_state: str | None) -> None:
    """With the connection open, exactly the actions valid in the run state are enabled."""
    assert enabled_controls("open", run_state, generation=5) == EXPECTED_ENABLED[run_state]


@pytest.mark.parametrize("connection_state", ["connecting", "reconnecting", "closed", "failed"])
@pytest.mark.parametrize("run_state", list(EXPECTED_ENABLED))
def test_nothing_enabled_unless_open(connection_state: str, run_state: str | None) -> None:
    """No control is enabled while the connection is not open, whatever the run state."""
    assert enabled_controls(connection_state, run_state, generation=5) == frozenset()


@pytest.mark.parametrize("generation", [None, -1])
def test_rollback_needs_a_generation(generation: int | None) -> None:
    """Rollback stays disabled until a generation exists."""
    for run_state in ("idle", "running", "paused", "stopped", "failed"):
        assert "rollback" not in enabled_controls("open", run_state, generation=generation)


def test_enabled_controls_are_known_controls() -> None:
    """Every enabled name is one of the dashboard's buttons."""
    for run_state in EXPECTED_ENABLED:
        assert enabled_controls("open", run_state, generation=0) <= set(CONTROLS)


# -- redraw throttle -----------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_draws_first_then_only_on_change() -> None:
    """The first key draws; the same key again never does, however much time passes."""
    clock = FakeClock()
    throttle = RedrawThrottle(0.5, clock=clock)
    assert throttle.due(1)
    clock.now += 10
    assert not throttle.due(1)


def test_throttle_limits_redraw_rate() -> None:
    """A changed key within min_interval waits; after it, the latest key draws once."""
    clock = FakeClock()
    throttle = RedrawThrottle(0.5, clock=clock)
    assert throttle.due(1)
    clock.now += 0.2
    assert not throttle.due(2)
    clock.now += 0.2
    assert not throttle.due(3)
    clock.now += 0.1
    assert throttle.due(3)
    assert not throttle.due(3)


def test_throttle_counts_redraws_over_a_burst() -> None:
    """100 changes over 5 fake seconds (one per 50 ms) redraw at most 11 times."""
    clock = FakeClock()
    throttle = RedrawThrottle(0.5, clock=clock)
    draws = 0
    for version in range(100):
        draws += throttle.due(version)
        clock.now += 0.05
    assert 9 <= draws <= 11


def test_throttle_reset_redraws_same_key() -> None:
    """After reset(), the same key draws again (once the interval has passed)."""
    clock = FakeClock()
    throttle = RedrawThrottle(0.5, clock=clock)
    assert throttle.due("a")
    throttle.reset()
    clock.now += 1
    assert throttle.due("a")


@pytest.mark.parametrize("interval", [-1.0, float("nan"), float("inf")])
def test_throttle_rejects_bad_interval(interval: float) -> None:
    """A negative or non-finite min_interval is refused."""
    with pytest.raises(ValueError, match="min_interval"):
        RedrawThrottle(interval)


# -- alert prefill and commands ------------------------------------------------------------


def test_rollback_recommendation_from_message_and_row() -> None:
    """A rollback alert yields its rollback_generation, as a message or as its data."""
    assert rollback_recommendation(REGRESSION) == 27
    assert rollback_recommendation(REGRESSION["data"]) == 27  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        {"recommended_action": "increase_mutation_rate", "details": {"rollback_generation": 3}},
        {"recommended_action": "rollback", "details": {}},
        {"recommended_action": "rollback"},
        {"recommended_action": "rollback", "details": {"rollback_generation": "3"}},
        {"recommended_action": "rollback", "details": {"rollback_generation": True}},
        {"recommended_action": None, "details": None},
    ],
)
def test_no_rollback_recommendation(data: dict[str, Any]) -> None:
    """Alerts that recommend something else, or name no integer generation, give None."""
    assert rollback_recommendation({"type": "alert", "data": data}) is None


def test_command_for_each_control() -> None:
    """Each button maps to the client method and arguments it must call."""
    values = {"population_size": 50, "mutation_rate": 0.2}
    known = {"population_size": 50, "mutation_rate": 0.15, "memory_limit_kb": 6.5}

    def command(control: str) -> Command:
        return command_for(
            control, parameters=values, known_parameters=known, rollback_generation=12
        )

    assert command("start") == Command("start", kwargs={"mutation_rate": 0.2})
    assert command("pause") == Command("pause")
    assert command("resume") == Command("resume")
    assert command("stop") == Command("stop")
    assert command("apply") == Command("set_parameters", kwargs={"mutation_rate": 0.2})
    assert command("rollback") == Command("rollback", args=(12,))
    with pytest.raises(ValueError, match="unknown control"):
        command("explode")


def test_start_sends_all_inputs_when_nothing_is_known() -> None:
    """Before the engine's parameters are known, Start sends both inputs."""
    values = {"population_size": 50, "mutation_rate": 0.2}
    command = command_for("start", parameters=values, known_parameters={}, rollback_generation=0)
    assert command.kwargs == values


def test_apply_without_changes_sends_the_inputs() -> None:
    """Apply with inputs equal to the known parameters still sends them (explicit request)."""
    values = {"population_size": 50, "mutation_rate": 0.2}
    command = command_for(
        "apply", parameters=values, known_parameters=values, rollback_generation=0
    )
    assert command == Command("set_parameters", kwargs=values)
    assert changed_parameters(values, values) == {}


def test_command_describe() -> None:
    """A command reads like the call it makes."""
    assert Command("rollback", args=(3,)).describe() == "rollback(3)"
    assert Command("start", kwargs={"mutation_rate": 0.2}).describe() == "start(mutation_rate=0.2)"


# -- plots ---------------------------------------------------------------------------------


def evolution_frame(rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """An evolution table like frames.evolution from (generation, branch, best, average)."""
    df = pd.DataFrame(
        [
            {
                "generation": g,
                "branch": b,
                "best_fitness": best,
                "average_fitness": avg,
                "worst_fitness": avg - 0.1,
                "feasible_fraction": 0.5,
                "best_agent_id": f"agent-{g}",
                "best_agent_name": f"Agent_{g}",
                "seq": i + 1,
            }
            for i, (g, b, best, avg) in enumerate(rows)
        ]
    )
    return df.set_index("generation")


def with_rollback() -> pd.DataFrame:
    """Generations 0-5 on branch 0, a rollback to 2, then 3-4 on branch 1."""
    rows = [(g, 0, 0.1 * g, 0.05 * g) for g in range(6)]
    rows += [(3, 1, 0.33, 0.2), (4, 1, 0.44, 0.25)]
    return evolution_frame(rows)


def line(figure: Any, label: str) -> tuple[list[float], list[float]]:
    """The (x, y) data of the first line of the figure's first axes with this label."""
    for candidate in figure.axes[0].get_lines():
        if candidate.get_label() == label:
            return list(candidate.get_xdata()), list(candidate.get_ydata())
    raise AssertionError(f"no line {label!r}")


def test_lineage_segments_join_the_fork() -> None:
    """A branch after a rollback starts at the generation it forked from; it is active."""
    segments = lineage_segments(with_rollback())
    assert [(s.branch, s.active, s.fork_generation) for s in segments] == [
        (0, False, None),
        (1, True, 2),
    ]
    assert list(segments[1].rows["generation"]) == [2, 3, 4]
    assert list(segments[1].rows["best_fitness"]) == pytest.approx([0.2, 0.33, 0.44])


def test_fitness_figure_reflects_data_and_branches() -> None:
    """The active branch is 'best'/'average'; the abandoned one is drawn as its own line."""
    figure = fitness_figure(with_rollback())
    assert line(figure, "best") == ([2, 3, 4], pytest.approx([0.2, 0.33, 0.44]))
    assert line(figure, "average")[1] == pytest.approx([0.1, 0.2, 0.25])
    x, y = line(figure, "_best (branch 0)")
    assert x == [0, 1, 2, 3, 4, 5]
    assert y == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert "rollback" in figure.axes[0].get_title()


def test_fitness_figure_without_branch_column() -> None:
    """Without branch or seq columns, the rows are one lineage in generation order."""
    df = pd.DataFrame(
        {"best_fitness": [0.1, 0.3], "average_fitness": [0.05, 0.1]},
        index=pd.Index([0, 1], name="generation"),
    )
    assert line(fitness_figure(df), "best") == ([0, 1], pytest.approx([0.1, 0.3]))


def test_population_figure_plots_live_agents_and_limits() -> None:
    """Retired agents are left out; each status is a scatter; the limits are drawn."""
    agents = pd.DataFrame(
        {
            "name": ["A", "B", "C", "D"],
            "status": ["elite", "violating", "retired", "elite"],
            "fitness": [0.9, 0.5, 0.1, 0.8],
            "memory_kb": [5.0, 7.0, 1.0, 6.0],
            "speed_us": [2.0, 3.5, 1.0, 2.5],
        },
        index=pd.Index(["agent-1", "agent-2", "agent-3", "agent-4"], name="agent_id"),
    )
    figure = population_figure(agents, memory_limit_kb=6.5, speed_limit_us=3.0)
    ax = figure.axes[0]
    scatters = {
        c.get_label(): c.get_offsets().tolist()
        for c in ax.collections
        if isinstance(c, PathCollection)
    }
    assert scatters == {"elite (2)": [[5.0, 2.0], [6.0, 2.5]], "violating (1)": [[7.0, 3.5]]}
    limits = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}
    assert limits["memory limit"][0] == [6.5, 6.5]
    assert limits["speed limit"][1] == [3.0, 3.0]
    assert "notable" in ax.get_title()


def test_metrics_figure_shows_latest_values() -> None:
    """The strip has one axes per metric, titled with the latest sample."""
    index = pd.date_range("2026-01-01", periods=3, freq="1s")
    metrics = pd.DataFrame(
        {
            "cpu_usage": [10.0, 20.0, 30.0],
            "memory_usage": [1.0, 1.5, 2.0],
            "requests_per_second": [0.0, 4.0, 8.0],
            "average_latency_ms": [0.5, 0.25, 0.75],
        },
        index=index,
    )
    figure = metrics_figure(metrics)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["CPU 30.0%", "Memory 2.0%", "Requests/s 8.0", "Latency 0.8 ms"]
    assert list(figure.axes[0].get_lines()[0].get_xdata()) == [-2.0, -1.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "render",
    [
        lambda: render_fitness(with_rollback()),
        lambda: render_feasible(with_rollback()),
        lambda: render_fitness(None),
        lambda: render_fitness(pd.DataFrame()),
        lambda: render_population(None, memory_limit_kb=6.5, speed_limit_us=3.0),
        lambda: render_metrics(pd.DataFrame()),
        lambda: render_snapshot(ViewData(evolution=with_rollback(), status="run running")),
    ],
)
def test_renderers_return_png(render: Callable[[], bytes]) -> None:
    """Every renderer returns PNG bytes, with data or while waiting for it."""
    png = render()
    assert png.startswith(PNG)
    from matplotlib.image import imread

    assert imread(io.BytesIO(png)).shape[0] > 100


def test_renderers_accept_a_frames_like_object() -> None:
    """render_fitness takes a DataFrame or an object with an .evolution DataFrame."""

    class Tables:
        evolution = with_rollback()

    assert render_fitness(Tables()) == render_fitness(Tables.evolution)


# -- feeds ---------------------------------------------------------------------------------


def alerts_frame() -> pd.DataFrame:
    """frames.alerts with a regression and an HTML-looking message."""
    regression = REGRESSION["data"]
    rows = [
        {
            "timestamp": pd.Timestamp("2026-01-01T10:00:00Z"),
            "severity": "warning",
            **regression,  # type: ignore[dict-item]
        },
        {
            "timestamp": pd.Timestamp("2026-01-01T10:00:05Z"),
            "severity": "critical",
            "alert_id": "alert-2",
            "kind": "no_feasible",
            "title": "No feasible agent",
            "message": "<script>x</script>",
            "recommended_action": "increase_population_size",
            "generation": 40,
            "details": {"affected_agents": []},
        },
    ]
    return pd.DataFrame(rows)


def test_alerts_html_shows_severity_title_message_action() -> None:
    """The alert feed shows each alert's severity, title, message and recommended action."""
    text = alerts_html(alerts_frame())
    assert "WARNING" in text
    assert "CRITICAL" in text
    assert "Fitness Regression Detected" in text
    assert "roll back to generation 27" in text
    assert "increase population_size" in text
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert text.index("No feasible agent") < text.index("Fitness Regression")  # newest first


def test_alert_lines_and_empty_feeds() -> None:
    """Plain alert lines carry the action; empty or missing tables give placeholders."""
    assert alert_lines(alerts_frame())[1].endswith("-> roll back to generation 27")
    assert "No alerts" in alerts_html(None)
    assert "No log entries" in logs_html(pd.DataFrame())
    assert latest_records(None, 5) == []


def test_logs_html_newest_first_with_timestamp_index() -> None:
    """Log entries are shown newest first; a timestamp index is read as the time."""
    logs = pd.DataFrame(
        {"level": ["info", "warning"], "message": ["first", "second"], "generation": [1, 2]},
        index=pd.DatetimeIndex(["2026-01-01T10:00:00", "2026-01-01T10:00:07"], name="timestamp"),
    )
    text = logs_html(logs, limit=5)
    assert text.index("second") < text.index("first")
    assert "10:00:07" in text


# -- the widgets, with a real server and client --------------------------------------------


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded by TIMEOUT); return it."""
    return eventually_sync(predicate, TIMEOUT / SCALE, what)


def disabled(dashboard: Dashboard) -> dict[str, bool]:
    """Each button's disabled flag."""
    return {name: button.disabled for name, button in dashboard.buttons.items()}


def enabled_buttons(dashboard: Dashboard) -> set[str]:
    """The names of the enabled buttons."""
    return {name for name, flag in disabled(dashboard).items() if not flag}


@pytest.fixture
def server() -> Iterator[EvolutionServer]:
    """A real server on a free loopback port, with a small seeded engine."""
    server = EvolutionServer(
        tdevlab.Engine(seed=1, population_size=30), port=0, secret="x" * 32, metrics_interval=0.2
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(server: EvolutionServer) -> Iterator[Any]:
    """A SyncClient subscribed to every channel."""
    client = connect_sync(server.url, token=server.token("ada", "operator"))
    client.subscribe()
    yield client
    client.close()


@pytest.fixture
def dashboard(client: Any) -> Iterator[Dashboard]:
    """A dashboard over the client, redrawing at most every 0.1 s."""
    dashboard = Dashboard(client, min_interval=0.1)
    yield dashboard
    dashboard.close()


def start(dashboard: Dashboard, client: Any) -> None:
    """Click Start and wait until the run and the buttons say running."""
    dashboard.start_button.click()
    wait_until(lambda: client.run_state == "running", "run_state running")
    wait_until(lambda: (client.generation or -1) >= 1, "two generations")
    wait_until(
        lambda: enabled_buttons(dashboard) == {"pause", "stop", "apply", "rollback"},
        "running controls",
    )


def pause(dashboard: Dashboard, client: Any) -> None:
    """Click Pause and wait until the run and the buttons say paused."""
    dashboard.pause_button.click()
    wait_until(lambda: client.run_state == "paused", "run_state paused")
    wait_until(
        lambda: enabled_buttons(dashboard) == {"resume", "stop", "apply", "rollback"},
        "paused controls",
    )


def test_idle_controls(dashboard: Dashboard, client: Any) -> None:
    """On an idle server with no run yet, only Start is enabled."""
    wait_until(lambda: client.run_state == "idle", "run_state idle")
    wait_until(lambda: enabled_buttons(dashboard) == {"start"}, "idle controls")
    wait_until(lambda: "idle" in dashboard.state_label.value, "idle label")
    assert "open" in dashboard.connection_label.value
    # The inputs show the engine's parameters once known.
    wait_until(lambda: dashboard.population_input.value == 30, "population_size synced")


def test_connection_loss_disables_every_control(
    dashboard: Dashboard, client: Any, server: EvolutionServer
) -> None:
    """When the server goes away, no control stays enabled and the status says so."""
    wait_until(lambda: enabled_buttons(dashboard) == {"start"}, "idle controls")
    server.stop()
    wait_until(lambda: client.connection_state != "open", "the client notices")
    wait_until(lambda: enabled_buttons(dashboard) == set(), "all disabled")
    wait_until(lambda: "open" not in dashboard.connection_label.value, "connection label")


@pytest.mark.slow
def test_start_button_starts_the_run(dashboard: Dashboard, client: Any) -> None:
    """Start sends start with the edited inputs; the run and the buttons follow."""
    dashboard.mutation_input.value = 0.25
    start(dashboard, client)
    assert dashboard.sent[0] == Command("start", kwargs={"mutation_rate": 0.25})
    assert client.parameters["mutation_rate"] == 0.25
    wait_until(lambda: "start: run running" in dashboard.message_label.value, "start reply")


@pytest.mark.slow
def test_labels_and_plots_follow_the_run(dashboard: Dashboard, client: Any) -> None:
    """The generation label advances and the plot images change as generations arrive."""
    wait_until(lambda: bytes(dashboard.images["fitness"].value).startswith(PNG), "first draw")
    waiting = bytes(dashboard.images["fitness"].value)
    start(dashboard, client)
    wait_until(lambda: bytes(dashboard.images["fitness"].value) != waiting, "fitness redraw")
    first = dashboard.generation_label.value
    wait_until(lambda: dashboard.generation_label.value != first, "generation label change")
    wait_until(lambda: "fitness" in dashboard.best_label.value, "best agent")
    wait_until(lambda: dashboard.plot_redraws["metrics"] >= 2, "metrics redraw")
    assert dashboard.redraws <= dashboard.ticks


@pytest.mark.slow
def test_dashboard_redraws_are_throttled(client: Any) -> None:
    """While the throttle's clock stands still new data waits; it draws once the clock moves."""
    clock = FakeClock()
    dashboard = Dashboard(client, min_interval=0.1, clock=clock)
    try:
        wait_until(lambda: dashboard.redraws == 1, "the first draw")
        start(dashboard, client)
        ticks = dashboard.ticks
        wait_until(lambda: dashboard.ticks >= ticks + 3, "three more ticks")
        assert dashboard.redraws == 1
        assert dashboard.plot_redraws["fitness"] == 1
        clock.now += 1
        wait_until(lambda: dashboard.redraws == 2, "the redraw")
        assert dashboard.plot_redraws["fitness"] == 2
    finally:
        dashboard.close()


@pytest.mark.slow
def test_pause_holds_and_resume_continues(dashboard: Dashboard, client: Any) -> None:
    """Pause stops new generations (across several redraw ticks); Resume continues."""
    start(dashboard, client)
    pause(dashboard, client)
    held = client.generation
    ticks = dashboard.ticks
    # Each tick renders the plots whose data changed (metrics go on while paused): seconds
    # a tick on a loaded machine. Three ticks are several redraw periods of a running engine.
    wait_until(lambda: dashboard.ticks >= ticks + 3, "three more ticks")
    # The generation in progress when the pause arrived may still be published.
    assert client.generation <= held + 1
    assert client.run_state == "paused"
    dashboard.resume_button.click()
    wait_until(lambda: client.run_state == "running", "run_state running again")
    wait_until(lambda: client.generation > held, "a new generation")


@pytest.mark.slow
def test_rollback_uses_the_input_and_branches_show(dashboard: Dashboard, client: Any) -> None:
    """Rollback sends the input's generation; the new branch appears in the fitness plot."""
    start(dashboard, client)
    wait_until(lambda: client.generation >= 4, "generation 4")
    pause(dashboard, client)
    # A recent generation: the engine keeps the last 512 in memory, and runs fast.
    target = client.generation - 2
    dashboard.rollback_input.value = target
    dashboard.rollback_button.click()
    assert dashboard.sent[-1] == Command("rollback", args=(target,))
    wait_until(
        lambda: f"rolled back to generation {target}" in dashboard.message_label.value,
        "the rollback's acknowledgement",
    )
    dashboard.resume_button.click()
    wait_until(
        lambda: len(lineage_segments(client.frames.evolution)) == 2, "a second branch of rows"
    )
    fitness = dashboard.plot_redraws["fitness"]
    wait_until(lambda: dashboard.plot_redraws["fitness"] > fitness, "a fitness redraw")


@pytest.mark.slow
def test_refused_command_shows_its_message(dashboard: Dashboard, client: Any) -> None:
    """A rollback to a generation that does not exist shows the server's refusal."""
    start(dashboard, client)
    pause(dashboard, client)
    dashboard.rollback_input.value = 10_000_000
    dashboard.rollback_button.click()
    wait_until(lambda: dashboard.last_error is not None, "an error shown")
    assert dashboard.last_error.startswith("rollback refused (INVALID_COMMAND): ")
    assert "cannot roll back to generation 10000000" in dashboard.last_error
    assert "cannot roll back to generation 10000000" in dashboard.message_label.value
    assert client.run_state == "paused"


@pytest.mark.slow
def test_apply_sets_parameters_while_running(dashboard: Dashboard, client: Any) -> None:
    """Apply sends set_parameters with the inputs while the run goes on."""
    start(dashboard, client)
    dashboard.population_input.value = 40
    dashboard.apply_button.click()
    assert dashboard.sent[-1] == Command("set_parameters", kwargs={"population_size": 40})
    wait_until(lambda: client.parameters.get("population_size") == 40, "parameters applied")
    wait_until(lambda: "applied population_size=40" in dashboard.message_label.value, "reply")


@pytest.mark.slow
def test_stop_disables_run_controls(dashboard: Dashboard, client: Any) -> None:
    """Stop ends the run; then Start and Rollback are the enabled buttons."""
    start(dashboard, client)
    dashboard.stop_button.click()
    wait_until(lambda: client.run_state == "stopped", "run_state stopped")
    wait_until(lambda: enabled_buttons(dashboard) == {"start", "rollback"}, "stopped controls")


def test_alert_prefills_rollback_input(dashboard: Dashboard) -> None:
    """An alert recommending a rollback fills the generation input and says why."""
    assert dashboard.prefill_rollback(REGRESSION) == 27
    assert dashboard.rollback_input.value == 27
    assert "Fitness Regression Detected" in dashboard.rollback_hint.value
    assert (
        dashboard.prefill_rollback({"type": "alert", "data": {"recommended_action": None}}) is None
    )
    assert dashboard.rollback_input.value == 27


@pytest.mark.slow
def test_snapshot_and_display(dashboard: Dashboard, client: Any, tmp_path: Path) -> None:
    """snapshot() writes a PNG of the view; a bare dashboard displays its root widget."""
    start(dashboard, client)
    path = dashboard.snapshot(tmp_path / "view.png")
    assert path.read_bytes().startswith(PNG)
    bundle = dashboard._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == dashboard.widget.model_id


@pytest.mark.slow
def test_close_stops_redraws_and_disables(dashboard: Dashboard, client: Any) -> None:
    """close() stops the redraw task and unsubscribes; every button is disabled."""
    start(dashboard, client)
    dashboard.close()
    wait_until(lambda: dashboard._task is None or dashboard._task.done(), "task ended")
    wait_until(lambda: enabled_buttons(dashboard) == set(), "all disabled")
    redraws = dashboard.redraws
    held = client.generation
    wait_until(lambda: client.generation >= held + 2, "two more generations")
    assert dashboard.redraws == redraws
