"""An explicit opt-in to nested event loops (nest-asyncio), never applied on import.

tdevlab's clients do not need it: in Jupyter ``await tdevlab.connect(...)`` runs on the
kernel's loop and :class:`~tdevlab.client.sync.SyncClient` runs its own loop in a thread.
It is for code that calls ``asyncio.run`` (or ``loop.run_until_complete``) from inside a
running loop — a third-party helper used in a notebook cell, say — which otherwise fails
with "This event loop is already running".
"""

from __future__ import annotations

import asyncio

__all__ = ["enable_nested_asyncio"]


def enable_nested_asyncio(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Let ``loop`` (default: the running or current loop) be re-entered, via nest-asyncio.

    This patches asyncio for the whole process (that is what nest-asyncio does), so it is
    only ever done when called.
    """
    import nest_asyncio

    nest_asyncio.apply(loop)
