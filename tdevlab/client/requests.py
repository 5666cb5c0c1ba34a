"""The client's requests without I/O: the table awaiting replies, the outbox, the resend policy.

Nothing here touches a socket, a clock or an event loop (time comes in as ``now``). The
asyncio driver (:mod:`tdevlab.client.connection`) attaches its own waiter (a future) to
each request and carries out what the table decides:

* :meth:`RequestTable.submit` gives a request its id and frame; it is written at once when
  the driver says the connection can take it, else queued in the outbox (bounded);
* :meth:`RequestTable.next_queued` hands the outbox out in order, and a :class:`Pacer`
  spaces it within the server's rate;
* :meth:`RequestTable.resolve` takes out the request a reply names;
* after a drop, :meth:`RequestTable.dropped` takes out the requests to fail and
  :meth:`RequestTable.requeue_lost` queues again those whose replies were lost.

Resend policy (:data:`RESENT`): reads, subscriptions and pings are safe to send twice, so
after a reconnect they are sent again instead of failing. Control actions, commands
(``rollback``, ``set_parameters``, ``branch``) and code uploads written on a connection that dropped
fail with :class:`~tdevlab.exceptions.ConnectionClosed`: the server may have applied them,
and applying one twice is not harmless. Requests never written (still queued) go out after
the reconnect, whatever their kind.

The subscribes that resume the streams after a reconnect are built here too
(:func:`resubscribe_messages`), from the filters of each channel and the stream positions
the driver's :class:`~tdevlab.client.streams.StreamTracker` holds.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

import msgspec

from tdevlab.exceptions import ConnectionClosed

__all__ = [
    "RESENT",
    "JsonObject",
    "Pacer",
    "Request",
    "RequestTable",
    "resubscribe_messages",
    "subscribe_message",
]

#: A decoded (or to be encoded) JSON object: a message or its ``data``.
JsonObject: TypeAlias = dict[str, Any]
#: Subscribe filters of one channel (``generation_min``, ``fitness_min``).
Filters: TypeAlias = Mapping[str, float]

#: Request kinds sent again after a reconnect when their reply was lost (see the module
#: docstring); every other kind written on a dropped connection fails instead.
RESENT = frozenset(
    {
        "subscribe",
        "unsubscribe",
        "get_agent",
        "get_agent_code",
        "get_lineage",
        "get_front",
        "get_archive",
        "get_population",
        "ping",
    }
)

W = TypeVar("W")


@dataclass(eq=False)
class Request(Generic[W]):
    """A request awaiting its reply.

    Attributes:
        id: Its ``id`` (``c1``, ``c2``, ...), named by the reply's ``reply_to``.
        kind: ``type`` of the message, or its ``cmd`` for commands; ``agent_code`` for an
            upload.
        message: The message as sent, ``id`` included (without an upload's code).
        data: The frame: text, or bytes for an upload (a binary frame).
        waiter: Whatever the driver attached (a future); never touched here.
        control_events: The driver's count of ``control_update`` events when the request
            was made: an ack's run snapshot is newer only if none arrived since.
        connection: The connection (counted from 1) it was last written on; 0 while queued.
    """

    id: str
    kind: str
    message: JsonObject
    data: str | bytes
    waiter: W
    control_events: int = 0
    connection: int = 0

    @property
    def binary(self) -> bool:
        """Whether the frame is binary (a code upload)."""
        return isinstance(self.data, bytes)


class RequestTable(Generic[W]):
    """Requests awaiting replies, keyed by id, and the outbox of those not written yet.

    Args:
        queue_size: Most requests queued while they cannot be written; more raise.

    Attributes:
        connection: Connections opened so far (the number of the current one).
    """

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self.connection = 0
        self._ids = itertools.count(1)
        self._pending: dict[str, Request[W]] = {}
        self._outbox: deque[Request[W]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request: object) -> bool:
        return isinstance(request, Request) and self._pending.get(request.id) is request

    @property
    def queued(self) -> int:
        """How many requests wait in the outbox."""
        return len(self._outbox)

    def submit(
        self,
        message: JsonObject,
        waiter: W,
        *,
        write: bool,
        code: str | None = None,
        control_events: int = 0,
    ) -> Request[W]:
        """Register a request: give it an id and its frame, and write or queue it.

        Args:
            message: The message without ``id`` (not modified).
            waiter: Attached to the request for the driver.
            write: Whether the driver writes the frame now (the connection is open and
                nothing is queued ahead); otherwise it is queued.
            code: An agent's source: the request is an upload, a binary frame of the JSON
                metadata, a newline and the code (spec).
            control_events: See :attr:`Request.control_events`.

        Returns:
            The request; when ``write``, its :attr:`~Request.data` is for the driver to
            write on the current connection.

        Raises:
            ConnectionClosed: the request cannot be written and the outbox is full.
        """
        if not write and len(self._outbox) >= self.queue_size:
            raise ConnectionClosed(
                f"not connected, and {self.queue_size} messages are already waiting"
            )
        request_id = f"c{next(self._ids)}"
        sent = {**message, "id": request_id}
        text = msgspec.json.encode(sent).decode()
        data: str | bytes = text if code is None else (text + "\n" + code).encode()
        kind = "agent_code" if code is not None else str(sent.get("cmd") or sent["type"])
        request = Request(request_id, kind, sent, data, waiter, control_events)
        self._pending[request_id] = request
        if write:
            request.connection = self.connection
        else:
            self._outbox.append(request)
        return request

    def next_queued(self) -> Request[W] | None:
        """Take the oldest queued request, to write now on the current connection.

        A request taken is not put back if its write fails: the frame may have gone out
        before the failure, so it ends as any request written on a dropped connection.
        """
        if not self._outbox:
            return None
        request = self._outbox.popleft()
        request.connection = self.connection
        return request

    def resolve(self, request_id: object) -> Request[W] | None:
        """Take out the request a reply names; ``None`` for an id not awaited (any more)."""
        request = self._pending.pop(str(request_id), None)
        if request is not None and request.connection == 0:
            self._unqueue(request)
        return request

    def abandon(self, request: Request[W]) -> None:
        """Forget a request nobody waits for (timed out, cancelled): if queued, never send it."""
        if self._pending.get(request.id) is request:
            del self._pending[request.id]
        if request.connection == 0:
            self._unqueue(request)

    def opened(self) -> None:
        """Count a new connection; requests written from now on belong to it."""
        self.connection += 1

    def requeue_lost(self) -> list[Request[W]]:
        """Queue again the requests of a :data:`RESENT` kind written on an earlier connection.

        They go ahead of the outbox, in the order they were made: they were made before
        anything queued while the connection was down.

        Returns:
            The requests queued again.
        """
        lost = [
            request
            for request in self._pending.values()
            if request.kind in RESENT and request.connection not in (0, self.connection)
        ]
        for request in lost:
            request.connection = 0
        self._outbox.extendleft(reversed(lost))
        return lost

    def dropped(self) -> list[Request[W]]:
        """Take out the requests to fail because the connection dropped.

        Those written and not :data:`RESENT`: their replies are lost and they may have
        been applied. Queued requests and resent kinds stay.
        """
        failed = [
            request
            for request in self._pending.values()
            if request.kind not in RESENT and request.connection != 0
        ]
        for request in failed:
            del self._pending[request.id]
        return failed

    def clear(self) -> list[Request[W]]:
        """Take out every request (the client closed or gave up) and empty the outbox."""
        everything = list(self._pending.values())
        self._pending.clear()
        self._outbox.clear()
        return everything

    def _unqueue(self, request: Request[W]) -> None:
        with contextlib.suppress(ValueError):  # already taken out to be written
            self._outbox.remove(request)


@dataclass
class Pacer:
    """Spaces the outbox: ``burst`` messages at once, then ``rate`` per second.

    A token bucket that starts full. spec: "Rate Limiting" allows 100 messages per second
    per connection; the defaults use half of that, leaving room for the requests made
    while a long outbox drains.

    Args:
        burst: Messages that may go at once.
        rate: Messages per second after the burst.
    """

    burst: int = 50
    rate: float = 50.0
    _tokens: float = field(init=False)
    _last: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next message may go (0: at once)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def sent(self, now: float) -> None:
        """Count a message written at ``now``."""
        self._refill(now)
        self._tokens -= 1

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now


def subscribe_message(
    channels: Sequence[str],
    filters: Filters,
    *,
    since: Mapping[str, int] | None = None,
    epochs: Mapping[str, str] | None = None,
) -> JsonObject:
    """A ``subscribe`` message (without ``id``).

    Args:
        channels: The channels.
        filters: Their filters (empty: none).
        since: The last sequence number seen per channel, for the server to replay what
            followed (``None``: no replay asked for).
        epochs: The stream epoch each ``since`` belongs to.
    """
    message: JsonObject = {"type": "subscribe", "channels": list(channels)}
    if filters:
        message["filters"] = dict(filters)
    if since is not None:
        message["since"] = {channel: since.get(channel, 0) for channel in channels}
    if epochs is not None:
        message["epochs"] = {c: epochs[c] for c in channels if c in epochs}
    return message


def resubscribe_messages(
    channels: Iterable[str],
    filters: Mapping[str, Filters],
    since: Mapping[str, int],
    epochs: Mapping[str, str],
) -> list[JsonObject]:
    """The subscribes that resume ``channels`` from ``since``: one per distinct filter set.

    A subscribe carries one filter set for all its channels, so channels are grouped by
    their filters (the server keeps each channel's own).

    Args:
        channels: The channels to resume, in order.
        filters: Each channel's filters (a channel missing has none).
        since: The sequence number to resume each channel after (missing: 0).
        epochs: The epoch of each channel's numbers, for those known.

    Returns:
        Subscribe messages (without ``id``), in the order their first channel came.
    """
    groups: dict[tuple[tuple[str, float], ...], list[str]] = {}
    for channel in channels:
        key = tuple(sorted(filters.get(channel, {}).items()))
        groups.setdefault(key, []).append(channel)
    return [
        subscribe_message(names, dict(key), since=since, epochs=epochs)
        for key, names in groups.items()
    ]
