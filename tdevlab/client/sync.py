"""The blocking twin of the client, for scripts: its own event loop in a background thread.

``tdevlab.connect_sync(url, token=...)`` returns a :class:`SyncClient` with the methods of
:class:`~tdevlab.client.api.Client`, each blocking until its reply. It works in a
plain script and inside Jupyter alike (the loop is its own, so the kernel's running loop is
never re-entered and nothing needs patching).

The thread owns its loop: it runs it until the client closes, then cancels what is left
and closes the loop, as ``asyncio.run`` does. Nothing is handed to the loop once that
wind-down began, and every wait on the loop notices a thread that ended, so no caller
waits on a loop that no longer runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from tdevlab.client.api import Client, check_callable
from tdevlab.client.connection import ConnectionState
from tdevlab.client.streams import AgentCode, resolve_event_name
from tdevlab.engine.lineage import GenomeDiff
from tdevlab.exceptions import ConnectionClosed, InvalidState, RequestTimeout

if TYPE_CHECKING:
    from tdevlab.notebook import Dashboard

__all__ = ["SyncClient", "connect_sync"]

T = TypeVar("T")

#: How often a wait on the loop thread checks that the thread still runs (seconds).
_POLL = 0.1
_FINAL = (ConnectionState.CLOSED, ConnectionState.FAILED)


class SyncClient:
    """A :class:`Client` driven from ordinary (blocking) code.

    Args:
        url: ``ws://HOST:PORT/v1/evolution``.
        token: The JWT, or a function returning a fresh one.
        frames_timeout: Seconds a read of :attr:`frames` may wait for the client's loop
            thread (busy in a callback that does not return, say) before it raises
            :class:`~tdevlab.exceptions.RequestTimeout`. 30 s leaves room for building
            large DataFrames or writing a dataset on that thread.
        options: See :class:`~tdevlab.client.api.Client`.

    Raises:
        AuthFailed: the token was refused.
        ConnectionClosed: the server could not be reached.
    """

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        frames_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.frames_timeout = frames_timeout
        self._loop = asyncio.new_event_loop()
        # Guards handing work to the loop against the thread's wind-down (_ended).
        self._lock = threading.Lock()
        self._ended = False  # the loop stopped: nothing more may be handed to it
        self._closing: concurrent.futures.Future[None] | None = None
        # Futures handed to callers and not done yet: any the loop never finished before it
        # closed get ConnectionClosed, so no caller waits on them forever.
        self._handed: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(target=self._serve_loop, name="tdevlab-client", daemon=True)
        self._thread.start()
        try:
            self.client = self._run(self._make(url, token, options))
        except BaseException:
            self._begin_close()
            self._thread.join(10)
            raise
        #: The client's frames; reads run on the client's loop, so they never see a
        #: half-ingested message. Each read waits at most ``frames_timeout`` seconds.
        self.frames: Any = _OnLoop(self.client.frames, self)

    @staticmethod
    async def _make(url: str, token: str | Callable[[], str], options: dict[str, Any]) -> Client:
        return await Client(url, token, **options).connect()

    def _run(
        self, coro: Coroutine[Any, Any, T], timeout: float | None = None, what: str = "request"
    ) -> T:
        return self._wait(self._hand_over_checked(coro), timeout, what)

    def _request(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a request, waiting a little longer than the client's own ``request_timeout``.

        The client's timeout runs on the loop; this bound only bites when the loop thread
        is stuck (in a callback that does not return) and that timeout cannot fire.
        """
        timeout = self.client.request_timeout
        grace = max(1.0, timeout / 10)
        why = " (the client's loop thread is busy: a callback that does not return?)"
        return self._wait(self._hand_over_checked(coro), timeout + grace, "request", why)

    def _hand_over_checked(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if threading.current_thread() is self._thread:
            coro.close()
            raise InvalidState(
                "a blocking client method was called from one of its own callbacks; "
                "use client.call(...) there, which does not wait"
            )
        return self._hand_over(coro)

    def _hand_over(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop.

        Raises:
            ConnectionClosed: the loop has stopped (the client is closed).
        """
        with self._lock:
            if self._ended:
                coro.close()
                raise ConnectionClosed("the client is closed")
            return self._track(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _track(self, future: concurrent.futures.Future[T]) -> concurrent.futures.Future[T]:
        """Remember ``future`` until it is done (see ``_handed``); call under ``_lock``."""
        self._handed.add(future)
        future.add_done_callback(self._handed.discard)
        return future

    def _cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel work handed to the loop, unless the loop is gone (nothing runs it then)."""
        with self._lock:
            if not self._ended:
                future.cancel()

    def _wait(
        self,
        future: concurrent.futures.Future[T],
        timeout: float | None,
        what: str,
        why: str = "",
    ) -> T:
        """The result of work handed to the loop, waiting at most ``timeout`` seconds.

        Raises:
            RequestTimeout: no result within ``timeout`` (the work is cancelled); the
                message names ``what`` and adds ``why``.
            ConnectionClosed: the loop thread ended before running it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            try:
                return future.result(max(left, 0.0))
            except concurrent.futures.CancelledError as exc:
                raise ConnectionClosed(f"{what} did not run: the client was closed") from exc
            except TimeoutError:
                if future.done():
                    continue  # it finished just now: the next result() returns or raises it
            if not self._thread.is_alive() and not future.done():
                raise ConnectionClosed(f"{what} did not run: the client's loop thread has ended")
            if deadline is not None and time.monotonic() >= deadline:
                self._cancel(future)
                raise RequestTimeout(f"{what}: no result within {timeout} s{why}")

    def _serve_loop(self) -> None:
        """The loop thread: run the loop until stopped, then wind it down and close it."""
        loop = self._loop
        try:
            loop.run_forever()
        finally:
            with self._lock:
                self._ended = True
            try:
                # Work handed over just before the stop is still a callback: one turn makes
                # it a task, so the cancelling below reaches it.
                loop.run_until_complete(asyncio.sleep(0))
                client: Client | None = getattr(self, "client", None)
                if client is not None and client.connection_state not in _FINAL:
                    # The loop stopped without close(): do not leave the connection open.
                    with contextlib.suppress(Exception):
                        loop.run_until_complete(asyncio.wait_for(client.close(), 10))
                # Work handed over before the stop: cancelled, so its waiters are told.
                while tasks := asyncio.all_tasks(loop):
                    for task in tasks:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(asyncio.sleep(0))  # deliver the last results
            finally:
                loop.close()
                closed = ConnectionClosed("the client was closed before this ran")
                for future in list(self._handed):
                    if not future.done():
                        with contextlib.suppress(concurrent.futures.InvalidStateError):
                            future.set_exception(closed)

    def _begin_close(self) -> concurrent.futures.Future[None]:
        """Start closing (once): close the client on its loop, then stop the loop.

        Returns a future done once the client is closed; the thread ends right after.
        """
        with self._lock:
            if self._closing is None:
                if self._ended:
                    self._closing = concurrent.futures.Future()
                    self._closing.set_result(None)
                else:
                    self._closing = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            return self._closing

    async def _close(self) -> None:
        try:
            client: Client | None = getattr(self, "client", None)  # None: connect failed
            if client is not None:
                await client.close()
        finally:
            with self._lock:
                self._ended = True  # from here on, nothing more is handed to the loop
            self._loop.stop()

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
    def strategy(self) -> str | None:
        """See :attr:`Client.strategy`."""
        return self.client.strategy

    @property
    def error(self) -> Exception | None:
        """See :attr:`Client.error`."""
        return self.client.error

    @property
    def reconnects(self) -> int:
        """See :attr:`Client.reconnects`."""
        return self.client.reconnects

    @property
    def subscriptions(self) -> dict[str, dict[str, float]]:
        """See :attr:`Client.subscriptions`."""
        return self.client.subscriptions

    def dashboard(self, **options: Any) -> Dashboard:
        """A live ipywidgets dashboard over this client (:class:`tdevlab.Dashboard`)."""
        from tdevlab.notebook import Dashboard

        return Dashboard(self, **options)

    # -- requests ---------------------------------------------------------------------------

    def subscribe(self, *channels: str, **options: Any) -> dict[str, Any]:
        """See :meth:`Client.subscribe`; blocks until acknowledged."""

        async def subscribe() -> dict[str, Any]:
            return await self.client.subscribe(*channels, **options)

        return self._request(subscribe())

    def unsubscribe(self, *channels: str) -> dict[str, Any]:
        """See :meth:`Client.unsubscribe`."""
        return self._request(self.client.unsubscribe(*channels))

    def control(self, action: str, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.control`."""
        return self._request(self.client.control(action, **parameters))

    def start(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.start`."""
        return self._request(self.client.start(**parameters))

    def pause(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.pause`."""
        return self._request(self.client.pause(**parameters))

    def resume(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.resume`."""
        return self._request(self.client.resume(**parameters))

    def stop(self) -> dict[str, Any]:
        """See :meth:`Client.stop`."""
        return self._request(self.client.stop())

    def set_parameters(self, **parameters: Any) -> dict[str, Any]:
        """See :meth:`Client.set_parameters`."""
        return self._request(self.client.set_parameters(**parameters))

    def rollback(self, generation: int) -> dict[str, Any]:
        """See :meth:`Client.rollback`."""
        return self._request(self.client.rollback(generation))

    def branch(self, agent_id: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """See :meth:`Client.branch`."""
        return self._request(self.client.branch(agent_id, parameters))

    def get_lineage(
        self, agent_id: str, depth: int | None = None, *, descendants: bool = False
    ) -> dict[str, Any]:
        """See :meth:`Client.get_lineage`."""
        return self._request(self.client.get_lineage(agent_id, depth, descendants=descendants))

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """See :meth:`Client.get_agent`."""
        return self._request(self.client.get_agent(agent_id))

    def get_agent_code(self, agent_id: str) -> AgentCode:
        """See :meth:`Client.get_agent_code`."""
        return self._request(self.client.get_agent_code(agent_id))

    def get_front(self) -> dict[str, Any]:
        """See :meth:`Client.get_front`."""
        return self._request(self.client.get_front())

    def get_archive(self) -> dict[str, Any]:
        """See :meth:`Client.get_archive`."""
        return self._request(self.client.get_archive())

    def get_population(self) -> dict[str, Any]:
        """See :meth:`Client.get_population`."""
        return self._request(self.client.get_population())

    def diff(self, agent_a: str, agent_b: str) -> GenomeDiff:
        """See :meth:`Client.diff`."""
        return self._request(self.client.diff(agent_a, agent_b))

    def upload_agent_code(self, code: str) -> dict[str, Any]:
        """See :meth:`Client.upload_agent_code`."""
        return self._request(self.client.upload_agent_code(code))

    def ping(self) -> float:
        """See :meth:`Client.ping`."""
        return self._request(self.client.ping())

    def call(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """See :meth:`Client.call`: run a request from any thread without waiting.

        ``call("close")`` closes as :meth:`close` does (the loop thread ends too); its
        future is done once the client is closed. After the close, the futures of other
        calls hold :class:`~tdevlab.exceptions.ConnectionClosed`.
        """
        if method == "close":
            return self._begin_close()
        with self._lock:
            if not self._ended:
                return self._track(self.client.call(method, *args, **kwargs))
        check_callable(method)
        failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
        failed.set_exception(ConnectionClosed("the client is closed"))
        return failed

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
        return self._run(self.client.wait_for(event, predicate), timeout, f"wait_for({event!r})")

    # -- events -----------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Any], object]) -> Callable[[], None]:
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
        """Close the connection and end the background thread; safe to call again.

        From one of the client's own callbacks (they run on that thread, which cannot wait
        for itself) the close is scheduled and this returns at once: the client closes and
        the thread ends as soon as the callback returns.
        """
        closing = self._begin_close()
        if threading.current_thread() is self._thread:
            return
        with contextlib.suppress(Exception):
            # Bounded by the client's own close (5 s for the closing handshake).
            closing.result(15)
        self._thread.join(10)

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
        value = self._on_loop(lambda: getattr(self._target, name), f"frames.{name}")
        if callable(value):
            return functools.partial(self._call, name)
        return value

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._on_loop(
            lambda: getattr(self._target, name)(*args, **kwargs), f"frames.{name}()"
        )

    def _on_loop(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on the loop thread, waiting at most the owner's ``frames_timeout``.

        Raises:
            RequestTimeout: the loop thread did not run it in time (it is stuck).
        """
        owner = self._owner
        if threading.current_thread() is owner._thread:
            return fn()

        async def run() -> T:
            return fn()

        try:
            future = owner._hand_over(run())
            return owner._wait(
                future,
                owner.frames_timeout,
                f"reading {what}",
                " (frames_timeout): the client's loop thread is busy, in a callback that "
                "does not return?",
            )
        except ConnectionClosed:
            # The loop stopped: once its thread is done nothing writes the frames any more.
            owner._thread.join(owner.frames_timeout)
            if owner._thread.is_alive():
                raise RequestTimeout(
                    f"reading {what}: the client's loop thread did not end within "
                    f"{owner.frames_timeout} s"
                ) from None
            return fn()

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
