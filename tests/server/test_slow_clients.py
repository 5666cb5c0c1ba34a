"""A client that stops reading is cut off at its outbound budget; the others go on."""

from __future__ import annotations

import asyncio
import json
import threading

from websockets.sync.client import connect as sync_connect

from tdevlab.protocol.limits import Limits
from tests.conftest import eventually, timeout
from tests.serving import client, make_server


async def test_stalled_reader_is_cut_off_and_others_keep_receiving() -> None:
    """A real client that stops reading is aborted past its budget; a reading client isn't."""
    limits = Limits(outbound_budget_bytes=256 * 1024)
    async with make_server(limits=limits) as server, client(server, user="reader") as reader:
        await reader.request({"type": "subscribe", "channels": ["logs"]})
        token = server.token("stalled", "viewer")
        subscribed = threading.Event()
        done = threading.Event()

        def stall() -> None:
            # websockets' sync client stops reading the socket once max_queue frames wait.
            with sync_connect(
                server.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                max_queue=1,
                close_timeout=timeout(0.5),
            ) as ws:
                ws.send(json.dumps({"type": "subscribe", "channels": ["logs"]}))
                subscribed.set()
                done.wait(timeout(30))

        stalled = asyncio.ensure_future(asyncio.to_thread(stall))
        try:
            assert await asyncio.to_thread(subscribed.wait, timeout(10))
            await eventually(  # the server has taken the subscribe
                lambda: any(
                    "logs" in c.session.subscriptions
                    for c in server.hub.connections
                    if c.session.claims and c.session.claims.user == "stalled"
                )
            )
            big = {"message": "x" * 20_000, "details": {}, "generation": 0}
            victim = None
            received = 0
            for i in range(2000):  # ~40 MB offered; bounded
                server.hub.publish("logs", "log", big, level="info")
                await asyncio.sleep(0)  # one turn: the server writes what it can
                if i % 20 == 0:
                    await reader.event("log")
                    received += 1
                victim = next(
                    (
                        c
                        for c in server.hub.connections
                        if c.session.claims and c.session.claims.user == "stalled"
                    ),  # fmt: skip
                    victim,
                )
                if victim is not None and victim.aborted:
                    break
            assert victim is not None
            assert victim.aborted, "the stalled client was never cut off"
            assert victim.dropped >= 1
            assert received >= 1
            # The reading client is still served.
            assert (await reader.request({"type": "ping"}))["type"] == "pong"
            await eventually(lambda: victim not in server.hub.connections)
        finally:
            done.set()
            await asyncio.wait_for(stalled, timeout(10))
