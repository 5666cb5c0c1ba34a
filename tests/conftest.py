"""Shared fixtures. Timeouts scale from ``MS`` (raise TDEVLAB_TEST_MS on slow machines)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: One "unit" of waiting in tests, in seconds.
MS = float(os.environ.get("TDEVLAB_TEST_MS", "1")) * 0.001


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
