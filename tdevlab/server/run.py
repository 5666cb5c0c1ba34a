"""Running a server until Ctrl-C or SIGTERM (what ``tdevlab serve`` does)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TextIO

from tdevlab.server.app import EvolutionServer

__all__ = ["serve_until_signalled"]


async def serve_until_signalled(
    server: EvolutionServer, *, token: str | None = None, stream: TextIO = sys.stdout
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Prints one line with the endpoint when ready (and the operator token when given).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        if token is not None:
            print(f"operator token: {token}", file=stream, flush=True)
        print(f"tdevlab: serving {server.url}", file=stream, flush=True)
        await stop.wait()
        print("tdevlab: shutting down", file=stream, flush=True)
