"""The rate limiters without a loop or a clock: token buckets and the per-user registry."""

from __future__ import annotations

from tdevlab.protocol.limits import Limits, TokenBucket, UserRegistry


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
