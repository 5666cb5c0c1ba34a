"""The embeddable WebSocket server for ``/v1/evolution`` (websockets, asyncio).

A thin driver: it reads frames, hands them to the connection's :class:`Session` (all
validation, auth and subscription logic lives in ``tdevlab.protocol``), sends what comes
back, runs engine requests, and publishes the engine's events to the channels. It applies
the session's limits where only the driver can: a refused handshake (too many
unauthenticated connections), and the WebSocket parser's frame limit, small until the
connection authenticates, so an oversized frame is refused from its header.

Usage::

    async with EvolutionServer(Engine(store="runs.db"), port=0, secret=SECRET) as server:
        print(server.url)            # ws://127.0.0.1:PORT/v1/evolution
        await server.wait_closed()

    server = EvolutionServer(port=0); url = server.start(); ...; server.stop()   # a thread
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import secrets
import ssl as ssl_module
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tdevlab.engine.control import ControlEvent, EngineState
from tdevlab.engine.engine import Engine
from tdevlab.engine.events import AgentUpdate, Alert, EvolutionUpdate, LogEntry
from tdevlab.engine.loops import EngineEvent
from tdevlab.exceptions import AuthFailed, InvalidParameters
from tdevlab.protocol.auth import Claims, TokenVerifier
from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.limits import Limits, UserRegistry
from tdevlab.protocol.session import GOING_AWAY, Close, Dispatch, Outcome, Replay, Send, Session
from tdevlab.server.hub import Connection, Hub, PastEvent
from tdevlab.server.metrics import RequestStats
from tdevlab.server.service import Service
from tdevlab.server.transport import DroppableConnection, peer_address, set_frame_limit

__all__ = ["PATH", "EvolutionServer"]

PATH = "/v1/evolution"
log = logging.getLogger("tdevlab.server")


class EvolutionServer:
    """Serves one engine at ``/v1/evolution``.

    Args:
        engine: The engine (default: ``Engine()`` on AgentDesign, in memory).
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` once started).
        secret: HS256 secret (>= 32 bytes); default ``$TDEVLAB_SECRET`` or a random one.
        verifier: A :class:`TokenVerifier` (for RS256), instead of ``secret``; give it
            ``signing_key`` for :meth:`token` to work.
        ssl: An ``ssl.SSLContext`` to serve ``wss://``.
        auth_timeout: Seconds a connection may take to authenticate.
        metrics_interval: Seconds between ``metrics`` events (0 disables them).
        compression: ``"deflate"`` to enable permessage-deflate (off by default: it
            triples the CPU cost of each delivery).
        max_size: Largest accepted frame of an authenticated connection, in bytes (larger
            ones close with 1009); default ``limits.max_frame_bytes``. Before it
            authenticates a connection is held to ``limits.pre_auth_frame_bytes``.
        ping_interval: Seconds between protocol keepalive pings (``None`` disables them).
        ping_timeout: Seconds to wait for a keepalive ping's pong before closing the
            connection (1011); ``None`` never gives up.
        autostart: Start evolving as soon as the server is up.
        limits: Rate limits and budgets (spec: "Rate Limiting"), see :class:`Limits`.
        history: Events kept per channel for replay to clients that resubscribe with
            ``since`` (with a SQLite store the evolution channel replays from the store).
        generation_interval: The least seconds between the starts of two generations (0: as
            fast as the engine goes); keeps a fast problem watchable live.

    Raises:
        InvalidParameters: for a short secret or conflicting options.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        secret: str | None = None,
        verifier: TokenVerifier | None = None,
        ssl: ssl_module.SSLContext | None = None,
        auth_timeout: float = 10.0,
        metrics_interval: float = 1.0,
        compression: str | None = None,
        max_size: int | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        autostart: bool = False,
        limits: Limits | None = None,
        history: int = 1000,
        generation_interval: float = 0.0,
    ) -> None:
        if secret is not None and verifier is not None:
            raise InvalidParameters("give either secret or verifier, not both")
        self.engine = engine if engine is not None else Engine()
        self.host, self._requested_port = host, port
        if verifier is None:
            self.secret: str | None = (
                secret or os.environ.get("TDEVLAB_SECRET") or secrets.token_urlsafe(32)
            )
            self.verifier = TokenVerifier(self.secret)
        else:
            self.secret, self.verifier = None, verifier
        self.ssl = ssl
        self.auth_timeout = auth_timeout
        self.metrics_interval = metrics_interval
        if not (isinstance(generation_interval, int | float) and 0 <= generation_interval < 1e9):
            raise InvalidParameters(
                f"generation_interval={generation_interval!r} must be a number of seconds >= 0"
            )
        self.generation_interval = float(generation_interval)
        self.compression = compression
        self.limits = limits or Limits()
        if max_size:
            self.limits = dataclasses.replace(self.limits, max_frame_bytes=max_size)
        self.registry = UserRegistry(self.limits)
        self.max_size = self.limits.max_frame_bytes
        self.ping_interval = ping_interval
        # Configurable beside the interval: with only the interval, a peer that stopped
        # answering was still held for websockets' fixed 20 s timeout.
        self.ping_timeout = ping_timeout
        self.autostart = autostart
        self.encoder = Encoder()
        self.hub = Hub(self.encoder, time.time, history=history)
        self.stats = RequestStats()
        self.service = Service(self.engine, self.encoder, self.generation_interval)
        self.port: int | None = None
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._header_claims: weakref.WeakKeyDictionary[ServerConnection, Claims] = (
            weakref.WeakKeyDictionary()
        )
        self._unsubscribe: Callable[[], None] | None = None
        self._closed: asyncio.Event | None = None  # created on the server's loop
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- addresses and tokens --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint, ``ws[s]://HOST:PORT/v1/evolution`` (the real port once started)."""
        scheme = "wss" if self.ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port or self._requested_port}{PATH}"

    def token(self, user: str = "operator", role: str = "operator", ttl: float = 3600.0) -> str:
        """Issue a token this server accepts (see :meth:`TokenVerifier.issue`).

        Raises:
            InvalidParameters: if the verifier cannot sign (RS256 without its
                ``signing_key``), for an unknown role, or a user name that is too long.
        """
        return self.verifier.issue(user, role, now=time.time(), ttl=ttl)

    # -- lifecycle in a running loop -------------------------------------------------------

    async def __aenter__(self) -> EvolutionServer:
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._unsubscribe = self.engine.subscribe(self._on_engine_event)
        self.hub.seq["evolution"] = self.engine.recorded_generations
        if self.engine.store.durable:
            # Name the stored run from the start: the evolution epoch must not change later.
            await asyncio.to_thread(self.engine.ensure_run)
        self._evolution_epoch()
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            create_connection=DroppableConnection,
            compression=self.compression,
            # Every connection starts held to the pre-auth frame size; the session's
            # frame_limit raises it once it authenticates.
            max_size=min(self.limits.pre_auth_frame_bytes, self.max_size),
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            ssl=self.ssl,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        if self.metrics_interval > 0:
            self._spawn(self._metrics_loop())
        if self.autostart:
            await self.service.start()
        log.info("serving %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_closed(self) -> None:
        """Wait until :meth:`aclose` has run."""
        assert self._closed is not None, "the server is not started"
        await self._closed.wait()

    async def aclose(self) -> None:
        """Shut down gracefully: stop the run, close clients with 1001, flush the store."""
        if self._server is None:
            return
        await self.service.shutdown()
        connections = list(self.hub.connections)
        for connection in connections:
            connection.close_after_pending(Close(GOING_AWAY, "server shutting down"))
        if connections:
            await asyncio.wait(
                [asyncio.ensure_future(c.ws.wait_closed()) for c in connections], timeout=5
            )
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.engine.close()
        self._server = None
        assert self._closed is not None
        self._closed.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- lifecycle in a background thread --------------------------------------------------

    def start(self, timeout: float = 30.0) -> str:
        """Run the server in a background thread (its own loop); return the URL when ready.

        Raises:
            OSError: if the port cannot be bound (and any other start-up error).
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            async def main() -> None:
                self._thread_stop = asyncio.Event()
                try:
                    async with self:
                        ready.set()
                        await self._thread_stop.wait()
                except BaseException as exc:  # reported to start()
                    failure.append(exc)
                    ready.set()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="tdevlab-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"server did not start within {timeout} s")
        if failure:
            raise failure[0]
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """Stop a server started with :meth:`start` (graceful, as :meth:`aclose`)."""
        if self._thread is None or self._loop is None or self._thread_stop is None:
            return
        self._loop.call_soon_threadsafe(self._thread_stop.set)
        self._thread.join(timeout)
        self._thread = None

    # -- handshake -------------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.path.split("?", 1)[0] != PATH:
            return connection.respond(404, f"Not Found: the API is at {PATH}\n")
        header = request.headers.get("Authorization")
        if header is None:
            # Browsers authenticate with the first message: a place among the
            # unauthenticated connections is needed (the session takes it).
            refused = self.registry.unauthenticated.refusal(peer_address(connection), time.time())
            if refused is None:
                return None
            return await self._refuse(connection, refused.status, refused.reason)
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthFailed("the Authorization header must be 'Bearer <jwt>'")
            claims = self.verifier.verify(token.strip(), time.time())
        except AuthFailed as exc:
            self.stats.rejected += 1
            response = connection.respond(401, f"authentication failed: {exc.message}\n")
            response.headers = Headers(response.headers)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        if self.registry.connections.get(claims.user, 0) >= self.limits.connections_per_user:
            return await self._refuse(
                connection,
                429,
                f"too many connections for user {claims.user!r} "
                f"(limit {self.limits.connections_per_user})",
            )
        self._header_claims[connection] = claims
        # Authenticated from the start: no pre-auth frame limit (set before any frame).
        set_frame_limit(connection, self.limits.max_frame_bytes)
        return None

    async def _refuse(self, connection: ServerConnection, status: int, reason: str) -> Response:
        """Refuse a handshake over a limit, after about ``limits.refusal_delay`` (so a client
        that retries at once does not spend the server's CPU on handshakes); spread over
        0.5-1.5 times it, so clients refused together do not all come back together."""
        self.stats.rejected += 1
        if self.limits.refusal_delay > 0:
            await asyncio.sleep(self.limits.refusal_delay * random.uniform(0.5, 1.5))
        response = connection.respond(status, reason + "\n")
        response.headers = Headers(response.headers)
        response.headers["Retry-After"] = str(max(round(self.limits.refusal_delay), 1))
        return response

    # -- connections -----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(
            self.verifier,
            self.encoder,
            now=time.time(),
            auth_timeout=self.auth_timeout,
            header_claims=self._header_claims.pop(ws, None),
            registry=self.registry,
            address=peer_address(ws),
        )
        frame_limit = session.frame_limit
        connection = Connection(
            ws,
            session,
            budget=self.limits.outbound_budget_bytes,
            hold_budget=self.limits.replay_hold_bytes,
        )
        self.hub.add(connection)
        writer = asyncio.ensure_future(connection.writer())
        watchdog = asyncio.ensure_future(self._watch(connection))
        try:
            await self._carry_out(connection, session.start)
            async for frame in ws:
                started = time.perf_counter()
                if isinstance(frame, str):
                    outcomes = session.receive_text(frame, time.time())
                else:
                    outcomes = session.receive_binary(frame, time.time())
                error = await self._carry_out(connection, outcomes)
                self.stats.record(time.perf_counter() - started, error)
                if session.frame_limit != frame_limit:  # it authenticated
                    frame_limit = session.frame_limit
                    set_frame_limit(ws, frame_limit)
                if writer.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            sent = ws.protocol.close_sent
            session.close(sent.code if sent is not None else None)
            if session.rejected:
                self.stats.rejected += 1
            self.hub.connections.discard(connection)
            self.stats.dropped += connection.dropped
            watchdog.cancel()
            if not writer.done():
                # Let queued replies (an error before a close) go out, within bounds.
                connection.finish()
                try:
                    await asyncio.wait_for(writer, timeout=5)
                except (TimeoutError, asyncio.CancelledError):
                    writer.cancel()

    async def _carry_out(self, connection: Connection, outcomes: list[Outcome]) -> bool:
        """Send, close or dispatch; return whether an error reply was among them."""
        error = False
        for outcome in outcomes:
            if isinstance(outcome, Send):
                error = error or outcome.error
                connection.enqueue(outcome.data, outcome.binary, urgent=outcome.urgent)
            elif isinstance(outcome, Close):
                self._close(connection, outcome)
            elif isinstance(outcome, Replay):
                self._replay(connection, outcome)
            elif isinstance(outcome, Dispatch):
                error = not await self.service.dispatch(connection.enqueue, outcome) or error
        return error

    def _close(self, connection: Connection, close: Close) -> None:
        """Close after what is queued; a ``drop`` close fails the connection at once (after
        the frames already queued) and reads nothing more from it."""
        ws = connection.ws
        if close.drop and connection.raw and isinstance(ws, DroppableConnection):
            connection.flush()  # the error replies queued before it go first
            ws.reject(close.code, close.reason)
            return
        connection.close_after_pending(close)
        if close.drop and isinstance(ws, DroppableConnection):
            ws.drop()

    def _replay(self, connection: Connection, replay: Replay) -> None:
        """Acknowledge a subscribe, then queue the events missed after ``since``, in order.

        Runs without awaiting, so no live event can slip in between (the loop is ours).
        """
        recovered: dict[str, bool] = {}
        replays: list[bytes] = []
        for channel, since in replay.since.items():
            filters = connection.session.subscriptions[channel]
            if replay.epochs.get(channel, self.hub.epochs[channel]) != self.hub.epochs[channel]:
                recovered[channel] = False  # the numbers belong to another stream
                continue
            past, first = self.hub.missed(channel, since)
            complete = first <= since + 1
            if not complete and channel == "evolution" and self.engine.store.durable:
                past = self._stored_evolution(since, first) + past
                complete = True
            recovered[channel] = complete
            replays.extend(p.payload for p in past if filters.accepts(p.generation, p.fitness))
        data = {**replay.ack, "epochs": dict(self.hub.epochs), "seq": dict(self.hub.seq)}
        # Where the run is, so a client that just (re)connected knows which controls apply.
        data["run"] = {
            "state": self.engine.state.value,
            "generation": self.engine.generation,
            "parameters": self.engine.params.to_dict(),
        }
        if replay.since:
            data["recovered"] = recovered
        message = self.encoder.message("ack", data, now=time.time(), reply_to=replay.reply_to)
        ack = self.encoder.encode(message)
        if not replays:
            connection.enqueue(ack)
            return
        # Live events published from now on wait behind the replay (Connection.held); a
        # replay already streaming goes first.
        coroutine = connection.start_replay([ack, *replays])
        if coroutine is not None:
            self._spawn(coroutine)

    def _stored_evolution(self, since: int, first_in_memory: int) -> list[PastEvent]:
        """Evolution events ``since+1 .. first_in_memory-1`` rebuilt from the store."""
        engine = self.engine
        assert engine.run_id is not None
        rows = engine.store.recorded_generations(
            engine.run_id, after=since, limit=max(first_in_memory - since - 1, 0)
        )
        out = []
        for seq, row in enumerate(rows, since + 1):
            # Rebuilt into the update it was, so a replayed event carries the data it had
            # live: a measure the strategy does not report is left out, not sent as null
            # (a client may refuse a null where it expects a number).
            update = EvolutionUpdate(**row, run_id=engine.run_id)
            message = self.encoder.message(
                "evolution_update", _evolution_data(update), now=time.time(),
                channel="evolution", seq=seq,
            )  # fmt: skip
            out.append(PastEvent(seq, self.encoder.encode(message), update.generation,
                                 update.best_fitness))  # fmt: skip
        return out

    async def _watch(self, connection: Connection) -> None:
        """Close a connection at its auth deadline or when its token expires."""
        session = connection.session
        while True:
            # Re-checks at least twice a second: an auth message moves the deadline.
            await asyncio.sleep(min(max(session.deadline - time.time(), 0.0) + 0.001, 0.5))
            for outcome in session.tick(time.time()):
                if isinstance(outcome, Close):
                    self._close(connection, outcome)
                    return
            if session.state.value == "closed":
                return

    # -- engine events ---------------------------------------------------------------------

    def _on_engine_event(self, event: EngineEvent) -> None:
        # Engine listeners run on the engine's thread: hand the event to the loop, in order.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The evolution stream is numbered by the store's generation rows, read here on
            # the engine's thread, right after this generation was recorded.
            seq = self.engine.recorded_generations if isinstance(event, EvolutionUpdate) else None
            loop.call_soon_threadsafe(self._publish_engine_event, event, seq)

    def _evolution_epoch(self) -> None:
        """With a durable store the evolution stream's numbering outlives restarts: its
        epoch names the stored run instead of this server."""
        engine = self.engine
        if engine.run_id is not None and engine.store.durable:
            info = engine.store.run_info(engine.run_id)
            self.hub.epochs["evolution"] = f"run-{info.run_id}-{info.created_at:.6f}"

    def _publish_engine_event(self, event: EngineEvent, seq: int | None = None) -> None:
        hub = self.hub
        if isinstance(event, EvolutionUpdate):
            hub.publish(
                "evolution", "evolution_update", _evolution_data(event),
                generation=event.generation, fitness=event.best_fitness, seq=seq,
            )  # fmt: skip
        elif isinstance(event, AgentUpdate):
            hub.publish(
                "agents", "agent_update", event.to_dict(),
                generation=event.generation, fitness=event.fitness,
            )  # fmt: skip
        elif isinstance(event, Alert):
            data = event.to_dict()
            severity = data.pop("severity")
            hub.publish("alerts", "alert", data, severity=severity)
        elif isinstance(event, LogEntry):
            data = event.to_dict()
            level = data.pop("level")
            hub.publish("logs", "log", data, level=level)
        elif isinstance(event, ControlEvent):
            hub.publish("control", "control_update", event.to_dict())
            if event.error is not None:
                # spec: EVOLUTION_FAILED reaches the evolution channel's subscribers.
                log.error("evolution failed: %s", event.error.get("message"))
                hub.publish_error("evolution", event.error)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval)
            population = self.engine.population
            data = self.stats.sample(
                active_agents=0 if population is None else len(population),
                connections=len(self.hub.connections),
            )
            self.hub.publish("metrics", "metrics", data)

    @property
    def state(self) -> EngineState:
        """The engine's control state."""
        return self.engine.state


def _evolution_data(update: EvolutionUpdate) -> dict[str, Any]:
    """An ``evolution_update``'s data, the same live and replayed from the store (the
    envelope carries the time)."""
    data = update.to_dict()
    data.pop("timestamp")
    return data
