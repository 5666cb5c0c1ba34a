"""The client's I/O: one resilient connection to ``/v1/evolution`` on the running loop.

:class:`Connection` is the asyncio driver under :class:`~tdevlab.client.api.Client`. It

* authenticates with the ``Authorization`` header (default) or an ``auth`` message;
* keeps the connection: after a drop or a server restart it reconnects with exponential
  backoff and jitter, authenticates again, resubscribes with the last sequence number it
  saw per channel (the server replays what was missed) and flushes the requests queued
  while it was down; a refused token is not retried (decided on HTTP 401 and on error
  and close codes, never on the words of a close reason);
* matches replies to requests by id and fails a request with the exception of its
  error's code;
* feeds every event, exactly once and in order, to the frames, the callbacks and the
  ``events()`` iterators.

It only moves frames and keeps time. What to send, resend or fail lives in
:mod:`tdevlab.client.requests`; stream positions, reconnect delays and the auth verdict in
:mod:`tdevlab.client.streams`; neither does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from ssl import SSLContext
from typing import TYPE_CHECKING, Self, TypeAlias

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.protocol import State as WsState

from tdevlab.client.events import Emitter
from tdevlab.client.requests import (
    JsonObject,
    Pacer,
    Request,
    RequestTable,
    resubscribe_messages,
)
from tdevlab.client.streams import (
    AgentCode,
    Backoff,
    RunView,
    StreamTracker,
    auth_refused,
    error_from_message,
    parse_agent_code,
)
from tdevlab.client.transport import dial, keepalive
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

__all__ = ["Connection", "ConnectionState"]

log = logging.getLogger("tdevlab.client")

#: What a request's future holds: an ack's (or reply's) data, or an agent's code.
Reply: TypeAlias = JsonObject | AgentCode
_Request: TypeAlias = Request["asyncio.Future[Reply]"]
_DECODE = msgspec.json.Decoder().decode
#: Replies that are news for the frames too: a requested agent's state, a member set.
_NEWS = frozenset({"agent_update", "front", "archive"})


class ConnectionState(enum.StrEnum):
    """Where the connection is. ``str`` values, so widgets and logs can show them."""

    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"  # closed by the user: final
    FAILED = "failed"  # authentication refused or the server not back after the retries

    def __str__(self) -> str:
        return self.value


_FINAL = (ConnectionState.CLOSED, ConnectionState.FAILED)


class Connection:
    """The connection under a :class:`~tdevlab.client.api.Client` (arguments: see there)."""

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
        max_rows: int | Mapping[str, int | None] | None = 100_000,
        event_queue_size: int = 10_000,
        ssl: SSLContext | None = None,
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
        self.ssl = ssl
        self._rng = random.Random(seed)

        #: Every event received, as pandas DataFrames (see :class:`Frames`).
        self.frames: Frames = Frames(max_rows=max_rows)
        #: The connection's state (read from any thread).
        self.connection_state = ConnectionState.CLOSED
        #: The run as last reported by the server.
        self.run = RunView()
        #: Why the client gave up, when :attr:`connection_state` is ``failed``.
        self.error: TdevlabError | None = None
        #: How many times the connection was re-established.
        self.reconnects = 0

        self.streams = StreamTracker()
        self._subscriptions: dict[str, dict[str, float]] = {}  # channel -> filters
        self._requests: RequestTable[asyncio.Future[Reply]] = RequestTable(queue_size)
        self._emitter = Emitter(event_queue_size)
        self._ws: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._opened: asyncio.Event | None = None
        self._closing = False
        self._draining = False
        self._holding = False  # queue sends behind the outbox (while "open" is announced)
        self._frames_received = 0  # any frame is a sign of life (see keepalive)
        self._last_error: TdevlabError | None = None  # on the current connection

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

    async def connect(self) -> Self:
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
        _fail(self._requests.clear(), ConnectionClosed("the client was closed"))
        self._set_state(ConnectionState.CLOSED)

    async def ping(self) -> float:
        """Round trip to the server; returns the seconds it took."""
        started = time.perf_counter()
        await self._request({"type": "ping", "timestamp": _iso_now()})
        return time.perf_counter() - started

    # -- connecting ------------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.connection_state:
            return
        self.connection_state = state
        if self._opened is not None:
            if state is ConnectionState.OPEN:
                self._opened.set()
            else:
                self._opened.clear()
        self._emitter.emit("state", state.value)
        if state in _FINAL:
            self._emitter.end()

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

    async def _open(self) -> ClientConnection:
        """Connect and authenticate (:func:`~tdevlab.client.transport.dial`).

        Raises:
            AuthFailed, RateLimited, ConnectionClosed.
        """
        try:
            token = self._token() if callable(self._token) else self._token
        except Exception as exc:
            raise ConnectionClosed(f"the token function raised {exc!r}") from exc
        ws = await dial(
            self.url, token, auth=self.auth, open_timeout=self.request_timeout, ssl=self.ssl
        )
        self._ws = ws
        self._requests.opened()
        self._last_error = None
        return ws

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
        if self.reconnects:  # what was missed may not all be replayed: fetch the sets again
            self.frames.member_sets.refresh()
            self._fetch_member_sets()
        self._requests.requeue_lost()
        self._flush_outbox()
        pinger = None
        if self.ping_interval:
            pinger = self.loop.create_task(
                keepalive(
                    ws,
                    self.ping,
                    lambda: self._frames_received,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout,
                )
            )
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
        error = self._last_error
        if (
            auth_refused(rcvd.code if rcvd else None, error.code if error else None)
            and not callable(self._token)  # a token function may give a better one
        ):
            details = error.details if error else {}
            self._give_up(AuthFailed(f"the server refused the token: {error}", details=details))
            self._closing = True
            return
        log.info("tdevlab client: connection lost (%s); reconnecting", _close_text(ws))
        _fail(
            self._requests.dropped(),
            ConnectionClosed(
                "the connection dropped before the reply; the request may have been applied"
            ),
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

    def _give_up(self, error: TdevlabError) -> None:
        self.error = error
        log.warning("tdevlab client: %s", error)
        _fail(self._requests.clear(), error)
        self._set_state(ConnectionState.FAILED)

    def _resubscribe(self) -> None:
        """Subscribe again to every channel, from the last event seen (after a reconnect)."""
        if not self.reconnects or not self._subscriptions:
            return
        channels = list(self._subscriptions)
        since, epochs = self.streams.since(channels), self.streams.epochs(channels)
        for message in resubscribe_messages(channels, self._subscriptions, since, epochs):
            self._track(self._submit(message))

    def _track(
        self, request: _Request, retry: JsonObject | None = None, what: str = "resubscribe"
    ) -> None:
        """Wait for a request nobody awaits (a resubscribe); log its failure."""

        def done(task: asyncio.Task[Reply]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.warning("tdevlab client: %s failed: %s", what, task.exception())
                if retry is not None and not isinstance(task.exception(), ConnectionClosed):
                    self.loop.call_later(1.0, self._retry, retry)

        self.loop.create_task(self._reply_to(request)).add_done_callback(done)

    def _retry(self, message: JsonObject) -> None:
        if self.connection_state is ConnectionState.OPEN and set(message["channels"]) & (
            self.streams.resyncing
        ):
            self._track(self._submit(message), retry=message)

    # -- sending ---------------------------------------------------------------------------

    async def _request(self, message: JsonObject, *, code: str | None = None) -> JsonObject:
        """Send a request and wait for its reply's data."""
        return await self._reply_data(self._submit(message, code=code))

    async def _reply_data(self, request: _Request) -> JsonObject:
        reply = await self._reply_to(request)
        if not isinstance(reply, dict):
            raise TdevlabError(f"the server answered {request.kind!r} with agent code")
        return reply

    def _submit(self, message: JsonObject, *, code: str | None = None) -> _Request:
        """Register a request and write it now (or queue it while disconnected), in call order.

        While the outbox drains, or ``open`` is being announced, it queues behind the
        outbox. Otherwise an open connection takes it at once: the resubscribes of a
        reconnect go out this way, ahead of what was queued while down.

        Raises:
            ConnectionClosed: the client is closed, or the queue is full.
        """
        if self.connection_state in _FINAL:
            raise self.error or ConnectionClosed("the client is closed")
        ws = self._ws
        write = (
            self.connection_state is ConnectionState.OPEN
            and ws is not None
            and not (self._draining or self._holding)
        )
        request = self._requests.submit(
            message,
            self.loop.create_future(),
            write=write,
            code=code,
            control_events=self.run.control_events,
        )
        if write and ws is not None:
            self.loop.create_task(self._write(ws, request.data), name="tdevlab client send")
        return request

    async def _reply_to(self, request: _Request) -> Reply:
        try:
            return await asyncio.wait_for(asyncio.shield(request.waiter), self.request_timeout)
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no reply to {request.kind!r} within {self.request_timeout} s"
            ) from exc
        finally:
            if not request.waiter.done():
                request.waiter.cancel()
            self._requests.abandon(request)  # a queued one that timed out is never sent

    async def _write(self, ws: ClientConnection, data: str | bytes) -> None:
        with contextlib.suppress(WsConnectionClosed):
            await ws.send(data)  # a failure here surfaces as the reader's close

    def _flush_outbox(self) -> None:
        """Send what was queued while disconnected, in order, within the server's rate."""
        ws = self._ws
        if self._requests.queued and ws is not None and not self._draining:
            self._draining = True
            self.loop.create_task(self._drain(ws))

    async def _drain(self, ws: ClientConnection) -> None:
        """Send the outbox on ``ws``, paced (:class:`Pacer`); what it could not send stays.

        The pacing spans seconds for a long outbox, and a dropped ``ws`` stays
        ``self._ws`` until the next connection opens: a request is taken from the outbox
        only while ``ws`` is open, never into a dead connection (it would be lost, and its
        caller would wait for its timeout).
        """
        pacer = Pacer()
        loop = self.loop
        try:
            while self._requests.queued and self._ws is ws and ws.state is WsState.OPEN:
                wait = pacer.delay(loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                request = self._requests.next_queued()
                if request is None:
                    return
                pacer.sent(loop.time())
                try:
                    await ws.send(request.data)
                except WsConnectionClosed:
                    return
        finally:
            self._draining = False

    # -- receiving -------------------------------------------------------------------------

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
        if kind == "error":
            self._last_error = error_from_message(message)
        if reply_to is not None:
            self._reply(reply_to, message)
            if kind not in _NEWS:
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
        request = self._requests.resolve(reply_to) if reply_to is not None else None
        if request is not None and not request.waiter.done():
            request.waiter.set_result(code)
        self._emitter.emit("agent_code", code)

    def _reply(self, reply_to: object, message: JsonObject) -> None:
        request = self._requests.resolve(reply_to)
        if request is None or request.waiter.done():
            return
        if message.get("type") == "error":
            request.waiter.set_exception(error_from_message(message))
            return
        data = message.get("data")
        data = data if isinstance(data, dict) else {}
        if message.get("type") == "ack" and data.get("request") == "subscribe":
            self._subscribed(request, data)
        request.waiter.set_result(data)

    def _subscribed(self, request: _Request, data: JsonObject) -> None:
        asked = request.message
        resync = self.streams.acknowledged(data, asked.get("since") or {}, asked.get("channels"))
        run = data.get("run")
        if isinstance(run, dict):
            self.run.acknowledged(run, request.control_events)
        if resync:
            # The server restarted without these channels' history: fetch what it has now.
            log.info("tdevlab client: %s restarted under a new epoch; replaying", resync)
            epochs = data.get("epochs") or {}
            for message in resubscribe_messages(resync, self._subscriptions, {}, epochs):
                self._track(self._submit(message), retry=message)

    def _event(self, message: JsonObject) -> None:
        kind = message.get("type")
        self.run.event(kind, message.get("data"))
        self.frames.ingest(message)
        self._fetch_member_sets()
        if isinstance(kind, str):
            self._emitter.emit(kind, message)
        self._emitter.emit("message", message)

    def _fetch_member_sets(self) -> None:
        """Ask for the front or archive when the frames need it whole (see ``members``)."""
        for kind in self.frames.member_sets.wanted():
            with contextlib.suppress(ConnectionClosed):  # the outbox is full: no matter
                self._track(self._submit({"type": f"get_{kind}"}), what=f"get_{kind}")


def _fail(requests: Iterable[_Request], error: TdevlabError) -> None:
    for request in requests:
        if not request.waiter.done():
            request.waiter.set_exception(error)


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def _close_text(ws: ClientConnection) -> str:
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code} {rcvd.reason!r}".strip()
