"""A session before it authenticates: its place, frame size and byte budget, without a loop."""

from __future__ import annotations

import json

import pytest

from tdevlab.protocol.auth import TokenVerifier, issue_token
from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.limits import Limits, UserRegistry
from tdevlab.protocol.session import Close, Send, Session, SessionState

SECRET = "pre-auth-tests-secret-0123456789abcdef"
T0 = 1_700_000_000.0
LIMITS = Limits(
    pre_auth_frame_bytes=1000,
    pre_auth_bytes=2500,
    unauthenticated_connections=4,
    unauthenticated_per_address=2,
)


def session(registry: UserRegistry, address: str = "10.0.0.1") -> Session:
    """A session of ``registry`` from ``address``, at T0."""
    return Session(
        TokenVerifier(SECRET), Encoder("srv"), now=T0, registry=registry, address=address
    )


def auth(user: str = "ada") -> str:
    """An auth message with a valid token."""
    return json.dumps({"type": "auth", "token": issue_token(SECRET, user, "viewer", now=T0)})


def ping(size: int) -> str:
    """A ping frame of exactly ``size`` bytes."""
    head = '{"type":"ping","pad":"'
    return head + "x" * (size - len(head) - 2) + '"}'


def closes(outcomes: list[object], code: int) -> Close:
    """The outcomes are one Close with ``code``; return it."""
    assert len(outcomes) == 1, outcomes
    assert isinstance(outcomes[0], Close), outcomes
    assert outcomes[0].code == code
    assert len(outcomes[0].reason.encode()) <= 123
    return outcomes[0]


def test_frame_limit_is_small_until_auth_then_the_full_one() -> None:
    """frame_limit is pre_auth_frame_bytes until auth succeeds, max_frame_bytes after."""
    s = session(UserRegistry(LIMITS))
    assert s.frame_limit == 1000
    [ack] = s.receive_text(auth(), T0)
    assert isinstance(ack, Send)
    assert not ack.error
    assert s.frame_limit == LIMITS.max_frame_bytes


def test_pre_auth_frame_limit_never_exceeds_the_frame_limit() -> None:
    """A pre-auth frame limit above max_frame_bytes is held to it."""
    s = session(UserRegistry(Limits(pre_auth_frame_bytes=10_000, max_frame_bytes=5000)))
    assert s.frame_limit == 5000


def test_frame_over_the_pre_auth_limit_closes_1009_and_rejects() -> None:
    """A frame over pre_auth_frame_bytes before auth is not parsed: close 1009, rejected."""
    s = session(UserRegistry(LIMITS))
    assert s.receive_text(ping(1000), T0)  # at the limit: handled (UNAUTHORIZED)
    closes(s.receive_text(ping(1001), T0), 1009)
    assert s.state is SessionState.CLOSED
    assert s.rejected
    assert s.receive_text(auth(), T0) == []


def test_binary_frames_count_against_the_pre_auth_limits_too() -> None:
    """Binary frames before auth: over the frame limit they close 1009."""
    s = session(UserRegistry(LIMITS))
    closes(s.receive_binary(b"\x00" * 1001, T0), 1009)
    assert s.rejected


def test_bytes_before_auth_add_up_to_the_budget_then_close_1008() -> None:
    """pre_auth_bytes in all, the auth message included; one byte more closes 1008."""
    s = session(UserRegistry(LIMITS))
    for _ in range(2):
        [reply] = s.receive_text(ping(1000), T0)
        assert isinstance(reply, Send)
        assert json.loads(reply.data)["error"]["code"] == ("UNAUTHORIZED")
    assert s.pre_auth_received == 2000
    assert s.receive_text(ping(500), T0)
    closes(s.receive_text(ping(100), T0), 1008)
    assert s.rejected


def test_after_auth_the_budget_no_longer_applies() -> None:
    """Authenticated, frames of the full size pass and the pre-auth budget is not charged."""
    s = session(UserRegistry(LIMITS))
    s.receive_text(auth(), T0)
    received = s.pre_auth_received
    for _ in range(5):
        [pong] = s.receive_text(ping(5000), T0)
        assert json.loads(pong.data)["type"] == "pong"  # type: ignore[union-attr]
    assert s.pre_auth_received == received
    assert not s.rejected


def test_unauthenticated_places_per_address_and_in_all() -> None:
    """The third connection from one address, or the fifth in all, is closed 1013 at once."""
    registry = UserRegistry(LIMITS)
    first = [session(registry, "10.0.0.1") for _ in range(2)]
    third = session(registry, "10.0.0.1")
    closes(third.start, 1013)
    assert third.rejected
    assert third.state is SessionState.CLOSED
    others = [session(registry, "10.0.0.2"), session(registry, "10.0.0.3")]
    fifth = session(registry, "10.0.0.4")
    closes(fifth.start, 1013)
    # Authenticating or leaving frees a place; a refused session held none.
    first[0].receive_text(auth(), T0)
    third.close()
    assert registry.unauthenticated.total == 3
    first[1].close()
    for s in others:
        s.close()
    first[0].close()
    assert registry.unauthenticated.total == 0
    assert registry.unauthenticated.per_address == {}


def test_header_authenticated_sessions_take_no_place() -> None:
    """A session that starts with header claims is not counted as unauthenticated."""
    registry = UserRegistry(LIMITS)
    claims = TokenVerifier(SECRET).verify(issue_token(SECRET, "ada", "viewer", now=T0), T0)
    sessions = [
        Session(TokenVerifier(SECRET), Encoder(), now=T0, registry=registry, header_claims=claims)
        for _ in range(5)
    ]
    assert all(not s.start for s in sessions)
    assert registry.unauthenticated.total == 0


@pytest.mark.parametrize(
    ("how", "rejected"),
    [
        ("bad token", True),
        ("timeout", True),
        ("parser closed 1009", True),
        ("parser closed 1008", True),
        ("client went away", False),
        ("authenticated, then closed", False),
    ],
)
def test_rejected_means_closed_by_the_server_before_authenticating(
    how: str, rejected: bool
) -> None:
    """Rejected: a failed auth, the auth timeout, or a policy close before auth; not a client
    that leaves, nor one that authenticated."""
    s = session(UserRegistry(LIMITS))
    if how == "bad token":
        s.receive_text(json.dumps({"type": "auth", "token": {"a": 1}}), T0)
    elif how == "timeout":
        closes(s.tick(T0 + 11), 1008)
    elif how.startswith("parser closed"):
        s.close(int(how[-4:]))
    elif how == "client went away":
        s.close(None)
    else:
        s.receive_text(auth(), T0)
        s.close(1008)
    s.close()
    assert s.rejected is rejected


def test_non_string_token_fails_auth_and_closes_1008() -> None:
    """{"type":"auth","token":{"a":1}}: AUTH_FAILED, then close 1008."""
    s = session(UserRegistry(LIMITS))
    error, close = s.receive_text('{"type":"auth","token":{"a":1},"id":"a"}', T0)
    assert isinstance(error, Send)
    assert json.loads(error.data)["error"]["code"] == "AUTH_FAILED"
    assert json.loads(error.data)["reply_to"] == "a"
    assert isinstance(close, Close)
    assert close.code == 1008


def test_limit_closes_drop_the_connection_auth_closes_are_polite() -> None:
    """Over a pre-auth limit the close says drop (fail, read no more); a failed auth or the
    auth timeout closes politely, so a real client reads why."""
    registry = UserRegistry(LIMITS)
    assert closes(session(registry).receive_text(ping(1001), T0), 1009).drop
    budget = session(registry, "10.0.0.2")
    for _ in range(2):
        budget.receive_text(ping(1000), T0)
    assert closes(budget.receive_text(ping(1000), T0), 1008).drop
    assert not closes(session(registry, "10.0.0.3").tick(T0 + 11), 1008).drop
    _, close = session(registry, "10.0.0.4").receive_text('{"type":"auth","token":"x"}', T0)
    assert isinstance(close, Close)
    assert not close.drop
    refused = session(UserRegistry(Limits(unauthenticated_connections=1)), "a")
    assert not refused.start
    assert closes(session(refused.registry, "b").start, 1013).drop  # type: ignore[arg-type]
