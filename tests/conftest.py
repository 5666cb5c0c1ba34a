"""Shared fixtures. Timeouts scale from ``MS`` (raise TDEVLAB_TEST_MS on slow machines)."""

from __future__ import annotations

import os

import numpy as np
import pytest

#: One "unit" of waiting in tests, in seconds.
MS = float(os.environ.get("TDEVLAB_TEST_MS", "1")) * 0.001


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, the same for every test."""
    return np.random.default_rng(20261127)
