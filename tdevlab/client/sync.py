"""The blocking twin of the client, for scripts: its own event loop in a background thread.

``tdevlab.connect_sync(url, token=...)`` returns a :class:`SyncClient` with the methods of
:class:`~tdevlab.client.connection.Client`, each blocking until its reply. It works in a
plain script and inside Jupyter alike (the loop is its own, so the kernel's running loop is
never re-entered and nothing needs patching).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from tdevlab.client.connection import Client, ConnectionState
from tdevlab.client.streams import AgentCode, resolve_event_name
from tdevlab.exceptions import ConnectionClosed, InvalidState, RequestTimeout

__all__ = ["SyncClient", "connect_sync"]

T = TypeVar("T")


class SyncClient:
    """A :class:`Client` driven from ordinary (blocking) code.

    Args:
        url: ``ws://HOST:PORT/v1/evolution``.
        token: The JWT, or a function returning a fresh one.
        options: See :class:`~tdevlab.client.connection.Client`.

    Raises:
        AuthFailed: the token was refused.
        ConnectionClosed: the server could not be reached.
    """

    def __init__(self, url: str, token: str | Callable[[], str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tdevlab-client", daemon=True
        )
        self._thread.start()
        try:
            self.client = self._run(self._make(url, token, options))
        except BaseException:
            self._stop_loop()
            raise
        #: The client's frames; reads run on the client's loop, so they never see a
        #: half-ingested message.
        self.frames: Any = _OnLoop(self.client.frames, self)

    @staticmethod
    async def _make(url: str, token: str | Callable[[], str], options: dict[str, Any]) -> Client:
        return await Client(url, token, **options).connect()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise InvalidState(
                "a blocking client method was called from one of its own callbacks; "
                "use client.call(...) there, which does not wait"
            )
        if self._loop.is_closed():
            coro.close()
            raise ConnectionClosed("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise RequestTimeout(f"no result within {timeout} s") from exc

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- state ------------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (in the background thread) the client runs on."""
        return self._loop

    @property
    def connection_state(self) -> ConnectionState:
        """See :attr:`Client.connection_state`."""
        return self.client.connection_state

    @property
    def run_state(self) -> str | None:
        """See :attr:`Client.run_state`."""
        return self.client.run_state

    @property
    def generation(self) -> int | None:
        """See :attr:`Client.generation`."""
        return self.client.generation

    @property
    def parameters(self) -> dict[str, Any]:
        """See :attr:`Client.parameters`."""
        return self.client.parameters

    @property
    def error(self) -> Exception | None:
        """See :attr:`Client.error`."""
        return self.client.error

    @property
    def reconnects(self) -> int:
        """See :attr:`Client.reconnects`."""
        return self.client.reconnects

    @property
    def subscriptions(self) -> dict[str, dict[str, Any]]:
        """See :attr:`Client.subscriptions`."""
        return self.client.subscriptions

    def dashboard(self, **options: Any) -> Any:
        """A live ipywidgets dashboard over this client (:class:`tdevlab.Dashboard`)."""
        from tdevlab.notebook import Dashboard

        return Dashboard(self, **options)

    # -- requests ---------------------------------------------------------------------------

    def subscribe(self, *channels: str, **options: Any) -> dict[str, Any]:
        """See :meth:`Client.subscribe`; blocks until acknowledged."""

        async def subscribe() -> dict[str, Any]:
            return await self.client.subscribe(*channels, **options)

        return self._run(subscribe())

    def unsubscribe(self, *channels: str) -> dict[str, Any]:
        """See :meth:`Client.unsubscribe`."""
        return self._run(self.client.unsubscribe(*channels))

    def control(self, action: str, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.control`."""
        return self._run(self.client.control(action, **parameters))

    def start(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.start`."""
        return self._run(self.client.start(**parameters))

    def pause(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.pause`."""
        return self._run(self.client.pause(**parameters))

    def resume(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.resume`."""
        return self._run(self.client.resume(**parameters))

    def stop(self) -> dict[str, Any]:
        """See :meth:`Client.stop`."""
        return self._run(self.client.stop())

    def set_parameters(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.set_parameters`."""
        return self._run(self.client.set_parameters(**parameters))

    def rollback(self, generation: int) -> dict[str, Any]:
        """See :meth:`Client.rollback`."""
        return self._run(self.client.rollback(generation))

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """See :meth:`Client.get_agent`."""
        return self._run(self.client.get_agent(agent_id))

    def get_agent_code(self, agent_id: str) -> AgentCode:
        """See :meth:`Client.get_agent_code`."""
        return self._run(self.client.get_agent_code(agent_id))

    def upload_agent_code(self, code: str) -> dict[str, Any]:
        """See :meth:`Client.upload_agent_code`."""
        return self._run(self.client.upload_agent_code(code))

    def ping(self) -> float:
        """See :meth:`Client.ping`."""
        return self._run(self.client.ping())

    def call(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """See :meth:`Client.call`: run a request from any thread without waiting."""
        return self.client.call(method, *args, **kwargs)

    def wait_for(
        self,
        event: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Block until an event of a type or channel arrives that satisfies ``predicate``.

        Raises:
            RequestTimeout: if none came within ``timeout`` seconds.
        """
        return self._run(self.client.wait_for(event, predicate), timeout)

    # -- events -----------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """See :meth:`Client.on`; callbacks run on the client's background thread."""
        return self.client.on(event, callback)

    def events(self, *kinds: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Iterate over events of the given types or channels, blocking for each.

        Ends when the client closes, or when no event came within ``timeout`` seconds.
        """
        names = [resolve_event_name(k) for k in kinds] or ["message"]
        if self.connection_state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            return
        inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        removers = [self.client.on(name, inbox.put) for name in names]
        removers.append(self.client.on("state", functools.partial(_end_on_close, inbox)))
        try:
            while True:
                try:
                    item = inbox.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is None:
                    return
                yield item
        finally:
            for remove in removers:
                remove()

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self._run(self.client.close())
        self._stop_loop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncClient {self.client.url} {self.connection_state}>"


def _end_on_close(inbox: queue.Queue[dict[str, Any] | None], state: str) -> None:
    if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
        inbox.put(None)


class _OnLoop:
    """Attribute reads of an object, carried out on the client's loop thread."""

    def __init__(self, target: Any, owner: SyncClient) -> None:
        self._target = target
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        value = self._on_loop(lambda: getattr(self._target, name))
        if callable(value):
            return functools.partial(self._call, name)
        return value

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._on_loop(lambda: getattr(self._target, name)(*args, **kwargs))

    def _on_loop(self, fn: Callable[[], T]) -> T:
        loop = self._owner.loop
        if threading.current_thread() is self._owner._thread or loop.is_closed():
            return fn()  # already on the loop, or nothing runs there any more

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def __repr__(self) -> str:
        return repr(self._target)

    def __dir__(self) -> list[str]:
        return dir(self._target)


def connect_sync(url: str, token: str | Callable[[], str], **options: Any) -> SyncClient:
    """Connect from blocking code; see :class:`SyncClient`.

    Raises:
        AuthFailed: the token was refused.
        ConnectionClosed: the server could not be reached.
    """
    return SyncClient(url, token, **options)
