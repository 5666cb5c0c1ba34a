"""Shared fixtures, the one time scale of the suite, and async tests.

Every timeout and deadline in the tests is ``timeout(seconds)``: seconds at scale 1, times
``TDEVLAB_TEST_SCALE`` (raise it on a slow machine; a slow machine makes the suite slower,
never red). ``MS`` is one millisecond at that scale. No test waits a fixed time for progress:
it waits for a condition with ``eventually`` / ``eventually_sync``, bounded by a timeout.

``async def`` tests run in a fresh event loop each, bounded by ``timeout(ASYNC_TEST_SECONDS)``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from tdevlab.server import EvolutionServer

#: The factor applied to every wait in the tests (TDEVLAB_TEST_MS is its older name).
SCALE = float(os.environ.get("TDEVLAB_TEST_SCALE", os.environ.get("TDEVLAB_TEST_MS", "1")))

T = TypeVar("T")

#: One millisecond of waiting in tests, in seconds, at the suite's scale.
MS = SCALE * 0.001

#: The bound on one async test, in seconds at scale 1.
ASYNC_TEST_SECONDS = 120


def timeout(seconds: float) -> float:
    """``seconds`` at the suite's scale: the only way a test spells a timeout."""
    return seconds * SCALE


#: How often ``eventually`` checks its condition (a poll interval, not a wait for progress).
POLL = 0.005


async def eventually(
    condition: Callable[[], T], within: float = 10.0, what: str = "the condition"
) -> T:
    """Wait until ``condition()`` is truthy and return it; fail after ``timeout(within)``."""
    deadline = time.monotonic() + timeout(within)
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not true within {timeout(within):.1f} s"
        await asyncio.sleep(POLL)  # a poll: yields to the loop, then checks again
    return value


def eventually_sync(
    condition: Callable[[], T], within: float = 10.0, what: str = "the condition"
) -> T:
    """``eventually`` for code without an event loop (another thread does the work)."""
    deadline = time.monotonic() + timeout(within)
    while not (value := condition()):
        assert time.monotonic() < deadline, (
            f"{what}: not true within {timeout(within):.1f} s; last value {value!r}"
        )
        time.sleep(POLL)  # a poll: another thread makes the progress
    return value


def run(coroutine: Coroutine[Any, Any, T], within: float = 60) -> T:
    """Run ``coroutine`` in a fresh event loop, bounded by ``timeout(within)``."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout(within)))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop, bounded in time."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    names = inspect.signature(function).parameters
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    run(function(**arguments), ASYNC_TEST_SECONDS)
    return True


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, the same for every test."""
    return np.random.default_rng(20261127)


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[bytes, bytes]:
    """An RSA-2048 key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def threaded_server() -> Iterator[EvolutionServer]:
    """A server with a small fast engine running in its own thread (``start()``), for the
    blocking client's tests; stopped at the end."""
    from tests.serving import make_server

    server = make_server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
