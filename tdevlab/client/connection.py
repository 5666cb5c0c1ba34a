"""The asyncio client: one resilient connection to ``/v1/evolution``.

:func:`connect` returns a :class:`Client` running as tasks on the calling event loop (in
Jupyter, the kernel's own loop: top-level ``await tdevlab.connect(...)`` works, nothing is
patched). The client

* authenticates with the ``Authorization`` header (default) or an ``auth`` message;
* keeps the connection: after a drop or a server restart it reconnects with exponential
  backoff and jitter, authenticates again, resubscribes with the last sequence number it
  saw per channel (the server replays what was missed) and flushes the messages queued
  while it was down; an authentication failure is never retried;
* matches replies to requests by id and raises the exception of an error's code;
* feeds every event, exactly once and in order, to :attr:`Client.frames`, to callbacks
  registered with :meth:`Client.on`, and to :meth:`Client.events` iterators.

The stream bookkeeping lives in :mod:`tdevlab.client.streams` (no I/O); this module only
moves frames.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.protocol import State as WsState

from tdevlab.client.streams import (
    CHANNELS,
    AgentCode,
    Backoff,
    StreamTracker,
    error_from_message,
    parse_agent_code,
    resolve_event_name,
)
from tdevlab.exceptions import (
    AuthFailed,
    ConnectionClosed,
    InvalidParameters,
    RateLimited,
    RequestTimeout,
    TdevlabError,
)

if TYPE_CHECKING:
    from tdevlab.client.frames import Frames

__all__ = ["Client", "ConnectionState", "connect"]

log = logging.getLogger("tdevlab.client")

#: Requests that are safe to send twice: re-sent after a reconnect instead of failing.
_IDEMPOTENT = frozenset({"subscribe", "unsubscribe", "get_agent", "get_agent_code", "ping"})
#: Close codes after which reconnecting with the same token cannot help.
_AUTH_CLOSE_WORDS = ("authentic", "token")
_DECODE = msgspec.json.Decoder().decode


class ConnectionState(enum.StrEnum):
    """Where the connection is. ``str`` values, so widgets and logs can show them."""

    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"  # closed by the user: final
    FAILED = "failed"  # authentication refused or the server not back after the retries

    def __str__(self) -> str:
        return self.value


class _Request:
    __slots__ = ("connection", "control_events", "future", "kind", "payload")

    def __init__(
        self, kind: str, payload: str, future: asyncio.Future[Any], control_events: int
    ) -> None:
        self.kind = kind
        self.payload = payload
        self.future = future
        self.control_events = control_events  # how many control_update had arrived
        self.connection = 0  # the connection it was written on (0: queued)


class Client:
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
    """

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        auth: str = "header",
        backoff: Backoff | None = None,
        ping_interval: float | None = 30.0,
        ping_timeout: float = 10.0,
        request_timeout: float = 30.0,
        queue_size: int = 1000,
        max_rows: int | dict[str, int] | None = 100_000,
        event_queue_size: int = 10_000,
        ssl: Any = None,
        seed: int | None = None,
    ) -> None:
        if auth not in ("header", "message"):
            raise InvalidParameters(f"auth={auth!r} must be 'header' or 'message'")
        if not url.startswith(("ws://", "wss://")):
            raise InvalidParameters(f"url must start with ws:// or wss://, got {url!r}")
        from tdevlab.client.frames import Frames

        self.url = url
        self._token = token
        self.auth = auth
        self.backoff = backoff or Backoff()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.request_timeout = request_timeout
        self.queue_size = queue_size
        self.event_queue_size = event_queue_size
        self.ssl = ssl
        self._rng = random.Random(seed)

        #: Every event received, as pandas DataFrames (see :class:`Frames`).
        self.frames: Frames = Frames(max_rows=max_rows)
        #: The connection's state (read from any thread).
        self.connection_state = ConnectionState.CLOSED
        #: The run's state as last reported by the server (``None`` until known).
        self.run_state: str | None = None
        #: The latest generation seen (``None`` until known).
        self.generation: int | None = None
        #: The engine parameters as last reported by the server.
        self.parameters: dict[str, Any] = {}
        #: Why the client gave up, when :attr:`connection_state` is ``failed``.
        self.error: TdevlabError | None = None
        #: How many times the connection was re-established.
        self.reconnects = 0
        #: Events dropped because an ``events()`` iterator was not consumed fast enough.
        self.events_dropped = 0

        self.streams = StreamTracker()
        self._subscriptions: dict[str, dict[str, Any]] = {}  # channel -> filters
        self._ids = itertools.count(1)
        self._pending: dict[str, _Request] = {}
        self._outbox: deque[str] = deque()
        self._callbacks: dict[str, list[Callable[[Any], Any]]] = {}
        self._iterators: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}
        self._ws: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._opened: asyncio.Event | None = None
        self._closing = False
        self._control_events = 0  # control_update events received (orders acks and events)
        self._connection = 0  # counts connections opened
        self._draining = False
        self._holding = False  # queue sends behind the outbox (while "open" is announced)
        self._frames_received = 0  # any frame is a sign of life (see _ping_loop)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the client runs on.

        Raises:
            ConnectionClosed: before :meth:`connect`.
        """
        if self._loop is None:
            raise ConnectionClosed("the client is not connected yet: await client.connect()")
        return self._loop

    async def connect(self) -> Client:
        """Open the connection and start the client's tasks on the running loop.

        Returns:
            The client itself.

        Raises:
            AuthFailed: the server refused the token (HTTP 401 or ``AUTH_FAILED``).
            RateLimited: the user has too many connections (HTTP 429).
            ConnectionClosed: the server could not be reached.
        """
        if self._runner is not None and not self._runner.done():
            raise InvalidParameters("the client is already connected")
        self._runner = None
        self.error = None
        self._loop = asyncio.get_running_loop()
        self._opened = asyncio.Event()
        self._closing = False
        self._set_state(ConnectionState.CONNECTING)
        try:
            ws = await self._open()
        except BaseException:
            self._set_state(ConnectionState.CLOSED)
            raise
        self._announce_open()
        self._runner = self._loop.create_task(self._run(ws), name=f"tdevlab client {self.url}")
        return self

    async def close(self) -> None:
        """Close the connection (code 1000) and stop; pending requests fail."""
        self._closing = True
        runner, self._runner = self._runner, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        self._fail_pending(ConnectionClosed("the client was closed"), everything=True)
        self._outbox.clear()
        self._set_state(ConnectionState.CLOSED)

    async def __aenter__(self) -> Client:
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
            if self.connection_state in (ConnectionState.CLOSED, ConnectionState.FAILED):
                raise self.error or ConnectionClosed("the client is closed")
            assert self._opened is not None
            with contextlib.suppress(TimeoutError):
                # Wake now and then to notice a final state (set without opening).
                await asyncio.wait_for(self._opened.wait(), 0.5)

    @property
    def subscriptions(self) -> dict[str, dict[str, Any]]:
        """The channels subscribed to, with their filters (restored after reconnects)."""
        return dict(self._subscriptions)

    def dashboard(self, **options: Any) -> Any:
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
    ) -> asyncio.Future[dict[str, Any]]:
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
        filters: dict[str, Any] = {}
        if generation_min is not None:
            filters["generation_min"] = generation_min
        if fitness_min is not None:
            filters["fitness_min"] = fitness_min
        message: dict[str, Any] = {"type": "subscribe", "channels": names}
        if filters:
            message["filters"] = filters
        if history:
            message["since"] = self.streams.since(names)
            message["epochs"] = self.streams.epochs(names)
        request = self._submit(message)
        for name in names:
            self._subscriptions[name] = filters
        if history:
            self.streams.live_only.difference_update(names)
        else:
            self.streams.live_only.update(names)
        return self.loop.create_task(self._reply_to(request))

    async def unsubscribe(self, *channels: str) -> dict[str, Any]:
        """Stop receiving channels; returns the acknowledgement's data."""
        for name in channels:
            self._subscriptions.pop(name, None)
        self.streams.live_only.difference_update(channels)
        return await self._request({"type": "unsubscribe", "channels": list(channels)})

    async def control(self, action: str, **parameters: Any) -> dict[str, Any]:
        """Send a control action (``start``, ``pause``, ``resume``, ``stop``) with parameters.

        Returns:
            The acknowledgement's data: ``state``, ``generation``, ``parameters``.

        Raises:
            InvalidCommand: the action is not valid in the run's state (``details["state"]``)
                or a parameter is invalid; nothing changed.
            Unauthorized: the token's role is ``viewer``.
        """
        message: dict[str, Any] = {"type": "control", "action": action}
        if parameters:
            message["parameters"] = parameters
        seen = self._control_events
        data = await self._request(message)
        if self._control_events == seen:
            # Only when no control_update arrived meanwhile: those are newer than the ack's
            # snapshot (a run that failed at once is announced before the start's ack).
            self._note_run(data)
        return data

    async def start(self, **parameters: Any) -> dict[str, Any]:
        """Start (or continue) the run, with parameters applied first."""
        return await self.control("start", **parameters)

    async def pause(self, **parameters: Any) -> dict[str, Any]:
        """Pause the run after the current generation."""
        return await self.control("pause", **parameters)

    async def resume(self, **parameters: Any) -> dict[str, Any]:
        """Resume a paused run."""
        return await self.control("resume", **parameters)

    async def stop(self) -> dict[str, Any]:
        """Stop the run (a later ``start`` continues it)."""
        return await self.control("stop")

    async def set_parameters(self, **parameters: Any) -> dict[str, Any]:
        """Change engine parameters from the next generation, in any state.

        Returns:
            The acknowledgement's data, with the ``parameters`` now in force.
        """
        data = await self._request({"type": "command", "cmd": "set_parameters", "args": parameters})
        if isinstance(data.get("parameters"), dict):
            self.parameters = data["parameters"]
        return data

    async def rollback(self, generation: int) -> dict[str, Any]:
        """Roll the run back to ``generation`` (between generations).

        Returns:
            The acknowledgement's data: ``generation`` and the new ``branch``.

        Raises:
            InvalidCommand: the generation is not in the run.
        """
        return await self._request(
            {"type": "command", "cmd": "rollback", "args": {"generation": generation}}
        )

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
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
        request = self._submit({"type": "get_agent_code", "agent_id": agent_id})
        code: AgentCode = await self._reply_to(request)
        return code

    async def upload_agent_code(self, code: str) -> dict[str, Any]:
        """Send agent source (binary frame); it joins the next generation.

        Returns:
            The acknowledgement's data, with the new ``agent``.

        Raises:
            ConstraintViolation: the code is over the memory limit or the agent breaks one.
            InvalidCommand: the code is not a valid genome.
        """
        return await self._request({"type": "agent_code"}, binary=code)

    async def ping(self) -> float:
        """Round trip to the server; returns the seconds it took."""
        started = time.perf_counter()
        await self._request({"type": "ping", "timestamp": _iso_now()})
        return time.perf_counter() - started

    def call(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``await client.<method>(*args, **kwargs)`` on the client's loop, from any thread.

        This is how widget callbacks (which ipykernel 7 may run on another thread) hand a
        command to the client. The returned future holds the reply or the exception.

        Raises:
            InvalidParameters: for a name that is not a request method.
        """
        check_callable(method)

        async def invoke() -> Any:
            result = getattr(self, method)(*args, **kwargs)
            if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop)

    # -- events ----------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``callback(message)`` for each event of a type or channel (``"alert"`` or
        ``"alerts"``); ``"state"`` calls it with the connection state on each change,
        ``"message"`` with every message. Callbacks run on the client's loop; an exception
        in one is logged, never raised into the client.

        Returns:
            A function that removes the callback.
        """
        name = resolve_event_name(event)
        self._callbacks.setdefault(name, []).append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.get(name, []).remove(callback)

        return remove

    async def wait_for(
        self, event: str, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Wait for the next event of a type or channel that satisfies ``predicate``.

        ``await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 50)``;
        bound the wait with ``asyncio.timeout(...)``.

        Raises:
            ConnectionClosed: if the client closes or gives up first.
        """
        name = resolve_event_name(event)
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        if self.connection_state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            raise self.error or ConnectionClosed("the client is closed")

        def check(message: dict[str, Any]) -> None:
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
            if not future.done() and state in (ConnectionState.CLOSED, ConnectionState.FAILED):
                future.set_exception(self.error or ConnectionClosed("the client is closed"))

        removers = [self.on(name, check), self.on("state", ended)]
        try:
            return await future
        finally:
            for remove in removers:
                remove()

    def events(self, *kinds: str) -> AsyncIterator[dict[str, Any]]:
        """Iterate over events of the given types or channels (none named: every event).

        ``async for event in client.events("alerts"): ...`` Events are collected from this
        call on (not only from the first ``anext``). The iterator buffers up to
        ``event_queue_size`` events; when its consumer falls behind, the oldest are dropped
        (counted in :attr:`events_dropped`; :attr:`frames` still has everything). It ends
        when the client closes or fails.
        """
        names = [resolve_event_name(k) for k in kinds] or ["message"]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if self.connection_state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            queue.put_nowait(_END)
        else:
            for name in names:
                self._iterators.setdefault(name, []).append(queue)
        return self._drain_events(names, queue)

    async def _drain_events(
        self, names: list[str], queue: asyncio.Queue[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            for name in names:
                with contextlib.suppress(ValueError):
                    self._iterators.get(name, []).remove(queue)

    # -- internals: connection -------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.connection_state:
            return
        self.connection_state = state
        if self._opened is not None:
            if state is ConnectionState.OPEN:
                self._opened.set()
            else:
                self._opened.clear()
        self._emit("state", state.value)
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            for queues in self._iterators.values():
                for queue in queues:
                    queue.put_nowait(_END)

    def _announce_open(self) -> None:
        """Move to ``open``, queueing what the state callbacks send behind the outbox.

        A callback on ``"open"`` runs before the connection is brought up to date: a
        request it makes must go out after those queued while down (call order), and after
        the resubscribes, not ahead of them.
        """
        self._holding = True
        try:
            self._set_state(ConnectionState.OPEN)
        finally:
            self._holding = False

    def _current_token(self) -> str:
        return self._token() if callable(self._token) else self._token

    async def _open(self) -> ClientConnection:
        """Connect, authenticate and resubscribe; return the open connection.

        Raises:
            AuthFailed, RateLimited, ConnectionClosed.
        """
        try:
            token = self._current_token()
        except Exception as exc:
            raise ConnectionClosed(f"the token function raised {exc!r}") from exc
        headers = {"Authorization": f"Bearer {token}"} if self.auth == "header" else None
        try:
            ws = await ws_connect(
                self.url,
                additional_headers=headers,
                compression=None,  # the server sends small JSON; deflate costs more than it saves
                open_timeout=self.request_timeout,
                max_size=16 * 2**20,
                **({"ssl": self.ssl} if self.ssl is not None else {}),
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            if status == 401:
                raise AuthFailed(f"the server refused the token (HTTP 401): {body}") from exc
            if status == 429:
                raise RateLimited(f"too many connections (HTTP 429): {body}") from exc
            raise ConnectionClosed(f"handshake refused with HTTP {status}: {body}") from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectionClosed(f"cannot connect to {self.url}: {exc}") from exc
        try:
            if self.auth == "message":
                await self._authenticate(ws, token)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self._connection += 1
        return ws

    async def _authenticate(self, ws: ClientConnection, token: str) -> None:
        """The ``auth`` message, then its ``ack`` (or the refusal)."""
        await ws.send(msgspec.json.encode({"type": "auth", "token": token, "id": "auth"}).decode())
        try:
            async with asyncio.timeout(self.request_timeout):
                while True:
                    frame = await ws.recv()
                    if isinstance(frame, bytes):
                        continue
                    message = _DECODE(frame)
                    if message.get("reply_to") != "auth":
                        continue
                    if message.get("type") == "error":
                        error = error_from_message(message)
                        if isinstance(error, RateLimited):
                            raise error
                        raise AuthFailed(str(error), details=error.details)
                    return
        except WsConnectionClosed as exc:
            raise AuthFailed(f"the server closed the connection during auth: {exc}") from exc
        except TimeoutError as exc:
            raise ConnectionClosed("no reply to the auth message") from exc

    async def _run(self, ws: ClientConnection) -> None:
        """Serve connections until closed: read, and reconnect after drops."""
        try:
            while True:
                await self._serve(ws)
                if self._closing:
                    return
                ws_or_none = await self._reconnect()
                if ws_or_none is None:
                    return
                ws = ws_or_none
        except Exception as exc:
            log.exception("tdevlab client: the connection task failed")
            self._give_up(TdevlabError(f"the client failed: {exc!r}"))
        finally:
            ws_now, self._ws = self._ws, None
            if ws_now is not None and self._closing:
                # close() may have raced a reconnect: never leave a connection open behind us.
                transport = ws_now.transport
                if transport is not None:
                    transport.abort()

    async def _serve(self, ws: ClientConnection) -> None:
        """Bring one connection up to date, then read until it closes."""
        self._announce_open()
        self._resubscribe()
        self._resend_pending()
        self._flush_outbox()
        pinger = None
        if self.ping_interval:
            pinger = asyncio.get_running_loop().create_task(self._ping_loop(ws))
        try:
            async for frame in ws:
                self._frames_received += 1
                self._received(frame)
        except WsConnectionClosed:
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
        if self._closing:
            return
        rcvd = ws.protocol.close_rcvd
        if (
            rcvd is not None
            and rcvd.code == 1008
            and any(word in rcvd.reason.lower() for word in _AUTH_CLOSE_WORDS)
            and not callable(self._token)
        ):
            self._give_up(AuthFailed(f"the server closed the connection: {rcvd.reason}"))
            self._closing = True
            return
        log.info("tdevlab client: connection lost (%s); reconnecting", _close_text(ws))
        self._fail_pending(
            ConnectionClosed(
                "the connection dropped before the reply; the request may have been applied"
            ),
            everything=False,
        )

    async def _reconnect(self) -> ClientConnection | None:
        """Try to connect again with backoff; ``None`` when giving up."""
        self._set_state(ConnectionState.RECONNECTING)
        for attempt in itertools.count():
            delay = self.backoff.delay(attempt, self._rng)
            if delay is None:
                self._give_up(
                    ConnectionClosed(
                        f"the server at {self.url} did not come back after {attempt} attempts"
                    )
                )
                return None
            await asyncio.sleep(delay)
            if self._closing:
                return None
            try:
                ws = await self._open()
            except AuthFailed as exc:
                self._give_up(exc)  # the same token will not do better: no retry storm
                return None
            except (ConnectionClosed, RateLimited) as exc:
                log.info("tdevlab client: reconnect attempt %d failed: %s", attempt + 1, exc)
                continue
            self.reconnects += 1
            return ws
        raise AssertionError("unreachable")  # pragma: no cover

    def _track(self, request: _Request, retry: dict[str, Any] | None = None) -> None:
        """Wait for a request nobody awaits (a resubscribe); log its failure."""

        def done(task: asyncio.Task[Any]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.warning("tdevlab client: resubscribe failed: %s", task.exception())
                if retry is not None and not isinstance(task.exception(), ConnectionClosed):
                    self.loop.call_later(1.0, self._retry, retry)

        self.loop.create_task(self._reply_to(request)).add_done_callback(done)

    def _retry(self, message: dict[str, Any]) -> None:
        if self.connection_state is ConnectionState.OPEN and set(message["channels"]) & (
            self.streams.resyncing
        ):
            message = {k: v for k, v in message.items() if k != "id"}
            self._track(self._submit(message), retry=message)

    def _give_up(self, error: TdevlabError) -> None:
        self.error = error
        log.warning("tdevlab client: %s", error)
        self._fail_pending(error, everything=True)
        self._outbox.clear()
        self._set_state(ConnectionState.FAILED)

    async def _ping_loop(self, ws: ClientConnection) -> None:
        """Application-level pings; a server from which nothing arrives is treated as gone.

        Any frame counts as a sign of life, not only the pong: the server sends a replay
        (after a resubscribe with ``since``) before anything queued later, its pong
        included, and a long replay over a slow link outlasts ``ping_timeout``. The
        connection is dropped when a whole ``ping_timeout`` passes, after a ping, without
        the pong or any other frame (detected within two ``ping_timeout``).
        """
        assert self.ping_interval is not None
        while True:
            await asyncio.sleep(self.ping_interval)
            alive = await self._pong_or_traffic()
            if alive is None:
                return
            if not alive:
                log.warning(
                    "tdevlab client: nothing received for %s s after a ping; reconnecting",
                    self.ping_timeout,
                )
                transport = ws.transport
                if transport is not None:
                    transport.abort()  # a silent peer may never answer a closing handshake
                return

    async def _pong_or_traffic(self) -> bool | None:
        """Ping; whether the server is alive: the pong came, or frames kept arriving.

        ``None`` when the ping could not be sent or failed otherwise (closed, failed).
        """
        ping = self.loop.create_task(self.ping(), name="tdevlab client ping")
        sent = self._frames_received
        try:
            while True:
                received = self._frames_received
                done, _ = await asyncio.wait({ping}, timeout=self.ping_timeout)
                if done:
                    break
                if self._frames_received == received:
                    return False
        finally:
            ping.cancel()
        error = ping.exception()
        if isinstance(error, RequestTimeout):
            # No pong within request_timeout, yet frames arrived meanwhile: alive.
            return self._frames_received != sent
        if error is None or isinstance(error, RateLimited):
            return True  # the pong, or a refusal (an answer all the same)
        return None  # the client closed or failed: nothing to watch

    def _resubscribe(self) -> None:
        """Subscribe again to every channel, from the last event seen (after a reconnect)."""
        if not self.reconnects or not self._subscriptions:
            return
        groups: dict[str, list[str]] = {}
        for channel, filters in self._subscriptions.items():
            groups.setdefault(msgspec.json.encode(filters).decode(), []).append(channel)
        for key, channels in groups.items():
            message: dict[str, Any] = {
                "type": "subscribe",
                "channels": channels,
                "since": self.streams.since(channels),
                "epochs": self.streams.epochs(channels),
            }
            filters = msgspec.json.decode(key)
            if filters:
                message["filters"] = filters
            self._track(self._submit(message))

    # -- internals: requests ---------------------------------------------------------------

    async def _request(
        self, message: dict[str, Any], *, binary: str | None = None
    ) -> dict[str, Any]:
        """Send a request with a fresh id and wait for its reply's data."""
        data: dict[str, Any] = await self._reply_to(self._submit(message, binary=binary))
        return data

    def _submit(self, message: dict[str, Any], *, binary: str | None = None) -> _Request:
        """Register a request and send it now (or queue it while disconnected), in call order.

        Raises:
            ConnectionClosed: the client is closed, or the queue is full.
        """
        request_id = f"c{next(self._ids)}"
        message["id"] = request_id
        payload = msgspec.json.encode(message).decode()
        if binary is not None:
            payload += "\n" + binary  # spec: JSON metadata, then the code
        kind = "agent_code" if binary is not None else str(message.get("cmd") or message["type"])
        request = _Request(kind, payload, self.loop.create_future(), self._control_events)
        if self._send(payload, binary=binary is not None):
            request.connection = self._connection
        self._pending[request_id] = request
        return request

    async def _reply_to(self, request: _Request) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), self.request_timeout)
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no reply to {request.kind!r} within {self.request_timeout} s"
            ) from exc
        finally:
            if not request.future.done():
                request.future.cancel()
                with contextlib.suppress(ValueError):
                    self._outbox.remove(self._marker(request))  # never sent: never send it
            for key, pending in list(self._pending.items()):
                if pending is request:
                    del self._pending[key]

    def _send(self, payload: str, *, binary: bool = False) -> bool:
        state = self.connection_state
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            raise self.error or ConnectionClosed("the client is closed")
        if state is not ConnectionState.OPEN or self._ws is None or self._draining or self._holding:
            if len(self._outbox) >= self.queue_size:
                raise ConnectionClosed(
                    f"not connected, and {self.queue_size} messages are already waiting"
                )
            self._outbox.append(("b" if binary else "t") + payload)
            return False
        data: str | bytes = payload.encode() if binary else payload
        self.loop.create_task(self._write(self._ws, data), name="tdevlab client send")
        return True

    async def _write(self, ws: ClientConnection, data: str | bytes) -> None:
        with contextlib.suppress(WsConnectionClosed):
            await ws.send(data)  # a failure here surfaces as the reader's close

    def _flush_outbox(self) -> None:
        """Send what was queued while disconnected, in order, within the server's rate."""
        ws = self._ws
        if self._outbox and ws is not None and not self._draining:
            self._draining = True
            self.loop.create_task(self._drain(ws))

    async def _drain(self, ws: ClientConnection) -> None:
        """Send the outbox on ``ws``, paced; what it could not send stays queued.

        The pacing spans seconds for a long outbox, and a dropped ``ws`` stays
        ``self._ws`` until the next connection opens: a message is taken from the outbox
        only while ``ws`` is open, never popped into a dead connection (it would be lost,
        and its request would wait for its timeout). One whose send fails is not put back:
        websockets may have written it before the failure, so its request ends as any
        request in flight on a dropped connection does (idempotent ones are sent again).
        """
        burst, interval = 50, 1 / 50  # half the server's default 100 messages/s
        sent = 0
        try:
            while self._outbox and self._ws is ws and ws.state is WsState.OPEN:
                item = self._outbox.popleft()
                data: str | bytes = item[1:].encode() if item[0] == "b" else item[1:]
                try:
                    await ws.send(data)
                except WsConnectionClosed:
                    return
                sent += 1
                if sent >= burst:
                    await asyncio.sleep(interval)
        finally:
            self._draining = False

    def _resend_pending(self) -> None:
        """Send again the idempotent requests whose replies were lost with the connection."""
        queued = set(self._outbox)
        again = []
        for request in list(self._pending.values()):
            marker = self._marker(request)
            if (
                request.kind in _IDEMPOTENT
                and request.connection != self._connection
                and marker not in queued
                and not request.future.done()
            ):
                again.append(marker)
        self._outbox.extendleft(reversed(again))

    @staticmethod
    def _marker(request: _Request) -> str:
        """How a request sits in the outbox: a text/binary flag, then its payload."""
        return ("b" if request.kind == "agent_code" else "t") + request.payload

    def _fail_pending(self, error: TdevlabError, *, everything: bool) -> None:
        for request in list(self._pending.values()):
            if request.future.done() or (not everything and request.kind in _IDEMPOTENT):
                continue
            queued = self._marker(request) in self._outbox
            if not everything and queued:
                continue  # never sent: it goes out after the reconnect
            request.future.set_exception(error)

    # -- internals: receiving ---------------------------------------------------------------

    def _received(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._received_binary(frame)
            return
        try:
            message = _DECODE(frame)
        except msgspec.DecodeError:
            log.warning("tdevlab client: ignored a frame that is not JSON: %.80r", frame)
            return
        if not isinstance(message, dict):
            return
        reply_to = message.get("reply_to")
        kind = message.get("type")
        if reply_to is not None:
            self._reply(reply_to, message)
            if kind != "agent_update":  # a requested agent's state is news for the frames
                return
        elif "channel" in message and not self.streams.accept(message):
            return  # already seen (a replay overlapping what arrived live)
        self._event(message)

    def _received_binary(self, frame: bytes) -> None:
        try:
            code = parse_agent_code(frame)
        except TdevlabError as exc:
            log.warning("tdevlab client: %s", exc)
            return
        reply_to = code.metadata.get("reply_to")
        request = self._pending.get(str(reply_to)) if reply_to is not None else None
        if request is not None and not request.future.done():
            request.future.set_result(code)
        self._emit("agent_code", code)

    def _reply(self, reply_to: Any, message: dict[str, Any]) -> None:
        request = self._pending.get(str(reply_to))
        if request is None or request.future.done():
            return
        kind = message.get("type")
        if kind == "error":
            request.future.set_exception(error_from_message(message))
            return
        data = message.get("data")
        data = data if isinstance(data, dict) else {}
        if kind == "ack" and data.get("request") == "subscribe":
            self._subscribed(request, data)
        request.future.set_result(data)

    def _subscribed(self, request: _Request, data: dict[str, Any]) -> None:
        asked = msgspec.json.decode(request.payload)
        resync = self.streams.acknowledged(data, asked.get("since") or {}, asked.get("channels"))
        run = data.get("run")
        if isinstance(run, dict) and request.control_events == self._control_events:
            self._note_run(run)
        if resync:
            # The server restarted without these channels' history: fetch what it has now.
            log.info("tdevlab client: %s restarted under a new epoch; replaying", resync)
            epochs = data.get("epochs") or {}
            groups: dict[str, list[str]] = {}
            for channel in resync:
                filters = self._subscriptions.get(channel, {})
                groups.setdefault(msgspec.json.encode(filters).decode(), []).append(channel)
            for key, channels in groups.items():
                message: dict[str, Any] = {
                    "type": "subscribe",
                    "channels": channels,
                    "since": dict.fromkeys(channels, 0),
                    "epochs": {c: epochs[c] for c in channels if c in epochs},
                }
                filters = msgspec.json.decode(key)
                if filters:
                    message["filters"] = filters
                self._track(self._submit(message), retry=message)

    def _note_run(self, data: dict[str, Any]) -> None:
        state = data.get("state")
        if isinstance(state, str):
            self.run_state = state
        generation = data.get("generation")
        if isinstance(generation, int) and generation >= 0:
            self.generation = generation
        parameters = data.get("parameters")
        if isinstance(parameters, dict):
            self.parameters = parameters

    def _event(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        data = message.get("data")
        if kind == "evolution_update" and isinstance(data, dict):
            generation = data.get("generation")
            if isinstance(generation, int):
                self.generation = generation
        elif kind == "control_update" and isinstance(data, dict):
            self._control_events += 1
            self._note_run(data)
        self.frames.ingest(message)
        if isinstance(kind, str):
            self._emit(kind, message)
        self._emit("message", message)

    def _emit(self, name: str, payload: Any) -> None:
        for callback in tuple(self._callbacks.get(name, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("tdevlab client: a %r callback raised", name)
        queues = self._iterators.get(name)
        if queues and isinstance(payload, dict):
            for queue in queues:
                if queue.qsize() >= self.event_queue_size:
                    queue.get_nowait()
                    self.events_dropped += 1
                queue.put_nowait(payload)


_END: dict[str, Any] = {"type": "__end__"}
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
        "get_agent",
        "get_agent_code",
        "upload_agent_code",
        "ping",
        "wait_for",
        "close",
    }
)


def check_callable(method: str) -> None:
    """Check a method name for :meth:`Client.call`.

    Raises:
        InvalidParameters: for a name that is not a request method.
    """
    if method not in _CALLABLE:
        raise InvalidParameters(f"cannot call {method!r}; methods are {sorted(_CALLABLE)}")


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def _close_text(ws: ClientConnection) -> str:
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code} {rcvd.reason!r}".strip()


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
