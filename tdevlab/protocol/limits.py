"""Rate limits (spec: "Rate Limiting"), as pure functions of ``now``.

* 100 messages/second per connection: a token bucket; an excess message is refused
  (``RATE_LIMITED``) and not processed. A client that keeps flooding — more than
  ``flood_factor`` times the rate refused within one second — is closed (1008).
* 10 concurrent connections per user (``sub``).
* 10 MB/minute of inbound data per user, across all of their connections: a token bucket
  of 10 MB refilled at 10 MB per 60 s, charged with each frame's size.

Before a connection authenticates it belongs to no user, so those budgets cannot charge
it; it gets smaller ones of its own (as real-time servers do until the connect/identify
message): frames of at most 16 KiB (an ``auth`` message is a few KB), 64 KiB in all, and
a place among at most 256 unauthenticated connections, 32 at once and 10 new ones per
second per source address (:class:`Admissions`). Refused handshakes are answered after a
second, so a client that reconnects at once cannot spend the server's CPU on handshakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdevlab.exceptions import InvalidParameters

__all__ = ["Admissions", "FloodGuard", "Limits", "Refusal", "TokenBucket", "UserRegistry"]


@dataclass(frozen=True)
class Limits:
    """The server's limits; every one is configurable.

    Attributes:
        messages_per_second: Messages a connection may send per second (burst: as many).
        flood_factor: A connection refused more than ``flood_factor * messages_per_second``
            messages within one second is closed.
        connections_per_user: Concurrent connections per user.
        bytes_per_minute: Inbound bytes per user per minute, across connections.
        max_frame_bytes: Largest frame; larger ones close the connection with 1009.
        outbound_budget_bytes: Bytes queued to a connection before it counts as stalled
            and is cut off.
        replay_hold_bytes: Bytes of live events held for a connection while a replay
            streams to it (they must come after it) before it is cut off. Larger than the
            budget: a replay of megabytes over a link only a few times faster than the live
            stream takes seconds, and cutting the client off then would make its next
            replay larger still.
        pre_auth_frame_bytes: Largest frame before the connection has authenticated
            (16 KiB); a larger one closes it with 1009. Send bigger messages after the
            ``auth`` ack: frames that arrive before it are held to this size.
        pre_auth_bytes: Inbound bytes a connection may send before it has authenticated
            (64 KiB, the ``auth`` message included); past them it is closed with 1008.
        unauthenticated_connections: Connections that have not authenticated yet, from
            all addresses (256); more are refused at the handshake (HTTP 503).
        unauthenticated_per_address: Of those, from one source address (32); more are
            refused at the handshake (HTTP 429). A connection authenticated by its
            ``Authorization`` header never counts.
        unauthenticated_per_second: New unauthenticated connections per source address
            per second (10; a token bucket with a burst of ``unauthenticated_per_address``);
            more are refused at the handshake (HTTP 429).
        refusal_delay: Seconds before a refused handshake (HTTP 429 or 503) is answered
            (1.0, spread over 0.5-1.5 times it; 0 answers at once): a client that
            reconnects as soon as it is refused makes about one attempt per second per
            connection it holds open.
    """

    messages_per_second: float = 100.0
    flood_factor: float = 5.0
    connections_per_user: int = 10
    bytes_per_minute: int = 10 * 1024 * 1024
    max_frame_bytes: int = 1024 * 1024
    outbound_budget_bytes: int = 1024 * 1024
    replay_hold_bytes: int = 16 * 1024 * 1024
    pre_auth_frame_bytes: int = 16 * 1024
    pre_auth_bytes: int = 64 * 1024
    unauthenticated_connections: int = 256
    unauthenticated_per_address: int = 32
    unauthenticated_per_second: float = 10.0
    refusal_delay: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "messages_per_second",
            "flood_factor",
            "connections_per_user",
            "bytes_per_minute",
            "max_frame_bytes",
            "outbound_budget_bytes",
            "replay_hold_bytes",
            "pre_auth_frame_bytes",
            "pre_auth_bytes",
            "unauthenticated_connections",
            "unauthenticated_per_address",
            "unauthenticated_per_second",
        ):
            if not getattr(self, name) > 0:
                raise InvalidParameters(f"limit {name}={getattr(self, name)!r} must be > 0")
        if not 0 <= self.refusal_delay <= 60:
            raise InvalidParameters(
                f"limit refusal_delay={self.refusal_delay!r} must be 0 to 60 seconds"
            )


@dataclass
class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second.

    Starts full. ``take(now, n)`` removes ``n`` tokens if there are that many.
    """

    rate: float
    capacity: float
    now: float
    tokens: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity
        self._last = self.now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens at time ``now``; return whether there were enough."""
        if now > self._last:
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def level(self, now: float) -> float:
        """The tokens there are at ``now`` (taking none)."""
        if now > self._last:
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
        return self.tokens

    def full_at(self, now: float) -> bool:
        """Whether the bucket has refilled to capacity by ``now`` (a new one is the same)."""
        return self.tokens + max(now - self._last, 0.0) * self.rate >= self.capacity


@dataclass
class FloodGuard:
    """Counts refused messages per one-second window; says when to give up on a client."""

    threshold: float
    window_start: float = 0.0
    refused: int = 0

    def refuse(self, now: float) -> bool:
        """Count a refusal; return True once the client is flooding past the threshold."""
        if now - self.window_start >= 1.0:
            self.window_start, self.refused = now, 0
        self.refused += 1
        return self.refused > self.threshold


@dataclass(frozen=True)
class Refusal:
    """Why a connection is turned away: the HTTP status of a refused handshake and a reason."""

    status: int
    reason: str


@dataclass
class Admissions:
    """Connections that have not authenticated yet: in all, at once per source address,
    and new ones per address per second."""

    limits: Limits
    per_address: dict[str, int] = field(default_factory=dict)
    total: int = 0
    #: New connections per address: a token bucket each (refilled ones are forgotten).
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    #: Buckets kept beyond the addresses with connections before refilled ones are dropped.
    spare_buckets: int = 1000

    def refusal(self, address: str, now: float) -> Refusal | None:
        """Why one more unauthenticated connection from ``address`` would be refused at
        ``now`` (None: it would not be). Takes nothing: the handshake asks, :meth:`admit`
        counts."""
        limits = self.limits
        if self.total >= limits.unauthenticated_connections:
            return Refusal(
                503,
                f"too many unauthenticated connections "
                f"(limit {limits.unauthenticated_connections})",
            )
        if self.per_address.get(address, 0) >= limits.unauthenticated_per_address:
            return Refusal(
                429,
                f"too many unauthenticated connections from this address "
                f"(limit {limits.unauthenticated_per_address})",
            )
        bucket = self.buckets.get(address)
        if bucket is not None and bucket.level(now) < 1.0:
            return Refusal(
                429,
                f"too many new unauthenticated connections from this address "
                f"(limit {limits.unauthenticated_per_second:g} per second)",
            )
        return None

    def admit(self, address: str, now: float) -> Refusal | None:
        """Count an unauthenticated connection from ``address`` at ``now``, or say why not."""
        refused = self.refusal(address, now)
        if refused is None:
            self._bucket(address, now).take(now)
            self.total += 1
            self.per_address[address] = self.per_address.get(address, 0) + 1
        return refused

    def _bucket(self, address: str, now: float) -> TokenBucket:
        bucket = self.buckets.get(address)
        if bucket is None:
            if len(self.buckets) >= len(self.per_address) + self.spare_buckets:
                # Forget addresses without connections whose bucket refilled: a new one
                # would be the same, so the table stays bounded over days of clients.
                for known in [a for a in self.buckets if a not in self.per_address]:
                    if self.buckets[known].full_at(now):
                        del self.buckets[known]
            limits = self.limits
            bucket = self.buckets[address] = TokenBucket(
                limits.unauthenticated_per_second, float(limits.unauthenticated_per_address), now
            )
        return bucket

    def leave(self, address: str) -> None:
        """Forget one (it authenticated, or went away)."""
        count = self.per_address.get(address, 0) - 1
        if count > 0:
            self.per_address[address] = count
        else:
            self.per_address.pop(address, None)
        self.total = max(self.total - 1, 0)


@dataclass
class UserRegistry:
    """Per-user connection counts and shared inbound data buckets, and the connections
    not authenticated yet (:attr:`unauthenticated`)."""

    limits: Limits
    connections: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    unauthenticated: Admissions = field(init=False)

    def __post_init__(self) -> None:
        self.unauthenticated = Admissions(self.limits)

    def connect(self, user: str) -> bool:
        """Count a new connection of ``user``; False (and not counted) if over the limit."""
        count = self.connections.get(user, 0)
        if count >= self.limits.connections_per_user:
            return False
        self.connections[user] = count + 1
        return True

    def disconnect(self, user: str) -> None:
        """Forget one connection of ``user`` (its data bucket is kept: a reconnect does not
        reset the user's budget)."""
        count = self.connections.get(user, 0) - 1
        if count > 0:
            self.connections[user] = count
        else:
            self.connections.pop(user, None)

    #: Buckets kept beyond the connected users before the refilled ones are dropped.
    spare_buckets: int = 100

    def data_bucket(self, user: str, now: float) -> TokenBucket:
        """The user's inbound data bucket (shared by all of their connections)."""
        bucket = self.buckets.get(user)
        if bucket is None:
            if len(self.buckets) >= len(self.connections) + self.spare_buckets:
                self.prune(now)
            capacity = float(self.limits.bytes_per_minute)
            bucket = self.buckets[user] = TokenBucket(capacity / 60.0, capacity, now)
        return bucket

    def prune(self, now: float) -> None:
        """Forget the buckets of users without connections that have refilled: a new bucket
        would be identical, so no budget is reset, and the registry stays bounded when
        many different users come and go over days."""
        for user in [u for u, b in self.buckets.items() if u not in self.connections]:
            if self.buckets[user].full_at(now):
                del self.buckets[user]
