"""Channels and connections: each event encoded once, queued to its subscribers, never blocking.

A :class:`Connection` owns an outbound queue drained by its own writer task, so a
publisher (the engine's events, the metrics sampler) only appends bytes and returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.messages import CHANNELS
from tdevlab.protocol.session import Close, Session

__all__ = ["Connection", "Hub"]


class _Past(NamedTuple):
    """A published event kept for replay."""

    seq: int
    payload: bytes
    generation: int | None
    fitness: float | None


log = logging.getLogger("tdevlab.server")


@dataclass(eq=False)
class Connection:
    """A client connection: its socket, protocol session and outbound queue."""

    ws: ServerConnection
    session: Session
    budget: int = 1024 * 1024
    queue: asyncio.Queue[tuple[bytes, bool] | Close | None] = field(default_factory=asyncio.Queue)
    sent: int = 0
    queued_bytes: int = 0
    dropped: int = 0
    aborted: bool = False

    def enqueue(self, data: bytes, binary: bool = False) -> bool:
        """Queue a frame (text unless ``binary``); False if the client is cut off instead.

        A client that stops reading fills its socket buffer, then this queue. Past its
        budget it is cut off by aborting the transport: a polite close would wait behind
        the unread data, holding the buffers (websockets keeps such a peer CLOSING for
        tens of seconds).
        """
        if self.aborted:
            self.dropped += 1
            return False
        transport = self.ws.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        if self.queued_bytes + buffered + len(data) > self.budget:
            self.abort()
            self.dropped += 1
            return False
        self.queued_bytes += len(data)
        self.queue.put_nowait((data, binary))
        return True

    def abort(self) -> None:
        """Cut the connection off at once (drop what is queued, free the buffers)."""
        if self.aborted:
            return
        self.aborted = True
        log.warning("cutting off a client over its outbound budget of %d bytes", self.budget)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0
        self.queue.put_nowait(None)
        if self.ws.transport is not None:
            self.ws.transport.abort()

    def close_after_pending(self, close: Close) -> None:
        """Close once everything queued before is sent."""
        self.queue.put_nowait(close)

    def finish(self) -> None:
        """Let the writer end once everything queued before is sent."""
        self.queue.put_nowait(None)

    async def writer(self) -> None:
        """Send queued frames in order until a Close or the connection ends."""
        try:
            while True:
                item = await self.queue.get()
                if item is None:  # the connection ended: stop after what was queued
                    return
                if isinstance(item, Close):
                    await self.ws.close(item.code, item.reason)
                    return
                data, binary = item
                self.queued_bytes -= len(data)
                await self.ws.send(data, text=not binary)
                self.sent += 1
        except ConnectionClosed:
            return


class Hub:
    """Publishes events to the connections subscribed to their channel.

    Args:
        encoder: Builds the messages.
        clock: Wall-clock time for envelopes.
    """

    def __init__(self, encoder: Encoder, clock: Callable[[], float], history: int = 1000) -> None:
        self.encoder = encoder
        self.clock = clock
        self.connections: set[Connection] = set()
        self.seq: dict[str, int] = dict.fromkeys(CHANNELS, 0)
        # A new epoch per channel per server: sequence numbers restart with it. The server
        # replaces the evolution epoch with its run's when a store keeps the history.
        self.epochs: dict[str, str] = {c: f"{encoder.prefix}-{c}" for c in CHANNELS}
        self.history: dict[str, deque[_Past]] = {c: deque(maxlen=history) for c in CHANNELS}
        self.published = 0

    def publish(
        self,
        channel: str,
        type_: str,
        data: Any,
        *,
        generation: int | None = None,
        fitness: float | None = None,
        seq: int | None = None,
        **top: Any,
    ) -> bytes:
        """Encode one event (once) and queue it to every subscriber whose filters accept it.

        ``generation`` and ``fitness`` are what the subscribe filters look at; ``seq``
        overrides the channel's counter (the evolution channel numbers events by the
        store). Returns the encoded message.
        """
        self.seq[channel] = self.seq[channel] + 1 if seq is None else seq
        message = self.encoder.message(
            type_, data, now=self.clock(), channel=channel, seq=self.seq[channel], **top
        )
        payload = self.encoder.encode(message)
        self.history[channel].append(_Past(self.seq[channel], payload, generation, fitness))
        for connection in self.connections:
            if connection.session.wants(channel, generation, fitness):
                connection.enqueue(payload)
        self.published += 1
        return payload

    def missed(self, channel: str, since: int) -> tuple[list[_Past], int]:
        """Events of ``channel`` after ``since`` still in memory, and the first seq held."""
        history = self.history[channel]
        first = history[0].seq if history else self.seq[channel] + 1
        return [past for past in history if past.seq > since], first

    def publish_error(self, channel: str, error: dict[str, Any]) -> None:
        """Send an error (spec shape) to a channel's subscribers.

        It names the channel but takes no sequence number: errors are not part of the
        replayable stream (the evolution channel's numbers follow the store's generations).
        """
        message = self.encoder.message("error", None, now=self.clock(), channel=channel)
        del message["data"]
        message["error"] = error
        payload = self.encoder.encode(message)
        for connection in self.connections:
            if channel in connection.session.subscriptions:
                connection.enqueue(payload)
