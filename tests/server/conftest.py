"""The server tests' helpers live in tests/serving.py, shared with the client tests."""

from __future__ import annotations

from tests.serving import (  # noqa: F401 (kept importable from here)
    SECRET,
    TIMEOUT,
    Client,
    client,
    connection_of,
    make_server,
    stalled_client,
)
