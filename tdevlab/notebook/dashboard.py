"""The live dashboard: one ipywidgets layout over a :class:`tdevlab.client.Client`.

Built for how Jupyter really runs widgets (see ``tdevlab.notebook`` for the layout):

- A button's ``on_click`` can run on a thread other than the kernel's loop (ipykernel 7
  subshells), so a click only builds the command (:func:`~tdevlab.notebook.state.command_for`)
  and hands it to the client's loop with ``client.call``; the reply, or the refusal, comes
  back through the returned future and is shown in the message line. Nothing is raised in
  a callback.
- Every widget change after construction is made on the client's loop thread: client event
  callbacks already run there, and anything else is posted with ``call_soon_threadsafe``.
- Plots are pushed by setting ``Image.value`` to PNG bytes rendered from matplotlib
  ``Figure`` objects (no pyplot, no ``with output:``). A redraw task on the client's loop
  wakes every ``min_interval`` seconds and redraws only the plots whose data changed
  (``frames.versions``), at most once per interval (:class:`RedrawThrottle`); rendering
  runs in a worker thread so the loop keeps serving messages and clicks. The front or
  archive panel (``members``) is one of them, shown once the run is known to keep one.

Alert prefill: an alert whose ``recommended_action`` is ``"rollback"`` fills the rollback
generation input automatically with ``details["rollback_generation"]`` and says so next to
it; nothing is sent until Rollback is clicked (the input can be changed first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import threading
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tdevlab.notebook.feeds import alerts_html, logs_html
from tdevlab.notebook.layout import PLOTS, DashboardWidgets
from tdevlab.notebook.plots import (
    ViewData,
    figure_png,
    render_feasible,
    render_fitness,
    render_metrics,
    render_population,
)
from tdevlab.notebook.report import snapshot_figure
from tdevlab.notebook.state import (
    CONTROLS,
    STRATEGY_CHOICES,
    Command,
    RedrawThrottle,
    command_for,
    enabled_controls,
    member_kind,
    rollback_recommendation,
    strategy_choosable,
    strategy_spec,
)
from tdevlab.notebook.texts import (
    MESSAGE_STYLE,
    STATE_COLORS,
    best_agent,
    describe_reply,
    html_state,
    strip_tags,
    table_version,
)
from tdevlab.notebook.tradeoffs import member_summary, render_members

__all__ = ["Dashboard", "DashboardClient", "FramesLike"]

#: The frames' tables each plot and feed reads.
_TABLES: dict[str, tuple[str, ...]] = {
    "fitness": ("evolution",),
    "feasible": ("evolution",),
    "population": ("agents",),
    "metrics": ("metrics",),
    "members": ("front", "archive", "evolution"),
    "alerts": ("alerts",),
    "logs": ("logs",),
}
_EVERYTHING = tuple(_TABLES)
_STRATEGY_NAMES = frozenset(name for _, name in STRATEGY_CHOICES if name)


class FramesLike(Protocol):
    """What the dashboard reads from ``client.frames`` (:class:`tdevlab.client.frames.Frames`)."""

    @property
    def evolution(self) -> Any: ...
    @property
    def agents(self) -> Any: ...
    @property
    def metrics(self) -> Any: ...
    @property
    def alerts(self) -> Any: ...
    @property
    def logs(self) -> Any: ...
    @property
    def front(self) -> Any: ...
    @property
    def archive(self) -> Any: ...
    @property
    def version(self) -> int: ...
    @property
    def versions(self) -> Mapping[str, int]: ...


class DashboardClient(Protocol):
    """What the dashboard uses of a client (``Client`` or ``SyncClient``), and nothing more."""

    @property
    def frames(self) -> FramesLike: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def connection_state(self) -> str: ...
    @property
    def run_state(self) -> str | None: ...
    @property
    def generation(self) -> int | None: ...
    @property
    def parameters(self) -> Mapping[str, Any]: ...
    def call(
        self, method_name: str, /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]: ...
    def on(self, event: str, fn: Callable[[Any], None]) -> Callable[[], None]: ...


class Dashboard(DashboardWidgets):
    """Live plots, status, controls, alerts and logs of an evolution run, in one widget.

    Display it by leaving ``dashboard`` last in a cell (or ``display(dashboard)``); the root
    widget is :attr:`widget`. Works wherever ipywidgets 8 render: JupyterLab, Notebook 7,
    VS Code, Voila.

    Args:
        client: A connected :class:`tdevlab.client.Client` or ``SyncClient``.
        min_interval: Seconds between two redraws at most (redraws happen only on new data).
        alert_limit: Alerts shown in the feed (newest first).
        log_limit: Log entries shown in the feed (newest first).
        metrics_window: Metrics samples shown in the strip.
        clock: Monotonic clock of the redraw throttle (tests inject one).

    Attributes:
        widget: The root ``ipywidgets.VBox``.
        buttons: Control name (``start``, ``pause``, ``resume``, ``stop``, ``apply``,
            ``rollback``) to its ``Button``; also ``start_button``, ``pause_button``...
        images: Plot name (``fitness``, ``feasible``, ``population``, ``metrics``,
            ``members``: the front or archive, in ``members_panel``) to its ``Image``.
        redraws: Redraw passes that pushed new plots; ``plot_redraws`` counts per plot.
        sent: The commands sent by the buttons, in order.
        last_error: The last refused command or server error, as shown.
    """

    def __init__(
        self,
        client: DashboardClient,
        *,
        min_interval: float = 0.5,
        alert_limit: int = 8,
        log_limit: int = 8,
        metrics_window: int = 120,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.alert_limit = alert_limit
        self.log_limit = log_limit
        self.metrics_window = metrics_window
        self.throttle = RedrawThrottle(min_interval, clock=clock)
        self.redraws = 0
        self.ticks = 0
        self.plot_redraws: dict[str, int] = dict.fromkeys(PLOTS, 0)
        self.sent: list[Command] = []
        self.last_error: str | None = None
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self._drawn: dict[str, Hashable] = {}
        self._synced: dict[str, Any] = {}
        self._best_key: Hashable = object()
        self._best_text = "—"
        self._best_from_messages = False
        self._sent_lock = threading.Lock()
        super().__init__(client.parameters)
        # Plain client attributes only: safe on any thread (the frames are read on the loop).
        self._refresh_controls()
        self._refresh_labels(read_frames=False)
        self._unsubscribe: list[Callable[[], None]] = [
            client.on("state", self._on_state),
            client.on("control_update", self._on_control_update),
            client.on("alert", self._on_alert),
            client.on("error", self._on_error),
            client.on("evolution_update", self._on_evolution_update),
        ]
        if not getattr(client, "subscriptions", True):
            # A dashboard shows every channel: subscribe if the user has not (history too).
            client.call("subscribe")
        self._post(self._start_task)

    # -- threads ---------------------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.client.loop
        except RuntimeError:
            return False

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

    def _start_task(self) -> None:
        if self.closed:
            return
        self._task = self.client.loop.create_task(self._run(), name="tdevlab-dashboard")

    # -- commands --------------------------------------------------------------------------

    def _click(self, control: str) -> None:
        """A button's handler: build the command and hand it over; never raises."""
        try:
            strategy = None
            if control == "start" and self._strategy_choosable():
                strategy = strategy_spec(self.strategy_input.value, self.strategy_settings.value)
            command = command_for(
                control,
                parameters={name: box.value for name, box in self.parameter_inputs.items()},
                known_parameters=dict(self.client.parameters),
                rollback_generation=self.rollback_input.value,
                strategy=strategy,
            )
        except Exception as exc:  # a bad input value: show it, do not raise in a callback
            self._post(self._show, f"{control}: {exc}", "error")
            return
        self.send(command)

    def send(self, command: Command) -> concurrent.futures.Future[Any] | None:
        """Send a command through ``client.call`` (thread-safe); the reply shows in the view.

        Returns:
            The client's future of the reply, or ``None`` if it could not even be scheduled
            (the reason is shown).
        """
        with self._sent_lock:
            self.sent.append(command)
        self._post(self._show, f"{command.describe()} sent", "pending")
        try:
            future = self.client.call(command.method, *command.args, **dict(command.kwargs))
        except Exception as exc:
            self._post(self._show, f"{command.method} failed: {exc}", "error")
            return None
        future.add_done_callback(lambda done: self._post(self._show_reply, command, done))
        return future

    def _show_reply(self, command: Command, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():
            self._show(f"{command.method} cancelled", "error")
        elif (exc := future.exception()) is not None:
            code = getattr(exc, "code", None)
            # A wire code means the server refused it; otherwise it never got an answer.
            outcome = f"refused ({code})" if code else f"failed ({type(exc).__name__})"
            self._show(f"{command.method} {outcome}: {exc}", "error")
        else:
            self._show(describe_reply(command, future.result()), "ok")
        self._refresh_controls()
        self._refresh_labels()

    def _show(self, text: str, kind: str = "ok") -> None:
        color, mark = MESSAGE_STYLE.get(kind, MESSAGE_STYLE["ok"])
        if kind == "error":
            self.last_error = text
        self.message_label.value = f"<span style='color:{color}'>{mark} {html.escape(text)}</span>"

    # -- client events (on the client's loop thread) ---------------------------------------

    def _on_state(self, state: Any) -> None:
        self._guard(self._refresh_controls)
        self._guard(self._refresh_labels)

    def _on_control_update(self, message: Mapping[str, Any]) -> None:
        self._guard(self._refresh_controls)
        self._guard(self._refresh_labels)
        self._guard(self._sync_parameters)

    def _on_alert(self, message: Mapping[str, Any]) -> None:
        self._guard(self.prefill_rollback, message)

    def _on_error(self, message: Mapping[str, Any]) -> None:
        if message.get("reply_to") is not None:
            return  # a command's refusal: its future shows it
        error = message.get("error") or {}
        code = error.get("code", "ERROR")
        self._guard(self._show, f"server error {code}: {error.get('message', '')}", "error")

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a view update from a client callback; show a failure instead of raising."""
        try:
            fn(*args)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._show(f"dashboard update failed: {type(exc).__name__}: {exc}", "error")

    def prefill_rollback(self, alert: Mapping[str, Any]) -> int | None:
        """Fill the rollback input from an alert that recommends a rollback.

        Args:
            alert: An ``alert`` message (or its ``data``).

        Returns:
            The generation filled in, or ``None`` if the alert recommends no rollback.
        """
        generation = rollback_recommendation(alert)
        if generation is None:
            return None
        data = alert.get("data", alert)
        self.rollback_input.value = generation
        title = html.escape(str(data.get("title") or "alert"))
        self.rollback_hint.value = (
            f"<span style='color:#d97706'>suggested by “{title}”"
            f" (generation {html.escape(str(data.get('generation', '?')))})</span>"
        )
        return generation

    # -- refresh ---------------------------------------------------------------------------

    def enabled(self) -> frozenset[str]:
        """The controls enabled now (none once the dashboard is closed)."""
        if self.closed:
            return frozenset()
        client = self.client
        return enabled_controls(
            client.connection_state, client.run_state, generation=client.generation
        )

    def _strategy_choosable(self) -> bool:
        client = self.client
        return not self.closed and strategy_choosable(
            client.connection_state, client.run_state, generation=client.generation
        )

    def _refresh_controls(self) -> None:
        enabled = self.enabled()
        for name in CONTROLS:
            self.buttons[name].disabled = name not in enabled
        choosable = self._strategy_choosable()
        self.strategy_input.disabled = self.strategy_settings.disabled = not choosable
        run_strategy = getattr(self.client, "strategy", None)
        if not choosable and run_strategy in _STRATEGY_NAMES:
            self.strategy_input.value = run_strategy  # show the run's own

    def member_kind(self) -> str | None:
        """The member set the panel shows (``"front"``, ``"archive"``), or ``None``."""
        sets = getattr(self.client.frames, "member_sets", None)
        known = {kind: sets is not None and sets[kind].known for kind in ("front", "archive")}
        return member_kind(getattr(self.client, "strategy", None), known)

    def _sync_parameters(self) -> None:
        """Show the engine's parameters in the inputs, unless the user has edited them."""
        known = self.client.parameters
        for name, box in self.parameter_inputs.items():
            value = known.get(name)
            if value is None:
                continue
            if box.value == value:
                self._synced[name] = value
            elif name not in self._synced or box.value == self._synced[name]:
                box.value = value
                self._synced[name] = value

    def _best(self) -> str:
        """The best agent of the latest generation: from the last evolution_update message,
        or (before one arrived) from the frames, read once per version."""
        if not self._best_from_messages:
            frames = self.client.frames
            key = table_version(frames, "evolution")
            if key != self._best_key:
                self._best_key = key
                evolution = frames.evolution
                if evolution is not None and len(evolution):
                    self._best_text = best_agent(evolution.iloc[-1])
        return self._best_text

    def _on_evolution_update(self, message: Mapping[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, Mapping):
            self._best_text = best_agent(data)
            self._best_from_messages = True

    def status_text(self) -> str:
        """The status line as plain text (run state, generation, best agent, connection)."""
        client = self.client
        generation = "—" if client.generation is None else str(client.generation)
        return (
            f"run {client.run_state or 'unknown'} · generation {generation} · "
            f"best {self._best()} · connection {client.connection_state}"
        )

    def _refresh_labels(self, *, read_frames: bool = True) -> None:
        client = self.client
        best = self._best() if read_frames else self._best_text
        run_state = client.run_state or "unknown"
        generation = "—" if client.generation is None else str(client.generation)
        self.state_label.value = html_state("Run", run_state, STATE_COLORS.get(run_state))
        self.generation_label.value = html_state("Generation", generation)
        self.best_label.value = html_state("Best", best)
        connection = "dashboard closed" if self.closed else client.connection_state
        self.connection_label.value = html_state(
            "Connection", connection, STATE_COLORS.get(client.connection_state)
        )

    # -- redraw ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.closed:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._show(f"dashboard redraw failed: {type(exc).__name__}: {exc}", "error")
            await asyncio.sleep(self.min_interval)

    def _limits(self) -> tuple[Any, Any]:
        known = self.client.parameters
        return known.get("memory_limit_kb"), known.get("speed_limit_us")

    def _keys(self) -> dict[str, Hashable]:
        """What each plot and feed shows, as comparable keys (the tables' versions)."""
        frames = self.client.frames
        evolution = table_version(frames, "evolution")
        kind = self.member_kind()
        members = table_version(frames, kind) if kind else None
        return {
            "fitness": evolution,
            "feasible": evolution,
            "population": (table_version(frames, "agents"), self._limits()),
            "metrics": table_version(frames, "metrics"),
            "members": (kind, members, evolution if kind else None, self._limits()),
            "alerts": table_version(frames, "alerts"),
            "logs": table_version(frames, "logs"),
        }

    async def tick(self) -> bool:
        """One pass of the redraw loop (runs on the client's loop).

        Refreshes the status line and the controls, then, if the data changed and the
        throttle allows, renders the changed plots in a worker thread and pushes them.

        Returns:
            True if plots or feeds were redrawn.
        """
        self.ticks += 1
        self._refresh_controls()
        self._sync_parameters()
        self._refresh_labels()
        keys = self._keys()
        if not self.throttle.due((self.client.frames.version, keys["population"], keys["members"])):
            return False
        changed = {name for name, key in keys.items() if self._drawn.get(name, ()) != key}
        if not changed:
            return False
        view = self._collect(changed)
        pngs = await asyncio.to_thread(self._render, view, changed)
        if self.closed:
            return False
        for name, png in pngs.items():
            self.images[name].value = png
            self.plot_redraws[name] += 1
        if "members" in changed:
            kind = view.member_kind
            table = view.front if kind == "front" else view.archive
            self.members_label.value = (
                f"<b>{html.escape(member_summary(kind, table, view.evolution))}</b>" if kind else ""
            )
            self.members_panel.layout.display = "" if kind else "none"
        if "alerts" in changed:
            self.alerts_feed.value = alerts_html(view.alerts, limit=self.alert_limit)
        if "logs" in changed:
            self.logs_feed.value = logs_html(view.logs, limit=self.log_limit)
        for name in changed:
            self._drawn[name] = keys[name]
        self.redraws += 1
        return True

    def _render(self, view: ViewData, names: set[str]) -> dict[str, bytes]:
        """Render the named plots to PNG (in a worker thread: Figure objects only)."""
        memory_limit = view.parameters.get("memory_limit_kb")
        speed_limit = view.parameters.get("speed_limit_us")
        pngs = {}
        if "fitness" in names:
            pngs["fitness"] = render_fitness(view.evolution)
        if "feasible" in names:
            pngs["feasible"] = render_feasible(view.evolution)
        if "population" in names:
            pngs["population"] = render_population(
                view.agents, memory_limit_kb=memory_limit, speed_limit_us=speed_limit
            )
        if "metrics" in names:
            pngs["metrics"] = render_metrics(view.metrics, window=self.metrics_window)
        if "members" in names and view.member_kind is not None:
            kind = view.member_kind
            pngs["members"] = render_members(
                kind,
                view.front if kind == "front" else view.archive,
                view.evolution,
                memory_limit_kb=memory_limit,
                speed_limit_us=speed_limit,
            )
        return pngs

    def _collect(self, names: Collection[str] = _EVERYTHING) -> ViewData:
        """What is shown now, read on the loop thread (where the frames are filled).

        Only the tables the named plots and feeds need are read. The frames' DataFrames
        are rebuilt on change, never modified, so a worker thread may read them.
        """
        frames = self.client.frames
        kind = self.member_kind()
        wanted = {table for name in names for table in _TABLES[name]}
        wanted -= {"front", "archive"} - {kind}  # only the set shown
        tables = {table: getattr(frames, table, None) for table in wanted}
        return ViewData(
            **tables,
            member_kind=kind,
            parameters=dict(self.client.parameters),
            status=self.status_text(),
            message=strip_tags(self.message_label.value),
        )

    def view(self, timeout: float = 10.0) -> ViewData:
        """Return what the dashboard shows now; callable from any thread.

        Raises:
            TimeoutError: if the client's loop does not answer within ``timeout`` seconds.
        """
        loop = self.client.loop
        if self._on_loop_thread() or loop.is_closed() or not loop.is_running():
            return self._collect()
        future: concurrent.futures.Future[ViewData] = concurrent.futures.Future()

        def collect() -> None:
            try:
                future.set_result(self._collect())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(collect)
        return future.result(timeout)

    def snapshot(self, path: str | Path) -> Path:
        """Save the current view (status, plots, latest alerts) as one PNG, for a report.

        Composed with matplotlib from the same data as the live plots; no browser needed.

        Args:
            path: Where to write the PNG.

        Returns:
            The path written.
        """
        path = Path(path)
        path.write_bytes(figure_png(snapshot_figure(self.view())))
        return path

    def close(self) -> None:
        """Stop the redraw task, unsubscribe from the client and disable the controls.

        The widget stays on screen with its last content; the client is not closed.
        """
        if self.closed:
            return
        self.closed = True
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(Exception):
                unsubscribe()
        self._unsubscribe = []

        def stop() -> None:
            if self._task is not None:
                self._task.cancel()
            self._refresh_controls()
            self._refresh_labels()

        self._post(stop)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
