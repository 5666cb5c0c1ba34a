"""The notebook-ready client: a resilient connection, request/reply, live pandas frames.

``await tdevlab.connect(url, token=...)`` in Jupyter (on the kernel's own loop), or
``tdevlab.connect_sync(url, token=...)`` in a script. pandas is imported by the frames,
which every client has.
"""

from __future__ import annotations

from tdevlab.client.api import Client, connect
from tdevlab.client.connection import ConnectionState
from tdevlab.client.nested import enable_nested_asyncio
from tdevlab.client.streams import AgentCode, Backoff
from tdevlab.client.sync import SyncClient, connect_sync

__all__ = [
    "AgentCode",
    "Backoff",
    "Client",
    "ConnectionState",
    "SyncClient",
    "connect",
    "connect_sync",
    "enable_nested_asyncio",
]
