"""Where the client's events go: callbacks and ``events()`` iterators, by event name.

Names are message types (``alert``), ``agent_code``, ``message`` (every message) and
``state`` (connection state changes); :func:`~tdevlab.client.streams.resolve_event_name`
turns a channel name into its type before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from tdevlab.client.streams import AgentCode

__all__ = ["Emitter"]

log = logging.getLogger("tdevlab.client")

#: What is emitted: a message, an agent's code (``agent_code``), or a state (``state``).
Payload: TypeAlias = "dict[str, Any] | AgentCode | str"
#: A callback takes the payload of the one name it is registered for, so callers type its
#: parameter as that payload (a message dict, say), not as the union of all of them.
Callback: TypeAlias = Callable[[Any], object]
_END: dict[str, Any] = {"type": "__end__"}


class Emitter:
    """Calls callbacks and feeds iterators; a callback's exception is logged, never raised.

    Args:
        queue_size: Most events an iterator buffers; beyond that the oldest is dropped.

    Attributes:
        dropped: Events dropped because an iterator was not consumed fast enough.
    """

    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self.dropped = 0
        self._callbacks: dict[str, list[Callback]] = {}
        self._iterators: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}

    def on(self, name: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for each emit of ``name``; returns its remover."""
        self._callbacks.setdefault(name, []).append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.get(name, []).remove(callback)

        return remove

    def emit(self, name: str, payload: Payload) -> None:
        """Hand ``payload`` to the callbacks of ``name``, then (messages only) its iterators."""
        for callback in tuple(self._callbacks.get(name, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("tdevlab client: a %r callback raised", name)
        queues = self._iterators.get(name)
        if queues and isinstance(payload, dict):
            for queue in queues:
                if queue.qsize() >= self.queue_size:
                    queue.get_nowait()
                    self.dropped += 1
                queue.put_nowait(payload)

    def iterate(self, names: Iterable[str], *, ended: bool) -> AsyncIterator[dict[str, Any]]:
        """An iterator over the messages emitted under ``names`` from now on.

        Args:
            names: Event names.
            ended: The client is closed already: the iterator ends at once.
        """
        names = list(names)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if ended:
            queue.put_nowait(_END)
        else:
            for name in names:
                self._iterators.setdefault(name, []).append(queue)
        return self._drain(names, queue)

    def end(self) -> None:
        """End every iterator (the client closed or failed)."""
        for queues in self._iterators.values():
            for queue in queues:
                queue.put_nowait(_END)

    async def _drain(
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
