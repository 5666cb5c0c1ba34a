"""The client's resilience: races and recovery paths, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import tdevlab
from tdevlab import Engine
from tdevlab.client import Backoff, Client
from tdevlab.client.streams import StreamTracker
from tdevlab.exceptions import (
    ConnectionClosed,
    RateLimited,
    RequestTimeout,
)
from tdevlab.protocol.auth import TokenVerifier, issue_token
from tdevlab.protocol.limits import Limits
from tdevlab.server import EvolutionServer
from tests.conftest import eventually, timeout
from tests.serving import SECRET, TIMEOUT, CountingBackoff, connected, make_server

FAST = Backoff(initial=0.05, cap=0.2, max_attempts=200)


def _port(server: EvolutionServer) -> int:
    assert server.port is not None
    return server.port


def _log(text: str = "x") -> dict[str, Any]:
    return {"generation": 0, "message": text, "details": {}}


# -- requests queued while disconnected ------------------------------------------------------


async def test_a_request_that_timed_out_while_queued_is_not_sent_later() -> None:
    """A control command that raised RequestTimeout while down must not run on reconnect."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url, token=first.token("ada", "operator"), backoff=FAST, request_timeout=timeout(0.3)
    )
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    with pytest.raises(RequestTimeout):
        await client.start()  # the caller is told it failed
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=SECRET) as second:
        await client.wait_open()
        # A ping goes out after whatever was still queued: once it is answered, a flushed
        # start would have been applied.
        await client.ping()
        # The timed-out start was flushed from the outbox and started the run anyway.
        assert second.engine.state.value == "idle"
        await client.close()


@pytest.mark.slow
async def test_queued_messages_flushed_on_reconnect_respect_the_rate_limit() -> None:
    """Requests queued while down (well within queue_size) all succeed after reconnecting."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url, token=first.token("ada", "operator"), backoff=FAST, ping_interval=None
    )
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    queued = [asyncio.ensure_future(client.ping()) for _ in range(150)]  # queue_size=1000
    await asyncio.sleep(0)  # one turn: the pings are queued
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=SECRET):
        results = await asyncio.gather(*queued, return_exceptions=True)
        refused = [r for r in results if isinstance(r, RateLimited)]
        # The whole outbox goes out in one burst, past the server's 100 messages/s.
        assert refused == []
        await client.close()


async def test_a_subscribe_refused_by_a_full_queue_is_not_applied_later() -> None:
    """subscribe() that raised (queue full while down) must not be restored on reconnect."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url, token=first.token("ada", "operator"), backoff=FAST, queue_size=1
    )
    await client.subscribe("control")
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    ping = asyncio.ensure_future(client.ping())  # fills the queue
    await asyncio.sleep(0)  # one turn: the ping is queued
    with pytest.raises(ConnectionClosed, match="already waiting"):
        client.subscribe("logs")
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=SECRET) as second:
        await ping
        (connection,) = second.hub.connections
        assert client.subscriptions == {"control": {}}
        assert sorted(connection.session.subscriptions) == ["control"]
        await client.close()


# -- requests sent twice, or re-sent out of order --------------------------------------------


async def test_a_request_made_right_after_connect_is_sent_once() -> None:
    """A subscribe made before the client's reader task first runs goes out once, not twice."""
    async with make_server(metrics_interval=0) as server:
        for _ in range(10):
            server.hub.publish("logs", "log", _log(), level="info")
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await client.subscribe("logs")  # sent by _send, then again by _resend_pending
        await eventually(lambda: len(client.frames.logs) == 10)
        await client.ping()  # answered after every request sent before it
        await client.close()
        assert server.stats.requests == 2  # the subscribe and the ping
        assert client.streams.duplicates == 0  # the whole history came twice


async def test_a_reconnect_resubscribes_once() -> None:
    """After a drop, each resubscribe goes out once (it is also re-sent as 'pending')."""
    async with make_server(metrics_interval=0) as server:
        client = await tdevlab.connect(
            server.url,
            token=server.token("ada", "operator"),
            backoff=Backoff(initial=0.3, cap=0.3, jitter=0),
        )
        await client.ping()
        await client.subscribe("logs")
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.connection_state == "reconnecting")
        for _ in range(10):  # missed while down: replayed after the resubscribe
            server.hub.publish("logs", "log", _log(), level="info")
        await eventually(lambda: len(client.frames.logs) == 10)
        await client.ping()  # answered after the resubscribes and their replays
        await client.close()
        assert client.streams.duplicates == 0  # the missed events came twice


async def test_subscribes_in_flight_during_a_drop_are_resent_in_call_order() -> None:
    """Re-sent requests keep their order: the last subscribe's filters are the ones in force."""
    async with make_server() as server, connected(server, backoff=FAST) as client:
        await client.ping()  # the reader task runs: no double send
        first = client.subscribe("evolution", generation_min=5)
        second = client.subscribe("evolution", generation_min=10)
        for connection in list(server.hub.connections):
            connection.abort()  # the drop: neither subscribe is answered
        await asyncio.gather(first, second)
        assert client.reconnects == 1
        assert client.subscriptions == {"evolution": {"generation_min": 10}}
        (connection,) = server.hub.connections
        # _resend_pending appendleft()s each request: they go out in reverse order.
        assert connection.session.subscriptions["evolution"].generation_min == 10


# -- the server's replays --------------------------------------------------------------------


@pytest.mark.slow
async def test_two_awaited_subscribes_in_a_row_lose_no_log_event() -> None:
    """`await subscribe("logs"); await subscribe("control")` with a long logs history and
    live logs: every log event reaches the client exactly once."""
    async with make_server(history=30_000, metrics_interval=0) as server:
        # ~20 MB of history: the replay streams in pieces as the client reads.
        for _ in range(20_000):
            server.hub.publish("logs", "log", _log("x" * 1000), level="info")
        server.hub.publish("control", "control_update", {"action": "start"})
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await client.ping()  # the client's reader runs (see the double-send test)
        seen: list[int] = []
        client.on("logs", lambda m: seen.append(m["seq"]))
        live = True

        async def publish_live() -> None:
            while live:
                server.hub.publish("logs", "log", _log("live"), level="info")
                await asyncio.sleep(0.002)  # the pace of the live events

        publisher = asyncio.ensure_future(publish_live())
        # The ack comes first, then the replay: the second subscribe reaches the server
        # while the first replay is still streaming.
        await client.subscribe("logs")
        await client.subscribe("control")
        # ~20 MB: a loaded machine takes many times the second it takes here idle.
        await eventually(lambda: len(seen) >= 20_000 or (bool(seen) and seen[-1] > 20_000), 60)
        caught_up = len(seen)
        await eventually(lambda: len(seen) >= caught_up + 50)  # live events go on after it
        live = False
        await publisher
        last = server.hub.seq["logs"]
        await eventually(lambda: bool(seen) and seen[-1] == last, 60)
        await client.close()
        missing = sorted(set(range(1, last + 1)) - set(seen))
        assert missing == [], f"{len(missing)} log events lost, from seq {missing[:1]}"
        assert seen == list(range(1, last + 1))


async def test_a_rate_limited_upload_raises_rate_limited() -> None:
    """An agent code upload refused by the rate limit is answered by id: RateLimited."""
    async with make_server(limits=Limits(messages_per_second=1)) as server:
        client = await tdevlab.connect(
            server.url, token=server.token("ada", "operator"), request_timeout=timeout(2)
        )
        await client.ping()  # spends the bucket
        try:
            # The server's error for a refused binary frame has no reply_to: the
            # client waits request_timeout and raises RequestTimeout instead.
            with pytest.raises(RateLimited):
                await client.upload_agent_code("learning_rate = 0.1\n")
        finally:
            await client.close()


# -- epochs: a server restarted without its history ------------------------------------------


@pytest.mark.slow
async def test_subscribe_called_while_reconnecting_to_a_restarted_server_loses_nothing() -> None:
    """Re-running a subscribe cell while the server restarts (new epochs): the new server's
    events all arrive, from seq 1."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url, token=first.token("ada", "operator"), backoff=FAST, ping_interval=None
    )
    await client.ping()  # the reader task runs: no double send
    await client.subscribe("metrics")
    await client.wait_for("metrics", lambda m: m["seq"] >= 5)
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    before = len(client.frames.metrics)
    again = client.subscribe("metrics")  # queued with the old epoch's since/epochs
    async with EvolutionServer(
        engine, host="127.0.0.1", port=port, secret=SECRET, metrics_interval=0.2
    ):
        await again
        await eventually(lambda: client.streams.epoch_changes == 1)
        await eventually(lambda: len(client.frames.metrics) >= before + 3, 30)
        seqs = client.frames.metrics["seq"].tolist()[before:]
        await client.close()
    # The queued subscribe's ack is taken for the resync's: `resyncing` is cleared with
    # the old epoch's position, and the new epoch's events up to it are dropped.
    assert seqs[:3] == [1, 2, 3], seqs


async def _restart_with_refused_resync(
    limits: Limits,
) -> tuple[Client, EvolutionServer, int]:
    """Subscribe to metrics on a server, restart it (new epochs) with the client's queue full
    enough that its resync subscribe after the reconnect is refused with RATE_LIMITED.

    Returns the client, the running second server and the metrics rows of the first one.
    """
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine, limits=limits)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url, token=first.token("ada", "operator"), backoff=FAST, ping_interval=None
    )
    await client.ping()  # the reader task runs: no double send
    await client.subscribe("metrics")
    await client.wait_for("metrics", lambda m: m["seq"] >= 3)
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    before = len(client.frames.metrics)
    # Five requests queued while down: with the resubscribe, the new connection's
    # 5-message bucket is spent before the resync subscribe goes out.
    queued = [asyncio.ensure_future(client.ping()) for _ in range(5)]
    await asyncio.sleep(0)  # one turn: the pings are queued
    second = EvolutionServer(
        engine, host="127.0.0.1", port=port, secret=SECRET, limits=limits, metrics_interval=0.2
    )
    await second.__aenter__()
    await client.wait_open()
    await asyncio.gather(*queued, return_exceptions=True)
    await eventually(lambda: client.streams.epoch_changes >= 1)
    return client, second, before


@pytest.mark.slow
async def test_a_refused_resync_subscribe_does_not_mute_the_channel() -> None:
    """After an epoch change whose resync subscribe fails, live events still arrive."""
    client, server, before = await _restart_with_refused_resync(Limits(messages_per_second=5))
    try:
        await eventually(lambda: server.hub.seq["metrics"] >= 5)
        # The channel stays in `resyncing` for good: every event on it is thrown away.
        await eventually(lambda: len(client.frames.metrics) > before)
        assert client.streams.resyncing == set()
    finally:
        await client.close()
        await server.aclose()


@pytest.mark.slow
async def test_after_a_failed_resync_the_next_reconnect_replays_the_new_epoch_from_one() -> None:
    """A later reconnect must replay the new epoch's events from seq 1, not from the old seq."""
    client, server, before = await _restart_with_refused_resync(Limits(messages_per_second=5))
    try:
        await eventually(lambda: server.hub.seq["metrics"] >= 3)  # the new epoch's first
        reconnects = client.reconnects
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.reconnects > reconnects)
        await client.wait_open()
        await eventually(lambda: len(client.frames.metrics) >= before + 3, 30)
        seqs = client.frames.metrics["seq"].tolist()[before:]
        # The resubscribe carried the old epoch's position; its ack cleared `resyncing`
        # and kept that stale position: the new epoch's first events are never replayed.
        assert seqs[:3] == [1, 2, 3], seqs
    finally:
        await client.close()
        await server.aclose()


# -- reconnecting, authentication, keepalive, TLS --------------------------------------------


async def test_a_token_function_that_raises_once_does_not_kill_the_client() -> None:
    """A token refresh that fails during a reconnect is retried, not a silently dead client."""
    async with make_server() as server:
        calls: list[int] = []

        def token() -> str:
            calls.append(1)
            if len(calls) == 2:  # the first reconnect: the token service hiccups
                raise RuntimeError("token service unavailable")
            return server.token("ada", "operator")

        client = await tdevlab.connect(server.url, token=token, backoff=FAST)
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: len(calls) >= 2)
        try:
            # The runner task died with the RuntimeError: the state stays "reconnecting"
            # forever, nothing retries, wait_open() never returns.
            await eventually(lambda: client.connection_state in ("open", "failed"))
            assert client.connection_state == "open"
        finally:
            await client.close()


async def test_too_many_connections_with_message_auth_is_not_an_auth_failure() -> None:
    """With auth='message', RATE_LIMITED (connection limit) surfaces as RateLimited."""
    async with make_server(limits=Limits(connections_per_user=1)) as server:
        token = server.token("ada", "operator")
        holder = await tdevlab.connect(server.url, token=token)
        with pytest.raises(RateLimited):  # header auth: HTTP 429 -> RateLimited
            await tdevlab.connect(server.url, token=token)
        try:
            with pytest.raises(RateLimited):  # message auth: AuthFailed instead
                await tdevlab.connect(server.url, token=token, auth="message")
        finally:
            await holder.close()


async def test_message_auth_client_retries_when_briefly_over_the_connection_limit() -> None:
    """A reconnect refused for too many connections is retried (auth='message' gives up)."""
    async with make_server(limits=Limits(connections_per_user=1)) as server:
        token = server.token("ada", "operator")
        backoff = CountingBackoff(initial=0.5, cap=0.5, jitter=0, max_attempts=20)
        client = await tdevlab.connect(server.url, token=token, auth="message", backoff=backoff)
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.connection_state == "reconnecting")
        await eventually(lambda: not server.registry.connections)
        other = await tdevlab.connect(server.url, token=token)  # takes the slot meanwhile
        tried = len(backoff.attempts)
        await eventually(lambda: len(backoff.attempts) >= tried + 1)  # one attempt refused
        await other.close()
        try:
            await eventually(lambda: client.connection_state in ("open", "failed"))
            assert client.connection_state == "open", client.error
        finally:
            await client.close()


async def test_an_expired_token_is_refreshed_from_the_token_function() -> None:
    """Close 1008 'token expired' with a token *function*: reconnect with a fresh token."""
    verifier = TokenVerifier(SECRET, leeway=0)
    async with make_server(verifier=verifier) as server:

        def token() -> str:
            return issue_token(SECRET, "ada", "operator", now=time.time(), ttl=1.0)

        client = await tdevlab.connect(server.url, token=token, backoff=FAST)
        await client.subscribe("control")
        try:
            # The server closes with 1008 "token expired: authenticate again with a new
            # token" after ~1 s; the client gives up although it can get a new token.
            await eventually(lambda: client.reconnects >= 1 or client.connection_state == "failed")
            assert client.connection_state != "failed", client.error
        finally:
            await client.close()


@pytest.mark.slow
async def test_app_level_pings_go_on_after_one_is_rate_limited() -> None:
    """One RATE_LIMITED pong must not stop the keepalive pings for the connection's life."""
    limits = Limits(messages_per_second=5)
    async with (
        make_server(limits=limits, metrics_interval=0) as server,
        connected(server, ping_interval=0.1) as client,
    ):
        deadline = time.monotonic() + timeout(0.6)
        while time.monotonic() < deadline:  # a busy notebook: the bucket stays empty
            await asyncio.gather(*(client.ping() for _ in range(5)), return_exceptions=True)
            await asyncio.sleep(0.05)  # the pace of the flood
        before = server.stats.requests
        # _ping_loop returned on the RateLimited error: no more keepalive pings.
        await eventually(lambda: server.stats.requests - before >= 5)


async def test_wss_without_an_ssl_argument_uses_the_system_trust_store(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wss:// with the default ssl=None connects with a default TLS context."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the "system" CAs
    async with make_server(ssl=server_ctx) as server:
        # websockets: "ssl=None is incompatible with a wss:// URI" (a ValueError).
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        assert await client.ping() > 0
        await client.close()


async def test_tls_client_with_a_private_ca_reconnects_over_wss() -> None:
    """Coverage: ssl= reaches every connect, the reconnects included."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with make_server(ssl=server_ctx) as server:
        assert server.url.startswith("wss://")
        token = server.token("ada", "operator")
        client = await tdevlab.connect(server.url, token=token, ssl=client_ctx, backoff=FAST)
        await client.subscribe("metrics")
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.reconnects == 1)
        await client.wait_open()
        assert await client.ping() > 0
        await client.close()


async def test_close_while_reconnecting_fails_queued_requests_and_stops() -> None:
    """Coverage: close() during the backoff ends the client; queued requests fail at once."""
    server = make_server()
    await server.__aenter__()
    backoff = CountingBackoff(initial=0.2, cap=0.2, max_attempts=None)
    client = await tdevlab.connect(
        server.url, token=server.token("ada", "operator"), backoff=backoff
    )
    states: list[str] = []
    client.on("state", states.append)
    await server.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    queued = asyncio.ensure_future(client.start())
    await eventually(lambda: len(backoff.attempts) >= 2)  # in the backoff after a refusal
    await asyncio.wait_for(client.close(), timeout(2))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(queued, timeout(2))
    # Closed for good: a request fails at once and starts no reconnect attempt.
    tried = len(backoff.attempts)
    with pytest.raises(ConnectionClosed):
        await client.ping()
    assert (client.connection_state, client.reconnects, len(backoff.attempts)) == (
        "closed",
        0,
        tried,
    )
    assert states == ["reconnecting", "closed"]


async def test_resubscribe_keeps_each_channels_filters() -> None:
    """Coverage: after a drop, channels come back with their own filters (grouped)."""
    async with make_server() as server, connected(server, backoff=FAST) as client:
        await client.subscribe("evolution", generation_min=3, fitness_min=0.5)
        await client.subscribe("logs", "control")
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.reconnects == 1)
        await client.wait_open()
        await eventually(lambda: len(server.hub.connections) == 1)
        (connection,) = server.hub.connections
        await eventually(lambda: len(connection.session.subscriptions) == 3)
        subscribed = connection.session.subscriptions
        assert subscribed["evolution"].to_dict() == {"generation_min": 3, "fitness_min": 0.5}
        assert subscribed["logs"].to_dict() == subscribed["control"].to_dict() == {}


# -- waiting for events ----------------------------------------------------------------------


async def test_wait_for_after_close_raises_instead_of_hanging() -> None:
    """wait_for on a closed client raises ConnectionClosed at once (it waits forever)."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await client.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.wait_for("metrics"), timeout(2))


async def test_wait_for_with_a_predicate_that_raises_raises_instead_of_hanging() -> None:
    """An exception in wait_for's predicate reaches the caller (it is logged and lost)."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await client.subscribe("metrics", history=False)
        try:
            with pytest.raises(KeyError):
                await asyncio.wait_for(client.wait_for("metrics", lambda m: m["nope"]), timeout(2))
        finally:
            await client.close()


async def test_events_iterator_after_close_ends_instead_of_hanging() -> None:
    """An events() iterator started on a closed client ends at once (it waits forever)."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await client.close()
        iterator = client.events("metrics")
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(iterator), timeout(2))


async def test_a_callback_removing_itself_does_not_hide_the_event_from_the_next() -> None:
    """A one-shot callback that unregisters itself must not make the next callback skip."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        seen: list[int] = []
        remove: list[Callable[[], None]] = []
        remove.append(client.on("metrics", lambda m: remove[0]()))  # one-shot
        client.on("metrics", lambda m: seen.append(m["seq"]))
        await client.subscribe("metrics", history=False)
        await client.wait_for("metrics", lambda m: len(seen) >= 3)
        await client.close()
        assert seen == client.frames.metrics["seq"].tolist()


# -- the blocking twin -----------------------------------------------------------------------


def test_sync_events_after_close_end_instead_of_blocking_forever(
    threaded_server: EvolutionServer,
) -> None:
    """SyncClient.events() on a closed client ends at once (it blocks forever)."""
    client = tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    )
    client.close()
    outcome: list[Any] = []

    def consume() -> None:
        outcome.extend(client.events("metrics"))  # timeout=None: the default
        outcome.append("ended")

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout(2))
    assert outcome == ["ended"]


def test_sync_requests_after_close_raise_connection_closed(
    threaded_server: EvolutionServer,
) -> None:
    """A blocking request on a closed SyncClient raises ConnectionClosed, as the async one."""
    client = tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    )
    client.close()
    with pytest.raises(ConnectionClosed):  # RuntimeError: Event loop is closed
        client.ping()


def test_sync_client_reads_and_requests_across_threads(threaded_server: EvolutionServer) -> None:
    """Coverage: frames through _OnLoop, call() from worker threads, properties, close."""
    with tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    ) as client:
        client.subscribe("evolution", "control")
        client.start(population_size=20)
        client.wait_for("evolution", lambda m: m["data"]["generation"] >= 5, timeout=TIMEOUT)
        futures = [client.call("ping") for _ in range(8)]
        assert all(f.result(TIMEOUT) > 0 for f in futures)
        frame = client.frames.evolution  # a property read on the loop
        assert frame.index.is_monotonic_increasing
        assert client.frames.versions["evolution"] >= 6  # a property returning a dict
        dataset = client.frames.to_run()  # a method: a partial run on the loop
        assert len(dataset.generations) >= 6
        assert client.run_state == "running"
        client.stop()
    assert client.connection_state == "closed"


# -- the sans-I/O core -----------------------------------------------------------------------


def _ack(channels: list[str], epochs: dict[str, str], seq: dict[str, int]) -> dict[str, Any]:
    return {"request": "subscribe", "channels": channels, "epochs": epochs, "seq": seq}


def _accepted(tracker: StreamTracker, channel: str, seqs: range) -> list[int]:
    return [s for s in seqs if tracker.accept({"type": "log", "channel": channel, "seq": s})]


def test_tracker_an_unrelated_ack_does_not_end_a_resync_with_a_stale_position() -> None:
    """While resyncing, an ack to another subscribe (old epoch's since) must not end it."""
    tracker = StreamTracker()
    tracker.acknowledged(_ack(["logs"], {"logs": "old"}, {"logs": 0}), {"logs": 0})
    assert _accepted(tracker, "logs", range(1, 8)) == list(range(1, 8))
    assert tracker.acknowledged(_ack(["logs"], {"logs": "new"}, {"logs": 3}), {"logs": 7}) == [
        "logs"
    ]
    # A subscribe built before the restart (since 7, old epoch) is acknowledged first: the
    # server replays nothing for it (recovered: false) ...
    tracker.acknowledged(_ack(["logs"], {"logs": "new"}, {"logs": 3}), {"logs": 7})
    # ... then the resync's ack (since 0), and its replay of the new epoch from 1.
    tracker.acknowledged(_ack(["logs"], {"logs": "new"}, {"logs": 3}), {"logs": 0})
    assert _accepted(tracker, "logs", range(1, 5)) == [1, 2, 3, 4]


def test_tracker_asks_for_one_resync_per_epoch_change() -> None:
    """Two acks listing a channel whose epoch changed (two filter groups) resync it once."""
    tracker = StreamTracker()
    tracker.acknowledged(
        _ack(["logs", "metrics"], {"logs": "a", "metrics": "a"}, {"logs": 4, "metrics": 4}), {}
    )
    new = {"logs": "b", "metrics": "b"}
    assert tracker.acknowledged(_ack(["logs"], new, {"logs": 1}), {"logs": 4}) == ["logs"]
    # The second group's ack lists every channel subscribed on the connection.
    resync = tracker.acknowledged(_ack(["logs", "metrics"], new, {"logs": 1}), {"metrics": 4})
    assert resync == ["metrics"]
    assert tracker.epoch_changes == 2


def test_tracker_an_ack_for_other_channels_does_not_move_a_channels_position() -> None:
    """An ack lists every subscribed channel: it must not skip another channel's events
    (live events held behind a replay arrive after a later subscribe's ack)."""
    tracker = StreamTracker()
    tracker.acknowledged(_ack(["logs"], {"logs": "e"}, {"logs": 0}), {"logs": 0})
    assert _accepted(tracker, "logs", range(1, 101)) == list(range(1, 101))
    # subscribe("control"): the ack names logs too, with the server's latest logs seq.
    both = {"logs": "e", "control": "e"}
    tracker.acknowledged(_ack(["control", "logs"], both, {"logs": 103}), {"control": 0})
    assert _accepted(tracker, "logs", range(101, 104)) == [101, 102, 103]


def test_tracker_a_live_only_channel_takes_up_a_new_epoch_without_a_resync() -> None:
    """A channel subscribed without history continues after the new epoch's ack, unreplayed."""
    tracker = StreamTracker(live_only={"logs"})
    tracker.acknowledged(_ack(["logs"], {"logs": "old"}, {"logs": 40}), {})
    assert _accepted(tracker, "logs", range(41, 44)) == [41, 42, 43]
    resync = tracker.acknowledged(_ack(["logs"], {"logs": "new"}, {"logs": 7}), {"logs": 43})
    assert resync == []
    assert tracker.resyncing == set()
    assert tracker.epoch_changes == 1
    assert _accepted(tracker, "logs", range(1, 10)) == [8, 9]
    assert tracker.since(["logs"]) == {"logs": 9}
    assert tracker.epochs(["logs"]) == {"logs": "new"}


def test_parse_agent_code_refuses_bad_metadata_with_a_tdevlab_error() -> None:
    """Malformed metadata raises TdevlabError (what the client catches), not TypeError."""
    from tdevlab.client.streams import parse_agent_code
    from tdevlab.exceptions import TdevlabError

    with pytest.raises(TdevlabError):
        parse_agent_code(b'{"type": "agent_code", "generation": null}\nx = 1\n')


# -- closing the blocking twin, a stuck loop, liveness behind replays, ordering, epochs -----


def _new_loop_thread(before: set[threading.Thread]) -> threading.Thread:
    """The SyncClient loop thread started since ``before`` was taken."""
    (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "tdevlab-client"]
    return thread


def _ended(thread: threading.Thread) -> bool:
    """Whether ``thread`` ends within TIMEOUT."""
    thread.join(TIMEOUT)
    return thread not in threading.enumerate()


def test_sync_close_from_a_callback_closes_and_returns_at_once(
    threaded_server: EvolutionServer,
) -> None:
    """SyncClient.close() inside an on() callback returns, then the client closes and its
    loop thread ends (it raised InvalidState and left the client open)."""
    before = set(threading.enumerate())
    client = tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    )
    thread = _new_loop_thread(before)
    outcome: list[Any] = []

    def close_from_callback(message: dict[str, Any]) -> None:
        if outcome:
            return
        try:
            client.close()
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append("returned")

    client.on("metrics", close_from_callback)
    client.subscribe("metrics", history=False)
    assert _ended(thread)
    assert outcome == ["returned"]
    assert client.connection_state == "closed"
    with pytest.raises(ConnectionClosed):
        client.ping()
    client.close()  # again, from the caller's thread: nothing left to do


def test_sync_call_close_ends_the_loop_thread(threaded_server: EvolutionServer) -> None:
    """client.call("close") (a widget's path) closes and ends the loop thread, as close()."""
    before = set(threading.enumerate())
    client = tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    )
    thread = _new_loop_thread(before)
    assert client.ping() > 0
    client.call("close").result(TIMEOUT)
    assert client.connection_state == "closed"
    assert _ended(thread)  # the connection closed; the thread ran on, idle, for good
    with pytest.raises(ConnectionClosed):
        client.call("ping").result(TIMEOUT)


def _on_a_stuck_loop(attempt: Callable[[Any], Any], **options: Any) -> tuple[Any, Any]:
    """Call ``attempt(client)`` from a thread while a callback blocks the client's loop.

    Returns what it returned or raised, and the client (released, still open). Fails if the
    attempt is still waiting after ``TIMEOUT / 2``.
    """
    server = make_server()
    url = server.start()
    release = threading.Event()
    try:
        client = tdevlab.connect_sync(url, token=server.token("ada", "operator"), **options)
        stuck = threading.Event()

        def block(message: dict[str, Any]) -> None:  # a callback that does not return
            stuck.set()
            release.wait(TIMEOUT)

        client.on("metrics", block)
        client.subscribe("metrics", history=False)
        assert stuck.wait(TIMEOUT)
        outcome: list[Any] = []

        def run_attempt() -> None:
            try:
                outcome.append(attempt(client))
            except Exception as exc:
                outcome.append(exc)

        caller = threading.Thread(target=run_attempt, daemon=True)
        caller.start()
        caller.join(TIMEOUT / 2)
        assert len(outcome) == 1, "the attempt hung"
        release.set()
        after = client.ping()  # released, the loop serves requests again
        client.close()
        return outcome[0], after
    finally:
        release.set()
        server.stop()


def test_sync_frames_read_on_a_stuck_loop_raises_instead_of_hanging() -> None:
    """A frames read while a callback blocks the loop thread raises RequestTimeout naming
    the read, within frames_timeout (it waited forever)."""
    outcome, _ = _on_a_stuck_loop(lambda client: client.frames.metrics, frames_timeout=timeout(0.5))
    assert isinstance(outcome, RequestTimeout)
    assert "frames.metrics" in str(outcome)


def test_sync_frames_read_after_the_loop_thread_died_does_not_hang(
    threaded_server: EvolutionServer,
) -> None:
    """With the loop thread gone (its loop stopped), frames are read directly."""
    before = set(threading.enumerate())
    client = tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    )
    thread = _new_loop_thread(before)
    client.loop.call_soon_threadsafe(client.loop.stop)
    assert _ended(thread)
    outcome: list[Any] = []
    reader = threading.Thread(target=lambda: outcome.append(client.frames.metrics), daemon=True)
    reader.start()
    reader.join(TIMEOUT / 2)
    assert len(outcome) == 1, "the read of client.frames.metrics hung"
    assert len(outcome[0]) == 0
    assert client.connection_state == "closed"  # the thread closed it on its way out
    with pytest.raises(ConnectionClosed):
        client.ping()
    client.close()


@pytest.mark.slow
async def test_pongs_behind_a_long_replay_do_not_look_like_a_dead_server() -> None:
    """A resubscribe whose replay outlasts ping_timeout: the pong waits behind the replay,
    yet the client does not drop a connection that is delivering frames all along."""
    async with make_server(history=30_000, metrics_interval=0) as server:
        client = await tdevlab.connect(
            server.url,
            token=server.token("ada", "operator"),
            backoff=Backoff(initial=0.3, cap=0.3, jitter=0),
            ping_interval=0.05,  # the defaults (30 s, 10 s) scaled down to the replay
            ping_timeout=timeout(0.3),
        )
        await client.subscribe("logs")
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.connection_state == "reconnecting")
        for _ in range(30_000):  # ~30 MB missed while away: a replay of ~1 s here
            server.hub.publish("logs", "log", _log("x" * 1000), level="info")
        # ~30 MB: a loaded machine takes many times the second it takes here idle.
        await eventually(lambda: len(client.frames.logs) == 30_000, 60)
        for _ in range(3):  # keepalive goes on after the replay: a few more round trips
            assert await client.ping() > 0
        await client.close()
        # Each ping sent during the replay timed out: the connection was aborted and the
        # replay restarted from where it was, several times.
        assert client.reconnects == 1
        assert client.streams.duplicates == 0


async def test_a_subscribe_from_an_open_callback_goes_out_after_requests_queued_while_down() -> (
    None
):
    """A request made by a state callback on "open" after a reconnect goes out once, after
    the requests queued while down (it went first: the older subscribe's filters won)."""
    async with (
        make_server(metrics_interval=0) as server,
        connected(
            server, backoff=Backoff(initial=0.2, cap=0.2, jitter=0), ping_interval=None
        ) as client,
    ):
        await client.subscribe("evolution", generation_min=1)
        from_callback: list[asyncio.Future[dict[str, Any]]] = []

        def on_state(state: str) -> None:
            if state == "open" and not from_callback:
                from_callback.append(client.subscribe("evolution", generation_min=10))

        client.on("state", on_state)
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.connection_state == "reconnecting")
        requests = server.stats.requests
        queued = client.subscribe("evolution", generation_min=5)  # made while down
        await eventually(lambda: bool(from_callback))
        await asyncio.gather(queued, *from_callback)
        (connection,) = server.hub.connections
        assert client.subscriptions == {"evolution": {"generation_min": 10}}
        assert connection.session.subscriptions["evolution"].generation_min == 10
        # The resubscribe, the queued subscribe and the callback's: once each.
        assert server.stats.requests - requests == 3


async def test_history_false_subscription_is_not_replayed_after_a_server_restart() -> None:
    """subscribe(history=False), then the server restarts (new epochs): the client takes up
    the new stream live, without replaying what the new server published before."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine, metrics_interval=0)
    await first.__aenter__()
    port = _port(first)
    client = await tdevlab.connect(
        first.url,
        token=first.token("ada", "operator"),
        backoff=Backoff(initial=0.5, cap=0.5, jitter=0),
        ping_interval=None,
    )
    await client.subscribe("logs", history=False)
    first.hub.publish("logs", "log", _log("first server"), level="info")
    await eventually(lambda: len(client.frames.logs) == 1)
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    async with EvolutionServer(
        engine, host="127.0.0.1", port=port, secret=SECRET, metrics_interval=0
    ) as second:
        for _ in range(10):  # before the client is back: history it did not ask for
            second.hub.publish("logs", "log", _log("before"), level="info")
        await eventually(lambda: client.streams.epoch_changes == 1)
        await client.ping()  # the resubscribe's ack (and any replay) came before the pong
        second.hub.publish("logs", "log", _log("after"), level="info")
        await eventually(lambda: client.frames.logs["message"].tolist()[-1:] == ["after"])
        await client.close()
    # The epoch change triggered a full resync: the ten "before" events were replayed.
    assert client.frames.logs["message"].tolist() == ["first server", "after"]
    assert client.streams.resyncing == set()


async def test_a_drop_while_the_outbox_drains_loses_no_queued_request() -> None:
    """Requests queued while down drain at 50/s after a burst; a drop in the middle of that
    leaves the rest queued for the next connection: each request gets its reply or
    ConnectionClosed, none is silently dropped (it would end in RequestTimeout)."""
    engine = Engine(seed=3, population_size=20)
    async with (
        make_server(engine=engine, metrics_interval=0) as server,
        connected(
            server,
            backoff=Backoff(initial=0.3, cap=0.3, jitter=0),
            ping_interval=None,
            request_timeout=timeout(8.0),
        ) as client,
    ):
        for connection in list(server.hub.connections):
            connection.abort()
        await eventually(lambda: client.connection_state == "reconnecting")
        requests = server.stats.requests
        # Not idempotent: a request lost on the way is not sent again by itself.
        queued = [
            asyncio.ensure_future(client.set_parameters(mutation_rate=0.2)) for _ in range(120)
        ]
        await asyncio.sleep(0)  # one turn: the requests are queued
        await eventually(lambda: client.connection_state == "open")
        # The burst of 50 is out; the rest goes at 50/s: drop the connection meanwhile.
        await eventually(lambda: server.stats.requests - requests >= 55)
        for connection in list(server.hub.connections):
            connection.abort()
        results = await asyncio.gather(*queued, return_exceptions=True)
    timed_out = [r for r in results if isinstance(r, RequestTimeout)]
    closed = [r for r in results if isinstance(r, ConnectionClosed)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert timed_out == []
    assert len(answered) + len(closed) == 120
    assert len(answered) > 60  # what was still queued went out on the next connection


@pytest.mark.slow
def test_sync_request_on_a_stuck_loop_raises_instead_of_hanging() -> None:
    """A blocking request while a callback blocks the loop thread raises RequestTimeout a
    little after request_timeout (the loop's own timeout cannot fire there)."""
    outcome, after = _on_a_stuck_loop(lambda client: client.ping(), request_timeout=timeout(0.5))
    assert isinstance(outcome, RequestTimeout)
    assert "callback" in str(outcome)
    assert after >= 0


class _LateFuture(concurrent.futures.Future[Any]):
    """A future the loop completes right after a poll of it timed out."""

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except TimeoutError:
            if not self.done():
                self.set_result("the reply")  # the loop thread sets it in this window
            raise


def test_sync_wait_returns_a_reply_that_lands_as_a_poll_times_out(
    threaded_server: EvolutionServer,
) -> None:
    """A reply that arrives between a poll's timeout and the next check is returned, not
    turned into a bare TimeoutError."""
    client = tdevlab.connect_sync(threaded_server.url, token=threaded_server.token("ada", "viewer"))
    assert client._wait(_LateFuture(), 5.0, "request") == "the reply"
    client.close()


def test_sync_call_pending_at_close_is_done_after_it(threaded_server: EvolutionServer) -> None:
    """A call() still waiting when the client closes ends (cancelled), and calls made after
    the close hold ConnectionClosed: no future is left pending for a widget to wait on."""
    client = tdevlab.connect_sync(threaded_server.url, token=threaded_server.token("ada", "viewer"))
    pending = client.call("wait_for", "alert")  # no alert will come
    client.close()
    concurrent.futures.wait([pending], timeout=TIMEOUT)
    assert pending.done()
    with pytest.raises((concurrent.futures.CancelledError, ConnectionClosed)):
        pending.result(0)
    later = client.call("ping")
    assert later.done()
    assert isinstance(later.exception(0), ConnectionClosed)
    assert not client._thread.is_alive()
