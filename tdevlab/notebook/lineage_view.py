"""The lineage explorer: click an agent, see its family tree, its diffs, and branch from it.

.. code-block:: text

    Lineage of agent-97: 6 nodes, 2 branches (generations 0–41)        <- summary
    ✓ branched from agent-35 at generation 12: branch 2                 <- replies, errors
    [Whole population] [Branch from here]
    | population: memory vs speed (click one) | best fitness per branch (click a point) |
    | family tree: generation x fitness, branches coloured | genes and code diff      |
    | branches of the run (rollbacks and branches as forks)                           |

The plots are plotly ``FigureWidget`` objects: their points are SVG elements in the page,
and their ``on_click`` / ``on_hover`` callbacks reach the kernel. As in the dashboard, a
callback may run on a thread other than the client's loop (ipykernel 7 subshells), so it
only hands the agent id over (``asyncio.run_coroutine_threadsafe``); requests go through
``client.call`` and every widget change is made on the loop. Redraws run in a task on the
loop that wakes every ``min_interval`` seconds and redraws only the plots whose data
changed, at most once per interval (:class:`~tdevlab.notebook.state.RedrawThrottle`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import ipywidgets as widgets

from tdevlab.notebook.extras import require
from tdevlab.notebook.lineage_data import (
    branch_spans,
    branch_tree_traces,
    details_html,
    fitness_traces,
    lineage_summary,
    node_row,
    population_traces,
    tree_traces,
)
from tdevlab.notebook.state import RedrawThrottle
from tdevlab.notebook.texts import MESSAGE_STYLE, table_version

__all__ = ["LineageView"]

#: The plots, each a plotly FigureWidget in :attr:`LineageView.figures`.
FIGURES: tuple[str, ...] = ("population", "fitness", "tree", "branches")
_TITLES = {
    "population": ("Live agents: memory vs speed (click one)", "memory (KB)", "speed (µs)"),
    "fitness": ("Best fitness per generation, by branch (click a point)", "generation", "fitness"),
    "tree": ("Family tree (hover or click a node)", "generation", "fitness"),
    "branches": ("Branches of the run", "generation", "branch"),
}
#: Pixel sizes (width, height): two plots side by side fit a 1100-pixel notebook.
_SIZES = {
    "population": (500, 340),
    "fitness": (580, 340),
    "tree": (600, 380),
    "branches": (1080, 220),
}


class LineageView:
    """An agent's family tree, its genes and code diffs, and "Branch from here", live.

    Click an agent in the population plot (or a generation's best in the fitness plot):
    its lineage (``client.get_lineage``) is drawn with generations on x and fitness on y,
    branches coloured. Hover or click a node: its genes and the unified diff of its code
    against its first parent (``client.diff``). "Branch from here" sends
    ``client.branch`` for the node inspected (or the agent clicked): the run goes back to
    the generation that made it and forks a new branch, which the fitness and branch plots
    show as it grows. "Whole population" draws every live agent (``client.get_population``)
    instead of the notable ones the agents channel announces.

    Needs plotly (``pip install 'tdevlab[lineage]'``). Display it by leaving it last in a
    cell; ``dashboard.add_lineage()`` puts one below a :class:`Dashboard`'s plots.

    Args:
        client: A connected ``Client`` or ``SyncClient`` (subscribed to evolution and agents).
        min_interval: Seconds between two redraws at most (redraws happen only on new data).
        depth: Generations of first parents a lineage follows (1 ..= 10000).
        whole_population: Start with the whole population shown.
        clock: Monotonic clock of the redraw throttle (tests inject one).

    Attributes:
        widget: The root ``ipywidgets.VBox``.
        figures: Plot name (``population``, ``fitness``, ``tree``, ``branches``) to its
            ``FigureWidget``.
        selected: The agent whose lineage is shown (``None`` before a click).
        inspected: The node whose details are shown.
        lineage: The last ``get_lineage`` reply's data.
        redraws: Redraws per plot.
        last_error: The last refused request, as shown.

    Raises:
        ModuleNotFoundError: plotly is not installed (the message says how to install it).
    """

    def __init__(
        self,
        client: Any,
        *,
        min_interval: float = 0.5,
        depth: int = 200,
        whole_population: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require("lineage", by="LineageView")
        import plotly.graph_objects as go

        self.client = client
        self.min_interval = min_interval
        self.depth = depth
        self.throttle = RedrawThrottle(min_interval, clock=clock)
        self.selected: str | None = None
        self.inspected: str | None = None
        self.lineage: dict[str, Any] | None = None
        self.population: dict[str, Any] | None = None
        self.redraws: dict[str, int] = dict.fromkeys(FIGURES, 0)
        self.ticks = 0
        self.last_error: str | None = None
        self.closed = False
        self._versions: dict[str, int] = {"lineage": 0, "population": 0, "details": 0}
        self._drawn: dict[str, Hashable] = {}
        self._asked_population: Hashable = None
        self._details: tuple[Any, Any, str | None] = (None, None, None)
        self._task: asyncio.Task[None] | None = None

        w = widgets
        self.summary_label = w.HTML("<b>Lineage</b>: click an agent in a plot below")
        self.message_label = w.HTML()
        self.population_toggle = w.ToggleButton(
            value=whole_population,
            description="Whole population",
            tooltip="Draw every live agent, not only the notable ones",
            icon="users",
            layout=w.Layout(width="170px"),
        )
        self.population_toggle.observe(lambda _change: self._post(self._kick), names="value")
        self.branch_button = w.Button(
            description="Branch from here",
            button_style="warning",
            icon="code-branch",
            tooltip="Go back to the generation that made this agent and fork a branch",
            disabled=True,
            layout=w.Layout(width="170px"),
        )
        self.branch_button.on_click(lambda _button: self.branch_here())
        self.branches_label = w.HTML()
        self.details = w.HTML(
            details_html(None),
            layout=w.Layout(
                width="470px", max_height="520px", overflow="auto", padding="0 0 0 8px"
            ),
        )
        self.figures: dict[str, Any] = {}
        for name in FIGURES:
            title, x, y = _TITLES[name]
            width, height = _SIZES[name]
            self.figures[name] = go.FigureWidget(
                layout={
                    "title": {"text": title, "font": {"size": 13}},
                    "xaxis": {"title": {"text": x}},
                    "yaxis": {"title": {"text": y}},
                    "width": width,
                    "height": height,
                    "margin": {"l": 55, "r": 10, "t": 40, "b": 40},
                    "hovermode": "closest",
                    "legend": {"font": {"size": 10}},
                }
            )
            # The mode bar (zoom, pan, download) would cover the titles; clicks need none.
            self.figures[name]._config = {"displayModeBar": False}
        top = {"align_items": "flex-start", "flex_flow": "row wrap"}
        self.widget = w.VBox(
            [
                self.summary_label,
                self.message_label,
                w.HBox([self.population_toggle, self.branch_button, self.branches_label]),
                w.HBox(
                    [self.figures["population"], self.figures["fitness"]], layout=w.Layout(**top)
                ),
                w.HBox([self.figures["tree"], self.details], layout=w.Layout(**top)),
                self.figures["branches"],
            ],
            layout=w.Layout(width="100%"),
        )
        self._post(self._start_task)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- threads ---------------------------------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the client's loop thread (directly if the loop is gone)."""
        loop = self.client.loop
        if loop.is_closed():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed between the check and the call
            fn(*args)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run a coroutine of the view on the client's loop, from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.client.loop)

    async def _ask(self, method: str, *args: Any) -> Any:
        """A client request through ``client.call`` (for ``Client`` and ``SyncClient``)."""
        return await asyncio.wrap_future(self.client.call(method, *args))

    def _start_task(self) -> None:
        if not self.closed:
            self._task = self.client.loop.create_task(self._run(), name="tdevlab-lineage")

    def _show(self, text: str, kind: str = "ok") -> None:
        color, mark = MESSAGE_STYLE.get(kind, MESSAGE_STYLE["ok"])
        if kind == "error":
            self.last_error = text
        self.message_label.value = f"<span style='color:{color}'>{mark} {html.escape(text)}</span>"

    # -- what a click does -----------------------------------------------------------------

    def select(self, agent_id: str) -> concurrent.futures.Future[None]:
        """Show ``agent_id``'s family tree (thread-safe; the returned future is done once
        the lineage is drawn or refused)."""
        return self._spawn(self._select(str(agent_id)))

    async def _select(self, agent_id: str) -> None:
        self.selected = agent_id
        self.branch_button.disabled = False
        self._show(f"lineage of {agent_id} asked", "pending")
        try:
            data = await self._ask("get_lineage", agent_id, self.depth)
        except Exception as exc:
            if self.selected == agent_id:
                self._refused("get_lineage", exc)
            return
        if self.selected != agent_id:
            return  # another click came meanwhile: its answer wins
        self.lineage = data
        self._versions["lineage"] += 1
        self.summary_label.value = f"<b>{html.escape(lineage_summary(data))}</b>"
        self._show(f"lineage of {agent_id}: {len(data['nodes']['agent_id'])} nodes")
        await self._inspect(agent_id)

    def inspect(self, agent_id: str) -> concurrent.futures.Future[None]:
        """Show a node's genes and its code diff against its first parent (thread-safe)."""
        return self._spawn(self._inspect(str(agent_id)))

    async def _inspect(self, agent_id: str) -> None:
        if self.lineage is None or (agent_id == self.inspected and self._details[0] is not None):
            return
        node = node_row(self.lineage, agent_id)
        if node is None:
            return
        self.inspected = agent_id
        self._set_details(node, None, None, None)
        parent = node.get("parent_a")
        try:
            agent = await self._ask("get_agent", agent_id)
            diff = await self._ask("diff", parent, agent_id) if parent else None
        except Exception as exc:
            if self.inspected == agent_id:
                self._set_details(node, None, None, f"{type(exc).__name__}: {exc}")
            return
        if self.inspected == agent_id:
            self._set_details(node, agent, diff, None)

    def _set_details(self, node: Any, agent: Any, diff: Any, error: str | None) -> None:
        self._details = (agent, diff, error)
        self.details.value = details_html(node, agent, diff, error)
        self._versions["details"] += 1

    def branch_here(self) -> concurrent.futures.Future[None]:
        """Branch the run from the node inspected (or the agent selected); thread-safe."""
        return self._spawn(self._branch())

    async def _branch(self) -> None:
        agent_id = self.inspected or self.selected
        if agent_id is None:
            self._show("click an agent first", "error")
            return
        self._show(f"branch from {agent_id} sent", "pending")
        try:
            reply = await self._ask("branch", agent_id)
        except Exception as exc:
            self._refused("branch", exc)
            return
        self._show(
            f"branched from {agent_id} at generation {reply.get('generation')}: "
            f"branch {reply.get('branch')}"
        )

    def _refused(self, method: str, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        outcome = f"refused ({code})" if code else f"failed ({type(exc).__name__})"
        self._show(f"{method} {outcome}: {exc}", "error")

    def _clicked(self, name: str) -> Callable[[Any, Any, Any], None]:
        """A plot's click (or hover) callback: hand the point's agent id over, nothing more."""

        def callback(trace: Any, points: Any, _state: Any = None) -> None:
            with contextlib.suppress(Exception):  # never raise in a widget callback
                inds = list(points.point_inds)
                ids = list(trace.customdata or ())
                agent = ids[inds[0]] if inds and inds[0] < len(ids) else None
                if agent:
                    (self.inspect if name == "tree" else self.select)(str(agent))

        return callback

    # -- redraw ----------------------------------------------------------------------------

    def _kick(self) -> None:
        """Redraw at the next tick even if nothing else changed (the toggle moved)."""
        self._asked_population = None
        self.throttle.reset()

    async def _run(self) -> None:
        while not self.closed:
            try:
                self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._show(f"lineage redraw failed: {type(exc).__name__}: {exc}", "error")
            await asyncio.sleep(self.min_interval)

    def _keys(self) -> dict[str, Hashable]:
        frames = self.client.frames
        evolution = table_version(frames, "evolution")
        whole = bool(self.population_toggle.value)
        return {
            "population": (
                whole,
                self._versions["population"] if whole else table_version(frames, "agents"),
            ),
            "fitness": evolution,
            "tree": (self._versions["lineage"], self.inspected),
            "branches": evolution,
        }

    def tick(self) -> bool:
        """One pass of the redraw task (on the client's loop): redraw the plots whose data
        changed, if the throttle allows. Returns True if something was redrawn."""
        self.ticks += 1
        keys = self._keys()
        if self.population_toggle.value and self._asked_population != keys["fitness"]:
            self._asked_population = keys["fitness"]  # once per new generation at most
            self._spawn(self._fetch_population())
        changed = [name for name in FIGURES if self._drawn.get(name) != keys[name]]
        if not changed or not self.throttle.due(tuple(keys.values())):
            return False
        frames = self.client.frames
        for name in changed:
            self._draw(name, frames)
            self._drawn[name] = keys[name]
            self.redraws[name] += 1
        return True

    async def _fetch_population(self) -> None:
        try:
            self.population = await self._ask("get_population")
        except Exception as exc:
            self._refused("get_population", exc)
            return
        self._versions["population"] += 1

    def _draw(self, name: str, frames: Any) -> None:
        if name == "population":
            whole = self.population if self.population_toggle.value else None
            traces = population_traces(frames.agents, whole)
            shown = "whole population" if whole is not None else "notable agents"
            total = sum(len(t["x"]) for t in traces)
            title = f"Live agents ({shown}, {total}): memory vs speed (click one)"
        elif name == "fitness":
            traces = fitness_traces(frames.evolution)
            title = f"Best fitness per generation, {len(traces)} branch(es) (click a point)"
        elif name == "tree":
            traces = [] if self.lineage is None else tree_traces(self.lineage, self.inspected)
            title = (
                "Family tree (click an agent above)"
                if self.lineage is None
                else f"Family tree of {self.lineage['agent_id']} (hover or click a node)"
            )
        else:
            spans = branch_spans(frames.evolution)
            traces = branch_tree_traces(spans)
            title = f"Branches of the run ({len(spans)})"
            forks = sum(span.parent is not None for span in spans)
            self.branches_label.value = (
                f"<span class='tdevlab-branches'>{len(spans)} branch"
                f"{'es' * (len(spans) != 1)}, {forks} fork{'s' * (forks != 1)}</span>"
            )
        figure = self.figures[name]
        # The title before the traces, and outside the batch: within it plotly defers layout
        # edits to its end while traces change at once, so a reader in another thread (a
        # test, a callback) could see the new traces under the old title.
        figure.layout.title.text = title
        with figure.batch_update():
            figure.data = ()
            figure.add_traces(traces)
        callback = self._clicked(name)
        for trace in figure.data:
            if trace.customdata is not None:
                trace.on_click(callback)
                if name == "tree":
                    trace.on_hover(callback)

    def close(self) -> None:
        """Stop the redraw task; the widget stays on screen with its last content."""
        if self.closed:
            return
        self.closed = True
        self.branch_button.disabled = True

        def stop() -> None:
            if self._task is not None:
                self._task.cancel()

        self._post(stop)

    def __enter__(self) -> LineageView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
