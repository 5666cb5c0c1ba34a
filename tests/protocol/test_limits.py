"""The rate limiters without a loop or a clock: token buckets, the per-user registry and the
unauthenticated connections' admissions."""

from __future__ import annotations

import pytest

from tdevlab.exceptions import InvalidParameters
from tdevlab.protocol.limits import Admissions, Limits, TokenBucket, UserRegistry

T0 = 1_700_000_000.0


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
    assert admissions.admit("10.0.0.1", T0) is None
    assert admissions.admit("10.0.0.1", T0) is None
    refused = admissions.admit("10.0.0.1", T0)
    assert refused is not None
    assert refused.status == 429
    assert "at once" not in refused.reason
    assert "from this address" in refused.reason
    assert admissions.admit("10.0.0.2", T0) is None
    refused = admissions.admit("10.0.0.3", T0)
    assert refused is not None
    assert refused.status == 503
    assert admissions.total == 3
    admissions.leave("10.0.0.1")
    assert admissions.refusal("10.0.0.1", T0 + 1) is None  # asking takes nothing
    assert admissions.admit("10.0.0.1", T0 + 1) is None
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        admissions.leave(address)
    assert admissions.total == 0
    assert admissions.per_address == {}


def test_admissions_limit_new_connections_per_address_per_second() -> None:
    """A burst of unauthenticated_per_address, then unauthenticated_per_second: one that comes
    and goes at once cannot reconnect faster than that."""
    limits = Limits(unauthenticated_per_address=4, unauthenticated_per_second=2.0)
    admissions = Admissions(limits)
    for i in range(4):
        assert admissions.admit("10.0.0.1", T0) is None, i
        admissions.leave("10.0.0.1")
    refused = admissions.admit("10.0.0.1", T0)
    assert refused is not None
    assert refused.status == 429
    assert "per second" in refused.reason
    assert admissions.admit("10.0.0.2", T0) is None  # another address has its own
    assert admissions.admit("10.0.0.1", T0 + 0.25) is not None
    assert admissions.admit("10.0.0.1", T0 + 0.5) is None  # 2 per second come back


def test_admissions_forget_refilled_buckets_of_addresses_that_left() -> None:
    """Many addresses coming and going leave a bounded table; a drained bucket is kept."""
    admissions = Admissions(Limits(unauthenticated_per_address=1), spare_buckets=5)
    for i in range(50):
        assert admissions.admit(f"10.0.1.{i}", T0 + i) is None
        admissions.leave(f"10.0.1.{i}")
    assert len(admissions.buckets) <= 6
    assert admissions.refusal("10.0.1.49", T0 + 49) is not None  # still drained


def test_pre_auth_limits_have_documented_defaults_and_are_validated() -> None:
    """16 KiB frames, 64 KiB in all, 256 connections, 32 per address and 10 new per second,
    refusals after 1 s; each must be > 0 (the delay may be 0)."""
    limits = Limits()
    assert (limits.pre_auth_frame_bytes, limits.pre_auth_bytes) == (16 * 1024, 64 * 1024)
    assert (limits.unauthenticated_connections, limits.unauthenticated_per_address) == (256, 32)
    assert (limits.unauthenticated_per_second, limits.refusal_delay) == (10.0, 1.0)
    for name in ("pre_auth_frame_bytes", "pre_auth_bytes", "unauthenticated_connections",
                 "unauthenticated_per_address", "unauthenticated_per_second"):  # fmt: skip
        with pytest.raises(InvalidParameters, match=name):
            Limits(**{name: 0})
    assert Limits(refusal_delay=0).refusal_delay == 0
    with pytest.raises(InvalidParameters, match="refusal_delay"):
        Limits(refusal_delay=-1)
