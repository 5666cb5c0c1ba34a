"""The client's socket-level steps: dial and authenticate, and watch that the server lives.

:func:`dial` opens one authenticated WebSocket connection and turns every way that can
fail into the error the client acts on; :func:`keepalive` pings over it and drops it when
the server falls silent. :class:`~tdevlab.client.connection.Connection` strings them
together with reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from ssl import SSLContext
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tdevlab.client.streams import error_from_message
from tdevlab.exceptions import AuthFailed, ConnectionClosed, RateLimited, RequestTimeout

__all__ = ["dial", "keepalive"]

log = logging.getLogger("tdevlab.client")

_DECODE = msgspec.json.Decoder().decode
#: Largest frame accepted: a replayed burst of events or an agent's code.
MAX_FRAME_BYTES = 16 * 2**20


async def dial(
    url: str, token: str, *, auth: str, open_timeout: float, ssl: SSLContext | None = None
) -> ClientConnection:
    """Open a connection and authenticate on it.

    Args:
        url: ``ws://`` or ``wss://`` URL.
        token: The JWT.
        auth: ``"header"`` (``Authorization: Bearer``) or ``"message"`` (an ``auth``
            message, then its ``ack``).
        open_timeout: Seconds for the handshake, and for the ``auth`` reply.
        ssl: A context for ``wss://`` with a private CA.

    Returns:
        The open, authenticated connection.

    Raises:
        AuthFailed: the token was refused: HTTP 401, ``AUTH_FAILED``, or the connection
            closed before the ``auth`` reply.
        RateLimited: too many connections for the user (HTTP 429 or ``RATE_LIMITED``).
        ConnectionClosed: the server could not be reached, refused the handshake
            otherwise, or did not answer the ``auth`` message in time.
    """
    headers = {"Authorization": f"Bearer {token}"} if auth == "header" else None
    # websockets refuses ssl=None for wss:// and any ssl for ws://; True: a default context.
    tls = ssl if ssl is not None else (True if url.startswith("wss://") else None)
    try:
        ws = await ws_connect(
            url,
            additional_headers=headers,
            compression=None,  # the server sends small JSON; deflate costs more than it saves
            open_timeout=open_timeout,
            max_size=MAX_FRAME_BYTES,
            ssl=tls,
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
        raise ConnectionClosed(f"cannot connect to {url}: {exc}") from exc
    try:
        if auth == "message":
            await _authenticate(ws, token, open_timeout)
    except BaseException:
        await ws.close()
        raise
    return ws


async def _authenticate(ws: ClientConnection, token: str, open_timeout: float) -> None:
    """The ``auth`` message, then its ``ack`` (or the refusal)."""
    await ws.send(msgspec.json.encode({"type": "auth", "token": token, "id": "auth"}).decode())
    try:
        async with asyncio.timeout(open_timeout):
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


async def keepalive(
    ws: ClientConnection,
    ping: Callable[[], Coroutine[Any, Any, float]],
    frames_received: Callable[[], int],
    *,
    ping_interval: float,
    ping_timeout: float,
) -> None:
    """Application-level pings; a server from which nothing arrives is treated as gone.

    Any frame counts as a sign of life, not only the pong: the server sends a replay
    (after a resubscribe with ``since``) before anything queued later, its pong included,
    and a long replay over a slow link outlasts ``ping_timeout``. The connection is
    dropped (its transport aborted) when a whole ``ping_timeout`` passes, after a ping,
    without the pong or any other frame (detected within two ``ping_timeout``). Returns
    then, or when a ping fails otherwise (the client closed or gave up).

    Args:
        ws: The connection to watch.
        ping: Sends a ping and waits for its pong (raising as a request does).
        frames_received: Counts the frames received on ``ws`` so far.
        ping_interval: Seconds between pings.
        ping_timeout: Seconds of silence after a ping that mean the server is gone.
    """
    while True:
        await asyncio.sleep(ping_interval)
        alive = await _pong_or_traffic(ping, frames_received, ping_timeout)
        if alive is None:
            return
        if not alive:
            log.warning(
                "tdevlab client: nothing received for %s s after a ping; reconnecting",
                ping_timeout,
            )
            transport = ws.transport
            if transport is not None:
                transport.abort()  # a silent peer may never answer a closing handshake
            return


async def _pong_or_traffic(
    ping: Callable[[], Coroutine[Any, Any, float]],
    frames_received: Callable[[], int],
    ping_timeout: float,
) -> bool | None:
    """Ping; whether the server is alive: the pong came, or frames kept arriving.

    ``None`` when the ping could not be sent or failed otherwise (closed, failed).
    """
    task = asyncio.get_running_loop().create_task(ping(), name="tdevlab client ping")
    sent = frames_received()
    try:
        while True:
            received = frames_received()
            done, _ = await asyncio.wait({task}, timeout=ping_timeout)
            if done:
                break
            if frames_received() == received:
                return False
    finally:
        task.cancel()
    error = task.exception()
    if isinstance(error, RequestTimeout):
        # No pong within request_timeout, yet frames arrived meanwhile: alive.
        return frames_received() != sent
    if error is None or isinstance(error, RateLimited):
        return True  # the pong, or a refusal (an answer all the same)
    return None  # the client closed or failed: nothing to watch
