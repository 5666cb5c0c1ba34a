"""Channels and connections: each event encoded once, sent to its subscribers, never blocking.

A publisher (the engine's events, the metrics sampler) hands each subscriber's
:class:`Connection` the event's frame, built once, and returns without awaiting. The first
event of a loop turn is written to each subscriber at once, as websockets' ``broadcast``
does, so the first subscribers have it while the hub still serves the others; events that
follow in the same turn are coalesced into one write per subscriber at the end of the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.messages import CHANNELS
from tdevlab.protocol.session import Close, Session

__all__ = ["Connection", "Hub", "PastEvent"]


class PastEvent(NamedTuple):
    """A published event kept for replay."""

    seq: int
    payload: bytes
    generation: int | None
    fitness: float | None


log = logging.getLogger("tdevlab.server")

_REPLAY_PIECE = 256 * 1024  # bytes written per step of a replay, and the drain mark
_STALL_TIMEOUT = 30.0  # seconds a replay waits for a client that reads nothing


def text_frame(payload: bytes) -> bytes:
    """The bytes of one unmasked, unfragmented text frame (server to client)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@dataclass(eq=False)
class Connection:
    """A client connection: its socket, protocol session and outbound frames.

    Without extensions (compression off, the default) frames are written to the transport
    directly: a published event's frame is built once for every subscriber and written at
    once when nothing is pending for the connection (:meth:`deliver`); otherwise it joins
    the connection's pending frames, which go out in one write per loop turn. With
    compression each frame must be compressed for its connection: then frames go through a
    queue and websockets' ``send``.

    A client that stops reading fills its socket buffer, then this connection's pending
    frames. Past its budget it is cut off by aborting the transport: a polite close would
    wait behind the unread data, holding the buffers (websockets keeps such a peer CLOSING
    for tens of seconds).
    """

    ws: ServerConnection
    session: Session
    budget: int = 1024 * 1024
    #: Bytes of live frames held behind a replay before the client is cut off.
    hold_budget: int = 16 * 1024 * 1024
    queue: asyncio.Queue[tuple[bytes, bool] | Close | None] = field(default_factory=asyncio.Queue)
    sent: int = 0
    queued_bytes: int = 0
    dropped: int = 0
    aborted: bool = False
    raw: bool = field(init=False)
    pending: list[bytes] = field(default_factory=list)
    _flush_scheduled: bool = False
    #: Called once when the first frame of a loop turn is pending (the hub batches flushes).
    flusher: Callable[[Connection], None] = field(default=lambda c: _schedule_alone(c))
    #: While a replay streams, live frames wait here (they must come after it).
    held: list[bytes] | None = None
    held_bytes: int = 0
    #: Replays waiting behind the one streaming (acks and events of later subscribes).
    replays: deque[list[bytes]] | None = None
    #: The hub's loop turn in which a published frame was last written at once.
    turn: int = -1

    def __post_init__(self) -> None:
        self.raw = not self.ws.protocol.extensions

    def enqueue(
        self, data: bytes, binary: bool = False, frame: bytes | None = None, urgent: bool = False
    ) -> bool:
        """Queue a message (text unless ``binary``); False if the client is cut off instead.

        ``frame`` is the message's ready-made text frame, shared by all subscribers. An
        ``urgent`` message (a pong) is not held behind a replay: it is written between the
        replay's pieces, so it reaches the client after at most the piece in flight.
        """
        if self.aborted:
            self.dropped += 1
            return False
        if self.raw:
            # The budget is checked when the frames are written (flush): a publish to many
            # subscribers only appends here.
            if frame is None:
                frame = Frame(Opcode.BINARY if binary else Opcode.TEXT, data).serialize(mask=False)
            if urgent and self.held is not None:
                return self._write_now(frame)
            return self._append(frame)
        transport = self.ws.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        if self.queued_bytes + buffered + len(data) > self.budget:
            self.abort()
            self.dropped += 1
            return False
        self.queued_bytes += len(data)
        self.queue.put_nowait((data, binary))
        return True

    def deliver(self, frame: bytes, turn: int) -> bool:
        """Send a published event's ready-made frame (raw mode); False if cut off instead.

        The first frame of the hub's loop ``turn`` is written at once, unless frames are
        pending or held behind a replay (they go first); later ones in the same turn are
        coalesced into one write at the end of it.
        """
        if self.turn == turn or self.pending or self.held is not None or self.aborted:
            return self._append(frame)
        self.turn = turn
        return self._write_now(frame)

    def _append(self, frame: bytes) -> bool:
        """Hold ``frame`` behind a replay, or add it to the frames flushed this loop turn."""
        if self.aborted:
            self.dropped += 1
            return False
        if self.held is not None:
            self.held.append(frame)
            self.held_bytes += len(frame)
            if self.held_bytes > self.hold_budget:
                self.abort()
                self.dropped += 1
                return False
            return True
        self.queued_bytes += len(frame)
        self.pending.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.flusher(self)
        return True

    def _write_now(self, frame: bytes) -> bool:
        """Write one frame at once (whole frames only, so never inside another frame)."""
        transport = self.ws.transport
        if self.ws.protocol.state is not State.OPEN or transport is None:
            return True  # the connection is ending: nothing to answer any more
        if transport.get_write_buffer_size() + len(frame) > self.budget:
            self.dropped += 1
            self.abort()
            return False
        transport.write(frame)
        self.sent += 1
        return True

    def flush(self) -> None:
        """Write the pending frames in one go (raw mode), or cut off a client over budget."""
        self._flush_scheduled = False
        frames = self.pending
        count = len(frames)
        if not count:
            return
        # One event per loop turn is the common case: no join, and the list is reused
        # (this runs once per subscriber per event).
        data = frames[0] if count == 1 else b"".join(frames)
        frames.clear()
        size, self.queued_bytes = self.queued_bytes, 0
        transport = self.ws.transport
        if self.aborted or self.ws.protocol.state is not State.OPEN or transport is None:
            return
        if transport.get_write_buffer_size() + size > self.budget:
            self.dropped += count
            self.abort()
            return
        transport.write(data)
        self.sent += count

    def start_replay(self, payloads: list[bytes]) -> Any:
        """Queue a replay behind any streaming one; return the coroutine to run, if new."""
        if self.replays is not None:
            self.replays.append(payloads)
            return None
        self.replays = deque([payloads])
        if self.held is None and self.raw:
            self.held = []
        return self._replay_all()

    async def _replay_all(self) -> None:
        try:
            while not self.aborted:
                if self.replays:
                    await self.replay(self.replays.popleft(), release=False)
                elif self.held and self.held_bytes > _REPLAY_PIECE:
                    # What piled up during the replay may exceed the budget: it streams the
                    # same way, in pieces as the client reads, until little is left.
                    frames, self.held, self.held_bytes = self.held, [], 0
                    await self._write_pieces(frames, _STALL_TIMEOUT)
                else:
                    break
        finally:
            self.replays = None
            self._release_held()

    def _release_held(self) -> None:
        """Live frames held behind a replay go out now (the replay is done)."""
        held, size = self.held, self.held_bytes
        self.held, self.held_bytes = None, 0
        if held and not self.aborted:
            self.pending.extend(held)
            self.queued_bytes += size
            self.flush()

    async def replay(
        self, payloads: list[bytes], *, stall_timeout: float = _STALL_TIMEOUT, release: bool = True
    ) -> None:
        """Send ``payloads`` (an ack, then missed events) before any live frame.

        A replay may be far larger than the outbound budget: it is written in pieces as the
        client reads, while live frames wait behind it (up to ``hold_budget`` bytes). A client
        that reads nothing for ``stall_timeout`` seconds is cut off.
        """
        if not self.raw:
            for payload in payloads:  # websockets' send applies backpressure
                self.queued_bytes += len(payload)  # the writer takes it off when sent
                self.queue.put_nowait((payload, False))
            return
        self.flush()
        if self.held is None:
            self.held = []
        try:
            await self._write_pieces(map(text_frame, payloads), stall_timeout)
        finally:
            if release:
                self._release_held()

    async def _write_pieces(self, frames: Iterable[bytes], stall_timeout: float) -> None:
        """Write ``frames`` in pieces of ``_REPLAY_PIECE`` bytes, each once the last drained."""
        piece: list[bytes] = []
        size = 0
        for frame in frames:
            if self.aborted or self.ws.state is not State.OPEN:
                return  # the client left (or was cut off): stop
            piece.append(frame)
            size += len(frame)
            if size >= _REPLAY_PIECE:
                await self._write_when_drained(piece, stall_timeout)
                piece, size = [], 0
        if piece:
            await self._write_when_drained(piece, stall_timeout)

    async def _write_when_drained(self, frames: list[bytes], stall_timeout: float) -> None:
        transport = self.ws.transport
        waited = 0.0
        while (
            not self.aborted
            and transport is not None
            and transport.get_write_buffer_size() > _REPLAY_PIECE
        ):
            if waited > stall_timeout:
                self.abort()
                return
            await asyncio.sleep(0.005)
            waited += 0.005
        if self.aborted or self.ws.state is not State.OPEN or transport is None:
            return
        transport.write(b"".join(frames))
        self.sent += len(frames)

    def abort(self) -> None:
        """Cut the connection off at once (drop what is queued, free the buffers)."""
        if self.aborted:
            return
        self.aborted = True
        log.warning("cutting off a client over its outbound budget of %d bytes", self.budget)
        self.pending = []
        if self.held is not None:
            self.held, self.held_bytes = [], 0
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0
        self.queue.put_nowait(None)
        transport = self.ws.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0: the kernel resets the connection and frees its send buffer at
                # once, instead of holding megabytes for a peer that does not read.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    def close_after_pending(self, close: Close) -> None:
        """Close once everything queued before is sent."""
        if self.raw:
            self.flush()
        self.queue.put_nowait(close)

    def finish(self) -> None:
        """Let the writer end once everything queued before is sent."""
        if self.raw:
            self.flush()
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


def _schedule_alone(connection: Connection) -> None:
    asyncio.get_running_loop().call_soon(connection.flush)


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
        self.history: dict[str, deque[PastEvent]] = {c: deque(maxlen=history) for c in CHANNELS}
        self.published = 0
        # Connections with frames pending this loop turn: one callback flushes them all.
        self._dirty: list[Connection] = []
        # Loop turns in which events were published: a connection gets the first event of
        # a turn written at once and the rest coalesced (Connection.deliver).
        self._turn = 0
        self._turn_open = False

    def add(self, connection: Connection) -> None:
        """Start delivering to ``connection``."""
        connection.flusher = self._mark_dirty
        self.connections.add(connection)

    def _mark_dirty(self, connection: Connection) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush_dirty)
        self._dirty.append(connection)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()

    def _begin_turn(self) -> int:
        if not self._turn_open:
            self._turn_open = True
            self._turn += 1
            asyncio.get_running_loop().call_soon(self._end_turn)
        return self._turn

    def _end_turn(self) -> None:
        self._turn_open = False

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
        """Encode one event (once) and send it to every subscriber whose filters accept it.

        ``generation`` and ``fitness`` are what the subscribe filters look at; ``seq``
        overrides the channel's counter (the evolution channel numbers events by the
        store). Returns the encoded message.
        """
        self.seq[channel] = self.seq[channel] + 1 if seq is None else seq
        message = self.encoder.message(
            type_, data, now=self.clock(), channel=channel, seq=self.seq[channel], **top
        )
        payload = self.encoder.encode(message)
        self.history[channel].append(PastEvent(self.seq[channel], payload, generation, fitness))
        frame = None  # built once, on the first subscriber that takes raw frames
        turn = 0
        for connection in self.connections:
            if connection.session.wants(channel, generation, fitness):
                if not connection.raw:
                    connection.enqueue(payload)
                    continue
                if frame is None:
                    frame, turn = text_frame(payload), self._begin_turn()
                connection.deliver(frame, turn)
        self.published += 1
        return payload

    def missed(self, channel: str, since: int) -> tuple[list[PastEvent], int]:
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
