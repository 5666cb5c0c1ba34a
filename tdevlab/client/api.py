"""The asyncio client: requests, run state and events over one resilient connection.

:func:`connect` returns a :class:`Client` running as tasks on the calling event loop (in
Jupyter, the kernel's own loop: top-level ``await tdevlab.connect(...)`` works, nothing is
patched). Its connection (:class:`~tdevlab.client.connection.Connection`) reconnects,
resubscribes and resends on its own; this module is what a notebook calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import difflib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Self

from tdevlab.client.connection import Connection, ConnectionState
from tdevlab.client.requests import JsonObject, subscribe_message
from tdevlab.client.streams import AgentCode, resolve_event_name
from tdevlab.engine.lineage import GenomeDiff
from tdevlab.exceptions import ConnectionClosed, InvalidParameters, TdevlabError
from tdevlab.protocol.channels import CHANNELS

if TYPE_CHECKING:
    from tdevlab.notebook import Dashboard

__all__ = ["Client", "check_callable", "connect"]

#: The methods :meth:`Client.call` may run.
_CALLABLE = frozenset(
    {
        "subscribe",
        "unsubscribe",
        "control",
        "start",
        "pause",
        "resume",
        "stop",
        "set_parameters",
        "rollback",
        "branch",
        "get_agent",
        "get_agent_code",
        "get_lineage",
        "get_front",
        "get_archive",
        "get_population",
        "diff",
        "upload_agent_code",
        "ping",
        "wait_for",
        "close",
    }
)
_FINAL = (ConnectionState.CLOSED, ConnectionState.FAILED)


class Client(Connection):
    """A connection to a tdevlab server's ``/v1/evolution`` endpoint.

    Create it with :func:`connect` (or ``await Client(...).connect()``). All methods run on
    the loop the client was connected on; from another thread use :meth:`call`.

    Args:
        url: ``ws://HOST:PORT/v1/evolution`` (or ``wss://``).
        token: The JWT, or a function returning a fresh one (called at every connect).
        auth: ``"header"`` (``Authorization: Bearer``) or ``"message"`` (an ``auth`` message
            first, as browsers must).
        backoff: Reconnect delays and attempts (:class:`~tdevlab.client.streams.Backoff`).
        ping_interval: Seconds between application-level pings (``None``: none).
        ping_timeout: Seconds without a pong after which the server is treated as gone.
        request_timeout: Seconds to wait for a reply.
        queue_size: Most messages kept while disconnected; more raise
            :class:`~tdevlab.exceptions.ConnectionClosed`.
        max_rows: Row caps of :attr:`frames` (see :class:`~tdevlab.client.frames.Frames`).
        event_queue_size: Most events an :meth:`events` iterator buffers (oldest dropped).
        ssl: An ``ssl.SSLContext`` for ``wss://`` URLs with a private CA.
        seed: Seeds the jitter of the reconnect delays (tests).

    Raises:
        InvalidParameters: for an unknown ``auth`` or a URL that is not ``ws://``/``wss://``.
    """

    # -- state -----------------------------------------------------------------------------

    @property
    def run_state(self) -> str | None:
        """The run's state as last reported by the server (``None`` until known)."""
        return self.run.state

    @property
    def generation(self) -> int | None:
        """The latest generation seen (``None`` until known)."""
        return self.run.generation

    @property
    def parameters(self) -> dict[str, Any]:
        """The engine parameters as last reported by the server."""
        return self.run.parameters

    @property
    def strategy(self) -> str | None:
        """The run's strategy (``"ga"``, ``"nsga2"``, ``"map-elites"``) as the last control
        ack named it (``None`` until one came; ``client.run.strategy`` has its config)."""
        return None if self.run.strategy is None else self.run.strategy["name"]

    @property
    def subscriptions(self) -> dict[str, dict[str, float]]:
        """The channels subscribed to, with their filters (restored after reconnects)."""
        return dict(self._subscriptions)

    @property
    def queue_size(self) -> int:
        """Most requests kept while disconnected; more raise ``ConnectionClosed``."""
        return self._requests.queue_size

    @property
    def event_queue_size(self) -> int:
        """Most events an :meth:`events` iterator buffers (the oldest are dropped)."""
        return self._emitter.queue_size

    @property
    def events_dropped(self) -> int:
        """Events dropped because an :meth:`events` iterator was not consumed fast enough."""
        return self._emitter.dropped

    async def __aenter__(self) -> Self:
        if self._runner is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_open(self) -> None:
        """Wait until the connection is open (after a reconnect, for instance).

        Bound the wait with ``asyncio.timeout(...)``.

        Raises:
            ConnectionClosed: if the client closed or gave up (``AuthFailed`` if refused).
        """
        while self.connection_state is not ConnectionState.OPEN:
            if self.connection_state in _FINAL:
                raise self.error or ConnectionClosed("the client is closed")
            assert self._opened is not None
            with contextlib.suppress(TimeoutError):
                # Wake now and then to notice a final state (set without opening).
                await asyncio.wait_for(self._opened.wait(), 0.5)

    def dashboard(self, **options: Any) -> Dashboard:
        """A live ipywidgets dashboard over this client (:class:`tdevlab.Dashboard`)."""
        from tdevlab.notebook import Dashboard

        return Dashboard(self, **options)

    # -- requests --------------------------------------------------------------------------

    def subscribe(
        self,
        *channels: str,
        history: bool = True,
        generation_min: int | None = None,
        fitness_min: float | None = None,
    ) -> asyncio.Future[JsonObject]:
        """Subscribe to channels (``evolution``, ``agents``, ``metrics``, ``alerts``, ``logs``,
        ``control``; none named: all of them).

        Returns a future of the acknowledgement's data; awaiting it is optional.

        Args:
            channels: Channel names.
            history: Replay what the server still holds for these channels (the whole run
                for ``evolution`` with a SQLite store) before the live stream. With
                ``False`` no history is replayed later either: after a reconnect only the
                events missed while away are, and a server restarted under a new epoch is
                followed live from the reconnect.
            generation_min: Server-side filter on ``evolution_update``/``agent_update``.
            fitness_min: Server-side filter on best fitness / agent fitness.

        Raises:
            InvalidParameters: for an unknown channel.
        """
        names = list(channels) or list(CHANNELS)
        unknown = [c for c in names if c not in CHANNELS]
        if unknown:
            raise InvalidParameters(f"unknown channel(s) {unknown}; channels are {list(CHANNELS)}")
        filters: dict[str, float] = {}
        if generation_min is not None:
            filters["generation_min"] = generation_min
        if fitness_min is not None:
            filters["fitness_min"] = fitness_min
        if history:
            since, epochs = self.streams.since(names), self.streams.epochs(names)
            message = subscribe_message(names, filters, since=since, epochs=epochs)
        else:
            message = subscribe_message(names, filters)
        request = self._submit(message)
        for name in names:
            self._subscriptions[name] = filters
        if history:
            self.streams.live_only.difference_update(names)
        else:
            self.streams.live_only.update(names)
        return self.loop.create_task(self._reply_data(request))

    async def unsubscribe(self, *channels: str) -> JsonObject:
        """Stop receiving channels; returns the acknowledgement's data."""
        for name in channels:
            self._subscriptions.pop(name, None)
        self.streams.live_only.difference_update(channels)
        return await self._request({"type": "unsubscribe", "channels": list(channels)})

    async def control(self, action: str, **parameters: Any) -> JsonObject:
        """Send a control action (``start``, ``pause``, ``resume``, ``stop``) with parameters.

        Parameters are engine parameters (``population_size=200``...) and, before the run's
        first generation, ``strategy``: a name (``"ga"``, ``"nsga2"``, ``"map-elites"``) or
        ``{"name": "map-elites", "bins": [10, 10], ...}`` with its settings.

        Returns:
            The acknowledgement's data: ``state``, ``generation``, ``parameters``, and
            ``strategy`` (``name``, ``config``).

        Raises:
            InvalidCommand: the action is not valid in the run's state (``details["state"]``)
                or a parameter is invalid; nothing changed.
            Unauthorized: the token's role is ``viewer``.
        """
        message: JsonObject = {"type": "control", "action": action}
        if parameters:
            message["parameters"] = parameters
        seen = self.run.control_events
        data = await self._request(message)
        self.run.acknowledged(data, seen)
        return data

    async def start(self, **parameters: Any) -> JsonObject:
        """Start (or continue) the run, with parameters applied first.

        ``await client.start(strategy="nsga2", population_size=40)`` chooses the strategy
        too (before generation 0; see :meth:`control`).
        """
        return await self.control("start", **parameters)

    async def pause(self, **parameters: Any) -> JsonObject:
        """Pause the run after the current generation."""
        return await self.control("pause", **parameters)

    async def resume(self, **parameters: Any) -> JsonObject:
        """Resume a paused run."""
        return await self.control("resume", **parameters)

    async def stop(self) -> JsonObject:
        """Stop the run (a later ``start`` continues it)."""
        return await self.control("stop")

    async def set_parameters(self, **parameters: Any) -> JsonObject:
        """Change engine parameters from the next generation, in any state.

        Returns:
            The acknowledgement's data, with the ``parameters`` now in force.
        """
        data = await self._request({"type": "command", "cmd": "set_parameters", "args": parameters})
        if isinstance(data.get("parameters"), dict):
            self.run.parameters = data["parameters"]
        return data

    async def rollback(self, generation: int) -> JsonObject:
        """Roll the run back to ``generation`` (between generations).

        Returns:
            The acknowledgement's data: ``generation`` and the new ``branch``.

        Raises:
            InvalidCommand: the generation is not in the run.
        """
        return await self._request(
            {"type": "command", "cmd": "rollback", "args": {"generation": generation}}
        )

    async def branch(self, agent_id: str, parameters: dict[str, Any] | None = None) -> JsonObject:
        """Go back to the generation that made ``agent_id``, on its branch, and go on there.

        Exactly a rollback to that generation, from any branch; the current branch is kept.

        Args:
            agent_id: The agent to branch from.
            parameters: Parameter changes for the new branch (validated before anything
                changes).

        Returns:
            The acknowledgement's data: ``agent_id``, ``generation``, the new ``branch``
            and the run's ``state``.

        Raises:
            AgentNotFound: no such agent stored in the run.
            InvalidCommand: bad parameters, or a rollback or branch is in progress
                (``details["in_progress"]``).
        """
        args: JsonObject = {"agent_id": agent_id}
        if parameters is not None:
            args["parameters"] = parameters
        return await self._request({"type": "command", "cmd": "branch", "args": args})

    async def get_lineage(
        self, agent_id: str, depth: int | None = None, *, descendants: bool = False
    ) -> JsonObject:
        """An agent's line of first parents (the ``lineage`` reply's data).

        Args:
            agent_id: Any stored agent (current, retired, on an abandoned branch).
            depth: Steps to follow, 1 ..= 10000 (``None``: the server's default, 200).
            descendants: Also list descendants (by first parent).

        Returns:
            ``agent_id``, ``depth``, ``truncated``, ``nodes`` and ``edges``: each a dict of
            columns (``pandas.DataFrame(data["nodes"])`` makes the table).

        Raises:
            AgentNotFound: no such agent stored in the run.
            InvalidCommand: a depth out of range.
        """
        message: JsonObject = {"type": "get_lineage", "agent_id": agent_id}
        if depth is not None:
            message["depth"] = depth
        if descendants:
            message["descendants"] = True
        return await self._request(message)

    async def get_agent(self, agent_id: str) -> JsonObject:
        """An agent's status and metrics (the ``agent_update`` data).

        Raises:
            AgentNotFound: no such agent in the run.
        """
        return await self._request({"type": "get_agent", "agent_id": agent_id})

    async def get_agent_code(self, agent_id: str) -> AgentCode:
        """An agent's source code, from the server's binary ``agent_code`` frame.

        Raises:
            AgentNotFound: no such agent in the run.
        """
        reply = await self._reply_to(self._submit({"type": "get_agent_code", "agent_id": agent_id}))
        if not isinstance(reply, AgentCode):
            raise TdevlabError(f"the server answered get_agent_code with {reply!r}, not code")
        return reply

    async def get_front(self) -> JsonObject:
        """The NSGA-II front now (the ``front`` reply's data); also replaces ``frames.front``.

        Returns:
            ``kind``, ``generation``, ``branch``, ``strategy``, ``objectives``,
            ``reference`` and ``agents`` (each: ``agent_id``, ``name``, ``fitness``,
            ``memory_kb``, ``speed_us``, ``birth_generation``, ``objectives``).

        Raises:
            InvalidCommand: the run's strategy keeps no front (``details["strategy"]``).
        """
        return await self._request({"type": "get_front"})

    async def get_archive(self) -> JsonObject:
        """The MAP-Elites archive now (the ``archive`` reply's data); also replaces
        ``frames.archive``.

        Returns:
            ``kind``, ``generation``, ``branch``, ``strategy``, ``descriptors``, ``bins``,
            ``ranges`` and ``agents`` (each: ``agent_id``, ``name``, ``fitness``,
            ``memory_kb``, ``speed_us``, ``birth_generation``, ``descriptors``, ``cell``).

        Raises:
            InvalidCommand: the run's strategy keeps no archive (``details["strategy"]``).
        """
        return await self._request({"type": "get_archive"})

    async def get_population(self) -> JsonObject:
        """The whole current population (the ``population`` reply's data).

        The agents channel announces only notable agents; this lists every agent alive.

        Returns:
            ``kind``, ``generation``, ``branch``, ``total``, ``truncated`` and ``agents``
            (each: ``agent_id``, ``status``, ``fitness``, ``memory_kb``, ``speed_us``,
            ``birth_generation``; the fittest 10,000 at most).
        """
        return await self._request({"type": "get_population"})

    async def diff(self, agent_a: str, agent_b: str) -> GenomeDiff:
        """How ``agent_b`` differs from ``agent_a``, as the engine's ``diff`` says it.

        Built from what the server sends: both agents' genes (``get_agent``) and their code
        (``get_agent_code``), compared here.

        Returns:
            A :class:`~tdevlab.engine.lineage.GenomeDiff`: the differing genes and the
            unified diff of the code.

        Raises:
            AgentNotFound: either agent is not stored in the run.
        """
        a, b, code_a, code_b = await asyncio.gather(
            self.get_agent(agent_a),
            self.get_agent(agent_b),
            self.get_agent_code(agent_a),
            self.get_agent_code(agent_b),
        )
        genes_a, genes_b = a.get("genes") or {}, b.get("genes") or {}
        genes = [
            {"gene": name, "a": genes_a.get(name), "b": genes_b.get(name)}
            for name in dict.fromkeys([*genes_a, *genes_b])
            if genes_a.get(name) != genes_b.get(name)
        ]
        code = "".join(
            difflib.unified_diff(
                code_a.text.splitlines(keepends=True),
                code_b.text.splitlines(keepends=True),
                fromfile=code_a.agent_id,
                tofile=code_b.agent_id,
            )
        )
        return GenomeDiff(code_a.agent_id, code_b.agent_id, genes, code)

    async def upload_agent_code(self, code: str) -> JsonObject:
        """Send agent source (binary frame); it joins the next generation.

        Returns:
            The acknowledgement's data, with the new ``agent``.

        Raises:
            ConstraintViolation: the code is over the memory limit or the agent breaks one.
            InvalidCommand: the code is not a valid genome.
        """
        return await self._request({"type": "agent_code"}, code=code)

    def call(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``await client.<method>(*args, **kwargs)`` on the client's loop, from any thread.

        This is how widget callbacks (which ipykernel 7 may run on another thread) hand a
        command to the client. The returned future holds the reply or the exception.

        Raises:
            InvalidParameters: for a name that is not a request method.
        """
        check_callable(method)

        async def invoke() -> object:
            result = getattr(self, method)(*args, **kwargs)
            if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop)

    # -- events ----------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``callback(message)`` for each event of a type or channel (``"alert"`` or
        ``"alerts"``); ``"state"`` calls it with the connection state on each change,
        ``"message"`` with every message. Callbacks run on the client's loop; an exception
        in one is logged, never raised into the client.

        Returns:
            A function that removes the callback.
        """
        return self._emitter.on(resolve_event_name(event), callback)

    async def wait_for(
        self, event: str, predicate: Callable[[JsonObject], bool] | None = None
    ) -> JsonObject:
        """Wait for the next event of a type or channel that satisfies ``predicate``.

        ``await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 50)``;
        bound the wait with ``asyncio.timeout(...)``.

        Raises:
            ConnectionClosed: if the client closes or gives up first.
        """
        name = resolve_event_name(event)
        future: asyncio.Future[JsonObject] = self.loop.create_future()
        if self.connection_state in _FINAL:
            raise self.error or ConnectionClosed("the client is closed")

        def check(message: JsonObject) -> None:
            if future.done():
                return
            try:
                matched = predicate is None or predicate(message)
            except Exception as exc:
                future.set_exception(exc)
                return
            if matched:
                future.set_result(message)

        def ended(state: str) -> None:
            if not future.done() and state in _FINAL:
                future.set_exception(self.error or ConnectionClosed("the client is closed"))

        removers = [self.on(name, check), self.on("state", ended)]
        try:
            return await future
        finally:
            for remove in removers:
                remove()

    def events(self, *kinds: str) -> AsyncIterator[JsonObject]:
        """Iterate over events of the given types or channels (none named: every event).

        ``async for event in client.events("alerts"): ...`` Events are collected from this
        call on (not only from the first ``anext``). The iterator buffers up to
        ``event_queue_size`` events; when its consumer falls behind, the oldest are dropped
        (counted in :attr:`events_dropped`; :attr:`frames` still has everything). It ends
        when the client closes or fails.
        """
        names = [resolve_event_name(k) for k in kinds] or ["message"]
        return self._emitter.iterate(names, ended=self.connection_state in _FINAL)


def check_callable(method: str) -> None:
    """Check a method name for :meth:`Client.call`.

    Raises:
        InvalidParameters: for a name that is not a request method.
    """
    if method not in _CALLABLE:
        raise InvalidParameters(f"cannot call {method!r}; methods are {sorted(_CALLABLE)}")


async def connect(url: str, token: str | Callable[[], str], **options: Any) -> Client:
    """Connect to a tdevlab server on the running event loop (``await`` it in Jupyter).

    Args:
        url: ``ws://HOST:PORT/v1/evolution``.
        token: The JWT (or a function returning a fresh one).
        options: See :class:`Client`.

    Returns:
        The connected client.

    Raises:
        AuthFailed: the token was refused.
        ConnectionClosed: the server could not be reached.
    """
    return await Client(url, token, **options).connect()
