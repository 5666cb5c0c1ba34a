"""The rate limiters without a loop or a clock: token buckets, the per-user registry and the
unauthenticated connections' admissions."""

from __future__ import annotations

import pytest

from tdevlab.exceptions import InvalidParameters
from tdevlab.protocol.limits import Admissions, Limits, TokenBucket, UserRegistry


def test_token_bucket_refills_to_capacity() -> None:
    """A bucket refills at its rate and says when it is as full as a new one."""
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    assert bucket.take(0.0, 10)
    assert not bucket.take(0.0)
    assert not bucket.full_at(0.5)
    assert bucket.full_at(1.0)
    assert bucket.take(1.0, 10)


def test_registry_forgets_refilled_buckets_of_users_who_left() -> None:
    """Many users coming and going leave a bounded registry; no one's budget is reset."""
    limits = Limits(bytes_per_minute=600)  # 10 bytes/s
    registry = UserRegistry(limits, spare_buckets=5)
    for i in range(50):
        user = f"user-{i}"
        assert registry.connect(user)
        assert registry.data_bucket(user, now=float(i)).take(float(i), 600)
        registry.disconnect(user)
    assert len(registry.buckets) <= 5 + 60  # drained buckets refill over a minute
    later = 50.0 + 60.0
    assert registry.connect("newcomer")
    registry.data_bucket("newcomer", now=later)
    registry.prune(later)
    assert set(registry.buckets) == {"newcomer"}


def test_registry_keeps_a_drained_bucket_so_reconnecting_resets_nothing() -> None:
    """A user who spent the budget and reconnects finds the bucket still empty."""
    registry = UserRegistry(Limits(bytes_per_minute=600), spare_buckets=0)
    assert registry.connect("ada")
    assert registry.data_bucket("ada", 0.0).take(0.0, 600)
    registry.disconnect("ada")
    registry.prune(1.0)
    assert registry.connect("ada")
    assert not registry.data_bucket("ada", 1.0).take(1.0, 100)  # 10 bytes refilled, not 100


def test_admissions_cap_unauthenticated_connections_per_address_and_in_all() -> None:
    """Per address, then in all: the refusal says which (429 or 503); leaving frees a place."""
    admissions = Admissions(Limits(unauthenticated_connections=3, unauthenticated_per_address=2))
    assert admissions.admit("10.0.0.1") is None
    assert admissions.admit("10.0.0.1") is None
    refused = admissions.admit("10.0.0.1")
    assert refused is not None
    assert refused.status == 429
    assert "address" in refused.reason
    assert admissions.admit("10.0.0.2") is None
    refused = admissions.admit("10.0.0.3")
    assert refused is not None
    assert refused.status == 503
    assert admissions.total == 3
    admissions.leave("10.0.0.1")
    assert admissions.refusal("10.0.0.1") is None  # asking counts nothing
    assert admissions.admit("10.0.0.1") is None
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        admissions.leave(address)
    assert admissions.total == 0
    assert admissions.per_address == {}


def test_pre_auth_limits_have_documented_defaults_and_are_validated() -> None:
    """16 KiB frames, 64 KiB in all, 256 connections, 32 per address; each must be > 0."""
    limits = Limits()
    assert (limits.pre_auth_frame_bytes, limits.pre_auth_bytes) == (16 * 1024, 64 * 1024)
    assert (limits.unauthenticated_connections, limits.unauthenticated_per_address) == (256, 32)
    for name in ("pre_auth_frame_bytes", "pre_auth_bytes", "unauthenticated_connections",
                 "unauthenticated_per_address"):  # fmt: skip
        with pytest.raises(InvalidParameters, match=name):
            Limits(**{name: 0})
