"""The client against a `tdevlab serve` process that is killed, restarted and frozen."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

import tdevlab
from tdevlab import Engine
from tdevlab.client import Backoff, SyncClient
from tdevlab.server import EvolutionServer
from tests.conftest import eventually, eventually_sync, timeout
from tests.serving import SECRET, TIMEOUT, make_server, operator_token, serve_store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_loses_no_generation(tmp_path: Path) -> None:
    """SIGKILL mid-run, restart on the same store: the client reconnects by itself and its
    frame holds every generation exactly once, in order."""
    db, port = tmp_path / "runs.db", _free_port()
    url = f"ws://127.0.0.1:{port}/v1/evolution"
    backoff = Backoff(initial=0.05, cap=0.5, max_attempts=100)
    with serve_store(db, "--autostart", port=port) as (server, _):
        client = SyncClient(url, operator_token(), backoff=backoff)
        client.subscribe("evolution", "control")
        client.wait_for("evolution", lambda m: m["data"]["generation"] >= 15, timeout=TIMEOUT)
        server.send_signal(signal.SIGKILL)
        server.wait(TIMEOUT)
    try:
        eventually_sync(lambda: client.connection_state == "reconnecting")
        killed_at = client.generation
        assert killed_at is not None
        with serve_store(db, port=port):  # resumes the stored run, not started
            eventually_sync(lambda: client.connection_state == "open")
            assert client.start()["state"] == "running"  # continues from the last stored one
            client.wait_for(
                "evolution",
                lambda m: m["data"]["generation"] >= killed_at + 20,
                timeout=TIMEOUT,
            )
            client.stop()
            evolution = client.frames.evolution
        assert client.reconnects == 1
        assert evolution.index.tolist() == list(range(len(evolution)))
        assert evolution["seq"].tolist() == list(range(1, len(evolution) + 1))
        assert set(evolution["branch"]) == {0}
        # The store agrees: what the client holds is what was recorded.
        run = tdevlab.export_run(db, 1, tmp_path / "dataset")
        stored = tdevlab.load_run(run).active_generations
        assert stored.index.tolist()[: len(evolution)] == evolution.index.tolist()
        assert stored["best_fitness"].tolist()[: len(evolution)] == (
            evolution["best_fitness"].tolist()
        )
    finally:
        client.close()


async def test_a_generation_stored_but_not_announced_before_a_crash_reaches_the_frames(
    tmp_path: Path,
) -> None:
    """A generation the store holds but the client never got live (the server died between
    recording and announcing it) is replayed from the store into the frames, in order."""
    db = tmp_path / "runs.db"
    first = make_server(engine=Engine(seed=3, population_size=20, store=db))
    await first.__aenter__()
    assert first.port is not None
    assert first.engine.run_id is not None
    client = await tdevlab.connect(
        first.url,
        token=first.token("ada", "operator"),
        backoff=Backoff(initial=0.05, cap=0.2, max_attempts=200),
        ping_interval=None,
    )
    try:
        await client.subscribe("evolution")
        for _ in range(2):
            await asyncio.to_thread(first.engine.step)
        await eventually(lambda: client.generation == 1)
        await first.__aexit__(None, None, None)
        await eventually(lambda: client.connection_state == "reconnecting")
        # The crash window, made certain: generation 2 is recorded with no server to
        # announce it, so the client can only have it from the store's replay.
        engine = Engine.open(db, first.engine.run_id)
        await asyncio.to_thread(engine.step)
        async with EvolutionServer(engine, host="127.0.0.1", port=first.port, secret=SECRET):
            await client.wait_open()
            await eventually(lambda: client.generation == 2)
            await asyncio.to_thread(engine.step)  # and the live stream goes on after it
            await eventually(lambda: client.generation == 3)
            evolution = client.frames.evolution
    finally:
        await client.close()
    assert client.reconnects == 1
    assert client.frames.rejected == 0, client.frames.last_rejection
    assert evolution.index.tolist() == [0, 1, 2, 3]
    assert evolution["seq"].tolist() == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_frozen_server_is_treated_as_gone_and_rejoined(tmp_path: Path) -> None:
    """A server that stops answering (SIGSTOP) misses its pongs: the client drops the
    connection, and reconnects once the server answers again (SIGCONT)."""
    db, port = tmp_path / "runs.db", _free_port()
    url = f"ws://127.0.0.1:{port}/v1/evolution"
    with serve_store(db, port=port) as (server, _):
        client = SyncClient(
            url,
            operator_token(),
            ping_interval=0.2,
            ping_timeout=timeout(0.5),
            request_timeout=timeout(1.0),
            backoff=Backoff(initial=0.1, cap=0.3, max_attempts=None),
        )
        try:
            states: list[str] = []
            client.on("state", states.append)
            client.subscribe("control")
            server.send_signal(signal.SIGSTOP)
            try:
                eventually_sync(lambda: client.connection_state == "reconnecting")
            finally:
                server.send_signal(signal.SIGCONT)
            eventually_sync(lambda: client.connection_state == "open")
            assert states[:2] == ["reconnecting", "open"]
            assert client.ping() > 0
            assert client.reconnects >= 1
        finally:
            client.close()
