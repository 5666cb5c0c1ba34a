"""One connection's protocol state, with no sockets and no clock (time comes in as ``now``).

The driver feeds frames to :meth:`Session.receive_text` / :meth:`Session.receive_binary`
and the passage of time to :meth:`Session.tick`, and carries out what comes back:

* :class:`Send` — bytes to send (a text frame, or a binary frame when ``binary``);
* :class:`Close` — close the connection with a code and reason;
* :class:`Dispatch` — a request the engine must carry out (control, get_agent,
  get_agent_code, command, agent code upload), already authenticated and authorized;
* :class:`Replay` — a subscription to acknowledge, with the events missed after ``since``
  (the driver holds the history).

States (``SessionState``)::

    AWAITING_AUTH --valid auth message--> OPEN --close / expiry--> CLOSED
          |  (a valid Authorization header starts in OPEN)
          +--bad auth / auth timeout / a pre-auth limit--> CLOSED

Until it authenticates a connection has the pre-auth limits of :class:`Limits`: it takes
one of the places for unauthenticated connections (or is refused, 1013), its frames are at
most :attr:`Session.frame_limit` (the driver also sets the WebSocket parser to it, so a
larger frame is refused from its header, 1009) and it may send ``pre_auth_bytes`` in all
(1008). Such a connection closed before authenticating is :attr:`Session.rejected`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from tdevlab.exceptions import (
    AuthFailed,
    InvalidCommand,
    RateLimited,
    TdevlabError,
    Unauthorized,
)
from tdevlab.protocol.auth import Claims, TokenVerifier
from tdevlab.protocol.envelope import Encoder, iso_time
from tdevlab.protocol.limits import FloodGuard, Limits, TokenBucket, UserRegistry
from tdevlab.protocol.messages import (
    AgentCodeUpload,
    Auth,
    Branch,
    EngineRequest,
    GetAgent,
    GetAgentCode,
    GetArchive,
    GetFront,
    GetLineage,
    GetPopulation,
    Ping,
    Request,
    Rollback,
    SetParameters,
    Subscribe,
    Unsubscribe,
    parse_binary,
    parse_text,
    request_id,
)

__all__ = ["Close", "Dispatch", "Filters", "Replay", "Send", "Session", "SessionState"]

#: Close codes (RFC 6455): policy violation (auth), going away (shutdown), message too big.
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013

# Requests a viewer may make; everything else needs the operator role.
_VIEWER_REQUESTS = (
    Subscribe,
    Unsubscribe,
    GetAgent,
    GetAgentCode,
    GetLineage,
    GetFront,
    GetArchive,
    GetPopulation,
    Ping,
    Auth,
)
# How a refusal names a typed command (they arrived as {"type": "command", "cmd": ...}).
_REQUEST_NAMES: dict[type, str] = {
    Rollback: "rollback",
    SetParameters: "set_parameters",
    Branch: "branch",
}


class SessionState(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Send:
    data: bytes
    binary: bool = False
    error: bool = False  # an error reply (counted in the metrics' error_rate)
    # A pong: it belongs to no channel, so it may overtake events still being replayed
    # (a client timing its pings must not wait behind megabytes of history).
    urgent: bool = False


@dataclass(frozen=True)
class Close:
    code: int
    reason: str
    # Fail the connection rather than wait for the client's closing handshake, and read
    # nothing more from it: a client turned away over a pre-auth limit may be flooding.
    drop: bool = False


@dataclass(frozen=True)
class Replay:
    """A subscribe to acknowledge: ``ack`` data, then missed events after ``since``."""

    reply_to: Any
    ack: dict[str, Any]
    since: dict[str, int]
    epochs: dict[str, str]


@dataclass(frozen=True)
class Dispatch:
    """An authorized request for the driver to carry out (on the engine)."""

    request: EngineRequest | AgentCodeUpload
    claims: Claims


Outcome = Send | Close | Dispatch | Replay


@dataclass(frozen=True)
class Filters:
    """spec: subscribe filters. Events without the field pass (only evolution and agent
    updates carry generation and fitness)."""

    generation_min: float | None = None
    fitness_min: float | None = None

    def accepts(self, generation: int | None, fitness: float | None) -> bool:
        if self.generation_min is not None and generation is not None:
            return generation >= self.generation_min and self._fitness_ok(fitness)
        return self._fitness_ok(fitness)

    def _fitness_ok(self, fitness: float | None) -> bool:
        return self.fitness_min is None or fitness is None or fitness >= self.fitness_min

    def to_dict(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (("generation_min", self.generation_min), ("fitness_min", self.fitness_min))
            if v is not None
        }


@dataclass
class Session:
    """Protocol state of one connection.

    Args:
        verifier: Checks tokens.
        encoder: Builds server messages.
        now: The connection's start time.
        auth_timeout: Seconds allowed to authenticate before the connection is closed.
        header_claims: Claims from a valid ``Authorization`` header (the session starts OPEN).
        registry: The server's per-user and unauthenticated connection counts (none: no
            per-user or admission limits, as for a session tested alone).
        address: The client's source address, for the unauthenticated connections per
            address.
    """

    verifier: TokenVerifier
    encoder: Encoder
    now: float
    auth_timeout: float = 10.0
    header_claims: Claims | None = None
    registry: UserRegistry | None = None
    address: str = "unknown"
    state: SessionState = SessionState.AWAITING_AUTH
    claims: Claims | None = None
    subscriptions: dict[str, Filters] = field(default_factory=dict)
    deadline: float = 0.0

    def __post_init__(self) -> None:
        limits = self.limits = self.registry.limits if self.registry is not None else Limits()
        self.messages = TokenBucket(
            limits.messages_per_second, limits.messages_per_second, self.now
        )
        self.flood = FloodGuard(limits.flood_factor * limits.messages_per_second)
        self.counted_user: str | None = None  # the user this connection counts against
        #: Inbound bytes before authentication (charged against ``pre_auth_bytes``).
        self.pre_auth_received = 0
        #: Closed before it ever authenticated, by a limit, a failed auth or the timeout.
        self.rejected = False
        self._admitted = False  # holds a place among the unauthenticated connections
        #: What the driver must do before reading any frame (a refused connection).
        self.start: list[Outcome] = []
        if self.header_claims is not None:
            self.claims = self.header_claims
            self.state = SessionState.OPEN
            self.deadline = self.header_claims.expires_at + self.verifier.leeway
            self.start = self._count_connection(self.header_claims.user, None, self.now)
        else:
            self.deadline = self.now + self.auth_timeout
            self.start = self._admit()

    @property
    def frame_limit(self) -> int:
        """The largest frame this connection may send now: ``pre_auth_frame_bytes`` until it
        has authenticated, ``max_frame_bytes`` after."""
        if self.claims is not None:
            return self.limits.max_frame_bytes
        return min(self.limits.pre_auth_frame_bytes, self.limits.max_frame_bytes)

    # -- input -----------------------------------------------------------------------------

    def receive_text(self, text: str | bytes, now: float) -> list[Outcome]:
        """Handle one text frame."""
        if self.state is SessionState.CLOSED:
            return []
        expired = self.tick(now)
        if expired:
            return expired
        size = len(text) if isinstance(text, bytes) or text.isascii() else len(text.encode())
        refused = self._limit(size, now, text)
        if refused:
            return refused
        try:
            message = parse_text(text)
        except InvalidCommand as exc:
            return [self._error(exc, now, exc.details.get("id"))]
        return self._handle(message, now)

    def receive_binary(self, data: bytes, now: float) -> list[Outcome]:
        """Handle one binary frame (an agent code upload)."""
        if self.state is SessionState.CLOSED:
            return []
        expired = self.tick(now)
        if expired:
            return expired
        refused = self._limit(len(data), now, data.split(b"\n", 1)[0])
        if refused:
            return refused
        if self.state is SessionState.AWAITING_AUTH:
            return [self._error(Unauthorized("authenticate first (send an 'auth' message)"), now)]
        try:
            upload = parse_binary(data)
        except InvalidCommand as exc:
            return [self._error(exc, now, exc.details.get("id"))]
        assert self.claims is not None
        if not self.claims.is_operator:
            return [
                self._error(
                    Unauthorized(
                        f"user {self.claims.user!r} (role {self.claims.role}) may not upload "
                        "agent code; it needs the operator role"
                    ),
                    now,
                    upload.id,
                )
            ]
        return [Dispatch(upload, self.claims)]

    def tick(self, now: float) -> list[Outcome]:
        """Check the auth deadline and token expiry; return a Close when one has passed."""
        if self.state is SessionState.CLOSED or now < self.deadline:
            return []
        if self.claims is None:
            return self._reject(
                POLICY_VIOLATION, "authentication timeout: no valid auth message", drop=False
            )
        self.state = SessionState.CLOSED
        return [Close(POLICY_VIOLATION, "token expired: authenticate again with a new token")]

    def close(self, sent: int | None = None) -> None:
        """Mark the session closed (the connection is gone) and release its places.

        Args:
            sent: The close code the connection sent, when the WebSocket layer closed it
                by itself (a frame over :attr:`frame_limit` is refused there, 1009): a
                policy close before authentication makes the connection :attr:`rejected`.
        """
        if (
            self.state is not SessionState.CLOSED
            and self.claims is None
            and sent in (POLICY_VIOLATION, MESSAGE_TOO_BIG)
        ):
            self.rejected = True
        self.state = SessionState.CLOSED
        self._leave_admissions()
        if self.counted_user is not None and self.registry is not None:
            self.registry.disconnect(self.counted_user)
            self.counted_user = None

    # -- limits ----------------------------------------------------------------------------

    def _limit(self, size: int, now: float, text: str | bytes | None) -> list[Outcome]:
        """spec: "Rate Limiting". Refuse (not process) a message over a limit."""
        if self.claims is None:
            refused = self._pre_auth_limit(size)
            if refused:
                return refused
        if not self.messages.take(now):
            if self.flood.refuse(now):
                rate = f"{self.messages.capacity:g}"
                if self.claims is None:
                    return self._reject(
                        POLICY_VIOLATION, f"flooding: far over {rate} messages/second"
                    )
                self.state = SessionState.CLOSED
                return [Close(POLICY_VIOLATION, f"flooding: far over {rate} messages/second")]
            rid = None if text is None else request_id(text)
            limit = self.messages.capacity
            return [
                self._error(
                    RateLimited(
                        f"too many messages: the limit is {limit:g} per second",
                        details={"limit_per_second": limit},
                    ),
                    now,
                    rid,
                )
            ]
        if self.claims is not None and self.registry is not None:
            bucket = self.registry.data_bucket(self.claims.user, now)
            if not bucket.take(now, size):
                rid = None if text is None else request_id(text)
                per_minute = self.registry.limits.bytes_per_minute
                return [
                    self._error(
                        RateLimited(
                            f"too much data: user {self.claims.user!r} may send "
                            f"{per_minute} bytes per minute",
                            details={"limit_bytes_per_minute": per_minute},
                        ),
                        now,
                        rid,
                    )
                ]
        return []

    def _pre_auth_limit(self, size: int) -> list[Outcome]:
        """The limits of a connection that has not authenticated: frame size, bytes in all."""
        if size > self.frame_limit:
            return self._reject(
                MESSAGE_TOO_BIG,
                f"frame of {size} bytes before authenticating; the limit is "
                f"{self.frame_limit} until auth succeeds",
            )
        self.pre_auth_received += size
        if self.pre_auth_received > self.limits.pre_auth_bytes:
            return self._reject(
                POLICY_VIOLATION,
                f"over {self.limits.pre_auth_bytes} bytes sent before authenticating",
            )
        return []

    def _admit(self) -> list[Outcome]:
        """Take a place among the unauthenticated connections, or close (1013)."""
        if self.registry is None:
            return []
        refused = self.registry.unauthenticated.admit(self.address, self.now)
        if refused is not None:
            return self._reject(TRY_AGAIN_LATER, refused.reason)
        self._admitted = True
        return []

    def _leave_admissions(self) -> None:
        if self._admitted and self.registry is not None:
            self.registry.unauthenticated.leave(self.address)
            self._admitted = False

    def _reject(self, code: int, reason: str, drop: bool = True) -> list[Outcome]:
        """Close a connection that has not authenticated (counted as rejected); one over a
        limit is dropped."""
        self.state = SessionState.CLOSED
        self.rejected = True
        return [Close(code, _reason(reason), drop=drop)]

    def _count_connection(self, user: str, reply_to: Any, now: float) -> list[Outcome]:
        """Count this connection against ``user``'s limit; refuse it when over."""
        if self.registry is None or self.counted_user == user:
            return []
        if not self.registry.connect(user):
            self.state = SessionState.CLOSED
            limit = self.registry.limits.connections_per_user
            return [
                self._error(
                    RateLimited(
                        f"user {user!r} already has {limit} connections (the limit)",
                        details={"limit_connections": limit},
                    ),
                    now,
                    reply_to,
                ),
                Close(TRY_AGAIN_LATER, _reason(f"too many connections for user {user!r}")),
            ]
        self.counted_user = user
        return []

    # -- fan-out ---------------------------------------------------------------------------

    def wants(self, channel: str, generation: int | None, fitness: float | None) -> bool:
        """Whether an event on ``channel`` with these values goes to this connection."""
        filters = self.subscriptions.get(channel)
        return filters is not None and filters.accepts(generation, fitness)

    # -- requests --------------------------------------------------------------------------

    def _handle(self, message: Request, now: float) -> list[Outcome]:
        if isinstance(message, Auth):
            return self._auth(message, now)
        if self.state is SessionState.AWAITING_AUTH:
            return [
                self._error(
                    Unauthorized('authenticate first: send {"type": "auth", "token": ...}'),
                    now,
                    message.id,
                )
            ]
        assert self.claims is not None
        if not self.claims.is_operator and not isinstance(message, _VIEWER_REQUESTS):
            what = _REQUEST_NAMES.get(type(message)) or message.__struct_config__.tag
            return [
                self._error(
                    Unauthorized(
                        f"user {self.claims.user!r} (role {self.claims.role}) may not {what}; "
                        "it needs the operator role",
                        details={"role": self.claims.role},
                    ),
                    now,
                    message.id,
                )
            ]
        if isinstance(message, Ping):
            # spec: pong echoes the client's timestamp; the envelope's own time goes in data.
            reply: dict[str, Any] = {
                "id": self.encoder.next_id(),
                "type": "pong",
                # Without a client timestamp to echo, the envelope's own time.
                "timestamp": iso_time(now) if message.timestamp is None else message.timestamp,
            }
            if message.id is not None:
                reply["reply_to"] = message.id
            reply["data"] = {"server_time": iso_time(now)}
            return [Send(self.encoder.encode(reply), urgent=True)]
        if isinstance(message, Subscribe):
            for name in message.since or {}:
                if name not in _names(message.channel, message.channels) and (
                    name not in self.subscriptions
                ):
                    return [
                        self._error(
                            InvalidCommand(
                                f"'since' names channel {name!r}, which is not subscribed"
                            ),
                            now,
                            message.id,
                        )
                    ]
            return [self._subscribe(message, now)]
        if isinstance(message, Unsubscribe):
            names = _names(message.channel, message.channels)
            for name in names:
                self.subscriptions.pop(name, None)
            return [self._ack("unsubscribe", message.id, now, channels=sorted(self.subscriptions))]
        if isinstance(message, EngineRequest):
            return [Dispatch(message, self.claims)]
        raise AssertionError(f"unhandled message {message!r}")  # pragma: no cover

    def _auth(self, message: Auth, now: float) -> list[Outcome]:
        try:
            claims = self.verifier.verify(message.token, now)
        except AuthFailed as exc:
            self.state = SessionState.CLOSED
            self.rejected = self.claims is None
            return [
                self._error(exc, now, message.id),
                Close(POLICY_VIOLATION, _reason(f"authentication failed: {exc.message}")),
            ]
        if self.claims is not None and claims.user != self.claims.user:
            # Re-authentication may refresh a token, not switch users mid-connection.
            return [
                self._error(
                    AuthFailed("a connection cannot change user; open a new connection"),
                    now,
                    message.id,
                )
            ]
        refused = self._count_connection(claims.user, message.id, now)
        if refused:
            self.rejected = self.claims is None
            return refused
        self.claims = claims
        self.state = SessionState.OPEN
        self._leave_admissions()
        self.deadline = claims.expires_at + self.verifier.leeway  # as verify() accepts it
        return [self._ack("auth", message.id, now, user=claims.user, role=claims.role)]

    def _subscribe(self, message: Subscribe, now: float) -> Outcome:
        filters = Filters(**(message.filters or {}))
        for name in _names(message.channel, message.channels):
            self.subscriptions[name] = filters
        data = {
            "request": "subscribe",
            "channels": sorted(self.subscriptions),
            "filters": {name: f.to_dict() for name, f in sorted(self.subscriptions.items())},
        }
        # The driver holds the history: it acknowledges, with what it could recover.
        return Replay(message.id, data, dict(message.since or {}), dict(message.epochs or {}))

    def _ack(self, request: str, reply_to: Any, now: float, **data: Any) -> Send:
        message = self.encoder.message(
            "ack", {"request": request, **data}, now=now, reply_to=reply_to
        )
        return Send(self.encoder.encode(message))

    def _error(self, exc: TdevlabError, now: float, reply_to: Any = None) -> Send:
        return Send(self.encoder.error(exc, now=now, reply_to=reply_to), error=True)


def _names(channel: str | None, channels: list[str] | None) -> list[str]:
    names = list(channels or [])
    if channel is not None:
        names.append(channel)
    return list(dict.fromkeys(names))


def _reason(text: str) -> str:
    """A close reason within the 123 bytes a close frame allows (RFC 6455 5.5)."""
    data = text.encode("utf-8")
    return text if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."
